"""FaceSet: the one shape every reader returns, whatever the source layout."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ferkit.classes import SPLITS, canonical_class, canonical_split
from ferkit.errors import DataError  # noqa: F401 (re-exported)


@dataclass
class LoadReport:
    """What a load skipped or dropped, so nothing disappears silently."""

    source: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (where, why) for bad rows/files
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count (e.g. FER+ ties)
    unknown_folders: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = []
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped")
        for reason, n in self.dropped.items():
            parts.append(f"{n} dropped ({reason})")
        if self.unknown_folders:
            parts.append(f"{len(self.unknown_folders)} unknown folders ignored")
        return ", ".join(parts) if parts else "nothing skipped"


@dataclass
class FaceSet:
    """uint8 faces (N, 48, 48), integer labels into `class_names`, a split name per face.

    `ids` say where each face came from (CSV row number or relative file path); `soft_labels`
    (N, C) holds a vote distribution when the source has one (FER+).
    """

    images: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    class_names: tuple[str, ...]
    ids: np.ndarray
    soft_labels: np.ndarray | None = None
    report: LoadReport = field(default_factory=LoadReport)

    def __post_init__(self) -> None:
        n = len(self.images)
        if not (len(self.labels) == len(self.splits) == len(self.ids) == n):
            raise ValueError("FaceSet arrays differ in length")
        if self.soft_labels is not None and self.soft_labels.shape != (n, len(self.class_names)):
            raise ValueError("soft_labels must be (N, num_classes)")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, mask: np.ndarray) -> FaceSet:
        return FaceSet(
            images=self.images[mask], labels=self.labels[mask], splits=self.splits[mask],
            class_names=self.class_names, ids=self.ids[mask],
            soft_labels=None if self.soft_labels is None else self.soft_labels[mask], report=self.report,
        )

    def split(self, name: str) -> FaceSet:
        """Faces of one split; accepts aliases ('train', 'val', 'test', 'PublicTest')."""
        canon = canonical_split(name) or name
        if canon not in set(self.splits.tolist()):
            raise DataError(f"split {name!r} not in data; present: {', '.join(self.split_names())}")
        return self.subset(self.splits == canon)

    def split_names(self) -> list[str]:
        present = set(self.splits.tolist())
        return [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))

    def select_classes(self, names: tuple[str, ...] | list[str]) -> FaceSet:
        """Keep only faces of these classes and renumber labels in the given order."""
        canon = [canonical_class(n) or n for n in names]
        missing = [n for n in canon if n not in self.class_names]
        if missing:
            raise DataError(f"classes not in data: {', '.join(missing)}; present: {', '.join(self.class_names)}")
        old_index = [self.class_names.index(n) for n in canon]
        remap = np.full(self.num_classes, -1, dtype=np.int64)
        remap[old_index] = np.arange(len(canon))
        keep = remap[self.labels] >= 0
        out = self.subset(keep)
        out.labels = remap[out.labels]
        out.class_names = tuple(canon)
        if out.soft_labels is not None:
            soft = out.soft_labels[:, old_index]
            total = soft.sum(axis=1, keepdims=True)
            out.soft_labels = np.where(total > 0, soft / np.maximum(total, 1e-12), 0).astype(np.float32)
        return out

    def counts(self) -> dict[str, list[int]]:
        """Per split: the number of faces of each class, in class order."""
        return {
            s: np.bincount(self.labels[self.splits == s], minlength=self.num_classes).tolist()
            for s in self.split_names()
        }
