"""A training run folder as a `ferkit.evaluation.Predictor`: its net (one head of a joint run) in torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ferkit.errors import RunError
from ferkit.evaluation import Predictor
from ferkit.preprocessing import normalize
from ferkit.train.run import RunFolder


def run_predictor(run: str | Path, threads: int | None = None, head: str | None = None) -> Predictor:
    """Score a run's best checkpoint with torch; `head` picks one head of a joint run (default the first)."""
    folder = RunFolder(run).require()
    if threads:
        torch.set_num_threads(threads)
    net, spec = folder.load_model(head=head)
    net = net.float().to(memory_format=torch.contiguous_format)
    classes = tuple(spec.get("classes") or ())
    if len(classes) != spec["num_classes"]:
        raise RunError(f"{folder.architecture}: lists {len(classes)} classes for {spec['num_classes']} outputs")

    @torch.no_grad()
    def predict(faces: np.ndarray) -> np.ndarray:
        return net(torch.from_numpy(normalize(faces))).float().softmax(1).numpy()

    name = f"{folder.path.name} ({head} head)" if head else folder.path.name
    return Predictor(predict, classes, "torch", name, spec["name"], "none", folder.path)
