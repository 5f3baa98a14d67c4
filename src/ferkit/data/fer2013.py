"""Reader for the FER2013 Kaggle CSV (`emotion,pixels,Usage`), plain or gzip-compressed."""

from __future__ import annotations

import csv
import gzip
import io
import warnings
from pathlib import Path

import numpy as np

from ferkit.classes import EMOTIONS, SPLITS
from ferkit.data import cache
from ferkit.data.faceset import DataError, FaceSet, LoadReport

PIXELS = 48 * 48
REQUIRED_COLUMNS = ("emotion", "pixels")


def open_text(path: Path) -> io.TextIOBase:
    """Open plain or gzip text by content, not by name."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", newline="", encoding="utf-8")
    return open(path, newline="", encoding="utf-8")


def _parse_pixels(text: str) -> tuple[np.ndarray | None, str | None]:
    """2,304 integers 0..255 -> uint8 array, or (None, what is wrong)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = np.fromstring(text, dtype=np.int64, sep=" ")  # fast path for well-formed rows
    except ValueError:  # NumPy >= 2.3 raises on a bad token; older versions stop early
        values = np.empty(0, dtype=np.int64)
    if values.size != PIXELS:
        tokens = text.split()
        for i, tok in enumerate(tokens):
            if not tok.lstrip("-").isdigit():
                return None, f"pixel {i + 1} is {tok[:20]!r}, not an integer"
        return None, f"{len(tokens)} pixel values, expected {PIXELS}"
    if values.min() < 0 or values.max() > 255:
        bad = int(np.flatnonzero((values < 0) | (values > 255))[0])
        return None, f"pixel {bad + 1} is {values[bad]}, outside 0..255"
    return values.astype(np.uint8), None


def _parse(path: Path, on_error: str) -> dict[str, np.ndarray]:
    images, labels, splits, ids, skipped = [], [], [], [], []
    with open_text(path) as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise DataError(f"{path}: empty file, expected a header 'emotion,pixels,Usage'") from None
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise DataError(f"{path}: header {header} lacks column(s) {', '.join(missing)}")
        col_e, col_p = header.index("emotion"), header.index("pixels")
        col_u = header.index("Usage") if "Usage" in header else None
        for row_no, row in enumerate(reader, start=1):
            line = reader.line_num
            fault = None
            if len(row) != len(header):
                fault = f"{len(row)} fields, expected {len(header)}"
            else:
                emo = row[col_e].strip()
                usage = row[col_u].strip() if col_u is not None else "Training"
                if not emo.isdigit() or int(emo) >= len(EMOTIONS):
                    fault = f"emotion {emo!r} is not a code 0..{len(EMOTIONS) - 1}"
                elif usage not in SPLITS:
                    fault = f"Usage {usage!r} is not one of {', '.join(SPLITS)}"
                else:
                    pixels, fault = _parse_pixels(row[col_p])
            if fault is not None:
                where = f"{path.name} row {row_no} (line {line})"
                if on_error == "raise":
                    raise DataError(f"{where}: {fault}. Fix the row, or pass --skip-bad-rows to skip and count it.")
                skipped.append((where, fault))
                continue
            images.append(pixels.reshape(48, 48))
            labels.append(int(emo))
            splits.append(usage)
            ids.append(row_no)
    if not images:
        raise DataError(f"{path}: no valid rows")
    return {
        "images": np.stack(images),
        "labels": np.asarray(labels, dtype=np.int64),
        "splits": np.asarray(splits),
        "ids": np.asarray(ids, dtype=np.int64),
        "skipped": cache.meta_array(skipped),
    }


def load_fer2013(path: str | Path, on_error: str = "raise", use_cache: bool = True) -> FaceSet:
    """Load the FER2013 CSV. `on_error`: 'raise' stops at the first bad row, 'skip' skips and counts.

    `ids` are 1-based data-row numbers, so row i lines up with row i of the FER+ votes file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    key = f"{cache.fingerprint(path)}|{on_error}"
    arrays = cache.load("fer2013", key) if use_cache else None
    if arrays is None:
        arrays = _parse(path, on_error)
        if use_cache:
            cache.store("fer2013", key, arrays)
    report = LoadReport(source=str(path), skipped=[tuple(s) for s in cache.meta_value(arrays["skipped"])])
    return FaceSet(
        images=arrays["images"], labels=arrays["labels"], splits=arrays["splits"],
        class_names=EMOTIONS, ids=arrays["ids"], report=report,
    )


def write_fer2013(faces: FaceSet, path: str | Path) -> None:
    """Write a FaceSet as a Kaggle-format CSV (gzip when the name ends in .gz)."""
    path = Path(path)
    codes = []
    for name in faces.class_names:
        if name not in EMOTIONS:
            raise DataError(f"class {name!r} has no FER2013 emotion code; FER2013 CSVs hold {', '.join(EMOTIONS)}")
        codes.append(EMOTIONS.index(name))
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["emotion", "pixels", "Usage"])
        for img, label, split in zip(faces.images, faces.labels, faces.splits):
            usage = split if split in SPLITS else "Training"
            writer.writerow([codes[label], " ".join(map(str, img.reshape(-1).tolist())), usage])
