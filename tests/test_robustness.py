"""The corruption and framing suite on real faces: deterministic corruptions that change the faces (clean
changes nothing), framing that means what it says, a known corruption costing the shipped model accuracy,
and `ferkit evaluate --robustness` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _fer_small import assert_one_line_error, run_cli
from ferkit.evaluation import evaluate_faces, every_nth, onnx_predictor
from ferkit.evaluation.robustness import NAMES, SUITE, Corruption, corrupt, robustness, select


@pytest.fixture(scope="module")
def faces(fer2013):
    return fer2013.split("PublicTest").images[:64]


def test_clean_changes_nothing(faces):
    assert np.array_equal(corrupt(faces, None), faces)


@pytest.mark.parametrize("c", SUITE, ids=lambda c: f"{c.name}-{c.severity:g}")
def test_every_corruption_is_deterministic_and_changes_the_faces(faces, c):
    once, again = corrupt(faces, c), corrupt(faces, c)
    assert once.shape == faces.shape and once.dtype == np.uint8
    assert np.array_equal(once, again)
    changed = (once != faces).reshape(len(faces), -1).mean(axis=1)
    assert (changed > 0.05).all(), changed.min()  # every face, not just some


def test_noise_follows_the_seed(faces):
    noise = Corruption("noise", 10.0, "sigma 10")
    assert np.array_equal(corrupt(faces, noise, seed=3), corrupt(faces, noise, seed=3))
    assert not np.array_equal(corrupt(faces, noise, seed=3), corrupt(faces, noise, seed=4))
    diff = corrupt(faces, noise).astype(float) - faces
    assert 6 < diff[(faces > 40) & (faces < 215)].std() < 12  # sigma 10 where clipping does not bite


def test_framing_means_what_it_says():
    """On a ramp (grey level = 5 x column): a tighter crop flattens the slope, a looser one steepens it,
    a shift moves the frame right (every pixel samples further right), a rotation keeps the centre."""
    ramp = np.tile(np.arange(48, dtype=np.float32) * 5, (48, 1)).astype(np.uint8)[None]
    inner = (0, slice(16, 32), slice(16, 32))

    def slope(img):
        return float(np.diff(img[inner].astype(float), axis=1).mean())

    assert slope(ramp) == pytest.approx(5)
    assert slope(corrupt(ramp, Corruption("crop", 0.8, ""))) == pytest.approx(4, abs=0.05)
    assert slope(corrupt(ramp, Corruption("crop", 1.25, ""))) == pytest.approx(6.25, abs=0.05)
    moved = corrupt(ramp, Corruption("shift", 0.10, "")).astype(float) - ramp
    assert moved[inner].mean() == pytest.approx(5 * 4.8, abs=0.5)  # 10% of 48 px, 5 grey levels a column
    turned = corrupt(ramp, Corruption("rotate", 15, ""))
    assert abs(float(turned[0, 22:26, 22:26].mean()) - float(ramp[0, 22:26, 22:26].mean())) < 2
    looser = corrupt(ramp, Corruption("crop", 1.25, ""))
    assert looser[0, :, :3].min() > 0  # the looser frame shows the reflected border, not black


def test_select_names_the_suite():
    assert select(None) == SUITE and {c.name for c in select(["jpeg", "blur"])} == {"jpeg", "blur"}
    assert set(NAMES) == {"crop", "shift", "rotate", "brightness", "contrast", "gamma", "blur", "noise", "jpeg",
                          "lowres"}


def test_blur_costs_the_shipped_model_accuracy(fer2013):
    """Every 20th PublicTest face (180): the clean figure is `evaluate`'s, and heavy blur costs more than light blur
    and at least 5 points (the shipped net loses 10 on this sample)."""
    pred = onnx_predictor("fer2013-7")
    sample = every_nth(fer2013.split("PublicTest"), 20)
    r = robustness(pred, sample, "none", corruptions=select(["blur"]))
    plain, _ = evaluate_faces(pred, sample, pred.classes, "none")
    assert r["faces"] == len(sample) == 180
    assert r["clean"]["accuracy"] == pytest.approx(plain["accuracy"])
    light, heavy = r["rows"]
    assert (light["severity"], heavy["severity"]) == (0.75, 1.5)
    assert heavy["accuracy"] <= r["clean"]["accuracy"] - 0.05 and heavy["drop"] > light["drop"]
    assert r["mean_drop"] == pytest.approx((light["drop"] + heavy["drop"]) / 2)


def test_evaluate_robustness_end_to_end(data_dir, tmp_path):
    r = run_cli("evaluate", "fer2013-7", data_dir, "--robustness", "--every", 50, "--json", "--out", tmp_path,
                timeout=None)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    assert report["tta"] == "flip" and report["every"] == 50  # the live TTA by default
    assert set(report["splits"]) == {"PublicTest", "PrivateTest"}
    for split in report["splits"].values():
        assert split["faces"] == 72 and split["faces_in_split"] == 3589
        assert [(row["corruption"], row["severity"]) for row in split["rows"]] == \
            [(c.name, c.severity) for c in SUITE]
        for row in split["rows"]:
            assert row["drop"] == pytest.approx(split["clean"]["accuracy"] - row["accuracy"])
        assert split["mean_drop"] == pytest.approx(np.mean([row["drop"] for row in split["rows"]]))
        assert split["mean_drop"] > 0  # the suite as a whole costs accuracy
    assert json.loads((tmp_path / "robustness.json").read_text())["splits"] == report["splits"]


def test_evaluate_robustness_table(data_dir, tmp_path):
    r = run_cli("evaluate", "fer2013-7", data_dir, "--robustness", "--corruption", "jpeg", "--split", "PublicTest",
                "--every", 100, "--tta", "none", "--out", tmp_path, timeout=None)
    assert r.returncode == 0, r.stderr[-2000:]
    for text in ("clean", "jpeg", "quality 20", "quality 40", "mean of 2", "PublicTest: mean drop over the suite",
                 "pt balanced accuracy", "robustness.json"):
        assert text in r.stdout, text
    assert "PrivateTest" not in r.stdout


def test_robustness_options_are_checked(data_dir, tmp_path):
    assert_one_line_error(run_cli("evaluate", "fer2013-7", data_dir, "--robustness", "--corruption", "fog",
                                  "--out", tmp_path), "fog", "jpeg")
    assert_one_line_error(run_cli("evaluate", "fer2013-7", data_dir, "--corruption", "jpeg", "--out", tmp_path),
                          "--robustness")
    assert_one_line_error(run_cli("evaluate", "fer2013-7", data_dir, "--robustness", "--split", "Nowhere",
                                  "--out", tmp_path), "Nowhere")
