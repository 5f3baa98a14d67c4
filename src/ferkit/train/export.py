"""Export a trained model to ONNX (softmax included) with its model card, and check the two agree."""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ferkit.modelcard import INPUT_NAME, OUTPUT_NAME, ModelCard
from ferkit.models import load_architecture
from ferkit.preprocessing import INPUT_SIZE
from ferkit.train.checkpoint import load_weights


class WithSoftmax(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).softmax(dim=1)


def load_run_model(run: str | Path, weights: str = "best.safetensors") -> tuple[nn.Module, dict]:
    """Rebuild a run's model from model.json and load its weights; returns (model in eval mode, spec)."""
    run = Path(run)
    model, spec = load_architecture(run / "model.json")
    load_weights(model, run / weights)
    return model.eval(), spec


def export_onnx(model: nn.Module, path: str | Path, opset: int = 17) -> Path:
    path = Path(path)
    wrapped = WithSoftmax(model.float().eval().to(memory_format=torch.contiguous_format))
    dummy = torch.zeros(2, 1, INPUT_SIZE, INPUT_SIZE)
    torch.onnx.export(
        wrapped, (dummy,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=opset, dynamo=False,
    )
    return path


def max_disagreement(model: nn.Module, onnx_path: str | Path, inputs: np.ndarray) -> tuple[float, int]:
    """(largest |p_torch - p_onnx|, number of argmax disagreements) on normalised inputs (N, 1, 48, 48)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        p_torch = model.float().eval()(torch.from_numpy(inputs)).softmax(1).numpy()
    p_onnx = sess.run([OUTPUT_NAME], {INPUT_NAME: inputs})[0]
    return float(np.abs(p_torch - p_onnx).max()), int((p_torch.argmax(1) != p_onnx.argmax(1)).sum())


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def make_card(name: str, spec: dict, tta: str, metrics: dict, training: dict, notes: str = "") -> ModelCard:
    return ModelCard(name=name, classes=list(spec["classes"]), architecture=spec["name"], tta=tta,
                     metrics=metrics, training=training, notes=notes)
