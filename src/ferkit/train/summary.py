"""Keras-style model summary (layer, output shape, parameters, totals) and an architecture picture.

Shapes, parameter totals and multiply-adds come from torchinfo; the table lists the model's layers
the way Keras does: the modules directly under the model and its Sequential containers, with a
residual block kept as one row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ferkit.errors import MissingExtraError
from ferkit.preprocessing import INPUT_SIZE

CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass
class LayerRow:
    path: str  # Keras-style layer name: conv2d, conv2d_1, basic_block_3, ...
    kind: str  # class name, e.g. "Conv2d"
    detail: str  # kernel/width/probability in words
    output_shape: tuple[int, ...]  # without the batch axis
    params: int
    trainable: int
    module: nn.Module


@dataclass
class ModelSummary:
    name: str
    num_classes: int
    rows: list[LayerRow]
    total_params: int
    trainable_params: int
    bn_buffers: int  # BatchNorm running mean/var: Keras counts these as non-trainable parameters
    mult_adds: int  # per face, forward pass
    input_shape: tuple[int, ...]

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params


def _units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules Keras would list: children of the model and of its containers, recursively through containers."""
    out: list[tuple[str, nn.Module]] = []

    def walk(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            path = f"{prefix}.{name}" if prefix else name
            if isinstance(child, CONTAINERS):
                walk(path, child)
            else:
                out.append((path, child))

    walk("", model)
    return out or [("", model)]


def _detail(m: nn.Module) -> str:
    if isinstance(m, nn.Conv2d):
        k = "x".join(map(str, m.kernel_size))
        s = f" /{m.stride[0]}" if m.stride[0] != 1 else ""
        return f"{k}, {m.in_channels}->{m.out_channels}{s}"
    if isinstance(m, nn.Linear):
        return f"{m.in_features}->{m.out_features}"
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return f"{m.num_features}"
    if isinstance(m, (nn.Dropout, nn.Dropout2d)):
        return f"p={m.p:g}"
    if isinstance(m, nn.MaxPool2d):
        return f"{m.kernel_size}x{m.kernel_size}" if isinstance(m.kernel_size, int) else str(m.kernel_size)
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return "global"
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    if convs and hasattr(m, "shortcut"):  # a residual block
        stride = max(c.stride[0] for c in convs)
        return f"{convs[0].in_channels}->{convs[-1].out_channels}{f' /{stride}' if stride > 1 else ''}, residual"
    return ""


def summarize(model: nn.Module, name: str = "", num_classes: int | None = None,
              input_shape: tuple[int, ...] = (1, INPUT_SIZE, INPUT_SIZE)) -> ModelSummary:
    """Run one face through the model with torchinfo and collect the Keras-style rows and totals."""
    try:
        import torchinfo
    except ImportError:
        raise MissingExtraError("train", "`ferkit summary`", "torchinfo") from None
    model = model.float().eval().to(memory_format=torch.contiguous_format)
    stats = torchinfo.summary(model, input_size=(1, *input_shape), depth=64, verbose=0, device="cpu",
                              col_names=("output_size", "num_params", "mult_adds"))
    shapes = {}
    for info in stats.summary_list:
        mod = getattr(info, "module", None)
        if mod is not None and id(mod) not in shapes and isinstance(info.output_size, (list, tuple)):
            shapes[id(mod)] = tuple(info.output_size[1:])
    rows = []
    seen: dict[str, int] = {}
    for _, m in _units(model):
        kind = type(m).__name__
        base = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", kind.replace("ReLU", "Relu")).lower()  # Keras-style: conv2d, conv2d_1
        path = base if base not in seen else f"{base}_{seen[base]}"
        seen[base] = seen.get(base, 0) + 1
        params = sum(p.numel() for p in m.parameters())
        trainable = sum(p.numel() for p in m.parameters() if p.requires_grad)
        rows.append(LayerRow(path, kind, _detail(m), shapes.get(id(m), ()), params, trainable, m))
    total = sum(p.numel() for p in model.parameters())
    if total != stats.total_params:  # both count the same tensors; a mismatch means a module was missed
        raise RuntimeError(f"torchinfo counts {stats.total_params:,} parameters, the model {total:,}")
    bn = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    spec = getattr(model, "ferkit_spec", {})
    out_shape = rows[-1].output_shape if rows else ()
    return ModelSummary(
        name=name or spec.get("name", type(model).__name__),
        num_classes=num_classes or spec.get("num_classes") or (out_shape[-1] if out_shape else 0),
        rows=rows, total_params=stats.total_params, trainable_params=stats.trainable_params,
        bn_buffers=bn, mult_adds=int(stats.total_mult_adds), input_shape=tuple(input_shape),
    )


def shape_text(shape: tuple[int, ...]) -> str:
    return "(None, " + ", ".join(map(str, shape)) + ")" if shape else "?"


def summary_text(s: ModelSummary) -> str:
    """The Keras `model.summary()` layout as plain text."""
    w1 = max([len("Layer (type)")] + [len(f"{r.path} ({r.kind})") for r in s.rows]) + 2
    w2 = max([len("Output Shape")] + [len(shape_text(r.output_shape)) for r in s.rows]) + 2
    w4 = max([len("Details")] + [len(r.detail) for r in s.rows])
    width = w1 + w2 + 12 + 2 + w4
    lines = [f'Model: "{s.name}" ({s.num_classes} classes, input {"x".join(map(str, s.input_shape))})', "_" * width,
             f"{'Layer (type)':<{w1}}{'Output Shape':<{w2}}{'Param #':>12}  {'Details':<{w4}}", "=" * width]
    for i, r in enumerate(s.rows):
        lines.append(f"{r.path + ' (' + r.kind + ')':<{w1}}{shape_text(r.output_shape):<{w2}}{r.params:>12,}  {r.detail}")
        lines.append("_" * width if i < len(s.rows) - 1 else "=" * width)
    lines += [
        f"Total params: {s.total_params:,}",
        f"Trainable params: {s.trainable_params:,}",
        f"Non-trainable params: {s.non_trainable_params:,}",
        f"BatchNorm moving statistics (buffers; Keras lists them as non-trainable params): {s.bn_buffers:,}"
        f" -> Keras would print Total params: {s.total_params + s.bn_buffers:,}",
        f"Forward pass: {s.mult_adds / 1e6:,.1f} M multiply-adds per face; "
        f"weights {s.total_params * 4 / 2**20:.1f} MiB as float32",
        "_" * width,
    ]
    return "\n".join(lines)


def as_dict(s: ModelSummary) -> dict:
    return {
        "name": s.name, "num_classes": s.num_classes, "input_shape": list(s.input_shape),
        "layers": [{"name": r.path, "type": r.kind, "details": r.detail, "output_shape": list(r.output_shape),
                    "params": r.params, "trainable": r.trainable} for r in s.rows],
        "total_params": s.total_params, "trainable_params": s.trainable_params,
        "non_trainable_params": s.non_trainable_params, "bn_moving_statistics": s.bn_buffers,
        "mult_adds": s.mult_adds,
    }


# ---------------------------------------------------------------------------- the picture
_COLORS = {"conv": "#8fb8de", "dense": "#f4b183", "block": "#c5a3d9", "pool": "#a9d18e", "dropout": "#d9d9d9",
           "reshape": "#ffe699", "io": "#ffffff"}


def _boxes(s: ModelSummary) -> list[dict]:
    """Group rows into boxes: a conv/dense layer with the BN and activation after it is one box."""
    boxes: list[dict] = []
    for r in s.rows:
        m = r.module
        prev = boxes[-1] if boxes else None
        role = "bn" if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) else \
            "act" if isinstance(m, (nn.ReLU, nn.GELU, nn.SiLU)) else None
        if role and prev and prev["kind"] in ("conv", "dense") and role not in prev["absorbed"]:
            prev["label"] += " + " + ("BN" if role == "bn" else r.kind)
            prev["params"] += r.params
            prev["shape"] = r.output_shape or prev["shape"]
            prev["absorbed"].add(role)
            continue
        if isinstance(m, nn.Conv2d):
            kind, label = "conv", f"Conv {_detail(m)}"
        elif isinstance(m, nn.Linear):
            kind, label = "dense", f"Dense {_detail(m)}"
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            kind, label = "pool", f"{r.kind} {_detail(m)}"
        elif isinstance(m, (nn.Dropout, nn.Dropout2d)):
            kind, label = "dropout", f"Dropout {_detail(m)}"
        elif isinstance(m, nn.Flatten):
            kind, label = "reshape", "Flatten"
        elif any(True for _ in m.children()):
            kind, label = "block", f"{r.kind} {_detail(m)}".strip()
        else:
            kind, label = "pool", f"{r.kind} {_detail(m)}".strip()
        boxes.append({"kind": kind, "label": label, "params": r.params, "shape": r.output_shape, "absorbed": set()})
    return boxes


def plot_architecture(s: ModelSummary, path: str | Path) -> Path:
    """A top-to-bottom block diagram: one box per layer group, output shape and parameters beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    boxes = [{"kind": "io", "label": f"Input: grey face {'x'.join(map(str, s.input_shape[1:]))}", "params": 0,
              "shape": s.input_shape}]
    boxes += _boxes(s)
    boxes.append({"kind": "io", "label": f"Softmax over {s.num_classes} classes", "params": 0,
                  "shape": (s.num_classes,)})
    heights = [0.42 if b["kind"] in ("dropout", "pool", "reshape") else 0.62 for b in boxes]
    gap = 0.28
    total_h = sum(heights) + gap * (len(boxes) - 1)
    fig_h = total_h * 0.62 + 1.3
    fig, ax = plt.subplots(figsize=(8.6, fig_h))
    ax.set_xlim(0, 10)
    ax.set_ylim(-total_h - 0.2, 0.9)
    ax.axis("off")
    y = 0.0
    centers = []
    for b, h in zip(boxes, heights):
        top = y
        patch = FancyBboxPatch((0.4, top - h), 5.6, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                               facecolor=_COLORS[b["kind"]], edgecolor="#404040", linewidth=1.0)
        ax.add_patch(patch)
        ax.text(3.2, top - h / 2, b["label"], ha="center", va="center", fontsize=9,
                fontweight="bold" if b["kind"] in ("conv", "dense", "block") else "normal")
        side = shape_text(tuple(b["shape"])).replace("None, ", "") if b["shape"] else ""
        if b["params"]:
            side += f"   {b['params']:,} params"
        ax.text(6.25, top - h / 2, side, ha="left", va="center", fontsize=8, color="#303030")
        centers.append((top, top - h))
        y = top - h - gap
    for (_, bottom), (top, _) in zip(centers[:-1], centers[1:]):
        ax.annotate("", xy=(3.2, top), xytext=(3.2, bottom), arrowprops={"arrowstyle": "->", "lw": 1.0})
    ax.text(0.4, 0.55, f"{s.name}: {s.total_params:,} parameters, {s.mult_adds / 1e6:,.0f} M multiply-adds per face",
            fontsize=11, fontweight="bold", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
