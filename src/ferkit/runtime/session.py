"""onnxruntime sessions with threading chosen for a small CPU (numpy + onnxruntime only)."""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort

ort.set_default_logger_severity(3)  # warnings about old exporters are noise to a user


def default_threads() -> int:
    """Intra-op threads: $FERKIT_THREADS, else the cores this process may use (at most 4).

    Our nets are small (a 48x48 classifier, a MobileNetV2 detector): beyond a few threads the
    synchronisation costs more than it saves, and a web server runs several requests side by side.
    """
    env = os.environ.get("FERKIT_THREADS")
    if env:
        return max(1, int(env))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def create_session(model: str | Path | bytes, threads: int | None = None) -> ort.InferenceSession:
    """A CPU inference session (or the first accelerated provider onnxruntime offers)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    # Idle worker threads sleep instead of spinning: on a shared 2-core machine (a training run, a web
    # server's other requests) spinning threads steal the cores the work needs (measured: CenterFace
    # 110 -> 66 ms per 640x480 frame with 2 threads on a busy machine). $FERKIT_SPIN=1 turns it back on.
    opts.add_session_config_entry("session.intra_op.allow_spinning", os.environ.get("FERKIT_SPIN", "0"))
    providers = [p for p in ort.get_available_providers() if p != "TensorrtExecutionProvider"]
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, opts, providers=providers)
