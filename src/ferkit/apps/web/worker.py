"""A video job's worker process, both ends: `run_worker()` in the server, `main()` in the child.

The child (`python -m ferkit.apps.web.worker`) reads one job as JSON on stdin ({analyzer, source, out,
max_frames, max_pixels}) and writes JSON lines on stdout: {"progress": [done, total]} per frame, then
{"done": report} or {"failed": message}. Only JSON crosses the pipe: the child decodes an untrusted
upload, so what it sends is parsed as plain data and checked, never unpickled. Anything else the
libraries print goes to stderr (the server's log).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

MAX_LINE = 1 << 20
_REPORT_INTS = ("frames", "analysed", "expected_frames", "faces", "tracks")


# -- the server's side ----------------------------------------------------------------------------------
def run_worker(spec: dict, on_progress: Callable[[int, int], None], cancelled: Callable[[], bool],
               name: str = "ferkit-video") -> tuple[dict | None, int | None]:
    """Run one job in a worker process. Returns (message, exit code): message is {"done": report},
    {"failed": text} or {"cancelled": True}; None when the process died without a word."""
    proc = subprocess.Popen([sys.executable, "-m", "ferkit.apps.web.worker"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=None)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True, name=name)
    reader.start()
    result = None
    try:
        try:
            proc.stdin.write(json.dumps(spec).encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass  # it died at once: told below
        while result is None:
            if cancelled():
                proc.terminate()
                result = {"cancelled": True}
                break
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:  # EOF: the process has gone
                break
            msg = parse_message(line)
            if "progress" in msg:
                on_progress(*msg["progress"])
            else:
                result = msg
    finally:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
        proc.stdout.close()
    return result, proc.returncode


def _read_lines(stream, out: queue.Queue) -> None:
    """Lines of the worker's channel (at most MAX_LINE bytes each) into `out`, then None at EOF."""
    try:
        while line := stream.readline(MAX_LINE):
            out.put(line)
    except (OSError, ValueError):
        pass
    out.put(None)


def parse_message(line: bytes) -> dict:
    """One message of the worker, checked: {"progress": (done, total)}, {"done": report} or {"failed": text}."""
    try:
        msg = json.loads(line)
        if "progress" in msg:
            done, total = msg["progress"]
            return {"progress": (int(done), int(total))}
        if "done" in msg:
            r = msg["done"]
            report = {k: int(r[k]) for k in _REPORT_INTS}
            report.update(fps=float(r["fps"]), seconds=float(r["seconds"]), warnings=[str(w) for w in r["warnings"]])
            return {"done": report}
        return {"failed": str(msg["failed"])[:2000]}
    except (ValueError, TypeError, KeyError, AttributeError):
        return {"failed": "the worker process sent an unreadable answer"}


def exit_description(code: int | None) -> str:
    return f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"


# -- the child's side -------------------------------------------------------------------------------------
def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C on the server stops jobs through the server
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints cannot corrupt the channel

    def emit(obj) -> None:
        channel.write(json.dumps(obj) + "\n")
        channel.flush()

    try:
        job = json.loads(sys.stdin.read())
        from ferkit.errors import FerkitError
        from ferkit.runtime.pipeline import Analyzer
        from ferkit.runtime.video import process_video

        try:
            report = process_video(job["source"], job["out"], analyzer=Analyzer(**job["analyzer"]),
                                   max_frames=job["max_frames"], max_pixels=job["max_pixels"],
                                   progress=lambda done, total: emit({"progress": [done, total]}))
            emit({"done": report.to_dict()})
        except FerkitError as exc:  # the file's fault, said plainly
            emit({"failed": str(exc)})
        except Exception as exc:  # noqa: BLE001 -- shown as the job's error, not the server's
            emit({"failed": f"processing failed ({type(exc).__name__}: {exc})"})
    except BrokenPipeError:  # the server has gone
        return 1
    finally:
        try:
            channel.close()
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
