"""One face at a time: how many threads run a small call fastest, measured once per machine (numpy +
onnxruntime only).

A call of a few views (a live face and its mirror, one face of a photo with one view) is over in a
fraction of a millisecond for a small net, and then waking a second thread that sleeps between calls
(ferkit's sessions do not spin: see `ferkit.runtime.session`) can cost more than the thread saves: on 2
cores, `fer2013-7-fast` int8 ran a one-face call in 0.26 ms with one thread and 0.29 ms with two. The
first time a model is loaded with more than one thread, runs of the views one face has under the model's
TTA (one, or a face and its mirror; at most `SMALL_VIEWS`) are timed with one thread and with the model's
threads, alternately, for `BUDGET_S`; where one thread is no slower, the
model keeps a second, one-thread session for calls of at most `SMALL_VIEWS` views. The verdict is
cached with the precision verdicts (`ferkit.runtime.precision`), so later runs decide at once.
"""

from __future__ import annotations

import time
from pathlib import Path

from ferkit.fileio import sha256
from ferkit.runtime.precision import cached_verdict, cpu_isa, cpu_model, time_sessions

BUDGET_S = 0.5  # timing on first use: small runs are noisy, so longer than the precision's
SMALL_VIEWS = 2  # views a call may have to count as small: one face, with its mirror under flip TTA
MARGIN = 1.0  # one thread where its median small run is no slower than the default's (a tie costs no accuracy)


def one_thread_faster(path: Path, threads: int, size: int = 48, views: int = SMALL_VIEWS) -> bool:
    """Whether one thread runs a call of `views` views (a face under the model's TTA, at most SMALL_VIEWS) of
    this ONNX file faster than `threads` threads, here."""
    if threads <= 1:
        return False
    import onnxruntime as ort

    views = max(1, min(int(views), SMALL_VIEWS))
    key = "|".join(("small calls", sha256(Path(path))[:16], cpu_model(), cpu_isa(),
                    f"onnxruntime {ort.__version__}", f"threads {threads}", f"views {views}"))
    entry = cached_verdict(key, lambda e: isinstance(e.get("one_thread"), bool),
                           lambda: _measure(path, threads, size, views))
    return bool(entry and entry["one_thread"])


def _measure(path: Path, threads: int, size: int, views: int) -> dict:
    from ferkit.runtime.session import create_session

    med, runs = time_sessions({"1": create_session(path, 1), str(threads): create_session(path, threads)},
                              views, size, BUDGET_S)
    return {"one_thread": med["1"] <= MARGIN * med[str(threads)], "views": views,
            "ms_per_run": {k: round(v * 1000, 3) for k, v in med.items()}, "runs": runs,
            "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
