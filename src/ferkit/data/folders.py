"""Folder-per-class image trees: `root/<split>/<class>/*.png` or `root/<class>/*.png`."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ferkit.classes import EMOTIONS, FERPLUS_EMOTIONS, SPLIT_FOLDERS, canonical_class, canonical_split
from ferkit.data import cache
from ferkit.data.faceset import DataError, FaceSet, LoadReport
from ferkit.images import IMAGE_SUFFIXES, ImageError, read_image
from ferkit.preprocessing import to_face48

UNSPLIT = "all"  # split name for a tree without split folders


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_dirs(root: Path, report: LoadReport) -> list[tuple[str, Path]]:
    found = []
    for d in _subdirs(root):
        name = canonical_class(d.name)
        if name is None:
            report.unknown_folders.append(str(d))
        else:
            found.append((name, d))
    return found


def scan_tree(root: Path) -> tuple[list[tuple[str, str, Path]], LoadReport]:
    """(split, class, file) for every candidate file, plus a report of folders that were not understood."""
    report = LoadReport(source=str(root))
    top = _subdirs(root)
    split_dirs = [(canonical_split(d.name), d) for d in top]
    entries = []
    if any(s for s, _ in split_dirs):
        groups = []
        for split, d in split_dirs:
            if split is None:
                if canonical_class(d.name) is None:
                    report.unknown_folders.append(str(d))
                else:  # a class folder beside split folders: treat as unsplit
                    groups.append((UNSPLIT, [(canonical_class(d.name), d)]))
            else:
                groups.append((split, _class_dirs(d, report)))
    else:
        groups = [(UNSPLIT, _class_dirs(root, report))]
    for split, classes in groups:
        for cls, d in classes:
            for dirpath, dirnames, filenames in os.walk(d):
                dirnames.sort()
                for fn in sorted(filenames):
                    if not fn.startswith("."):
                        entries.append((split, cls, Path(dirpath) / fn))
    return entries, report


def load_folder_tree(root: str | Path, on_error: str = "skip", use_cache: bool = True) -> FaceSet:
    """Load every readable image under a class tree as 48x48 grey faces.

    Unreadable files and unknown folders are reported by name and left out; `on_error='raise'` stops
    at the first unreadable file instead.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    entries, report = scan_tree(root)
    if not entries:
        raise DataError(
            f"{root}: no class folders with files found (expected e.g. train/happy/*.png or happy/*.png; "
            f"class folders: {', '.join(FERPLUS_EMOTIONS)} or synonyms)"
        )
    key = cache.fingerprint(*(p for _, _, p in entries)) + f"|{on_error}"
    arrays = cache.load("folder", key) if use_cache else None
    if arrays is None:
        arrays = _read_entries(root, entries, on_error)
        if use_cache:
            cache.store("folder", key, arrays)
    report.skipped = [tuple(s) for s in cache.meta_value(arrays["skipped"])]
    present = set(arrays["classes"].tolist())
    class_names = EMOTIONS + (("contempt",) if "contempt" in present else ())
    labels = np.asarray([class_names.index(c) for c in arrays["classes"].tolist()], dtype=np.int64)
    return FaceSet(
        images=arrays["images"], labels=labels, splits=arrays["splits"],
        class_names=class_names, ids=arrays["ids"], report=report,
    )


def _read_entries(root: Path, entries: list[tuple[str, str, Path]], on_error: str) -> dict[str, np.ndarray]:
    images, classes, splits, ids, skipped = [], [], [], [], []
    for split, cls, path in entries:
        rel = str(path.relative_to(root))
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append((rel, f"not an image file type ({path.suffix or 'no suffix'})"))
            continue
        try:
            face = to_face48(read_image(path))
        except ImageError as exc:
            if on_error == "raise":
                raise DataError(str(exc)) from None
            skipped.append((rel, str(exc).split(": ", 1)[-1]))
            continue
        images.append(face)
        classes.append(cls)
        splits.append(split)
        ids.append(rel)
    if not images:
        raise DataError(f"{root}: no readable images ({len(skipped)} files skipped)")
    return {
        "images": np.stack(images), "classes": np.asarray(classes), "splits": np.asarray(splits),
        "ids": np.asarray(ids), "skipped": cache.meta_array(skipped),
    }


def write_folder_tree(faces: FaceSet, root: str | Path) -> int:
    """Write faces as PNGs under root/<split folder>/<class>/<id>.png; returns the number written."""
    root = Path(root)
    for i, (img, label, split, ident) in enumerate(zip(faces.images, faces.labels, faces.splits, faces.ids)):
        split_dir = root if split == UNSPLIT else root / SPLIT_FOLDERS.get(str(split), str(split))
        folder = split_dir / faces.class_names[label]
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{int(ident):05d}" if np.issubdtype(faces.ids.dtype, np.integer) else f"{i:05d}"
        if not cv2.imwrite(str(folder / f"{stem}.png"), img):
            raise DataError(f"{folder / (stem + '.png')}: could not write")
    return len(faces)
