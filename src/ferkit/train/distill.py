"""Knowledge distillation from an ensemble (`train --teacher`, repeatable).

A teacher is either a checkpoint of the run's own architecture and heads (a weights file, a training
checkpoint or a run folder), whose mean probabilities over face and mirror are its targets, or a
finished ONNX model (a shipped name such as `fer2013-7`, or a .onnx file with its card), run by the run
time with its card's test-time augmentation and without its prior correction, so any architecture can
learn from it (the fast tier learns the big model's 16-view probabilities this way). The teachers'
mean probabilities on every training face are computed once, cached in the run folder (recomputed when
the teacher files or the faces change), and blended into the training targets per head:
target = (1 - weight) * labels + weight * teachers.
A FER+ head is blended only on the faces that have FER+ votes, so what it learns still comes from
the crowd where the crowd spoke. With `--teacher-online` the ONNX teachers instead answer on every
training batch as the student sees it (`OnlineTeachers`), one view a face.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ferkit.errors import ConfigError, DataError
from ferkit.modelcard import INPUT_NAME, OUTPUT_NAME
from ferkit.preprocessing import MEAN, STD
from ferkit.train.run import Head, RunFolder, head_sizes, weights_file

ONNX_BATCH = 256  # faces a run-time call takes when an ONNX model teaches


def is_onnx_teacher(source: str | Path) -> bool:
    """A finished ONNX model: a .onnx path, or the name of a model shipped in the package."""
    from ferkit.runtime.model import MODEL_ALIASES, shipped_models

    p = Path(source)
    return p.suffix == ".onnx" or (not p.exists() and len(p.parts) == 1
                                   and (p.name in shipped_models() or p.name in MODEL_ALIASES))


def teacher_file(source: str | Path) -> Path:
    """The file a --teacher source names: its ONNX file, or its weights file (a run folder's best)."""
    if is_onnx_teacher(source):
        from ferkit.runtime.model import resolve_model_path

        p = Path(source)
        return p if p.suffix == ".onnx" else resolve_model_path(p)  # a path as given; a name -> the package's file
    return weights_file(source)


def teacher_probabilities(teachers: list[str], make_model, images: np.ndarray, heads: list[Head], device, autocast,
                          channels_last: bool, run: RunFolder) -> torch.Tensor:
    """Mean per-head probabilities (N, sum of the heads' sizes) of the teachers, face and mirror; cached in the run."""
    from ferkit.train.checkpoint import load_init_weights
    from ferkit.train.scoring import predict_logits

    sizes = head_sizes(heads)
    cache = run.teacher_cache
    key = json.dumps({"teachers": _fingerprint(teachers), "faces": hashlib.sha256(np.ascontiguousarray(images)).hexdigest()})
    if cache.exists():
        with safe_open(str(cache), framework="pt") as f:
            if (f.metadata() or {}).get("teachers") == key:
                probs = f.get_tensor("probs")
                if probs.shape == (len(images), sum(sizes)):
                    return probs
    total = torch.zeros(len(images), sum(sizes))
    for i, path in enumerate(teachers, 1):
        if is_onnx_teacher(path):
            total += onnx_probabilities(path, images, heads, f"teacher {i}/{len(teachers)}")
            continue
        model = make_model()
        load_init_weights(model, weights_file(path), what="--teacher")
        model = model.to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        print(f"teacher {i}/{len(teachers)}: {path}", file=sys.stderr, flush=True)
        with torch.no_grad():
            total += predict_logits(model, images, device, autocast, channels_last, tta_flip=True, heads=heads).exp()
    probs = total / len(teachers)
    run.create()
    save_file({"probs": probs.contiguous()}, str(cache), metadata={"teachers": key})
    return probs


def onnx_probabilities(source: str | Path, images: np.ndarray, heads: list[Head], label: str = "teacher") -> torch.Tensor:
    """A finished model's probabilities (N, C) on uint8 faces: its card's TTA, no prior correction."""
    from tqdm import tqdm

    model = onnx_teacher(source, heads)
    print(f"{label}: {source} (ONNX, {model.tta} TTA, {model.precision})", file=sys.stderr, flush=True)
    out = np.zeros((len(images), len(model.classes)), np.float32)
    for i in tqdm(range(0, len(images), ONNX_BATCH), desc=label,
                  file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 30):
        out[i:i + ONNX_BATCH] = model.predict_proba(images[i:i + ONNX_BATCH])
    return torch.from_numpy(out)


class OnlineTeachers:
    """ONNX teachers that answer on the training batch itself, as the student sees it (`--teacher-online`).

    Distillation by function matching: teacher and student see the same augmented (and mixed) view, so
    the student learns the teacher's function on the whole input distribution the augmentation spans,
    not its 16-view answer on the clean faces alone. One view a face; no prior correction.
    """

    def __init__(self, teachers: list[str], heads: list[Head]):
        if len(heads) != 1:
            raise ConfigError("--teacher-online: only runs with one head (not --aux-ferplus)")
        self.models = []
        for source in teachers:
            if not is_onnx_teacher(source):
                raise ConfigError(f"--teacher-online: {source} is not a finished ONNX model (a shipped name or a .onnx)")
            model = onnx_teacher(source, heads)
            self.models.append(model)
            print(f"online teacher: {source} ({model.precision}, one view a face)", file=sys.stderr, flush=True)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Mean teacher probabilities (N, C) for a batch of network inputs normalised as `ferkit.preprocessing` does."""
        net = x.detach().float().cpu().contiguous().numpy()
        total = None
        for m in self.models:  # one affine map from training's normalisation to the teacher's: exactly x * 1 + 0
            # for a teacher normalised as training is (a round trip through pixels moves inputs across int8 steps)
            scale, shift = STD / m.std, (MEAN - m.mean) / m.std
            p = m.session.run([OUTPUT_NAME], {INPUT_NAME: (net * scale + shift).astype(np.float32, copy=False)})[0]
            total = p if total is None else total + p
        return torch.from_numpy(total / len(self.models)).to(x.device)


def onnx_teacher(source: str | Path, heads: list[Head]):
    """The run time's model for an ONNX teacher, checked: a run of one head with the teacher's classes."""
    from ferkit.runtime.model import FacialExpressionModel

    model = FacialExpressionModel(teacher_file(source), prior_correction=False)
    if len(heads) != 1 or tuple(heads[0].classes) != tuple(model.classes):
        wanted = " + ".join(",".join(h.classes) for h in heads)
        raise DataError(f"--teacher {source}: its classes ({','.join(model.classes)}) are not the run's ({wanted})")
    return model


def blend_targets(targets: torch.Tensor, teacher: torch.Tensor, weight: float, sizes: list[int]) -> torch.Tensor:
    """(1 - weight) * targets + weight * teacher, head by head; rows with no target for a head keep none."""
    check_weight(weight)
    parts = []
    for y, t in zip(targets.split(sizes, dim=1), teacher.split(sizes, dim=1)):
        has = (y.sum(1, keepdim=True) > 0).float()
        parts.append(has * ((1 - weight) * y + weight * t))
    return torch.cat(parts, 1)


def check_weight(weight: float) -> None:
    if not 0.0 < weight <= 1.0:
        raise ConfigError(f"--distill-weight {weight}: must be in (0, 1]")


def _fingerprint(teachers: list[str]) -> list:
    """The teacher files (path, size, mtime): a changed list or a retrained teacher is recomputed."""
    files = []
    for t in teachers:
        p = teacher_file(t)
        st = p.stat() if p.exists() else None
        files.append([str(p.resolve()), st.st_size if st else -1, st.st_mtime_ns if st else -1])
    return files
