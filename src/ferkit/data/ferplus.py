"""FER+ crowd votes (`fer2013new.csv`): majority-vote labels and vote distributions over 8 emotions."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ferkit.classes import FERPLUS_EMOTIONS, FERPLUS_VOTE_COLUMNS
from ferkit.data.faceset import DataError, FaceSet, LoadReport
from ferkit.data.fer2013 import load_fer2013, open_text

# Column index in the votes file for each of our 8 classes (angry, disgust, ..., contempt).
_EMOTION_COLUMNS = [
    FERPLUS_VOTE_COLUMNS.index(c)
    for c in ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral", "contempt")
]


def read_votes(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Votes (N, 10) in file column order and the Usage of each row."""
    path = Path(path)
    votes, usage = [], []
    with open_text(path) as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader)]
        if header[2:] != list(FERPLUS_VOTE_COLUMNS):
            raise DataError(f"{path}: vote columns {header[2:]} differ from {list(FERPLUS_VOTE_COLUMNS)}")
        for row_no, row in enumerate(reader, start=1):
            try:
                votes.append([int(v) for v in row[2:12]])
            except ValueError:
                raise DataError(f"{path.name} row {row_no} (line {reader.line_num}): votes must be integers") from None
            usage.append(row[0].strip())
    return np.asarray(votes, dtype=np.int64), np.asarray(usage)


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


def load_ferplus(fer2013_csv: str | Path, votes_csv: str | Path, on_error: str = "raise") -> FaceSet:
    """FER2013 faces relabelled by FER+ majority vote (8 classes) with the vote distribution as soft labels."""
    faces = load_fer2013(fer2013_csv, on_error=on_error)
    row_votes = votes_for_rows(faces.ids, votes_csv, fer2013_csv)
    labels, reason = majority_labels(row_votes)
    keep = labels >= 0
    report = LoadReport(
        source=f"{fer2013_csv} + {votes_csv}", skipped=faces.report.skipped,
        dropped={"unknown or not-a-face on top": int((reason == 1).sum()), "tied top vote": int((reason == 2).sum())},
    )
    return FaceSet(
        images=faces.images[keep], labels=labels[keep], splits=faces.splits[keep],
        class_names=FERPLUS_EMOTIONS, ids=faces.ids[keep],
        soft_labels=vote_distribution(row_votes[keep]), report=report,
    )


def votes_for_rows(ids: np.ndarray, votes_csv: str | Path, data_name: str | Path = "the FER2013 data") -> np.ndarray:
    """The votes (N, 10) of FER2013 rows `ids` (1-based row numbers, as FER2013 readers give them)."""
    if ids.dtype.kind not in "iu":
        raise DataError(f"{votes_csv}: FER+ votes apply to FER2013 CSV rows, not to a folder tree")
    votes, _usage = read_votes(votes_csv)
    if len(votes) < int(ids.max()):
        raise DataError(f"{votes_csv}: {len(votes)} rows, but {data_name} has row {int(ids.max())}")
    return votes[ids - 1]


def ferplus_targets(ids: np.ndarray, votes_csv: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """FER+ soft targets (N, 8) and majority labels (N,; -1 where dropped) for FER2013 rows `ids`.

    Lets one net learn FER2013's labels and FER+'s votes for the same faces (`--aux-ferplus`).
    Rows without any emotion vote get an all-zero target, which contributes no loss.
    """
    row_votes = votes_for_rows(ids, votes_csv)
    return vote_distribution(row_votes), majority_labels(row_votes)[0]
