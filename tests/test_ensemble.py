"""Warm restarts (`train --init`) and ensembles (`export --ensemble`, `--half`): a second run starts from
a first run's weights, and export ships both as one ONNX graph averaging their probabilities, its
weights stored as float16 with float32 compute."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the training stack needs torch: pip install 'ferkit[train]'")

from _fer_small import assert_one_line_error, run_cli, small_csv  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """seed-cnn-small: run `a`, 2 epochs on 800 real faces; run `b`, 1 epoch more from a's weights."""
    root = tmp_path_factory.mktemp("ensemble")
    data = small_csv(root / "small.csv", {"Training": 800, "PublicTest": 300, "PrivateTest": 300}, seed=3)
    common = ["--model", "seed-cnn-small", "--batch-size", "32", "--threads", "1"]
    r = run_cli("train", data, *common, "--epochs", "2", "--lr", "2e-3", "-o", root / "a")
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli("train", data, *common, "--epochs", "1", "--lr", "1e-3", "--seed", "1", "--init", root / "a",
                "-o", root / "b")
    assert r.returncode == 0, r.stderr[-3000:]
    return {"root": root, "data": data, "a": root / "a", "b": root / "b"}


@pytest.fixture(scope="module")
def shipped(runs):
    """Runs a and b exported as shipped models would be: NAME.safetensors, NAME.onnx and the card NAME.json."""
    ship = runs["root"] / "shipped"
    for run in ("a", "b"):
        r = run_cli("export", runs[run], "--name", f"{run}-model", "-o", ship, "--tta", "none")
        assert r.returncode == 0, r.stderr[-3000:]
    return ship


def test_init_starts_from_the_given_weights(runs, tmp_path):
    """With a zero learning rate, every parameter a run ends with is the one --init gave it."""
    from safetensors.torch import load_file

    r = run_cli("train", runs["data"], "--model", "seed-cnn-small", "--epochs", "1", "--limit", "64",
                "--optimizer", "sgd", "--lr", "0", "--init", runs["a"] / "best.safetensors", "-o", tmp_path / "z")
    assert r.returncode == 0, r.stderr[-3000:]
    start, end = load_file(str(runs["a"] / "best.safetensors")), load_file(str(tmp_path / "z" / "best.safetensors"))
    weights = [k for k in start if k.endswith("weight")]
    assert weights and all(torch.equal(start[k], end[k]) for k in weights)
    assert json.loads((tmp_path / "z" / "config.json").read_text())["init"].endswith("best.safetensors")


def test_ensemble_export_is_the_mean_of_its_members(runs):
    """The ONNX file's probabilities are the mean of the two runs' (float16-rounded) torch models; the
    file is about one member's float32 size; the card names both runs' training."""
    from ferkit.data import load_dataset
    from ferkit.modelcard import ModelCard
    from ferkit.preprocessing import normalize
    from ferkit.runtime.model import FacialExpressionModel
    from ferkit.train.export import load_shipped_torch
    from ferkit.train.onnx_export import round_to_half
    from ferkit.train.run import RunFolder

    out = runs["root"] / "ship"
    r = run_cli("export", runs["b"], "--ensemble", runs["a"], "--half", "--name", "ens", "-o", out, "--tta", "none")
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli("export", runs["a"], "--name", "single", "-o", out, "--tta", "none")
    assert r.returncode == 0, r.stderr[-3000:]
    single_size, ens_size = (out / "single.onnx").stat().st_size, (out / "ens.onnx").stat().st_size
    assert 0.8 < ens_size / single_size < 1.2  # two members at 2 bytes a weight ~ one at 4

    card = ModelCard.load(out / "ens.json")
    assert card.architecture == "ensemble(seed-cnn-small, seed-cnn-small)"
    assert card.training["weights_dtype"] == "float16" and "--init" in card.training["command"]
    assert [m["epochs"] for m in card.training["ensemble_members"]] == [2]
    init = card.training["init"]  # b started from a: a's training is part of b's recipe
    assert init["epochs"] == 2 and init["command"] == card.training["ensemble_members"][0]["command"]
    assert card.training["wall_seconds_with_init"] == pytest.approx(card.training["wall_seconds"] + init["wall_seconds"], abs=0.2)
    assert card.training["onnx_check"]["argmax_disagreements"] == 0

    faces = load_dataset(runs["data"]).split("PrivateTest").images
    x = torch.from_numpy(normalize(faces))
    with torch.no_grad():
        members = [round_to_half(RunFolder(runs[k]).load_model()[0])(x).softmax(1) for k in ("b", "a")]
        shipped, _ = load_shipped_torch(out / "ens.safetensors")
        p_shipped = shipped(x).softmax(1).numpy()
    expect = ((members[0] + members[1]) / 2).numpy()
    p_onnx = FacialExpressionModel(out / "ens.onnx", tta="none").predict_proba(faces)
    assert np.abs(p_onnx - expect).max() < 1e-5 and np.abs(p_shipped - expect).max() < 1e-5
    assert (members[0] - members[1]).abs().max().item() > 1e-2  # two different models, not one twice
    assert card.metrics["PrivateTest"]["accuracy"] == pytest.approx(
        float((expect.argmax(1) == load_dataset(runs["data"]).split("PrivateTest").labels).mean()), abs=1e-5)  # cards keep 5 decimals


def test_soup_export_is_one_net_with_the_mean_weights(runs):
    """`export --soup`: one net of one member's size whose every weight (BatchNorm statistics included)
    is the mean of the members'; a member may be a run folder or a weights file; the card names both."""
    from safetensors.torch import load_file

    from ferkit.data import load_dataset
    from ferkit.modelcard import ModelCard
    from ferkit.runtime.model import FacialExpressionModel
    from ferkit.train.export import load_shipped_torch

    out = runs["root"] / "ship-soup"
    r = run_cli("export", runs["b"], "--soup", runs["a"] / "best.safetensors", "--name", "soup", "-o", out,
                "--tta", "none")
    assert r.returncode == 0, r.stderr[-3000:]
    a, b, soup = (load_file(str(p)) for p in (runs["a"] / "best.safetensors", runs["b"] / "best.safetensors",
                                               out / "soup.safetensors"))
    floats = [k for k in soup if soup[k].is_floating_point()]
    assert any("running_mean" in k for k in floats)
    for k in floats:
        torch.testing.assert_close(soup[k], (a[k] + b[k]) / 2)
    assert max((a[k] - b[k]).abs().max().item() for k in floats) > 1e-3  # two different nets, not one twice
    card = ModelCard.load(out / "soup.json")
    assert card.architecture == "seed-cnn-small" and len(card.training["soup_members"]) == 1
    assert card.training["soup_members"][0]["weights"].endswith("best.safetensors")
    # the ONNX file computes the soup, and so does a run-folder member in place of the file
    faces = load_dataset(runs["data"]).split("PrivateTest").images
    model, _ = load_shipped_torch(out / "soup.safetensors")
    from ferkit.preprocessing import normalize
    with torch.no_grad():
        expect = model(torch.from_numpy(normalize(faces))).softmax(1).numpy()
    assert np.abs(FacialExpressionModel(out / "soup.onnx", tta="none").predict_proba(faces) - expect).max() < 1e-5
    r = run_cli("export", runs["b"], "--soup", runs["a"], "--name", "soup2", "-o", out, "--tta", "none")
    assert r.returncode == 0, r.stderr[-3000:]
    again = load_file(str(out / "soup2.safetensors"))
    assert all(torch.equal(again[k], soup[k]) for k in floats)


def test_soup_of_two_shipped_models_keeps_both_records(runs, shipped, tmp_path):
    """`export NAME.safetensors --soup OTHER.safetensors`: two shipped models (no run folders) soup into one
    net with their mean weights; the card takes the first card's training record (command, data hashes) and
    names the file it started from, and lists the second as a soup member with its own command."""
    import shutil

    from safetensors.torch import load_file

    from ferkit.modelcard import ModelCard

    ship = shipped
    r = run_cli("export", ship / "b-model.safetensors", "--soup", ship / "a-model.safetensors", "--name", "ab",
                "-o", tmp_path / "out", "--tta", "flip", "--data", runs["data"])
    assert r.returncode == 0, r.stderr[-3000:]
    a, b, ab = (load_file(str(p)) for p in (ship / "a-model.safetensors", ship / "b-model.safetensors",
                                            tmp_path / "out" / "ab.safetensors"))
    for k in (k for k in ab if ab[k].is_floating_point()):
        torch.testing.assert_close(ab[k], (a[k] + b[k]) / 2)
    card, b_card = ModelCard.load(tmp_path / "out" / "ab.json"), ModelCard.load(ship / "b-model.json")
    assert card.tta == "flip" and "tta_choice" not in card.training
    assert card.training["command"] == b_card.training["command"]
    assert card.training["data_sha256"] == b_card.training["data_sha256"]
    assert card.training["exported_from"]["weights"].endswith("b-model.safetensors")
    assert card.training["soup_members"][0]["command"] == ModelCard.load(ship / "a-model.json").training["command"]
    assert set(card.metrics) == {"PublicTest", "PrivateTest"}
    assert not (ship / "eval").exists() and not (tmp_path / "out" / "eval").exists()  # no reports written
    shutil.copy(ship / "a-model.safetensors", tmp_path / "lone.safetensors")  # a weights file without its card
    assert_one_line_error(run_cli("export", tmp_path / "lone.safetensors", "--name", "x", "-o", tmp_path / "o",
                                  "--data", runs["data"]), "lone.json")
    assert_one_line_error(run_cli("export", ship / "b-model.safetensors", "--name", "x", "--ensemble", runs["a"],
                                  "-o", tmp_path / "o"), "not --ensemble")
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(3)}, str(tmp_path / "bare.safetensors"))  # weights without an architecture
    assert_one_line_error(run_cli("export", ship / "b-model.safetensors", "--name", "x", "--soup",
                                  tmp_path / "bare.safetensors", "-o", tmp_path / "o"), "not a shipped model's weights")


@pytest.mark.parametrize("case", ["init does not fit", "init missing", "member not a run", "soup member missing",
                                  "soup member does not fit", "soup and ensemble"])
def test_restart_and_ensemble_errors_are_one_line(runs, tmp_path, case):
    args, fragment = {
        "init does not fit": (["train", runs["data"], "--model", "mlp", "--epochs", "1", "--init", runs["a"],
                               "-o", tmp_path / "r"], "does not fit"),
        "init missing": (["train", runs["data"], "--model", "mlp", "--epochs", "1", "--init", tmp_path / "nope",
                          "-o", tmp_path / "r"], "nope"),
        "member not a run": (["export", runs["a"], "--name", "x", "--ensemble", tmp_path, "-o", tmp_path / "o"],
                             "not a training run folder"),
        "soup member missing": (["export", runs["a"], "--name", "x", "--soup", tmp_path / "nope.safetensors",
                                 "-o", tmp_path / "o"], "nope.safetensors"),
        "soup member does not fit": (["export", runs["a"], "--name", "x", "--soup", tmp_path / "w.safetensors",
                                      "-o", tmp_path / "o"], "not weights of"),
        "soup and ensemble": (["export", runs["a"], "--name", "x", "--soup", runs["b"], "--ensemble", runs["b"],
                               "-o", tmp_path / "o"], "not both"),
    }[case]
    if case == "soup member does not fit":
        from safetensors.torch import save_file
        save_file({"x": torch.zeros(3)}, str(tmp_path / "w.safetensors"))
    assert_one_line_error(run_cli(*args), fragment)


def test_restart_from_a_shipped_model_keeps_its_card_history(runs, shipped, tmp_path):
    """`--init NAME.safetensors` of an exported model (card beside it, no run folder): the new card's
    training.init is that card's training record, nested init included, and the wall time adds up."""
    from ferkit.modelcard import ModelCard

    before = ModelCard.load(shipped / "b-model.json").training
    r = run_cli("train", runs["data"], "--model", "seed-cnn-small", "--epochs", "1", "--limit", "64",
                "--threads", "1", "--init", shipped / "b-model.safetensors", "-o", tmp_path / "c")
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli("export", tmp_path / "c", "--name", "c-model", "-o", tmp_path / "ship", "--tta", "none")
    assert r.returncode == 0, r.stderr[-3000:]
    after = ModelCard.load(tmp_path / "ship" / "c-model.json").training
    assert after["init"]["command"] == before["command"] and after["init"]["epochs"] == 1
    assert after["init"]["init"]["epochs"] == 2  # b's own start, run a, is still on record
    assert after["wall_seconds_with_init"] == pytest.approx(after["wall_seconds"] + before["wall_seconds_with_init"],
                                                            abs=0.2)
