"""What the server benches share: a real `ferkit serve` on 127.0.0.1 and a free port, its memory, test photos."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid: int) -> int:
    """Resident memory of a process in KiB (psutil if installed, else /proc); 0 if unknown."""
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss // 1024
    except ImportError:
        pass
    except Exception:  # the process has gone
        return 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def start_server(extra: list[str], log_prefix: str = "ferkit-bench-") -> tuple[subprocess.Popen, str, Path]:
    """`ferkit serve` on 127.0.0.1 and a free port, its log in a temporary file; waits until it answers."""
    port = free_port()
    exe = Path(sys.executable).with_name("ferkit")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ferkit.apps.cli"]
    log = Path(tempfile.mkstemp(prefix=log_prefix, suffix=".log")[1])
    with open(log, "w") as out:  # the child keeps its own copy of the file
        proc = subprocess.Popen([*cmd, "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                                 *extra], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 120
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"ferkit serve exited:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/api/v1/healthz", timeout=2):
                return proc, url, log
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("ferkit serve did not start within 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def astronaut_bgr():
    import cv2
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def jpeg(bgr, quality: int = 90) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return buf.tobytes()
