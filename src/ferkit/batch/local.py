"""A local pool of worker processes (spawn), each loading the model once, fed one source at a time.

Every worker has its own inbox, so the parent always knows which sources a worker holds: when a worker
dies (a crash in a video decoder, the kernel's OOM killer), the source it was on fails alone, named in the
status table, any source queued behind it goes to another worker, and a fresh worker takes its place.
Messages both ways are plain tuples of str/int/float/dict; the model never leaves its process.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
from collections import deque
from collections.abc import Iterator

from ferkit.batch.settings import Settings
from ferkit.errors import FerkitError

PREFETCH = 2  # sources queued per worker (one in work, one waiting)


def _worker_main(wid: int, settings_json: dict, threads: int, inbox, events, parent: int) -> None:
    """A worker process: build the analysers, then run tasks until a None arrives or the parent is gone.

    Ctrl-C is the parent's to handle (it stops the workers); a worker whose parent was killed stops at
    its next frame or source, without writing anything more.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    from ferkit.batch.job import Abandoned, Worker

    try:
        worker = Worker(Settings.from_json(settings_json), threads=threads)
    except Exception as exc:  # noqa: BLE001 -- reported to the parent, which raises it as the job's error
        events.put((wid, -1, ("init_failed", type(exc).__name__, str(exc), isinstance(exc, FerkitError))))
        return
    worker.wanted = lambda: os.getppid() == parent
    events.put((wid, -1, ("ready",)))
    while True:
        try:
            task = inbox.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:
                os._exit(0)
            continue
        if task is None:
            return
        events.put((wid, task["index"], ("start",)))
        try:
            for event in worker.run(task):
                if not worker.wanted():
                    raise Abandoned
                events.put((wid, task["index"], event))
        except Abandoned:  # the job was killed: stop at once; a rerun goes on from the last committed part
            os._exit(0)


def _init_error(name: str, message: str, known: bool) -> Exception:
    import ferkit.errors as errors

    cls = getattr(errors, name, None)
    if known and isinstance(cls, type) and issubclass(cls, FerkitError):
        try:
            return cls(message)
        except TypeError:
            pass
    return FerkitError(f"a worker could not start: {name}: {message}")


class LocalPool:
    """`for index, event in pool.run(tasks)`: events of `job.Worker.run`, in the order they happen."""

    def __init__(self, settings: Settings, workers: int, threads: int):
        self.settings, self.workers, self.threads = settings, max(1, workers), max(1, threads)
        self.ctx = mp.get_context("spawn")
        self.events = self.ctx.Queue()
        self.procs: dict[int, mp.Process] = {}
        self.inbox: dict[int, object] = {}
        self.held: dict[int, deque] = {}  # tasks sent to each worker, oldest first
        self.started: dict[int, bool] = {}  # whether the oldest held task has begun
        self.ready: set[int] = set()
        self._next_id = 0

    def _spawn(self) -> int:
        wid, self._next_id = self._next_id, self._next_id + 1
        inbox = self.ctx.Queue()
        proc = self.ctx.Process(target=_worker_main, name=f"ferkit-worker-{wid}", daemon=True,
                                args=(wid, self.settings.to_json(), self.threads, inbox, self.events, os.getpid()))
        proc.start()
        self.procs[wid], self.inbox[wid], self.held[wid], self.started[wid] = proc, inbox, deque(), False
        return wid

    def _give(self, wid: int, todo: deque) -> None:
        while todo and len(self.held[wid]) < PREFETCH:
            task = todo.popleft()
            self.held[wid].append(task)
            self.inbox[wid].put(task)

    def run(self, tasks: list[dict]) -> Iterator[tuple[int, tuple]]:
        todo = deque(tasks)
        remaining = len(tasks)
        try:
            for _ in range(min(self.workers, max(1, len(tasks)))):
                self._spawn()
            while remaining:
                try:
                    wid, index, event = self.events.get(timeout=0.5)
                except queue.Empty:
                    for dead in [w for w, p in self.procs.items() if not p.is_alive()]:
                        for index, event in self._bury(dead, todo):
                            remaining -= 1
                            yield index, event
                    continue
                if wid not in self.procs:  # a late word from a worker already replaced
                    continue
                kind = event[0]
                if kind == "init_failed":
                    raise _init_error(*event[1:])
                if kind == "ready":
                    self.ready.add(wid)
                    self._give(wid, todo)
                elif kind == "start":
                    self.started[wid] = True
                else:
                    yield index, event
                    if kind == "done":
                        remaining -= 1
                        self.held[wid].popleft()
                        self.started[wid] = False
                        self._give(wid, todo)
        except BaseException:
            self.close(at_once=True)
            raise
        self.close()

    def _bury(self, wid: int, todo: deque) -> Iterator[tuple[int, tuple]]:
        """A worker died: fail the source it was on, hand back the one it had not begun, start another."""
        proc = self.procs.pop(wid)
        held, started = self.held.pop(wid), self.started.pop(wid)
        self.inbox.pop(wid).close()
        code = proc.exitcode
        why = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        if wid not in self.ready:
            raise FerkitError(f"a worker process died while loading the model ({why})")
        self.ready.discard(wid)
        if held and started:
            task = held.popleft()
            yield task["index"], ("crashed", f"the worker process died while analysing it ({why})")
        todo.extendleft(reversed(held))
        self._spawn()  # it takes work once it says it is ready

    def close(self, at_once: bool = False) -> None:
        """Stop the workers: each finishes and exits when told, or is terminated (`at_once`, or when slow)."""
        for wid, proc in self.procs.items():
            if proc.is_alive() and not at_once:
                try:
                    self.inbox[wid].put(None)
                except (OSError, ValueError):
                    pass
        for proc in self.procs.values():
            if at_once:
                proc.terminate()
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        self.procs.clear()
