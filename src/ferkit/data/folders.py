"""Folder-per-class image trees: `root/<split>/<class>/*.png` or `root/<class>/*.png`."""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
from pathlib import Path

import numpy as np

from ferkit.classes import EMOTIONS, FERPLUS_EMOTIONS, SPLIT_FOLDERS, canonical_class, canonical_split
from ferkit.data import cache
from ferkit.data.csvio import file_kind
from ferkit.data.faceset import DataError, FaceSet, LoadReport
from ferkit.errors import OutputError
from ferkit.fileio import ensure_dir, write_image
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


def _file_fault(path: Path) -> tuple[os.stat_result | None, str | None]:
    """The file's status after following links, or why it cannot be read as an image file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None, "broken symbolic link (its target does not exist)" if path.is_symlink() else "vanished"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, "symbolic link loop"
        return None, f"cannot read ({exc.strerror or exc})"
    if not stat.S_ISREG(st.st_mode):
        return None, f"not a regular file ({file_kind(st.st_mode)})"
    return st, None


def scan_tree(root: Path) -> tuple[list[tuple[str, str, Path]], LoadReport, list[str]]:
    """(split, class, file) for every regular file that may be an image, a report of folders that were not
    understood and of files that cannot be read (broken or looping links, pipes, devices: never opened),
    and a fingerprint part per file (size and mtime) for the cache key."""
    report = LoadReport(source=str(root))
    top = _subdirs(root)
    split_dirs = [(canonical_split(d.name), d) for d in top]
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
    entries, keys = [], []
    for split, classes in groups:
        for cls, d in classes:
            for dirpath, dirnames, filenames in os.walk(d, onerror=lambda exc: _unlisted(root, exc, report)):
                dirnames.sort()
                for fn in sorted(filenames):
                    if fn.startswith("."):
                        continue
                    path = Path(dirpath) / fn
                    st, fault = _file_fault(path)
                    if fault is not None:
                        report.skipped.append((str(path.relative_to(root)), fault))
                        keys.append(f"{path}:{fault}")
                    else:
                        entries.append((split, cls, path))
                        keys.append(cache.stat_key(path, st))
    return entries, report, keys


def _unlisted(root: Path, exc: OSError, report: LoadReport) -> None:
    where = os.path.relpath(exc.filename, root) if exc.filename else str(root)
    report.skipped.append((where, f"cannot list folder ({exc.strerror or exc})"))


def load_folder_tree(root: str | Path, on_error: str = "skip", use_cache: bool = True) -> FaceSet:
    """Load every readable image under a class tree as 48x48 grey faces.

    Unreadable files (including broken or looping links and anything that is not a regular file) and
    unknown folders are reported by name and left out; `on_error='raise'` stops at the first unreadable
    file instead.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    entries, report, keys = scan_tree(root)
    if on_error == "raise" and report.skipped:
        where, why = report.skipped[0]
        raise DataError(f"{root / where}: {why}")
    if not entries:
        if report.skipped:
            raise DataError(f"{root}: no readable images ({len(report.skipped)} files skipped)")
        raise DataError(
            f"{root}: no class folders with files found (expected e.g. train/happy/*.png or happy/*.png; "
            f"class folders: {', '.join(FERPLUS_EMOTIONS)} or synonyms)"
        )
    key = "|".join(keys) + f"|{on_error}"
    arrays = cache.load("folder", key, _CACHED_ARRAYS) if use_cache else None
    if arrays is None:
        arrays = _read_entries(root, entries, on_error, len(report.skipped))
        if use_cache:
            cache.store("folder", key, arrays)
    report.skipped += [tuple(s) for s in cache.meta_value(arrays["skipped"])]
    present = set(arrays["classes"].tolist())
    class_names = EMOTIONS + (("contempt",) if "contempt" in present else ())
    labels = np.asarray([class_names.index(c) for c in arrays["classes"].tolist()], dtype=np.int64)
    return FaceSet(
        images=arrays["images"], labels=labels, splits=arrays["splits"],
        class_names=class_names, ids=arrays["ids"], report=report,
    )


_CACHED_ARRAYS = ("images", "classes", "splits", "ids", "skipped")


def _read_entries(
    root: Path, entries: list[tuple[str, str, Path]], on_error: str, skipped_before: int = 0,
) -> dict[str, np.ndarray]:
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
        raise DataError(f"{root}: no readable images ({skipped_before + len(skipped)} files skipped)")
    return {
        "images": np.stack(images), "classes": np.asarray(classes), "splits": np.asarray(splits),
        "ids": np.asarray(ids), "skipped": cache.meta_array(skipped),
    }


def write_folder_tree(faces: FaceSet, root: str | Path) -> int:
    """Write faces as PNGs under root/<split folder>/<class>/<id>.png; returns the number written.

    Into a new (or empty) folder the tree is written beside it first and renamed into place when complete,
    so a failure (full disk, read-only folder) leaves no partial tree; into a non-empty folder (`--force`)
    the files are written in place. Either way a failure is one OutputError naming the file.
    """
    root = Path(root)
    fresh = not root.exists() or (root.is_dir() and not any(root.iterdir()))
    target = _staging_dir(root) if fresh else ensure_dir(root)
    n, done = len(faces), 0
    try:
        made: set[Path] = set()
        for i, (img, label, split, ident) in enumerate(zip(faces.images, faces.labels, faces.splits, faces.ids)):
            split_dir = target if split == UNSPLIT else target / SPLIT_FOLDERS.get(str(split), str(split))
            folder = split_dir / faces.class_names[label]
            if folder not in made:
                ensure_dir(folder)
                made.add(folder)
            stem = f"{int(ident):05d}" if np.issubdtype(faces.ids.dtype, np.integer) else f"{i:05d}"
            write_image(folder / f"{stem}.png", img, sync=not fresh)  # a fresh tree is staged and renamed whole
            done += 1
        if fresh:
            try:
                os.replace(target, root)
            except OSError as exc:
                raise OutputError(f"cannot write {root}: {exc.strerror or exc}") from None
    except OutputError as exc:
        message = str(exc).replace(str(target), str(root))
        if fresh:
            shutil.rmtree(target, ignore_errors=True)
            raise OutputError(f"{message} (stopped after {done:,} of {n:,} faces; nothing left in {root})") from None
        raise OutputError(f"{message} (stopped after {done:,} of {n:,} faces)") from None
    except BaseException:
        if fresh:
            shutil.rmtree(target, ignore_errors=True)
        raise
    return n


def _staging_dir(root: Path) -> Path:
    """A new empty folder beside `root`, with the usual permissions, to build a tree in before renaming it."""
    parent = ensure_dir(root.parent)
    for _ in range(100):
        tmp = parent / f".{root.name}.{os.getpid()}.{secrets.token_hex(4)}.partial"
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"cannot write to output folder {parent}: {exc.strerror or exc}") from None
    raise OutputError(f"cannot write to output folder {parent}: no free temporary name")
