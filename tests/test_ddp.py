"""Training on two processes with torchrun (DistributedDataParallel over gloo, on the CPU): the same trajectory as
one process with the same global batch, a killed rank's run resumed from its checkpoint, the global batch shared
out exactly, and --sync-bn's statistics those of the whole batch. Real faces, the mlp baseline, one thread each."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the training stack needs torch: pip install 'ferkit[train]'")

from _fer_small import run_cli, small_csv  # noqa: E402
from ferkit.train.checkpoint import read_metadata  # noqa: E402
from ferkit.train.distributed import BatchShards, World  # noqa: E402

TESTS = Path(__file__).parent
# torchrun as the venv has it, two processes on this machine (a free port for the rendezvous)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]


def torchrun(*args, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*TORCHRUN, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def history(run: Path) -> list[dict]:
    """Every column of history.csv but the wall time."""
    with open(run / "history.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def model_tensors(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v for k, v in load_file(str(run / "last.safetensors")).items() if k.startswith("model.")}


# ----------------------------------------------------------------------------- the same run as one process
def test_two_processes_follow_the_single_process_trajectory(tmp_path):
    """201 real faces at a global batch of 32 (six full batches and one of 9, shared 5 + 4: the uneven share's
    loss weight matters), 2 epochs, 14 SGD steps. No augmentation and no dropout (the ranks' random draws differ
    from one process's by design), --sync-bn (BatchNorm over the global batch, as in one process).

    Tolerance: the runs differ only in the order of floating-point sums (each rank sums its share's gradient and
    statistics, the all-reduce adds the two), a relative error of order 1e-7 per step that SGD carries along
    without amplifying. Measured on these faces: at most 2.1e-6 of a tensor's largest value (a BatchNorm running
    variance), 1e-6 for the weights. Allowed: 1e-4 of the tensor's largest value, some 50x above that and far
    below what a mistake costs: per-rank BatchNorm (no --sync-bn) differs by 1.4 to 9 times the tensors' largest
    values, and weighting the 5- and 4-face shares alike (the 9-face batch's mean loss taken as the mean of the
    two shares' means) by up to 0.18 of them (0.09 for the weights).
    (Adam is left out: with any change of summation order, one process on 2 threads instead of 1 included, its
    updates of weights whose true gradient is zero, the biases before BatchNorm, follow the rounding noise.)"""
    data = small_csv(tmp_path / "faces.csv", {"Training": 400, "PublicTest": 96}, seed=8)
    recipe = tmp_path / "no-dropout.json"
    recipe.write_text(json.dumps({"model_kwargs": {"dropout": 0.0}}))
    opts = ["--model", "mlp", "--config", recipe, "--limit", 201, "--epochs", 2, "--batch-size", 32,
            "--optimizer", "sgd", "--lr", 0.02, "--schedule", "none", "--no-flip", "--rotation", 0, "--shift", 0,
            "--zoom", 0, "--precision", "fp32", "--threads", 1, "--seed", 1]
    one = run_cli("train", data, *opts, "--out", tmp_path / "one")
    assert one.returncode == 0, one.stderr[-3000:]
    two = torchrun("-m", "ferkit.apps.cli", "train", data, *opts, "--sync-bn", "--out", tmp_path / "two")
    assert two.returncode == 0, two.stderr[-3000:]

    sessions = json.loads((tmp_path / "two" / "runinfo.json").read_text())["sessions"]
    assert sessions[-1]["world_size"] == 2 and sessions[-1]["backend"] == "gloo"
    assert "world_size" not in json.loads((tmp_path / "one" / "runinfo.json").read_text())["sessions"][-1]
    assert two.stderr.count("epoch 2: train loss") == 1, two.stderr[-3000:]  # rank 0 alone reports

    for a, b in zip(history(tmp_path / "one"), history(tmp_path / "two"), strict=True):
        assert a["epoch"] == b["epoch"] and a["train_acc"] == b["train_acc"] and a["val_acc"] == b["val_acc"], (a, b)
        for column in ("train_loss", "val_loss"):
            assert abs(float(a[column]) - float(b[column])) <= 2e-5, (column, a, b)  # rounded to 5 places
    single, double = model_tensors(tmp_path / "one"), model_tensors(tmp_path / "two")
    assert single.keys() == double.keys()
    for name, a in single.items():
        b = double[name]
        if not a.is_floating_point():  # BatchNorm's step count
            assert torch.equal(a, b), name
            continue
        worst, scale = float((a - b).abs().max()), float(a.abs().max())
        assert worst <= 1e-4 * scale, f"{name}: differs by {worst:.3g}, its largest value is {scale:.3g}"


# ----------------------------------------------------------------------------- a killed rank, resumed
def workers(launcher: int) -> dict[int, int]:
    """The processes torchrun started, by rank: {rank: pid} (Linux /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == launcher:
            rank = next((int(v[5:]) for v in env if v.startswith(b"RANK=")), None)
            if rank is not None:
                found[rank] = int(entry.name)
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds torchrun's workers through /proc")
def test_a_killed_rank_resumes_from_the_checkpoint(tmp_path):
    """Rank 1 of a 3-epoch run (augmentation and dropout on: each rank's own random draws) is SIGKILLed once an
    epoch is checkpointed; torchrun ends the other rank and fails. `--resume` continues from the checkpoint on both
    ranks and finishes: every epoch once in the history, and the run bit for bit the uninterrupted one."""
    data = small_csv(tmp_path / "faces.csv", {"Training": 320, "PublicTest": 96}, seed=9)
    opts = ["--model", "mlp", "--epochs", "3", "--batch-size", "32", "--precision", "fp32", "--threads", "1",
            "--seed", "4"]
    ref = torchrun("-m", "ferkit.apps.cli", "train", data, *opts, "--out", tmp_path / "reference")
    assert ref.returncode == 0, ref.stderr[-3000:]

    out, log = tmp_path / "killed", tmp_path / "killed.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([*TORCHRUN, "-m", "ferkit.apps.cli", "train", str(data), *opts, "--out", str(out)],
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    started: dict[int, int] = {}
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            if len(started) < 2:  # torchrun starts its workers one after the other
                started = workers(proc.pid)
            if (out / "last.safetensors").exists() and read_metadata(out / "last.safetensors")["state"]["epoch"] >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"run ended before it could be killed: {log.read_text()[-2000:]}"
        assert sorted(started) == [0, 1], started
        os.kill(started[1], signal.SIGKILL)
        proc.wait(300)
    finally:  # whatever is left of the run: torchrun and its workers (each in its own session)
        for pid in [proc.pid, *started.values()]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode != 0
    assert not any(alive(pid) for pid in started.values()), "a rank outlived its run"
    done = read_metadata(out / "last.safetensors")["state"]["epoch"]
    assert 1 <= done < 3, "the kill came after the run ended"
    # rank 0 writes the checkpoint, then history.csv: the kill may fall between the two (the resume rewrites it)
    assert (len(history(out)) if (out / "history.csv").exists() else 0) in (done - 1, done)

    r = torchrun("-m", "ferkit.apps.cli", "train", data, *opts, "--out", out, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count(f"after epoch {done}") == 1, r.stderr[-3000:]
    assert [int(row["epoch"]) for row in history(out)] == [1, 2, 3]
    assert history(out) == history(tmp_path / "reference")
    a, b = model_tensors(out), model_tensors(tmp_path / "reference")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sessions = json.loads((out / "runinfo.json").read_text())["sessions"]
    assert [s["resumed_after_epoch"] for s in sessions] == [0, done]
    assert not list(out.glob(".*tmp*"))


# ----------------------------------------------------------------------------- the pieces
@pytest.mark.parametrize("n, batch, ranks", [(201, 32, 2), (100, 12, 3), (96, 32, 4), (70, 32, 4)])
def test_ranks_share_each_global_batch_of_the_one_permutation(n, batch, ranks):
    """Rank by rank, the shares of each step put together are the single-process batch, in order; each rank's
    loss weight makes the mean over ranks the global batch's mean; a last batch that cannot give every rank two
    faces is left out (70 % 32 = 6 < 2 x 4)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    single = BatchShards(n, batch, World())
    shards = [BatchShards(n, batch, World(rank=r, size=ranks)) for r in range(ranks)]
    kept = len(single) - (1 if 0 < n % batch < 2 * ranks else 0)
    assert all(len(s) == kept for s in shards)
    for step in range(kept):
        whole, weight = single.batch(perm, step)
        assert weight == 1.0
        parts = [s.batch(perm, step) for s in shards]
        assert torch.equal(torch.cat([p for p, _ in parts]), whole)
        assert max(len(p) for p, _ in parts) - min(len(p) for p, _ in parts) <= 1
        losses = torch.rand(n, dtype=torch.float64, generator=torch.Generator().manual_seed(step))
        averaged = sum(w * losses[p].mean() for p, w in parts) / ranks  # what DDP's gradient averaging sees
        assert float(averaged) == pytest.approx(float(losses[whole].mean()), rel=1e-12)
        if len(whole) == batch:
            assert all(len(p) == batch // ranks and w == 1.0 for p, w in parts)


def test_sync_bn_on_cpus_normalises_over_the_whole_batch(tmp_path):
    """Two gloo processes, each with its share (6 and 5 faces, channels-last) of a BatchNorm2d batch: output,
    gradients and running statistics are those of one BatchNorm2d over all 11 (float32 rounding apart)."""
    out = tmp_path / "diffs.json"
    r = torchrun(TESTS / "_ddp_batchnorm.py", out, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    diffs = json.loads(out.read_text())
    assert diffs.pop("converted") == "AllReduceBatchNorm" and diffs.pop("batches_tracked") == 1
    assert all(value < 1e-5 for value in diffs.values()), diffs


def test_a_global_batch_that_does_not_split_is_one_line(tmp_path):
    data = small_csv(tmp_path / "faces.csv", {"Training": 64, "PublicTest": 32}, seed=1)
    r = torchrun("-m", "ferkit.apps.cli", "train", data, "--model", "mlp", "--batch-size", 33, "--threads", 1,
                 "--out", tmp_path / "run")
    assert r.returncode != 0
    ours = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert ours == [("error: --batch-size 33: the global batch must split evenly over 2 processes (each takes "
                     "batch-size / 2); use a multiple of 2")], r.stderr[-3000:]
    assert "this is a bug" not in r.stderr
    assert not (tmp_path / "run").exists()
