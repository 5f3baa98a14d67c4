"""fp32 or int8: which file of a model the run time loads (numpy + onnxruntime only).

A model card may list an int8 version of its ONNX file (`card.int8`, written by `ferkit quantize`, which
checked it against fp32). `precision="auto"` (the default) loads it only where it is faster on the
machine running it: the first time a model is used, both files are timed on the same batch of random
faces, alternately, until the slower has run for about `TIME_BUDGET_S`; int8 is picked when its median
run takes at most `MARGIN` of fp32's (it costs a little accuracy, so a tie goes to fp32). Both are timed
with the run time's default threads whatever threads a session is given, so every command on one machine
(`ferkit predict` with two threads, each one-thread worker of `ferkit analyze`) loads the same file and
gives the same probabilities. The verdict is cached per (both files' sha256, CPU model and vector
extensions, onnxruntime version, threads) in `$FERKIT_CACHE/precision.json` (default `~/.cache/ferkit`),
so later runs decide at once. An int8 file with full-range weights (made without `reduce_range`) is never
picked by auto on an x86 CPU without VNNI, where onnxruntime's uint8 x int8 kernel saturates and the file
no longer gives the answers it was checked on.

`$FERKIT_PRECISION` (auto | fp32 | int8) sets the default: `int8` then means int8 wherever the model has
an int8 version (fp32 elsewhere), whereas asking a model for `precision="int8"` directly requires one.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ferkit.errors import ConfigError, ModelError
from ferkit.fileio import atomic_write_json, sha256
from ferkit.runtime.session import create_session, default_threads

PRECISIONS = ("auto", "fp32", "int8")
INT8_SUFFIX = ".int8.onnx"
TIME_BUDGET_S = 0.3  # timing per file on first use
TIME_BATCH = 16  # views a timed run takes: one face under multi TTA, or a few live faces
MARGIN = 0.9  # int8 is picked when its median run takes at most this fraction of fp32's
CACHE_NAME = "precision.json"


def int8_name(fp32_path: str | Path) -> str:
    """`fer2013-7.onnx` -> `fer2013-7.int8.onnx`: the int8 file `ferkit quantize` writes beside a model."""
    return Path(fp32_path).stem + INT8_SUFFIX


def requested(precision: str | None) -> tuple[str, bool]:
    """(the precision to use, whether it was asked for explicitly): `precision`, else $FERKIT_PRECISION,
    else auto. A bad name is a ModelError (argument) or ConfigError (environment)."""
    if precision is not None:
        if precision not in PRECISIONS:
            raise ModelError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
        return precision, True
    env = os.environ.get("FERKIT_PRECISION", "").strip().lower()
    if env and env not in PRECISIONS:
        raise ConfigError(f"FERKIT_PRECISION={env!r}: choose one of {', '.join(PRECISIONS)}")
    return env or "auto", False


def int8_file(fp32_path: Path, card) -> Path | None:
    """The int8 file the card lists, beside the fp32 file, if it is there."""
    name = (card.int8 or {}).get("file")
    if not name:
        return None
    path = fp32_path.with_name(Path(name).name)
    return path if path.is_file() else None


def choose_file(fp32_path: Path, card, precision: str | None) -> tuple[Path, str]:
    """(the ONNX file to load, "fp32" or "int8") for a model, its card and the requested precision."""
    want, explicit = requested(precision)
    int8 = int8_file(fp32_path, card)
    if want == "fp32" or (int8 is None and not (want == "int8" and explicit)):
        return fp32_path, "fp32"
    if int8 is None:
        listed = (card.int8 or {}).get("file")
        why = f"its card lists {listed} but that file is missing" if listed else \
            "its card lists none (make one with ferkit quantize)"
        raise ModelError(f"{fp32_path}: no int8 version ({why})")
    shas = sha256(fp32_path), sha256(int8)
    record = card.int8
    if record.get("sha256") not in (None, shas[1]) or record.get("fp32_sha256") not in (None, shas[0]):
        which = int8.name if record.get("sha256") not in (None, shas[1]) else fp32_path.name
        if explicit:
            raise ModelError(f"{int8}: not the int8 file its card checked ({which} has changed since; run "
                             f"ferkit quantize again)")
        return fp32_path, "fp32"
    if want == "int8":
        return int8, "int8"
    if saturates_here(record):
        return fp32_path, "fp32"
    return (int8, "int8") if faster(fp32_path, int8, default_threads(), shas) == "int8" else (fp32_path, "fp32")


# ---------------------------------------------------------------------------- the measured verdict
def cache_path() -> Path:
    root = os.environ.get("FERKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "ferkit")
    return Path(root) / CACHE_NAME


@functools.lru_cache(maxsize=None)
def _cpuinfo(*keys: str) -> str | None:
    """The first /proc/cpuinfo value under a line starting with one of `keys` (Linux), else None; read once
    per key set, since every model load asks and the CPU does not change."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(keys) and ":" in line:
                return line.split(":", 1)[1].strip()
    return None


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform module knows."""
    return _cpuinfo("model name", "hardware") or platform.processor() or platform.machine() or "unknown"


ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")


def cpu_isa() -> str:
    """The vector extensions that decide which int8/bf16 kernels onnxruntime runs (Linux: /proc/cpuinfo flags),
    e.g. "avx2" or "avx2 avx512f avx512_vnni avx512_bf16"; "" where unknown. Model names alone do not tell
    CPUs apart ("AMD EPYC" covers Zen 3 without VNNI and Zen 4 with it)."""
    have = set((_cpuinfo("flags") or "").split())
    return " ".join(f for f in ISA_FLAGS if f in have)


def saturates_here(record: dict) -> bool:
    """Whether an int8 file with this card record would lose accuracy on this CPU: full-range int8 weights (no
    `reduce_range`) on x86 without VNNI, where VPMADDUBSW's 16-bit pair sums saturate."""
    if (record.get("calibration") or {}).get("reduce_range"):
        return False
    isa = set(cpu_isa().split())
    return "avx2" in isa and not isa & {"avx512_vnni", "avx_vnni"}


def verdict_key(shas: tuple[str, str], threads: int) -> str:
    """What a verdict depends on: both files, the CPU, onnxruntime, the threads."""
    return "|".join((shas[0][:16], shas[1][:16], cpu_model(), cpu_isa(), f"onnxruntime {ort.__version__}",
                     f"threads {threads}"))


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@contextlib.contextmanager
def _locked(path: Path):
    """Hold a lock beside the cache while timing, so processes starting together time one at a time
    (the second then reads the first's verdict) instead of disturbing each other's timings."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; at worst two processes time at once
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path.with_suffix(".lock"), "a")
    except OSError:
        yield
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def faster(fp32: Path, int8: Path, threads: int, shas: tuple[str, str] | None = None) -> str:
    """"int8" or "fp32": the cached verdict for this machine, measured (and cached) when there is none.
    A file onnxruntime cannot time is "fp32", not cached."""
    shas = shas or (sha256(fp32), sha256(int8))
    entry = cached_verdict(verdict_key(shas, threads), lambda e: e.get("precision") in ("fp32", "int8"),
                           lambda: measure(fp32, int8, threads))
    return entry["precision"] if entry else "fp32"


def measure(fp32: Path, int8: Path, threads: int, budget_s: float = TIME_BUDGET_S, batch: int = TIME_BATCH,
            size: int = 48) -> dict:
    """Time both files on the same random faces, alternating runs, until the slower has had `budget_s`
    (and each at least 3 runs): a busy machine slows both alike, so the medians stay comparable."""
    med, runs = time_sessions({"fp32": create_session(fp32, threads), "int8": create_session(int8, threads)},
                              batch, size, budget_s)
    return {"precision": "int8" if med["int8"] <= MARGIN * med["fp32"] else "fp32",
            "ms_per_run": {k: round(v * 1000, 3) for k, v in med.items()}, "batch": batch, "threads": threads,
            "runs": runs, "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}


def time_sessions(sessions: dict, batch: int, size: int = 48, budget_s: float = TIME_BUDGET_S) -> tuple[dict, dict]:
    """({name: median seconds a run}, {name: runs}) of sessions timed alternately on the same random faces
    until the slowest has had `budget_s` (and each at least 3 runs); first runs allocate and are not timed."""
    from ferkit.modelcard import INPUT_NAME, OUTPUT_NAME

    x = np.random.default_rng(0).standard_normal((batch, 1, size, size)).astype(np.float32)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        s.run([OUTPUT_NAME], {INPUT_NAME: x})
    while max(sum(t) for t in times.values()) < budget_s or min(len(t) for t in times.values()) < 3:
        for name, s in sessions.items():
            t0 = time.perf_counter()
            s.run([OUTPUT_NAME], {INPUT_NAME: x})
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, {k: len(v) for k, v in times.items()}


def cached_verdict(key: str, valid, measure_it) -> dict | None:
    """The cached entry under `key` when `valid(entry)`, else `measure_it()` (cached, under the lock, so
    processes starting together time one at a time); None when measuring raised (not cached)."""
    path = cache_path()
    entry = _read_cache(path).get(key)
    if isinstance(entry, dict) and valid(entry):
        return entry
    with _locked(path):
        entry = _read_cache(path).get(key)  # another process may have measured meanwhile
        if isinstance(entry, dict) and valid(entry):
            return entry
        try:
            entry = measure_it()
        except Exception:  # onnxruntime raises its own exception types
            return None
        with contextlib.suppress(OSError):  # a cache that cannot be written is not an error: measure again
            atomic_write_json(path, {**_read_cache(path), key: entry})
    return entry
