"""`ferkit evaluate` and `ferkit export` on real faces: torch run folder vs exported ONNX, TTA, metrics,
folder trees with synonym class names, FER+ votes, and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from _fer_small import assert_one_line_error, real_data_dir, real_faces, run_cli, small_csv
from ferkit.evaluation import (
    align_classes, compute_metrics, expected_calibration_error, onnx_predictor, predict_tta,
)
from ferkit.preprocessing import five_crops, tta_views


# ----------------------------------------------------------------------------- backend-free parts
def test_tta_views():
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (5, 48, 48), dtype=np.uint8)
    assert len(tta_views(faces, "none")) == 1
    plain, mirror = tta_views(faces, "flip")
    assert np.array_equal(plain, faces) and np.array_equal(mirror[:, :, ::-1], faces)
    crops = tta_views(faces, "crops")
    assert len(crops) == 10 and all(v.shape == (5, 48, 48) and v.dtype == np.uint8 for v in crops)
    for c, m in zip(crops[:5], crops[5:]):
        assert np.array_equal(m, c[:, :, ::-1])
    multi = tta_views(faces, "multi")
    assert len(multi) == 16 and np.array_equal(multi[0], faces)
    for c, m in zip(multi[:8], multi[8:]):
        assert np.array_equal(m, c[:, :, ::-1])
    with pytest.raises(ValueError, match="unknown TTA mode"):
        tta_views(faces, "ten")


def test_multi_views_are_shifts_and_zooms():
    ramp = np.tile(np.arange(48, dtype=np.uint8) * 5, (48, 1))[None]  # value grows with the column
    face, left, right, up, down, *zooms = tta_views(ramp, "multi")[:8]
    assert np.array_equal(left[0, :, :-2], face[0, :, 2:]) and np.array_equal(left[0, :, -2:], face[0, :, -1:].repeat(2, 1))
    assert np.array_equal(right[0, :, 2:], face[0, :, :-2]) and np.array_equal(right[0, :, :2], face[0, :, :1].repeat(2, 1))
    assert np.array_equal(up, ramp) and np.array_equal(down, ramp)  # a ramp along x does not change moving up/down
    shrunk, enlarged, more = zooms  # 0.92, 1.08, 1.16 about the centre: the slope scales by 1/zoom
    slope = [np.diff(v[0, 24, 10:38].astype(float)).mean() for v in (shrunk, face, enlarged, more)]
    assert slope == sorted(slope, reverse=True) and abs(slope[1] - 5) < 1e-9  # shrinking steepens it
    assert abs(float(enlarged[0, 24, 23:25].mean()) - float(ramp[0, 24, 23:25].mean())) < 6  # centre stays put


def test_five_crops_are_corners_and_centre():
    ramp = np.tile(np.arange(48, dtype=np.uint8) * 5, (48, 1))[None]  # value grows with the column
    tl, tr, bl, _br, centre = five_crops(ramp)
    expect_left = cv2.resize(ramp[0, :44, :44], (48, 48), interpolation=cv2.INTER_LINEAR)
    expect_centre = cv2.resize(ramp[0, 2:46, 2:46], (48, 48), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(tl[0], expect_left) and np.array_equal(bl[0], expect_left)
    assert np.array_equal(centre[0], expect_centre)
    assert tr[0].mean() > centre[0].mean() > tl[0].mean()


def test_predict_tta_averages_probabilities_over_views():
    def predict(faces):  # p(class 0) = brightness of the left half
        left = faces[:, :, :24].reshape(len(faces), -1).mean(1) / 255.0
        return np.stack([left, 1 - left], 1)

    faces = np.zeros((3, 48, 48), np.uint8)
    faces[:, :, :24] = 255  # bright left half: the mirror has a dark left half
    assert np.allclose(predict_tta(predict, faces, "none")[:, 0], 1.0)
    assert np.allclose(predict_tta(predict, faces, "flip"), 0.5)
    p = predict_tta(predict, faces, "crops", batch=2)
    assert p.shape == (3, 2) and np.allclose(p.sum(1), 1.0, atol=1e-6) and np.allclose(p[:, 0], 0.5, atol=0.01)


def test_expected_calibration_error_known_values():
    labels = np.array([0, 0, 1, 1])
    confident = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert expected_calibration_error(confident, labels)[0] == pytest.approx(0.0)
    overconfident = np.array([[0.8, 0.2]] * 4)  # always says class 0 at 80%, right half the time
    ece, bins = expected_calibration_error(overconfident, labels)
    assert ece == pytest.approx(0.3) and len(bins) == 15 and sum(b["count"] for b in bins) == 4
    mixed = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55]])  # conf .9 .6 .7 .55, right, right, right, wrong
    # bins (0.8667, 0.9333]: 1 face, acc 1 -> .1; (0.5333, 0.6]: .6 right and .55 wrong -> |0.5 - 0.575|;
    # (0.6667, 0.7333]: .7 right -> .3
    expected = (1 * 0.1 + 2 * abs(0.5 - 0.575) + 1 * 0.3) / 4
    assert expected_calibration_error(mixed, np.array([0, 0, 1, 0]))[0] == pytest.approx(expected)


def test_compute_metrics_by_hand():
    probs = np.eye(3)[[0, 0, 1, 2, 2, 2]].astype(np.float32)
    labels = np.array([0, 1, 1, 2, 2, 0])
    m = compute_metrics(probs, labels, ["happy", "sad", "neutral"])
    assert m["accuracy"] == pytest.approx(4 / 6) and m["n"] == 6
    assert m["per_class"]["happy"]["precision"] == pytest.approx(0.5)
    assert m["per_class"]["sad"]["recall"] == pytest.approx(0.5) and m["per_class"]["sad"]["precision"] == 1.0
    assert m["per_class"]["neutral"]["recall"] == 1.0 and m["per_class"]["neutral"]["predicted"] == 3
    assert m["confusion"]["counts"] == [[1, 0, 1], [1, 1, 0], [0, 0, 2]]
    assert m["confusion"]["normalized"][0] == [0.5, 0.0, 0.5]
    json.dumps(m)  # all plain JSON


def test_align_classes_matches_synonyms_and_reports_unknown_classes():
    data = ("Happiness", "anger", "contempt", "surprised")
    labels = np.array([0, 0, 1, 2, 2, 2, 3])
    align, keep, y = align_classes(data, labels, ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"))
    assert list(y) == [3, 3, 0, 5] and keep.sum() == 4
    assert align.unknown == {"contempt": 3}
    assert align.absent == ["disgust", "fear", "sad", "neutral"]


# ----------------------------------------------------------------------------- a real run and its ONNX
@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A seed-cnn-small trained 1 epoch on 640 real faces, exported with its card (TTA flip)."""
    pytest.importorskip("torch", reason="training needs torch: pip install 'ferkit[train]'")
    from ferkit.train.config import TrainConfig
    from ferkit.train.export import export_run
    from ferkit.train.loop import train

    root = tmp_path_factory.mktemp("shipped")
    csv = small_csv(root / "small.csv", {"Training": 640, "PublicTest": 300, "PrivateTest": 400}, seed=3)
    cfg = TrainConfig(data=str(csv), model="seed-cnn-small", epochs=1, batch_size=32, lr=2e-3, rotation=0.0,
                      shift=0.0, zoom=0.0, threads=1, out=str(root / "run"), seed=1)
    train(cfg, progress=False)
    res = export_run(root / "run", "tiny-fer", root / "ship", tta="flip")
    return {"root": root, "csv": csv, "run": root / "run", "onnx": res["onnx"], "card": res["card"], "res": res}


def test_export_writes_a_complete_card(shipped):
    from ferkit.modelcard import ModelCard
    from ferkit.runtime.model import FacialExpressionModel
    from ferkit.train.provenance import sha256

    card = ModelCard.load(shipped["card"])
    assert card.classes == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert card.architecture == "seed-cnn-small" and card.tta == "flip"
    for split, n in (("PublicTest", 300), ("PrivateTest", 400)):
        assert card.metrics[split]["faces"] == n and card.metrics[split]["tta"] == "flip"
        assert 0.0 < card.metrics[split]["accuracy"] <= 1.0
    t = card.training
    assert t["data_sha256"] == {"small.csv": sha256(shipped["csv"])}
    from ferkit.train.device import cpu_has_fast_bf16

    auto_precision = "bf16" if cpu_has_fast_bf16() else "fp32"  # --precision auto on this CPU
    assert t["epochs"] == 1 and t["wall_seconds"] > 0 and t["hardware"] and t["precision"] == [auto_precision]
    assert t["onnx_check"]["argmax_disagreements"] == 0 and t["onnx_check"]["max_abs_prob_diff"] < 1e-4
    assert t["onnx_check"] == {**t["onnx_check"], "split": "PrivateTest", "faces": 400}  # every test face
    assert t["command"].startswith(f"ferkit train {shipped['csv']} --model seed-cnn-small --epochs 1 ")
    assert t["command"].endswith(f"--out {shipped['run']}")
    # the printed figures are those `ferkit evaluate` gives on the shipped file with the card's TTA
    m = json.loads(run_cli("evaluate", shipped["onnx"], shipped["csv"], "--json", "--out",
                           shipped["root"] / "e").stdout)
    assert m["tta"] == "flip" and m["accuracy"] == pytest.approx(card.metrics["PrivateTest"]["accuracy"], abs=1e-5)
    assert FacialExpressionModel(shipped["onnx"]).tta == "flip"
    assert shipped["onnx"].stat().st_size < 20 * 2**20
    # only the model, its card and its torch weights land in the output folder; evaluation reports stay with the run
    assert sorted(p.name for p in shipped["onnx"].parent.iterdir()) == [
        "tiny-fer.json", "tiny-fer.onnx", "tiny-fer.safetensors"]
    assert (shipped["run"] / "eval" / "tiny-fer" / "PrivateTest" / "confusion.png").is_file()


def test_card_records_a_quick_check_that_evaluate_repeats(shipped):
    """Export also scores every 8th face of each split; `ferkit evaluate --every 8` prints that figure, with a
    progress bar over its inference on stderr (stdout stays pure JSON)."""
    from ferkit.modelcard import ModelCard

    card = ModelCard.load(shipped["card"])
    for split, n in (("PublicTest", 300), ("PrivateTest", 400)):
        assert card.metrics[split]["sample"]["every"] == 8 and card.metrics[split]["sample"]["faces"] == -(-n // 8)
    r = run_cli("evaluate", shipped["onnx"], shipped["csv"], "--every", 8, "--json", "--out", shipped["root"] / "e8")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["n"] == 50 and m["data"]["faces_in_split"] == 400 and m["data"]["sample_every"] == 8
    assert m["accuracy"] == pytest.approx(card.metrics["PrivateTest"]["sample"]["accuracy"], abs=1e-5)
    assert "scoring (TTA flip)" in r.stderr and "/50" in r.stderr


def test_export_tta_auto_chooses_on_publictest_only(shipped):
    """`ferkit export --tta auto`: the card's TTA is the mode that scores better on PublicTest."""
    from ferkit.modelcard import ModelCard

    r = run_cli("export", shipped["run"], "--name", "auto-fer", "--out", shipped["root"] / "ship-auto",
                "--tta", "auto")
    assert r.returncode == 0, r.stderr
    card = ModelCard.load(shipped["root"] / "ship-auto" / "auto-fer.json")
    choice = card.training["tta_choice"]
    assert choice["split"] == "PublicTest" and set(choice["accuracy"]) == {"none", "flip", "crops", "multi"}
    best = max(choice["accuracy"].values())
    assert card.tta == choice["chosen"] and choice["accuracy"][card.tta] == best
    cost = {"none": 1, "flip": 2, "crops": 10, "multi": 16}  # ties go to the mode with fewer views
    assert all(choice["accuracy"][m] < best for m in cost if cost[m] < cost[card.tta])
    # the PublicTest figure in the card is the one the choice was made on; the flip run agrees
    assert card.metrics["PublicTest"]["accuracy"] == pytest.approx(best, abs=1e-5)
    assert card.metrics["PublicTest"]["tta"] == card.tta == card.metrics["PrivateTest"]["tta"]
    flip_card = ModelCard.load(shipped["card"])
    assert choice["accuracy"]["flip"] == pytest.approx(flip_card.metrics["PublicTest"]["accuracy"], abs=1e-5)
    assert f"TTA chosen on PublicTest: {card.tta}" in r.stdout


def test_training_command_rebuilds_the_config(shipped, monkeypatch):
    """The card's command, run through `ferkit train`'s own parser, gives back the run's config."""
    import shlex

    from typer.testing import CliRunner

    import ferkit.train.loop as loop
    from ferkit.apps.cli import app
    from ferkit.train.config import TrainConfig
    from ferkit.train.provenance import training_command

    seen = {}
    monkeypatch.setattr(loop, "train", lambda cfg, resume=False, **_: seen.setdefault("cfg", cfg) and
                        {"best_acc": 0.0, "best_epoch": 0})
    original = TrainConfig.load(shipped["run"] / "config.json")
    variant = TrainConfig(**{**original.__dict__, "classes": ["happy", "sad"], "flip": False, "limit": 99,
                             "optimizer": "sgd", "schedule": "onecycle", "mixup": 0.2, "class_weights": True,
                             "teachers": ["runs/a", "runs/b/best-ferplus.safetensors"], "distill_weight": 0.3})
    for cfg in (original, variant):
        seen.clear()
        r = CliRunner().invoke(app, shlex.split(training_command(cfg))[1:])
        assert r.exit_code == 0, r.output
        assert seen["cfg"].__dict__ == cfg.__dict__


def test_evaluate_run_folder_and_exported_onnx_agree(shipped):
    runs = {}
    for name, model in (("torch", shipped["run"]), ("onnx", shipped["onnx"])):
        r = run_cli("evaluate", model, shipped["csv"], "--tta", "none", "--json", "--out", shipped["root"] / name)
        assert r.returncode == 0, r.stderr
        runs[name] = json.loads(r.stdout)
    t, o = runs["torch"], runs["onnx"]
    assert t["model"]["backend"] == "torch" and o["model"]["backend"] == "onnx"
    assert t["data"]["split"] == o["data"]["split"] == "PrivateTest" and t["n"] == o["n"] == 400
    assert t["accuracy"] == o["accuracy"]
    assert t["confusion"]["counts"] == o["confusion"]["counts"]
    assert t["ece"] == pytest.approx(o["ece"], abs=1e-4) and t["nll"] == pytest.approx(o["nll"], abs=1e-4)
    out = shipped["root"] / "onnx"
    assert {p.name for p in out.iterdir()} >= {"metrics.json", "confusion.png", "reliability.png"}
    assert cv2.imread(str(out / "confusion.png")) is not None


def test_onnx_matches_torch_on_real_faces(shipped):
    faces = real_faces().split("PrivateTest").images[:512]
    from ferkit.train.predictor import run_predictor

    p_torch = run_predictor(shipped["run"]).predict(faces)
    p_onnx = onnx_predictor(shipped["onnx"]).predict(faces)
    assert np.array_equal(p_torch.argmax(1), p_onnx.argmax(1))
    assert np.abs(p_torch - p_onnx).max() < 1e-4


def test_tta_modes_on_the_onnx_model(shipped):
    from ferkit.data import load_dataset
    from ferkit.evaluation import evaluate

    faces = load_dataset(shipped["csv"])
    faces = faces.subset(np.isin(np.arange(len(faces)), np.flatnonzero(faces.splits == "PrivateTest")[:200]))
    accs = {}
    for mode in ("none", "flip", "crops"):
        m = evaluate(shipped["onnx"], shipped["csv"], tta=mode, faces=faces)
        assert m["tta"] == mode and m["n"] == 200
        accs[mode] = m["accuracy"]
    assert all(0.15 < a < 1 for a in accs.values()), accs
    assert evaluate(shipped["onnx"], shipped["csv"], faces=faces)["tta"] == "flip"  # the card's default


def test_onnx_evaluation_never_imports_torch(shipped, tmp_path):
    code = f"""
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, NoTorch())
from typer.testing import CliRunner
from ferkit.apps.cli import app
r = CliRunner().invoke(app, ["evaluate", {str(shipped['onnx'])!r}, {str(shipped['csv'])!r}, "--tta", "flip",
                             "--out", {str(tmp_path)!r}])
print(r.output)
assert r.exit_code == 0, r.output
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "accuracy" in r.stdout


def test_folder_tree_with_synonyms_and_unknown_classes(shipped, tmp_path):
    """Folders named with synonyms are scored; a class the model lacks and a folder nobody knows are
    reported and left out; model classes with no folder are fine."""
    faces = real_faces().split("PrivateTest")
    folders = {"Happiness": "happy", "anger": "angry", "surprised": "surprise", "Neutral": "neutral"}
    written = {}
    for folder, cls in folders.items():
        idx = np.flatnonzero(faces.labels == faces.class_names.index(cls))[:12]
        (tmp_path / "tree" / folder).mkdir(parents=True)
        for i in idx:
            cv2.imwrite(str(tmp_path / "tree" / folder / f"{i}.png"), cv2.resize(faces.images[i], (96, 96)))
        written[cls] = len(idx)
    for extra, n in (("contempt", 4), ("confused", 3)):  # contempt: a class ferkit knows, the 7-class model not
        (tmp_path / "tree" / extra).mkdir()
        for i in range(n):
            cv2.imwrite(str(tmp_path / "tree" / extra / f"{i}.png"), faces.images[100 + i])
    r = run_cli("evaluate", shipped["onnx"], tmp_path / "tree", "--out", tmp_path / "ev")
    assert r.returncode == 0, r.stderr
    assert "split all" in r.stdout and "'contempt'" in r.stdout and "confused" in r.stdout
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["data"]["split"] == "all" and m["n"] == sum(written.values())
    assert m["classes"]["left_out"] == {"contempt": 4}
    assert list(m["data"]["unknown_folders"].values()) == [3]
    assert m["classes"]["absent_from_data"] == ["disgust", "fear", "sad"]
    assert {c: v["support"] for c, v in m["per_class"].items() if v["support"]} == written


def test_ferplus_votes_as_labels(shipped, tmp_path):
    """--ferplus scores against the FER+ majority vote; a 7-class model leaves the contempt faces out."""
    data = real_data_dir()
    votes = data / "fer2013new.csv"
    if not votes.is_file():
        pytest.skip(f"FER+ votes absent: {votes}")
    r = run_cli("evaluate", shipped["onnx"], data, "--ferplus", votes, "--tta", "none", "--json", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["data"]["split"] == "PrivateTest" and m["data"]["ferplus"] == str(votes)
    assert 0 < m["classes"]["left_out"]["contempt"] < 100
    assert m["n"] == m["data"]["faces_in_split"] - m["classes"]["left_out"]["contempt"] > 3000


@pytest.mark.parametrize("case", ["missing data", "bad split", "missing model", "bad tta", "not a run", "bad name",
                                  "bad export tta"])
def test_bad_inputs_are_one_line_errors(shipped, tmp_path, case):
    onnx, csv = shipped["onnx"], shipped["csv"]
    args, fragments = {
        "missing data": (["evaluate", onnx, tmp_path / "nowhere.csv"], ["nowhere.csv", "no such file"]),
        "bad split": (["evaluate", onnx, csv, "--split", "Holdout"], ["split 'Holdout'", "PrivateTest"]),
        "missing model": (["evaluate", tmp_path / "gone.onnx", csv], ["gone.onnx"]),
        "bad tta": (["evaluate", onnx, csv, "--tta", "twelve"], ["twelve", "crops"]),
        "not a run": (["evaluate", tmp_path, csv], ["not a training run folder"]),
        "bad name": (["export", shipped["run"], "--name", "a/b", "--out", tmp_path], ["--name"]),
        "bad export tta": (["export", shipped["run"], "--name", "x", "--out", tmp_path, "--tta", "ten"],
                           ["ten", "multi", "auto"]),
    }[case]
    assert_one_line_error(run_cli(*args), *fragments)
