"""`ferkit analyze` / `ferkit report` / `ferkit.read_results` on a real corpus: FER2013 faces in photos and
OpenCV-encoded videos, plus broken files. Real `ferkit` processes are killed mid-run and rerun."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _analyze_corpus import build_corpus
from _fer_small import assert_one_line_error, run_cli
from conftest import FERKIT

import ferkit
from ferkit.batch.sources import expand_sources, source_key
from ferkit.errors import DataError, UsageError

VIDEO_FRAMES, FPS, CHUNK = 60, 10.0, 8
KEY = ["source", "frame", "face"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_corpus(tmp_path_factory.mktemp("corpus"), images=16, videos=3, video_frames=VIDEO_FRAMES, fps=FPS)


def analyze_cmd(corpus, out: Path, *extra: str) -> list[str]:
    return [*FERKIT, "analyze", str(corpus.root), "-o", str(out), "--workers", "2", "--chunk", str(CHUNK), *extra]


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """One uninterrupted run: (results folder, completed process)."""
    out = tmp_path_factory.mktemp("ref") / "results"
    proc = subprocess.run(analyze_cmd(corpus, out), capture_output=True, text=True, timeout=900)
    return out, proc


def faces_of(results: Path) -> pd.DataFrame:
    return ferkit.read_results(results)


def status_of(results: Path) -> pd.DataFrame:
    return ferkit.read_results(results, table="status").drop(columns="seconds")


def assert_same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert not a.duplicated(KEY).any() and not b.duplicated(KEY).any()
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


def test_reference_run(corpus, reference):
    out, proc = reference
    n = len(corpus.all)
    assert proc.returncode == 1, proc.stderr[-3000:]
    err = proc.stderr.strip().splitlines()
    assert err[-1].startswith("error: 3 of") and "failed" in err[-1], err
    assert "Traceback" not in proc.stderr
    assert f"{n} source(s): {n - 3} done, 3 failed" in proc.stdout, proc.stdout

    status = ferkit.read_results(out, table="status")
    assert list(status.columns) == ["source", "kind", "status", "reason", "faces", "frames", "seconds"]
    assert sorted(status["source"]) == sorted(str(p) for p in corpus.all)
    failed = status[status["status"] == "failed"]
    assert sorted(failed["source"]) == sorted(str(p) for p in corpus.broken)
    for _, row in failed.iterrows():  # each reason is one line naming the file
        assert row["source"] in row["reason"] and "\n" not in row["reason"]
        assert row["faces"] == 0 and row["frames"] == 0

    faces = faces_of(out)
    classes = list(ferkit.FacialExpressionModel().classes)
    assert list(faces.columns) == ["source", "frame", "time", "track", "face", "x1", "y1", "x2", "y2", "score",
                                   "label", *classes, "model", "card_sha256"]
    assert not faces.duplicated(KEY).any()
    assert set(faces["source"]) <= set(status.loc[status["status"] == "done", "source"])
    assert np.allclose(faces[classes].sum(axis=1), 1.0, atol=1e-4)
    assert (faces["label"] == faces[classes].idxmax(axis=1)).all()
    card = Path(ferkit.FacialExpressionModel().path).with_suffix(".json")
    assert set(faces["card_sha256"]) == {hashlib.sha256(card.read_bytes()).hexdigest()}
    assert set(faces["model"]) == {"fer2013-7"}
    counts = faces.groupby("source").size()
    for _, row in status[status["status"] == "done"].iterrows():  # the status counts what the table holds
        assert counts.get(row["source"], 0) == row["faces"]

    photos = faces[faces["track"].isna()]
    assert photos["time"].isna().all() and (photos["frame"] == 0).all()
    # the detector finds the upscaled FER2013 faces: one per photo, two in every third
    expected = {str(p): 2 if i % 3 == 2 else 1 for i, p in enumerate(corpus.images)}
    found = photos.groupby("source").size()
    hits = sum(found.get(s, 0) == k for s, k in expected.items())
    assert hits >= 0.8 * len(expected), found

    for video in corpus.videos:
        v = faces[faces["source"] == str(video)]
        assert status.set_index("source").loc[str(video), "frames"] == VIDEO_FRAMES
        assert v["frame"].nunique() >= 0.9 * VIDEO_FRAMES  # a face in (nearly) every frame
        assert np.allclose(v["time"], v["frame"] / FPS)
        assert v["track"].notna().all() and v["track"].nunique() <= 2  # one face drifting: one track


def test_rows_are_what_the_runtime_finds(corpus, reference):
    """The batch rows of a photo are `Analyzer.analyze` of that photo, face by face."""
    from ferkit.runtime.pipeline import Analyzer

    faces = faces_of(reference[0])
    analyzer = Analyzer()
    for path in corpus.images[:4]:
        mine = faces[faces["source"] == str(path)]
        theirs = analyzer.analyze(str(path))
        assert len(mine) == len(theirs)
        for (_, row), f in zip(mine.iterrows(), theirs):
            assert row["label"] == f.label
            assert np.allclose([row[k] for k in ("x1", "y1", "x2", "y2")], f.box, atol=0.05)
            assert np.allclose([row[c] for c in analyzer.classes], [f.probabilities[c] for c in analyzer.classes],
                               atol=1e-4)


def _video_parts_without_status(results: Path, corpus) -> dict[str, list[Path]]:
    """Videos with committed parts but no status yet (caught mid-video)."""
    partial = {}
    for video in corpus.videos:
        key = source_key(str(video))
        parts = sorted((results / "faces").glob(f"{key}-*.parquet"))
        if parts and not (results / "status" / f"{key}.parquet").exists():
            partial[str(video)] = parts
    return partial


def _kill_mid_video(corpus, out: Path) -> dict[str, list[Path]]:
    """Start a real run, SIGKILL it once a source is done and a video is half done; what is left half done."""
    proc = subprocess.Popen(analyze_cmd(corpus, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while proc.poll() is None:
            partial = _video_parts_without_status(out, corpus)
            if any(len(p) >= 2 for p in partial.values()) and any((out / "status").glob("*.parquet")):
                break  # a source done, a video half done
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
    return _video_parts_without_status(out, corpus)


def test_killed_run_resumes_exactly_once(corpus, reference, tmp_path):
    """SIGKILL a real run mid-video; the rerun skips what is done, goes on from the video's last part, and
    the table equals the uninterrupted run's: same rows, none twice."""
    for attempt in range(5):  # on a loaded machine the video may finish between the look and the kill: try again
        out = tmp_path / f"results{attempt}"
        partial = _kill_mid_video(corpus, out)
        if partial:
            break
    assert partial, "no video was caught half done in 5 tries"
    kept = {p: p.stat().st_mtime_ns for parts in partial.values() for p in parts[:-1]}
    done_before = len(list((out / "status").glob("*.parquet")))
    assert done_before < len(corpus.all)

    again = subprocess.run(analyze_cmd(corpus, out), capture_output=True, text=True, timeout=900)
    assert again.returncode == 1, again.stderr[-3000:]
    assert "already done before" in again.stdout
    assert_same_rows(faces_of(out), faces_of(reference[0]))
    pd.testing.assert_frame_equal(status_of(out), status_of(reference[0]))
    for p, mtime in kept.items():  # the video went on from its last part: the earlier parts were not redone
        assert p.stat().st_mtime_ns == mtime, p


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry.name))
    return kids


def test_a_dead_worker_fails_its_source_alone(corpus, reference, tmp_path):
    """A worker process killed mid-video (as an out-of-memory kill would): that source fails with the reason,
    every other source is done, and a rerun completes the table."""
    out = tmp_path / "results"
    proc = subprocess.Popen(analyze_cmd(corpus, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = None
    while proc.poll() is None and victim is None:
        if _video_parts_without_status(out, corpus):
            workers = [k for k in _children(proc.pid) if "spawn_main" in Path(f"/proc/{k}/cmdline").read_text()]
            if workers:
                victim = workers[0]
                os.kill(victim, signal.SIGKILL)
        time.sleep(0.02)
    stdout, stderr = proc.communicate(timeout=900)
    assert victim is not None, "the run ended before a worker could be killed"
    assert proc.returncode == 1, stderr[-3000:]
    status = ferkit.read_results(out, table="status")
    died = status[status["reason"].fillna("").str.contains("worker process died")]
    assert len(died) == 1 and "signal 9" in died["reason"].iloc[0], status
    assert (status["status"] == "failed").sum() == 4  # the three broken files and the one it held
    assert len(status) == len(corpus.all)

    again = subprocess.run(analyze_cmd(corpus, out), capture_output=True, text=True, timeout=900)
    assert again.returncode == 1
    assert_same_rows(faces_of(out), faces_of(reference[0]))
    pd.testing.assert_frame_equal(status_of(out), status_of(reference[0]))


def test_rerun_of_a_finished_job_redoes_only_failures(corpus, reference, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(reference[0], out)
    before = {p: p.stat().st_mtime_ns for p in (out / "faces").glob("*.parquet")}
    r = subprocess.run(analyze_cmd(corpus, out), capture_output=True, text=True, timeout=900)
    assert r.returncode == 1
    n = len(corpus.all)
    assert f"{n} source(s): 0 done, 3 failed, {n - 3} already done before" in r.stdout, r.stdout
    assert {p: p.stat().st_mtime_ns for p in (out / "faces").glob("*.parquet")} == before


def test_other_settings_are_refused(corpus, reference, tmp_path):
    before = sorted(p.name for p in (reference[0] / "status").iterdir())
    r = subprocess.run(analyze_cmd(corpus, reference[0], "--every", "2"), capture_output=True, text=True, timeout=300)
    assert_one_line_error(r, str(reference[0]), "every: 1 -> 2", "--overwrite")
    assert sorted(p.name for p in (reference[0] / "status").iterdir()) == before
    out = tmp_path / "copy"
    shutil.copytree(reference[0], out)
    r = run_cli("analyze", corpus.images[0], "-o", out, "--every", "2", "--overwrite", "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert ferkit.read_results(out, table="status")["source"].tolist() == [str(corpus.images[0])]
    assert set(ferkit.read_results(out)["source"]) == {str(corpus.images[0])}


def test_report(reference, corpus, tmp_path):
    r = run_cli("report", reference[0], "-o", tmp_path / "report")
    assert r.returncode == 0, r.stderr
    table = pd.read_csv(tmp_path / "report" / "sources.csv")
    assert len(table) == len(corpus.all)
    assert {"status", "reason", "faces", "frames", "tracks", "main_label", "plot"} <= set(table.columns)
    videos = table[table["kind"] == "video"].set_index("source")
    for video in corpus.videos:
        png = tmp_path / "report" / videos.loc[str(video), "plot"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (table.loc[table["kind"] == "image", "plot"].isna()).all()


def test_video_frame_sampling(corpus, tmp_path):
    video = corpus.videos[0]
    for flag, value, frames in (("--every", "7", list(range(0, VIDEO_FRAMES, 7))),
                                ("--fps", "2", list(range(0, VIDEO_FRAMES, 5)))):
        out = tmp_path / flag.strip("-")
        r = run_cli("analyze", video, "-o", out, flag, value, "--workers", "1")
        assert r.returncode == 0, r.stderr
        assert ferkit.read_results(out, table="status")["frames"].tolist() == [len(frames)]
        assert set(ferkit.read_results(out)["frame"]) <= set(frames)
    r = run_cli("analyze", video, "-o", tmp_path / "both", "--every", "2", "--fps", "1")
    assert_one_line_error(r, "--every", "--fps")


def test_sources_lists_globs_folders(corpus, tmp_path):
    root = corpus.root
    (tmp_path / "list.txt").write_text(f"# photos\n{corpus.images[0]}\n\n{os.path.relpath(corpus.images[1], tmp_path)}\n"
                                       f"{corpus.videos[0]}\nmissing.png\n")
    (tmp_path / "list.csv").write_text(f"path,note\n{corpus.images[2]},x\n{corpus.images[0]},dup\n")
    sources, warnings = expand_sources([f"@{tmp_path / 'list.txt'}", str(tmp_path / "list.csv"),
                                        str(root / "photos" / "**" / "*.jpg"), str(root / "videos"),
                                        str(root / "nothing" / "*.png")])
    paths = [s.path for s in sources]
    assert len(paths) == len(set(paths))  # every source once
    assert paths[:4] == [str(corpus.images[0]), str(corpus.images[1]), str(corpus.videos[0]), str(tmp_path / "missing.png")]
    assert str(corpus.images[2]) in paths and all(str(v) in paths for v in corpus.videos)
    assert {s.kind for s in sources if s.path.endswith((".mp4", ".avi"))} == {"video"}
    assert any("matches no files" in w for w in warnings)
    with pytest.raises(DataError, match="no such list"):
        expand_sources(["@" + str(tmp_path / "absent.txt")])
    with pytest.raises(UsageError):
        expand_sources([])

    out = tmp_path / "results"
    r = run_cli("analyze", f"@{tmp_path / 'list.txt'}", "-o", out, "--workers", "1")
    assert r.returncode == 1 and "1 of 4 source(s) failed" in r.stderr, r.stderr
    status = ferkit.read_results(out, table="status").set_index("source")
    assert status.loc[str(tmp_path / "missing.png"), "reason"].endswith("no such file")


def test_usage_errors(corpus, tmp_path):
    assert_one_line_error(run_cli("analyze", tmp_path / "empty*.png", "-o", tmp_path / "r"), "no image or video")
    assert_one_line_error(run_cli("analyze", corpus.images[0], "-o", tmp_path / "r2", "--model", "nope.onnx"), "nope.onnx")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert_one_line_error(run_cli("analyze", corpus.images[0], "-o", tmp_path / "other"), "not ferkit results")
    with pytest.raises(DataError, match="not a ferkit results folder"):
        ferkit.read_results(tmp_path)
    with pytest.raises(UsageError, match="table"):
        ferkit.read_results(tmp_path / "other", table="bogus")


def test_batch_never_imports_torch():
    script = ("import sys, ferkit.batch, ferkit.batch.job, ferkit.batch.local, ferkit.batch.report, ferkit.results, "
              "ferkit.apps.cli_analyze\nprint(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx')))")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
