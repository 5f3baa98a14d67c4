"""Stochastic weight averaging (`train --swa-start`): the run keeps the running mean of its end-of-epoch
weights, re-estimates BatchNorm for it, scores it on the validation split and checkpoints it when it
beats every epoch before it."""

from __future__ import annotations

import csv

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the training stack needs torch: pip install 'ferkit[train]'")

from _fer_small import real_faces, run_cli, small_csv  # noqa: E402
from ferkit.train.checkpoint import MODEL_PREFIX, read_metadata  # noqa: E402
from ferkit.train.config import TrainConfig  # noqa: E402
from ferkit.train.loop import train  # noqa: E402
from ferkit.train.swa import WeightAverage, recompute_batchnorm  # noqa: E402


def test_average_is_the_mean_of_the_epochs_weights(tmp_path):
    """After epochs 2 and 3 of a run averaging from epoch 2, the stored average is (w2 + w3) / 2 exactly
    for every weight; the history scores it each epoch, and best.safetensors says which weights it holds."""
    from safetensors.torch import load_file

    data = small_csv(tmp_path / "d.csv", {"Training": 256, "PublicTest": 128}, seed=11)
    cfg = TrainConfig(data=str(data), model="seed-cnn-small", epochs=3, batch_size=32, threads=1, seed=2,
                      optimizer="sgd", lr=0.02, schedule="none", swa_start=2, out=str(tmp_path / "run"))
    seen = {}
    for epoch in (1, 2, 3):
        train(cfg, resume=epoch > 1, progress=False, stop_after=1)
        seen[epoch] = load_file(str(tmp_path / "run" / "last.safetensors"))
    w2, w3 = ({k[len(MODEL_PREFIX):]: v for k, v in seen[e].items() if k.startswith(MODEL_PREFIX)} for e in (2, 3))
    avg = {k[len(WeightAverage.PREFIX):]: v for k, v in seen[3].items() if k.startswith(WeightAverage.PREFIX)}
    params = [k for k in w3 if k.endswith(".weight") or k.endswith(".bias")]
    assert params and not any(k.startswith(WeightAverage.PREFIX) for k in seen[1])
    assert not torch.equal(w2[params[0]], w3[params[0]])  # the weights moved, so the test means something
    for k in params:
        torch.testing.assert_close(avg[k], (w2[k] + w3[k]) / 2, rtol=0, atol=1e-6)

    with open(tmp_path / "run" / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["swa_val_acc"] != "" for r in rows] == [False, True, True]
    assert all(0.0 <= float(r["swa_val_acc"]) <= 1.0 for r in rows[1:])
    best_meta = read_metadata(tmp_path / "run" / "best.safetensors")
    best_score = max([float(r["val_acc"]) for r in rows] + [float(r["swa_val_acc"]) for r in rows[1:]])
    assert best_meta["val_acc"] == pytest.approx(best_score, abs=1e-5)
    if "swa_epochs" in best_meta:  # the average won: best holds its weights, with BatchNorm re-estimated
        best = load_file(str(tmp_path / "run" / "best.safetensors"))
        assert best_meta["swa_epochs"][0] == 2
        for k in params:
            torch.testing.assert_close(best[k], avg[k] if best_meta["swa_epochs"][1] == 3 else w2[k], rtol=0, atol=1e-6)


def test_batchnorm_is_re_estimated_as_the_plain_mean_over_the_faces():
    """recompute_batchnorm sets a BatchNorm's running mean/var to the mean of its input over all the given
    (equal-sized) batches and the mean of the batches' unbiased variances, whatever they were before."""
    from contextlib import nullcontext

    from ferkit.preprocessing import normalize

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 4, 3)
    net = torch.nn.Sequential(conv, torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3))
    bn = net[1]
    bn.running_mean.fill_(5.0)
    bn.running_var.fill_(9.0)
    faces = real_faces().images[:300]
    batches = [torch.from_numpy(normalize(faces[i:i + 100])) for i in range(0, 300, 100)]
    recompute_batchnorm(net, batches, nullcontext)
    with torch.no_grad():
        acts = [conv(b).transpose(0, 1).reshape(4, -1) for b in batches]
    assert not net.training
    assert bn.momentum == 0.1  # restored
    torch.testing.assert_close(bn.running_mean, torch.cat(acts, 1).mean(1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.running_var, torch.stack([a.var(1) for a in acts]).mean(0), rtol=1e-4, atol=1e-5)


def test_swa_start_on_the_command_line(tmp_path):
    """`ferkit train --swa-start` runs, prints the average's score and records the setting."""
    import json

    data = small_csv(tmp_path / "d.csv", {"Training": 128, "PublicTest": 64}, seed=4)
    r = run_cli("train", data, "--model", "seed-cnn-small", "--epochs", "2", "--batch-size", "32", "--threads", "1",
                "--optimizer", "sgd", "--lr", "0.01", "--schedule", "none", "--swa-start", "1", "-o", tmp_path / "r")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "SWA of epochs 1-2" in r.stderr
    assert json.loads((tmp_path / "r" / "config.json").read_text())["swa_start"] == 1
    assert np.isfinite(float(list(csv.DictReader(open(tmp_path / "r" / "history.csv")))[-1]["swa_val_acc"]))
