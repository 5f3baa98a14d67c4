"""A small on-disk cache of parsed arrays, keyed by the source's path and invalidated when it changes.

Entries are plain `.npz` files of numeric and unicode arrays: written without pickle, read with
`allow_pickle=False`, renamed into place only once complete. An entry that is missing, unreadable or
not what the reader expects is ignored (the source is parsed again); a cache that cannot be written is
not an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import zipfile
import zlib
from pathlib import Path

import numpy as np

# Part of every entry's name: bump it when a reader's output for the same file changes.
FORMAT = 2


def cache_dir() -> Path:
    root = os.environ.get("FERKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "ferkit"
    )
    return Path(root)


def stat_key(path: Path, st: os.stat_result) -> str:
    """One path's part of a fingerprint: size and modification time change whenever a file is rewritten."""
    return f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}"


def fingerprint(*paths: Path) -> str:
    return "|".join(stat_key(p, os.stat(p)) for p in paths)


def _entry(kind: str, key: str) -> Path:
    digest = hashlib.sha1(f"{FORMAT}|{kind}|{key}".encode()).hexdigest()[:20]
    return cache_dir() / f"{kind}-{digest}.npz"


def load(kind: str, key: str, names: tuple[str, ...] = ()) -> dict[str, np.ndarray] | None:
    """Arrays stored under (kind, key), or None when absent, unreadable, or lacking one of `names`,
    or when the arrays named in `names` (other than 0-d ones) differ in length."""
    path = _entry(kind, key)
    if os.environ.get("FERKIT_NO_CACHE") or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error):
        return None
    if any(n not in arrays for n in names):
        return None
    lengths = {len(arrays[n]) for n in names if arrays[n].ndim > 0}
    return arrays if len(lengths) <= 1 else None


def store(kind: str, key: str, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically (a temporary file, synced, then renamed); a cache that cannot be written is not an error."""
    if os.environ.get("FERKIT_NO_CACHE"):
        return
    for name, arr in arrays.items():
        if arr.dtype.hasobject:  # would need pickle to store: a bug in the reader, not the user's doing
            raise TypeError(f"cache array {name!r} has dtype object")
    path = _entry(kind, key)
    tmp = path.parent / f".{path.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def meta_array(obj: object) -> np.ndarray:
    """JSON metadata as a plain unicode array, so caches stay pickle-free."""
    return np.array(json.dumps(obj))


def meta_value(arr: np.ndarray) -> object:
    return json.loads(str(arr))
