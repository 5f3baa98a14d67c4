"""Reader for the FER2013 Kaggle CSV (`emotion,pixels,Usage`), plain or gzip-compressed."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ferkit.classes import EMOTIONS, SPLITS
from ferkit.data import cache
from ferkit.data.csvio import CsvFile, atomic_csv, printable, regular_file
from ferkit.data.faceset import DataError, FaceSet, LoadReport

PIXELS = 48 * 48
REQUIRED_COLUMNS = ("emotion", "pixels")
CACHED_ARRAYS = ("images", "labels", "splits", "ids", "skipped")


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


def _header_fault(header: list[str]) -> str:
    """Why a first row is not a FER2013 header, briefly (a data row is not printed whole)."""
    expected = "expected columns emotion,pixels[,Usage]"
    if header and header[0].isdigit() and any(len(h) > 100 for h in header):
        return f"no header row (line 1 is data); {expected}"
    shown = ",".join(printable(h, 30) for h in header[:6]) + (",…" if len(header) > 6 else "")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    return f"header {shown!r} lacks column(s) {', '.join(missing)}; {expected}"


def _parse(path: Path, on_error: str) -> dict[str, np.ndarray]:
    images, labels, splits, ids, skipped = [], [], [], [], []
    with CsvFile(path) as csv_file:
        header = csv_file.header
        if header is None:
            raise DataError(f"{path}: empty file, expected a header 'emotion,pixels,Usage'")
        if any(c not in header for c in REQUIRED_COLUMNS):
            raise DataError(f"{path}: {_header_fault(header)}")
        col_e, col_p = header.index("emotion"), header.index("pixels")
        col_u = header.index("Usage") if "Usage" in header else None
        for row_no, line, row, fault in csv_file.rows():
            if fault is None and len(row) != len(header):
                fault = f"{len(row)} fields, expected {len(header)}"
            elif fault is None:
                emo = row[col_e].strip()
                usage = row[col_u].strip() if col_u is not None else "Training"
                if not (emo.isascii() and emo.isdigit()) or len(emo) > 3 or int(emo) >= len(EMOTIONS):
                    fault = f"emotion {printable(emo, 20)!r} is not a code 0..{len(EMOTIONS) - 1}"
                elif usage not in SPLITS:
                    fault = f"Usage {printable(usage, 20)!r} is not one of {', '.join(SPLITS)}"
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
        raise DataError(f"{path}: no valid rows" + (f" ({len(skipped):,} skipped)" if skipped else ""))
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
    path = regular_file(Path(path))
    key = f"{cache.fingerprint(path)}|{on_error}"
    arrays = cache.load("fer2013", key, CACHED_ARRAYS) if use_cache else None
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
    """Write a FaceSet as a Kaggle-format CSV (gzip when the name ends in .gz), atomically: a failure
    (full disk, read-only folder) is one OutputError and leaves no partial file at `path`."""
    path = Path(path)
    codes = []
    for name in faces.class_names:
        if name not in EMOTIONS:
            raise DataError(f"class {name!r} has no FER2013 emotion code; FER2013 CSVs hold {', '.join(EMOTIONS)}")
        codes.append(EMOTIONS.index(name))
    with atomic_csv(path) as writer:
        writer.writerow(["emotion", "pixels", "Usage"])
        for img, label, split in zip(faces.images, faces.labels, faces.splits):
            usage = split if split in SPLITS else "Training"
            writer.writerow([codes[label], " ".join(map(str, img.reshape(-1).tolist())), usage])
