"""Joint runs (`--aux-ferplus`): one net learns FER2013's 7 labels and FER+'s 8-class votes for the same
faces; export ships either head as a plain model, scored against its own labels."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the training stack needs torch: pip install 'ferkit[train]'")

from _fer_small import assert_one_line_error, run_cli, small_csv_with_votes  # noqa: E402


@pytest.fixture(scope="module")
def joint(tmp_path_factory):
    """seed-cnn-small, 2 epochs on 800 real faces with their real FER2013 labels and FER+ votes. Validation runs
    in fp32 (not bf16 autocast, which `--precision auto` picks on AVX512-BF16 CPUs), so the accuracies training
    records are the ones the float32 torch and ONNX models score."""
    root = tmp_path_factory.mktemp("joint")
    data, votes = small_csv_with_votes(root, {"Training": 800, "PublicTest": 300, "PrivateTest": 300}, seed=7)
    run = root / "run"
    r = run_cli("train", data, "--aux-ferplus", votes, "--model", "seed-cnn-small", "--epochs", "2",
                "--batch-size", "32", "--lr", "2e-3", "--threads", "1", "--precision", "fp32", "-o", run)
    assert r.returncode == 0, r.stderr[-3000:]
    return {"root": root, "data": data, "votes": votes, "run": run}


def test_joint_run_records_two_heads(joint):
    spec = json.loads((joint["run"] / "model.json").read_text())
    assert spec["num_classes"] == 15
    assert [(h["name"], len(h["classes"])) for h in spec["heads"]] == [("fer2013", 7), ("ferplus", 8)]
    assert spec["heads"][1]["classes"][-1] == "contempt"
    with open(joint["run"] / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and all(0 < float(r["ferplus_val_acc"]) <= 1 for r in rows)
    assert (joint["run"] / "best.safetensors").is_file() and (joint["run"] / "best-ferplus.safetensors").is_file()


def test_each_head_exports_as_a_plain_model_scored_on_its_own_labels(joint):
    """The FER+ head's ONNX scores on PublicTest's FER+ majority exactly what training recorded for its
    best epoch; the FER2013 head's likewise on the FER2013 labels."""
    from ferkit.modelcard import ModelCard

    with open(joint["run"] / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for head, key, n_classes in (("ferplus", "ferplus_val_acc", 8), ("fer2013", "val_acc", 7)):
        out = joint["root"] / f"ship-{head}"
        r = run_cli("export", joint["run"], "--name", f"j-{head}", "--head", head, "-o", out, "--tta", "none")
        assert r.returncode == 0, r.stderr[-3000:]
        card = ModelCard.load(out / f"j-{head}.json")
        assert len(card.classes) == n_classes and card.training["head"] == head
        best = max(float(row[key]) for row in rows)
        assert card.training["best_val_acc"] == pytest.approx(best, abs=1e-5)
        assert card.metrics["PublicTest"]["accuracy"] == pytest.approx(best, abs=1e-4)
        protocol = "FER+ majority vote" if head == "ferplus" else "FER2013 labels"
        assert card.metrics["PrivateTest"]["protocol"] == protocol
        assert set(card.training["data_sha256"]) == ({"small.csv", "votes.csv"})
        check = card.training["onnx_check"]
        assert check["argmax_disagreements"] == 0 and check["max_abs_prob_diff"] < 1e-4


def test_head_outputs_are_slices_of_the_joint_net(joint):
    """A head's model gives exactly the softmax over its own slice of the joint net's outputs."""
    from ferkit.data import load_dataset
    from ferkit.models import load_architecture
    from ferkit.preprocessing import normalize
    from ferkit.train.checkpoint import load_weights
    from ferkit.train.run import RunFolder

    x = torch.from_numpy(normalize(load_dataset(joint["data"]).images[:64]))
    full, _ = load_architecture(joint["run"] / "model.json")
    for head, lo, hi, weights in (("fer2013", 0, 7, "best.safetensors"), ("ferplus", 7, 15, "best-ferplus.safetensors")):
        load_weights(full, joint["run"] / weights)
        model, spec = RunFolder(joint["run"]).load_model(head=head)
        assert spec["num_classes"] == hi - lo
        with torch.no_grad():
            expect = full.eval()(x)[:, lo:hi].softmax(1)
            got = model(x).softmax(1)
        np.testing.assert_allclose(got.numpy(), expect.numpy(), atol=1e-6)


def test_evaluate_scores_either_head_of_a_run(joint, tmp_path):
    """`ferkit evaluate RUN --head NAME` scores that head's own best checkpoint: on PublicTest it gives what
    training recorded for it (FER+ head against the majority vote with --ferplus)."""
    with open(joint["run"] / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for head, key, extra in (("ferplus", "ferplus_val_acc", ["--ferplus", joint["votes"]]), ("fer2013", "val_acc", [])):
        r = run_cli("evaluate", joint["run"], joint["data"], "--split", "PublicTest", "--head", head, "--json",
                    "--out", tmp_path / head, *extra)
        assert r.returncode == 0, r.stderr[-3000:]
        m = json.loads(r.stdout)
        assert len(m["model"]["classes"]) == (8 if head == "ferplus" else 7) and head in m["model"]["name"]
        assert m["accuracy"] == pytest.approx(max(float(row[key]) for row in rows), abs=1e-4)


@pytest.mark.parametrize("case", ["both ferplus options", "unknown head", "evaluate unknown head", "head of an onnx model"])
def test_joint_input_errors_are_one_line(joint, tmp_path, case):
    args = {
        "both ferplus options": ["train", joint["data"], "--aux-ferplus", joint["votes"], "--ferplus", joint["votes"],
                                 "--model", "mlp", "--epochs", "1", "-o", tmp_path / "r"],
        "unknown head": ["export", joint["run"], "--name", "x", "--head", "contempt-only", "-o", tmp_path],
        "evaluate unknown head": ["evaluate", joint["run"], joint["data"], "--head", "contempt-only", "-o", tmp_path],
        "head of an onnx model": ["evaluate", "fer2013-7", joint["data"], "--head", "contempt-only", "-o", tmp_path],
    }[case]
    r = run_cli(*args)
    assert_one_line_error(r, "--ferplus" if case == "both ferplus options" else "contempt-only")
