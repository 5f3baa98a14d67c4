"""A real `ferkit serve` in a subprocess on 127.0.0.1 and a free port, for the web tests and the load bench."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

FERKIT = Path(sys.executable).with_name("ferkit")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def web_deps_or_skip() -> None:
    import importlib.util

    import pytest

    missing = [m for m in ("fastapi", "uvicorn", "multipart", "httpx") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"web dependencies missing ({', '.join(missing)}): pip install -e '.[serve,test]'")


class Server:
    """`ferkit serve --port P …` until stop(); its log goes to a file (a full pipe would block it)."""

    def __init__(self, *args: str, tmp: Path | None = None, env: dict | None = None, timeout: float = 90.0,
                 preexec_fn=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = Path(tmp or tempfile.mkdtemp(prefix="ferkit-web-test-"))
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.log_path = self.tmp / f"server-{self.port}.log"
        self.work_tmp = self.tmp / "server-tmp"  # the server's TMPDIR: its job folders live here
        self.work_tmp.mkdir(exist_ok=True)
        cmd = [str(FERKIT)] if FERKIT.exists() else [sys.executable, "-m", "ferkit.apps.cli"]
        cmd += ["serve", "--port", str(self.port), "--log-level", "warning", *args]
        full_env = {**os.environ, "TMPDIR": str(self.work_tmp), "PYTHONUNBUFFERED": "1", **(env or {})}
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=full_env,
                                     preexec_fn=preexec_fn)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ferkit serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/api/v1/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"ferkit serve did not answer within {timeout:.0f} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text()
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_kb(self) -> int:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def work_dirs(self) -> list[Path]:
        """The server's work folders in its temp directory (one while it runs)."""
        return sorted(p for p in self.work_tmp.glob("ferkit-serve-*") if p.is_dir())

    def kill(self) -> None:
        """SIGKILL: no clean-up runs (as when the machine or the OOM killer stops it)."""
        self.proc.kill()
        self.proc.wait(10)
        self._log.close()

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown: the app's lifespan cleans up
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
