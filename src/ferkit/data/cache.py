"""A small on-disk cache of parsed arrays, keyed by the source's path and invalidated when it changes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np


def cache_dir() -> Path:
    root = os.environ.get("FERKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "ferkit"
    )
    return Path(root)


def fingerprint(*paths: Path) -> str:
    """Size and modification time of each path: cheap, and changes whenever a file is rewritten."""
    parts = []
    for p in paths:
        st = os.stat(p)
        parts.append(f"{os.path.abspath(p)}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def _entry(kind: str, key: str) -> Path:
    digest = hashlib.sha1(f"{kind}|{key}".encode()).hexdigest()[:20]
    return cache_dir() / f"{kind}-{digest}.npz"


def load(kind: str, key: str) -> dict[str, np.ndarray] | None:
    """Arrays stored under (kind, key), or None when absent or unreadable."""
    path = _entry(kind, key)
    if os.environ.get("FERKIT_NO_CACHE") or not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError):
        return None


def store(kind: str, key: str, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically (temp file then rename); a cache that cannot be written is not an error."""
    if os.environ.get("FERKIT_NO_CACHE"):
        return
    path = _entry(kind, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError:
        pass


def meta_array(obj: object) -> np.ndarray:
    """JSON metadata as a plain unicode array, so caches stay pickle-free."""
    return np.array(json.dumps(obj))


def meta_value(arr: np.ndarray) -> object:
    return json.loads(str(arr))
