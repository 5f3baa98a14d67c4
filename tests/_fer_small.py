"""Small real data sets for the training and evaluation tests: random FER2013 rows written as a Kaggle CSV.

The rows are real faces with their real labels, only fewer of them, so a CPU test trains and scores in
seconds. Tests that need the data skip with a clear reason when the real file is absent.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import FERKIT  # noqa: E402  (one definition of how tests call the CLI)

_CACHE: dict = {}


def real_data_dir() -> Path:
    from conftest import data_dir_or_skip

    return data_dir_or_skip()


def real_faces():
    """The whole FER2013 FaceSet (parsed once per test process, then from ferkit's cache)."""
    if "faces" not in _CACHE:
        from ferkit.data import load_dataset

        _CACHE["faces"] = load_dataset(real_data_dir())
    return _CACHE["faces"]


def small_csv(path: Path, counts: dict[str, int], seed: int = 0) -> Path:
    """Write `counts[split]` random real faces of each split (labels as they are) to a FER2013 CSV."""
    from ferkit.data import write_fer2013

    write_fer2013(real_faces().subset(_kept_mask(counts, seed)), path)
    return path


def small_csv_with_votes(folder: Path, counts: dict[str, int], seed: int = 0) -> tuple[Path, Path]:
    """`small_csv` plus the matching rows of the FER+ votes file, in the same order (row i = row i)."""
    votes = real_data_dir() / "fer2013new.csv"
    if not votes.is_file():
        pytest.skip(f"FER+ votes absent: {votes}")
    from ferkit.data import write_fer2013

    keep = _kept_mask(counts, seed)
    csv_path = folder / "small.csv"
    write_fer2013(real_faces().subset(keep), csv_path)
    original = real_faces().ids[keep]  # the real rows the small file's rows 1..N came from
    lines = votes.read_text().splitlines()
    (folder / "votes.csv").write_text("\n".join([lines[0], *(lines[int(i)] for i in original)]) + "\n")
    return csv_path, folder / "votes.csv"


def _kept_mask(counts: dict[str, int], seed: int) -> np.ndarray:
    faces = real_faces()
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(faces), dtype=bool)
    for split, n in counts.items():
        idx = np.flatnonzero(faces.splits == split)
        keep[np.sort(rng.choice(idx, size=min(n, len(idx)), replace=False))] = True
    return keep


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*FERKIT, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(r: subprocess.CompletedProcess, *fragments: str) -> None:
    """A user error: exit status 2, one 'error: …' line on stderr naming the problem, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    err = r.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
