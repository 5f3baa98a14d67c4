"""Pictures of a data set: a face grid per class and class-balance bars per split."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ferkit.data.faceset import FaceSet
from ferkit.fileio import atomic_write_bytes


def _save(fig, path: Path) -> Path:
    """Render the figure to PNG bytes, then write them atomically (OutputError names the file on failure)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, dpi=100, format="png")
    finally:
        plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def face_grid(faces: FaceSet, path: Path, per_class: int = 8, seed: int = 0) -> Path:
    """One row per class with up to `per_class` random faces, class names on the left."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    n_rows = faces.num_classes
    fig, axes = plt.subplots(n_rows, per_class, figsize=(per_class * 1.1, n_rows * 1.15), squeeze=False)
    for c, name in enumerate(faces.class_names):
        idx = np.flatnonzero(faces.labels == c)
        chosen = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for j in range(per_class):
            ax = axes[c, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(chosen):
                ax.imshow(faces.images[chosen[j]], cmap="gray", vmin=0, vmax=255)
        axes[c, 0].set_ylabel(f"{name}\n({len(idx):,})", rotation=0, ha="right", va="center", fontsize=10)
    fig.suptitle("Faces per class", fontsize=12)
    fig.tight_layout()
    return _save(fig, path)


def balance_chart(faces: FaceSet, path: Path) -> Path:
    """One bar chart per split: faces per class, counts written on the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = faces.counts()
    fig, axes = plt.subplots(1, len(counts), figsize=(5 * len(counts), 4), squeeze=False)
    colors = plt.cm.tab10(np.arange(faces.num_classes) % 10)
    for ax, (split, values) in zip(axes[0], counts.items()):
        bars = ax.bar(faces.class_names, values, color=colors)
        ax.bar_label(bars, fontsize=8)
        ax.set_title(f"{split} ({sum(values):,} faces)")
        ax.set_ylabel("faces")
        ax.tick_params(axis="x", rotation=45)
    fig.suptitle("Class balance per split")
    fig.tight_layout()
    return _save(fig, path)
