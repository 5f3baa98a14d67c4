"""Files in and out: one check that an input is a regular file, one atomic writer, one checked image writer,
one cached file hash.

`input_file` stats an input before it is opened, so a FIFO or a device (which would block a reader
forever or never end) is refused at once with one line naming it.

`atomic_write_*` write to a temporary file in the same folder, fsync it, and rename it over the target,
so a reader (or a rerun after a kill) sees the old file or the new one, never a torn one. Every failure
(read-only folder, full disk, ...) becomes one `OutputError` naming the file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import secrets
import stat
from pathlib import Path

import numpy as np

from ferkit.errors import OutputError


def sha256(path: str | Path) -> str:
    """A file's sha256, remembered per (path, size, mtime): a model or data file read many times is hashed once."""
    path = Path(path)
    st = path.stat()
    return _sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def file_kind(mode: int) -> str:
    """'a FIFO', 'a socket', ... for a stat mode that is not a regular file or folder."""
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "a special file"


def input_file(path: str | Path, what: str, error: type[Exception], allow_empty: bool = False) -> os.stat_result:
    """Stat an input before opening it: `error` (one line naming the file) when it is missing, a folder,
    not a regular file, unreadable, or empty (unless `allow_empty`)."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({_reason(exc)})") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{path}: is a directory, not {what}")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path}: not a regular file ({file_kind(st.st_mode)}), so not {what}")
    if not os.access(path, os.R_OK):
        raise error(f"{path}: cannot read (permission denied)")
    if st.st_size == 0 and not allow_empty:
        raise error(f"{path}: empty file (0 bytes)")
    return st


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what a plainly created file gets here (read once, at import, in the main thread)


def temp_beside(path: Path) -> tuple[int, str]:
    """A new file next to `path`, created with the usual permissions (the umask applies, unlike mkstemp's
    0600: a model or a results file written atomically is as readable as one written plainly)."""
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def atomic_write_bytes(path: str | Path, data: bytes, sync: bool = True) -> Path:
    """Write `data` to `path` atomically (temp file + fsync + rename); OutputError names the file on failure.

    `sync=False` skips the fsync: for the many files of a tree that is itself renamed into place when whole."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_beside(path)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def ensure_dir(path: str | Path) -> Path:
    """Create an output folder (and parents); OutputError names it when that is impossible or not writable."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"cannot use {path} as an output folder: a file of that name exists") from None
    except OSError as exc:
        raise OutputError(f"cannot create output folder {path}: {_reason(exc)}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to output folder {path}: permission denied")
    return path


def write_image(path: str | Path, image: np.ndarray, params: list[int] | None = None, sync: bool = True) -> Path:
    """Encode `image` by the file's extension and write it atomically; OutputError when encoding or writing fails.

    (`cv2.imwrite` returns False on a full disk or an unknown extension and writes a 0-byte file; this never does.)
    """
    import cv2

    path = Path(path)
    ext = path.suffix or ".png"
    try:
        ok, buf = cv2.imencode(ext, image, params or [])
    except cv2.error as exc:
        raise OutputError(f"cannot encode {path} as {ext}: {str(exc).strip().splitlines()[-1]}") from None
    if not ok:
        raise OutputError(f"cannot encode {path} as {ext}")
    return atomic_write_bytes(path, buf.tobytes(), sync=sync)
