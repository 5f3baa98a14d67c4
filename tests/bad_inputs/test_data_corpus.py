"""Every data-set case of the corpus through `ferkit data info`, `ferkit data convert` and `ferkit explore`,
as a user runs them: the expected exit status; on a fault one error line naming the file and the fault, no
traceback and no output at all; a skipped file in a tree named on its own line, and the output complete."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bad_inputs.corpus import DATA_COMMANDS, Case, cases_for

FERKIT = Path(sys.executable).with_name("ferkit")


def run(*args) -> subprocess.CompletedProcess:
    cmd = [str(FERKIT)] if FERKIT.exists() else [sys.executable, "-m", "ferkit.apps.cli"]
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})


def argv(case: Case, command: str, bad: Path, where: Path, out: Path) -> list:
    if case.role == "ferplus":
        src, extra = where / "small.csv", ["--ferplus", bad]
    elif case.role == "tree":
        src, extra = where / "tree", []
    else:
        src, extra = bad, []
    if command == "data info":
        return ["data", "info", src, *extra]
    if command == "data convert":
        return ["data", "convert", src, out / "converted"]
    return ["explore", src, "-o", out, *extra]


def all_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink()) if folder.exists() else []


PARAMS = [pytest.param(case, command, id=f"{command}: {case.name}") for command in DATA_COMMANDS
          for case in cases_for(command)]


@pytest.mark.parametrize("case, command", PARAMS)
def test_bad_data(case: Case, command: str, tmp_path):
    where = tmp_path / "in"
    where.mkdir()
    bad = case.build(where)
    out = tmp_path / "out"
    r = run(*argv(case, command, bad, where, out))
    text = r.stdout + r.stderr
    assert "Traceback" not in text and "this is a bug" not in text, text
    assert r.returncode == case.exit_for(command), text
    files = all_files(out)
    assert not [p for p in files if p.name.startswith(".")], files  # no temporary file left behind
    if r.returncode == 2:
        err = r.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and bad.name in err[0], r.stderr
        assert re.search(case.message, err[0]), (case.message, err[0])
        assert not out.exists(), files  # nothing written, not even the folder
        return
    # A tree with one odd file: the file is named as skipped, on its own line, and the rest is used.
    named = [line for line in r.stdout.splitlines() if "skipped" in line and bad.name in line]
    assert len(named) == 1 and re.search(case.message, named[0]), r.stdout
    n_faces = sum(1 for p in (where / "tree").rglob("*.png") if p.is_file() and p.stat().st_size > 100)
    if command == "data convert":
        written = [p for p in files if p.suffix == ".png"]
        assert len(written) == n_faces and all(p.stat().st_size > 0 for p in written)
    elif command == "explore":
        assert {p.name for p in files} == {"faces_grid.png", "class_balance.png"}
