"""The server's work folder: one per server process, `ferkit-serve-<pid>-<random>` in the temp directory.

It holds uploads being received and video jobs. A clean shutdown removes it; a server that was killed
(SIGKILL, power loss) cannot, so every server sweeps, at start, the folders of servers that are no
longer running (their owner process is gone, or its pid now belongs to a process started later).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from ferkit.fileio import atomic_write_json

PREFIX = "ferkit-serve-"
OWNER = "owner.json"
_NAME = re.compile(rf"^{re.escape(PREFIX)}(\d+)-[A-Za-z0-9_]+$")
log = logging.getLogger("ferkit.web")


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux /proc), or None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])  # field 22, counted after "pid (comm)"
    except (IndexError, ValueError):
        return None


def owner_alive(pid: int, started: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    if started is not None:
        now = process_start(pid)
        if now is not None and now != started:  # the pid was reused by a later process
            return False
    return True


def _owner(folder: Path) -> tuple[int, int | None] | None:
    m = _NAME.match(folder.name)
    if m is None:
        return None
    pid, started = int(m.group(1)), None
    try:
        info = json.loads((folder / OWNER).read_text())
        pid, started = int(info["pid"]), info.get("started")
    except (OSError, ValueError, KeyError, TypeError):
        pass  # being created right now, or written by a server killed at once: the name still tells the pid
    return pid, started


def sweep_stale(root: Path) -> list[Path]:
    """Remove the work folders in `root` whose server is no longer running. Returns them."""
    removed = []
    try:
        candidates = [p for p in Path(root).glob(f"{PREFIX}*") if p.is_dir() and not p.is_symlink()]
    except OSError:
        return removed
    for folder in candidates:
        owner = _owner(folder)
        if owner is None or owner[0] == os.getpid() or owner_alive(*owner):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            removed.append(folder)
    if removed:
        log.info("removed %d work folder(s) left by servers that are no longer running", len(removed))
    return removed


def create_work_dir(root: str | Path | None = None) -> Path:
    """A fresh work folder for this process in `root` (default: the temp directory), after sweeping stale ones."""
    root = Path(root or tempfile.gettempdir())
    sweep_stale(root)
    folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=root))
    atomic_write_json(folder / OWNER, {"pid": os.getpid(), "started": process_start(os.getpid())})
    return folder
