"""Data layer: every source layout becomes a `FaceSet` of uint8 48x48 faces.

`load_dataset` picks the reader from what the path is: a FER2013 CSV (plain or .gz), a folder tree,
or a directory holding `fer2013.csv[.gz]` (and `fer2013new.csv` when FER+ labels are asked for).
"""

from __future__ import annotations

import os
from pathlib import Path

from ferkit.data.csvio import file_kind
from ferkit.data.faceset import DataError, FaceSet, LoadReport
from ferkit.data.fer2013 import load_fer2013, write_fer2013
from ferkit.data.ferplus import load_ferplus
from ferkit.data.folders import UNSPLIT, load_folder_tree, write_folder_tree

__all__ = [
    "DataError", "FaceSet", "LoadReport", "UNSPLIT", "default_data_dir", "find_fer2013_csv", "load_dataset",
    "load_fer2013", "load_ferplus", "load_folder_tree", "write_fer2013", "write_folder_tree",
]


def default_data_dir() -> Path:
    """$FERKIT_DATA, else the shared data set beside a source checkout (../shared/data/fer2013)."""
    env = os.environ.get("FERKIT_DATA")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[3]
    return repo.parent / "shared" / "data" / "fer2013"


def find_fer2013_csv(directory: Path) -> Path | None:
    for name in ("fer2013.csv.gz", "fer2013.csv"):
        if (directory / name).is_file():
            return directory / name
    return None


def load_dataset(
    source: str | Path,
    *,
    ferplus: str | Path | bool | None = None,
    classes: tuple[str, ...] | None = None,
    on_error: str = "raise",
) -> FaceSet:
    """Load faces from any supported layout.

    ferplus: path to `fer2013new.csv`, or True to look for it beside the FER2013 CSV; relabels the
    faces by FER+ majority vote with vote distributions as soft labels.
    classes: keep only these classes (labels renumbered in this order).
    """
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such file or directory")
    if not (source.is_file() or source.is_dir()):
        raise DataError(f"{source}: not a regular file or a folder ({file_kind(source.stat().st_mode)})")
    csv_path = source if source.is_file() else find_fer2013_csv(source)
    if csv_path is not None:
        if ferplus:
            votes = Path(ferplus) if not isinstance(ferplus, bool) else csv_path.parent / "fer2013new.csv"
            if not votes.is_file():
                raise DataError(f"{votes}: FER+ votes file not found")
            faces = load_ferplus(csv_path, votes, on_error=on_error)
        else:
            faces = load_fer2013(csv_path, on_error=on_error)
    else:
        if ferplus:
            raise DataError(f"{source}: FER+ votes apply to the FER2013 CSV, not to a folder tree")
        faces = load_folder_tree(source, on_error="raise" if on_error == "raise-files" else "skip")
    if classes:
        faces = faces.select_classes(classes)
    return faces
