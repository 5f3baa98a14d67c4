"""`ferkit analyze --ray` on a local Ray instance (2 CPUs) over a small real corpus: the same rows and
statuses as the local process pool, and the same resume rule."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from _analyze_corpus import build_corpus
from conftest import FERKIT

import ferkit
from ferkit.batch import run_job
from ferkit.batch.sources import source_key

ray = pytest.importorskip("ray", reason="the 'ray' extra is not installed: pip install 'ferkit[ray]'")

CHUNK = 8
KEY = ["source", "frame", "face"]


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance with 2 CPUs; its address, for a second driver (the CLI) to join."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_corpus(tmp_path_factory.mktemp("corpus"), images=10, videos=2, video_frames=30, seed=1)


@pytest.fixture(scope="module")
def local(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "results"
    r = subprocess.run([*FERKIT, "analyze", str(corpus.root), "-o", str(out), "--workers", "2", "--chunk", str(CHUNK)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 1 and "3 of" in r.stderr, r.stderr[-3000:]
    return out


def tables(results: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    faces = ferkit.read_results(results)
    assert not faces.duplicated(KEY).any()
    return faces, ferkit.read_results(results, table="status").drop(columns="seconds")


def test_ray_gives_the_local_results(cluster, corpus, local, tmp_path):
    out = tmp_path / "ray"
    summary = run_job([str(corpus.root)], out, chunk=CHUNK, ray=True)
    assert summary.backend == "Ray" and summary.workers == 2
    assert summary.done == len(corpus.all) - 3 and summary.failed == 3
    assert len(summary.peak_rss_mb) == 2  # both actors did work
    assert ray.is_initialized()  # a cluster the job did not start is left running
    ray_faces, ray_status = tables(out)
    local_faces, local_status = tables(local)
    assert len(local_faces) > 0
    pd.testing.assert_frame_equal(ray_faces, local_faces)
    pd.testing.assert_frame_equal(ray_status, local_status)


def test_ray_cli_resumes_like_the_local_pool(cluster, corpus, local, tmp_path):
    """A results folder cut back as a kill would leave it (one video two parts short, one photo not done):
    `ferkit analyze --ray-address` redoes exactly the missing pieces."""
    out = tmp_path / "cut"
    shutil.copytree(local, out)
    video, photo = corpus.videos[0], corpus.images[0]
    vkey, pkey = source_key(str(video)), source_key(str(photo))
    parts = sorted((out / "faces").glob(f"{vkey}-*.parquet"))
    assert len(parts) >= 3
    for p in parts[-2:] + [out / "faces" / f"{pkey}-00000.parquet", out / "status" / f"{vkey}.parquet",
                           out / "status" / f"{pkey}.parquet"]:
        p.unlink()
    kept = {p: p.stat().st_mtime_ns for p in parts[:-2]}
    r = subprocess.run([*FERKIT, "analyze", str(corpus.root), "-o", str(out), "--chunk", str(CHUNK),
                        "--ray-address", cluster], capture_output=True, text=True, timeout=900)
    assert r.returncode == 1, r.stderr[-3000:]
    n = len(corpus.all)
    assert f"{n} source(s): 2 done, 3 failed, {n - 5} already done before" in r.stdout, r.stdout
    assert "Ray worker" in r.stdout
    for got, want in zip(tables(out), tables(local)):
        pd.testing.assert_frame_equal(got, want)
    for p, mtime in kept.items():  # the video went on from its last remaining part
        assert p.stat().st_mtime_ns == mtime


def test_no_cluster_at_the_address(corpus, tmp_path):
    """Nothing listening there: one line naming the address, at once (Ray alone would retry for minutes),
    and no results folder made."""
    from _fer_small import assert_one_line_error, run_cli

    r = run_cli("analyze", corpus.images[0], "-o", tmp_path / "r", "--ray-address", "127.0.0.1:9", timeout=120)
    assert_one_line_error(r, "127.0.0.1:9", "no Ray cluster answers")
    assert not (tmp_path / "r").exists()
