"""FER+ crowd votes (`fer2013new.csv`): majority-vote labels and vote distributions over 8 emotions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ferkit.classes import FERPLUS_EMOTIONS, FERPLUS_VOTE_COLUMNS
from ferkit.data.faceset import DataError, FaceSet, LoadReport
from ferkit.data.csvio import CsvFile, printable, regular_file
from ferkit.data.fer2013 import load_fer2013

# Column index in the votes file for each of our 8 classes (angry, disgust, ..., contempt).
_EMOTION_COLUMNS = [
    FERPLUS_VOTE_COLUMNS.index(c)
    for c in ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral", "contempt")
]
VOTES_HEADER = ("Usage", "Image name", *FERPLUS_VOTE_COLUMNS)


def _is_count(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 6


def read_votes(path: str | Path, on_error: str = "raise") -> tuple[np.ndarray, np.ndarray, dict[int, tuple[str, str]]]:
    """Votes (N, 10) in file column order, the Usage of each row, and the rows skipped as unusable
    (data row number -> (where, why)).

    Row i of the result is data row i + 1 of the file whatever happens, so votes line up with FER2013
    rows: with `on_error='skip'` a bad row gets no votes (-1 in every column) and is listed as skipped.
    """
    path = regular_file(Path(path))
    votes, usage, skipped = [], [], {}
    with CsvFile(path) as csv_file:
        header = csv_file.header
        if header is None:
            raise DataError(f"{path}: empty file, expected a FER+ header '{','.join(VOTES_HEADER)}'")
        if header[2:] != list(FERPLUS_VOTE_COLUMNS):
            shown = ",".join(printable(h, 20) for h in header[2:12]) + (",…" if len(header) > 12 else "")
            raise DataError(f"{path}: vote columns {shown!r} differ from {','.join(FERPLUS_VOTE_COLUMNS)} "
                            "(is this the FER+ fer2013new.csv?)")
        for row_no, line, row, fault in csv_file.rows():
            if fault is None and len(row) != len(VOTES_HEADER):
                fault = f"{len(row)} fields, expected {len(VOTES_HEADER)}"
            if fault is None:
                fields = [v.strip() for v in row[2:12]]
                bad = next((i for i, v in enumerate(fields) if not _is_count(v)), None)
                if bad is not None:
                    fault = f"{FERPLUS_VOTE_COLUMNS[bad]} votes {printable(fields[bad], 20)!r} is not a whole number"
            if fault is not None:
                where = f"{path.name} row {row_no} (line {line})"
                if on_error == "raise":
                    raise DataError(f"{where}: {fault}. Fix the row, or pass --skip-bad-rows to skip and count it.")
                skipped[row_no] = (where, fault)
                votes.append([-1] * len(FERPLUS_VOTE_COLUMNS))
                usage.append("")
                continue
            votes.append([int(v) for v in fields])
            usage.append(row[0].strip())
    shaped = np.asarray(votes, dtype=np.int64).reshape(-1, len(FERPLUS_VOTE_COLUMNS))
    return shaped, np.asarray(usage), skipped


def majority_labels(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Majority label over our 8 classes per row (-1 where dropped) and the reason code.

    A row is dropped when its top vote over all 10 columns is unknown or NF, or when the top is tied.
    Reason codes: 0 kept, 1 unknown/NF on top, 2 tied top.
    """
    top = votes.max(axis=1)
    n_top = (votes == top[:, None]).sum(axis=1)
    arg = votes.argmax(axis=1)
    reason = np.zeros(len(votes), dtype=np.int64)
    reason[n_top > 1] = 2
    reason[(n_top == 1) & (arg >= 8)] = 1
    col_to_class = np.full(10, -1, dtype=np.int64)
    col_to_class[_EMOTION_COLUMNS] = np.arange(8)
    labels = np.where(reason == 0, col_to_class[arg], -1)
    return labels, reason


def vote_distribution(votes: np.ndarray) -> np.ndarray:
    """Votes over our 8 classes, normalised to sum to 1 (all-zero rows stay zero)."""
    emo = votes[:, _EMOTION_COLUMNS].astype(np.float32)
    total = emo.sum(axis=1, keepdims=True)
    return np.where(total > 0, emo / np.maximum(total, 1), 0).astype(np.float32)


def discount_neutral(dist: np.ndarray, weight: float) -> np.ndarray:
    """Vote distributions (N, 8) with the neutral votes weighted by `weight` and each row renormalised.

    FER+ annotators call many weak expressions neutral: a face with 6 neutral and 4 angry votes is an angry face
    to a reader who looks for anger. Weighting neutral below 1 moves such faces towards the emotion seen; a face
    every annotator called neutral stays neutral, and all-zero rows stay zero.
    """
    neutral = FERPLUS_EMOTIONS.index("neutral")
    out = np.array(dist, dtype=np.float32, copy=True)
    out[:, neutral] *= np.float32(weight)
    total = out.sum(axis=1, keepdims=True)
    return (out / np.where(total > 0, total, 1)).astype(np.float32)  # an all-zero row divides by 1 and stays zero


def load_ferplus(fer2013_csv: str | Path, votes_csv: str | Path, on_error: str = "raise") -> FaceSet:
    """FER2013 faces relabelled by FER+ majority vote (8 classes) with the vote distribution as soft labels.

    `on_error='skip'` skips and counts bad rows of either file; a face whose votes row is bad is left out.
    """
    faces = load_fer2013(fer2013_csv, on_error=on_error)
    row_votes, bad_votes = votes_for_rows(faces.ids, votes_csv, fer2013_csv, on_error=on_error)
    labels, reason = majority_labels(row_votes)
    has_votes = row_votes[:, 0] >= 0
    labels[~has_votes] = -1
    keep = labels >= 0
    report = LoadReport(
        source=f"{fer2013_csv} + {votes_csv}", skipped=faces.report.skipped + bad_votes,
        dropped={"unknown or not-a-face on top": int(((reason == 1) & has_votes).sum()),
                 "tied top vote": int(((reason == 2) & has_votes).sum())},
    )
    return FaceSet(
        images=faces.images[keep], labels=labels[keep], splits=faces.splits[keep],
        class_names=FERPLUS_EMOTIONS, ids=faces.ids[keep],
        soft_labels=vote_distribution(row_votes[keep]), report=report,
    )


def votes_for_rows(
    ids: np.ndarray, votes_csv: str | Path, data_name: str | Path = "the FER2013 data", on_error: str = "raise",
) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """The votes (N, 10) of FER2013 rows `ids` (1-based row numbers, as FER2013 readers give them), and the
    bad votes rows skipped among them (their votes are -1; only with `on_error='skip'`)."""
    if ids.dtype.kind not in "iu":
        raise DataError(f"{votes_csv}: FER+ votes apply to FER2013 CSV rows, not to a folder tree")
    votes, _usage, skipped = read_votes(votes_csv, on_error=on_error)
    if len(ids) and len(votes) < int(ids.max()):
        raise DataError(f"{votes_csv}: {len(votes)} rows, but {data_name} has row {int(ids.max())}")
    used = [skipped[row] for row in sorted(set(ids.tolist()) & skipped.keys())]
    return votes[ids - 1], used


def ferplus_targets(ids: np.ndarray, votes_csv: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """FER+ soft targets (N, 8) and majority labels (N,; -1 where dropped) for FER2013 rows `ids`.

    Lets one net learn FER2013's labels and FER+'s votes for the same faces (`--aux-ferplus`).
    Rows without any emotion vote get an all-zero target, which contributes no loss.
    """
    row_votes, _ = votes_for_rows(ids, votes_csv)
    return vote_distribution(row_votes), majority_labels(row_votes)[0]
