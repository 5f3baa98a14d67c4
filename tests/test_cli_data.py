"""`ferkit explore` and `ferkit data` as a user runs them (subprocess)."""

from __future__ import annotations

import subprocess

import cv2

from conftest import FERKIT


def run(*args):
    return subprocess.run([*FERKIT, *map(str, args)], capture_output=True, text=True)


def test_help_everywhere():
    for args in ([], ["explore"], ["data"], ["data", "convert"], ["data", "info"], ["train"]):
        proc = run(*args, "--help")
        assert proc.returncode == 0 and "Usage" in proc.stdout, args


def test_explore_real_data(tmp_path, data_dir, fer2013):
    proc = run("explore", data_dir / "fer2013.csv.gz", "-o", tmp_path)
    assert proc.returncode == 0, proc.stderr
    for split, values in fer2013.counts().items():
        assert split in proc.stdout and str(sum(values)) in proc.stdout
    grid = cv2.imread(str(tmp_path / "faces_grid.png"))
    chart = cv2.imread(str(tmp_path / "class_balance.png"))
    assert grid is not None and grid.shape[0] > 400 and grid.shape[1] > 400
    assert chart is not None and chart.shape[1] > chart.shape[0]
    # The grid shows faces, not a blank page: plenty of grey-level variety.
    assert grid.std() > 30


def test_explore_class_subset_and_ferplus(tmp_path, data_dir):
    proc = run("explore", data_dir, "--ferplus", data_dir / "fer2013new.csv", "--classes", "happy,contempt", "-o", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "contempt" in proc.stdout and "angry" not in proc.stdout
    assert "dropped (tied top vote)" in proc.stdout


def test_bad_input_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("emotion,pixels,Usage\n3,1 2 3,Training\n")
    proc = run("explore", bad, "-o", tmp_path)
    assert proc.returncode == 2
    assert "bad.csv row 1 (line 2)" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("explore", bad, "-o", tmp_path / "o", "--skip-bad-rows")
    assert proc.returncode == 2 and "no valid rows" in proc.stderr
    proc = run("explore", tmp_path / "missing.csv")
    assert proc.returncode == 2 and "missing.csv" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("explore", tmp_path, "--classes", "happy,grumpy")
    assert proc.returncode == 2 and "grumpy" in proc.stderr
