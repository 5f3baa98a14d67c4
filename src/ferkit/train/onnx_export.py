"""ONNX export: the net with its softmax as one graph (input `faces`, output `probabilities`), optionally
with float16 weights, and the check that onnxruntime computes what torch does."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ferkit.errors import ModelError
from ferkit.fileio import atomic_write_bytes
from ferkit.modelcard import INPUT_NAME, OUTPUT_NAME
from ferkit.preprocessing import INPUT_SIZE


class WithSoftmax(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).softmax(dim=1)


def export_onnx(model: nn.Module, path: str | Path, opset: int = 17, half: bool = False) -> Path:
    """Write `model` + softmax as ONNX. half: store the weights as float16 (half the file; compute stays
    float32), after `round_to_half(model)` so torch and ONNX keep identical weights."""
    from torch.onnx import TrainingMode

    path = Path(path)
    buf = io.BytesIO()
    wrapped = WithSoftmax(model.float().eval().to(memory_format=torch.contiguous_format))
    dummy = torch.zeros(2, 1, INPUT_SIZE, INPUT_SIZE)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, not broken: keep the CLI quiet
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            wrapped, (dummy,), buf, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=opset, dynamo=False,
            # eval mode folds batch norm into the convolutions, which would leave weights float16 cannot hold
            # exactly; PRESERVE keeps the (eval-mode) BatchNormalization nodes for onnxruntime to fold in float32
            **({"training": TrainingMode.PRESERVE, "do_constant_folding": False} if half else {}),
        )
    data = buf.getvalue()
    if half:
        data = store_weights_as_half(data, path)
    atomic_write_bytes(path, data)  # a kill mid-export never leaves a torn .onnx file
    return path


def round_to_half(model: nn.Module) -> nn.Module:
    """Round every float weight and buffer to the nearest float16 value (kept as float32), in place."""
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                t.copy_(t.half().float())
    return model


def store_weights_as_half(data: bytes, path: Path) -> bytes:
    """Rewrite a serialised ONNX model's float32 initializers as float16 + a Cast back to float32 (lossless for
    weights `round_to_half` made). onnxruntime folds the casts when it loads the model, so it runs
    exactly as fast as the float32 file."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load_from_string(data)
    graph, casts = m.graph, []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or np.prod(init.dims) < 16:
            continue
        value = numpy_helper.to_array(init)
        if not np.array_equal(value.astype(np.float16).astype(np.float32), value):
            raise ModelError(f"{path}: weight {init.name} is not float16-exact; round_to_half the model first")
        half = numpy_helper.from_array(value.astype(np.float16), name=f"{init.name}__f16")
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT))
        init.CopyFrom(half)
    nodes = casts + list(graph.node)  # casts first: the graph stays topologically sorted
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(m)
    return m.SerializeToString()


def max_disagreement(model: nn.Module, onnx_path: str | Path, inputs: np.ndarray,
                     batch: int = 512) -> tuple[float, int]:
    """(largest |p_torch - p_onnx|, number of argmax disagreements) on normalised inputs (N, 1, 48, 48)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    model = model.float().eval()
    p_torch, p_onnx = [], []
    for i in range(0, len(inputs), batch):
        x = inputs[i:i + batch]
        with torch.no_grad():
            p_torch.append(model(torch.from_numpy(x)).softmax(1).numpy())
        p_onnx.append(sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0])
    p_torch, p_onnx = np.concatenate(p_torch), np.concatenate(p_onnx)
    return float(np.abs(p_torch - p_onnx).max()), int((p_torch.argmax(1) != p_onnx.argmax(1)).sum())
