"""The evaluation pictures: a row-normalised confusion matrix and a reliability diagram (matplotlib, Agg)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ferkit.fileio import atomic_write_bytes


def save_figure(fig, path: str | Path, **savefig) -> Path:
    """Render a figure into memory, then write it atomically (never a torn or 0-byte picture)."""
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **savefig)
    return atomic_write_bytes(path, buf.getvalue())


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(metrics: dict, path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: true class, recall on the diagonal) with counts."""
    plt = _plt()
    names = metrics["confusion"]["classes"]
    norm = np.asarray(metrics["confusion"]["normalized"])
    counts = np.asarray(metrics["confusion"]["counts"])
    k = len(names)
    fig, ax = plt.subplots(figsize=(1.05 * k + 2.4, 0.95 * k + 1.8))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if counts[i].sum() == 0:
                continue
            v = norm[i, j]
            ax.text(j, i, f"{v:.2f}\n({counts[i, j]})", ha="center", va="center", fontsize=8,
                    color="white" if v > 0.55 else "black")
    support = counts.sum(axis=1)
    ax.set_xticks(range(k), names, rotation=40, ha="right")
    ax.set_yticks(range(k), [f"{n} ({s})" if s else f"{n} (none)" for n, s in zip(names, support)])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (faces)")
    ax.set_title(title or f"accuracy {metrics['accuracy']:.2%}", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.tight_layout()
    save_figure(fig, path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def plot_reliability(metrics: dict, path: str | Path, title: str = "") -> Path:
    """Reliability diagram: accuracy vs confidence per bin, bar width = bin, the ECE in the title."""
    plt = _plt()
    bins = metrics["calibration_bins"]
    fig, ax = plt.subplots(figsize=(4.8, 4.6))
    lo = np.array([b["lo"] for b in bins])
    width = bins[0]["hi"] - bins[0]["lo"]
    acc = np.array([b["accuracy"] if b["accuracy"] is not None else 0.0 for b in bins])
    ax.bar(lo, acc, width=width, align="edge", edgecolor="navy", color="cornflowerblue", label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(title or f"ECE {metrics['ece']:.3f} ({len(bins)} bins)", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
