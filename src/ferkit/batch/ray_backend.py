"""The same job on a Ray cluster: one actor per worker holds the model; sources are handed out one at a
time to whichever actor is free, so they spread over every node.

Each actor runs `job.Worker.run` and streams its events back (a Ray generator); it writes the part and
status files itself, so RESULTS must be a folder every node sees at the same path (NFS, a shared
volume), like the SOURCES. ferkit must be installed on every node.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
from collections.abc import Iterator

from ferkit.batch.settings import Settings
from ferkit.errors import FerkitError, UsageError, require_extra


def check_reachable(address: str | None, what: str, timeout: float = 10.0) -> None:
    """Fail at once, naming the address, when nothing listens there (Ray itself would retry for minutes)."""
    if not address or address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"{what} {address}: expected host:port or ray://host:port")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise FerkitError(f"{what} {address}: no Ray cluster answers there ({exc.strerror or exc})") from None


class _Analyser:
    """A Ray actor (made remote in `RayPool`): a `job.Worker` built once, then source after source."""

    def __init__(self, settings_json: dict, threads: int):
        self.error = None
        try:
            from ferkit.batch.job import Worker

            self.worker = Worker(Settings.from_json(settings_json), threads=threads)
        except Exception as exc:  # noqa: BLE001 -- sent back by ready(), raised by the driver
            self.error = (type(exc).__name__, str(exc), isinstance(exc, FerkitError))

    def ready(self):
        return self.error or ("ready", os.getpid())

    def run(self, task: dict):
        yield from self.worker.run(task)


class RayPool:
    """`for index, event in pool.run(tasks)`, like `local.LocalPool`, on Ray actors."""

    def __init__(self, settings: Settings, workers: int | None, address: str | None):
        require_extra("ray", "ferkit analyze --ray", "ray")
        import ray

        self.ray, self.settings = ray, settings
        self.owns_ray = not ray.is_initialized()
        if self.owns_ray:
            check_reachable(address, "--ray-address")
            check_reachable(os.environ.get("RAY_ADDRESS") if not address else None, "RAY_ADDRESS")
            try:
                ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                         logging_level="ERROR", configure_logging=True)
            except ConnectionError as exc:
                raise FerkitError(f"{address or 'ray'}: cannot connect to a Ray cluster there ({exc})") from None
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = max(1, min(workers or cpus, cpus))
        self.actor_class = ray.remote(num_cpus=1)(_Analyser)

    def _actor(self):
        actor = self.actor_class.remote(self.settings.to_json(), 1)
        answer = self.ray.get(actor.ready.remote())
        if answer[0] != "ready":
            from ferkit.batch.local import _init_error

            raise _init_error(*answer)
        return actor

    def _drive(self, todo: queue.Queue, events: queue.Queue) -> None:
        """One driver thread per actor: take a source, relay the actor's events, repeat."""
        ray = self.ray
        try:
            actor = self._actor()
            while True:
                try:
                    task = todo.get_nowait()
                except queue.Empty:
                    break
                try:
                    for ref in actor.run.options(num_returns="streaming").remote(task):
                        events.put((task["index"], ray.get(ref)))
                except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
                    why = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
                    events.put((task["index"], ("crashed", f"the Ray worker died while analysing it ({why})")))
                    actor = self._actor()
        except BaseException as exc:  # noqa: BLE001 -- handed to the main thread, which raises it
            events.put((-1, ("fatal", exc)))
        finally:
            events.put((-1, ("idle",)))

    def run(self, tasks: list[dict]) -> Iterator[tuple[int, tuple]]:
        todo: queue.Queue = queue.Queue()
        for task in tasks:
            todo.put(task)
        events: queue.Queue = queue.Queue()
        n = min(self.workers, len(tasks))
        threads = [threading.Thread(target=self._drive, args=(todo, events), daemon=True) for _ in range(n)]
        for t in threads:
            t.start()
        running = n
        try:
            while running:
                index, event = events.get()
                if event[0] == "idle":
                    running -= 1
                elif event[0] == "fatal":
                    raise event[1]
                else:
                    yield index, event
        finally:
            if self.owns_ray:
                self.ray.shutdown()
