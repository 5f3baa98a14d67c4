"""Every bad input of the corpus through `ferkit predict`, `chart` and `video`, as a user runs them: the
expected exit status, one error line naming the file and the fault, no traceback, no partial output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from _runtime_media import astronaut_bgr, write_video
from bad_inputs.corpus import Case, cases_for

FERKIT = Path(sys.executable).with_name("ferkit")
COMMANDS = ("predict", "chart", "video")


def run(*args, env=None) -> subprocess.CompletedProcess:
    cmd = [str(FERKIT)] if FERKIT.exists() else [sys.executable, "-m", "ferkit.apps.cli"]
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """A good photo and a good clip, for the cases where the bad file is the model."""
    d = tmp_path_factory.mktemp("good")
    photo = d / "astronaut.png"
    cv2.imwrite(str(photo), astronaut_bgr())
    return {"photo": photo, "clip": write_video(d / "clip.mp4", n=6, fps=10)}


def argv(case: Case, command: str, bad: Path, out: Path, media: dict[str, Path]) -> list:
    if case.role == "model":
        src = media["clip"] if command == "video" else media["photo"]
        extra = ["--model", bad]
    else:
        src, extra = bad, []
    target = out / "chart.png" if command == "chart" else out
    return [command, src, "-o", target, *extra, "--detector", "haar"]


def all_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


PARAMS = [pytest.param(case, command, id=f"{command}: {case.name}") for command in COMMANDS
          for case in cases_for(command)]


@pytest.mark.parametrize("case, command", PARAMS)
def test_bad_input(case: Case, command: str, media, tmp_path):
    where = tmp_path / "in"
    where.mkdir()
    bad = case.build(where)
    out = tmp_path / "out"
    r = run(*argv(case, command, bad, out, media), env=dict(case.env))
    text = r.stdout + r.stderr
    assert "Traceback" not in text and "this is a bug" not in text, text
    assert r.returncode == case.exit_for(command), text
    # one error line names the file (a model's card, or its ONNX file) and says what is wrong with it
    names = {bad.name, bad.with_suffix(".json").name} if case.role == "model" else {bad.name}
    named = [line for line in r.stderr.splitlines() if line.startswith("error:") and any(n in line for n in names)]
    assert len(named) == 1, r.stderr
    assert re.search(case.message, named[0]), (case.message, named[0])
    # nothing half-written, and nothing at all unless the batch itself went on (predict, exit 1)
    files = all_files(out)
    assert not [p for p in files if p.name.startswith(".")], files  # no temporary file left behind
    if r.returncode == 2:
        assert files == [], files
    else:
        assert {p.name for p in files} == {"results.json", "results.csv"}, files
        (rec,) = json.loads((out / "results.json").read_text())["images"]
        assert rec["faces"] == [] and bad.name in rec["error"] and re.search(case.message, rec["error"])
