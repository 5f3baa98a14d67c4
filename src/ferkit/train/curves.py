"""The training curves: loss and accuracy per epoch, every head and the weight average included."""

from __future__ import annotations

from pathlib import Path

from ferkit.evaluation.plots import save_figure
from ferkit.train.run import Head


def plot_curves(history: list[dict], path: Path, heads: list[Head]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    a.plot(ep, [h["val_loss"] for h in history], "o-", label="validation")
    a.set_title("loss")
    b.plot(ep, [h["train_acc"] for h in history], "o-", label="train")
    b.plot(ep, [h["val_acc"] for h in history], "o-", label="validation")
    lines = [(h.val_column, f"validation, {h.label} head") for h in heads if not h.primary]
    lines.append(("swa_val_acc", "validation, weight average"))
    lines += [(f"swa_{h.val_column}", f"validation, weight average, {h.label} head") for h in heads if not h.primary]
    for key, label in lines:
        scored = [h for h in history if h.get(key) not in (None, "")]  # the average exists from --swa-start on
        if scored:
            b.plot([h["epoch"] for h in scored], [h[key] for h in scored], "o--" if "swa" in key else "o-", label=label)
    b.set_title("accuracy")
    for ax in (a, b):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
    plt.close(fig)
