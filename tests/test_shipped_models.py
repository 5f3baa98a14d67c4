"""The models inside the package: complete cards, size limits, the card's PrivateTest figure reproduced
by `ferkit evaluate` on the real data, and ONNX agreeing with the torch weights shipped beside it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _fer_small import real_data_dir, run_cli
from ferkit.modelcard import RUNTIME_TTA, ModelCard
from ferkit.runtime.model import DEFAULT_MODEL, WEIGHTS_DIR, shipped_models

SHIPPED = {  # name -> (classes, the data protocol its card reports)
    "fer2013-7": (7, "FER2013 labels"),
    "fer2013-7-fast": (7, "FER2013 labels"),
    "fer2013-7-robust": (7, "FER2013 labels"),
    "ferplus-8": (8, "FER+ majority vote"),
}
# TTA fixed before any figure, not chosen on PublicTest: the fast tier is defined by its cost (one view a face);
# the fer2013-7 weight soup kept the TTA of the card it was to replace (its selection rule compared at that TTA)
FIXED_TTA = {"fer2013-7-fast": "none", "fer2013-7": "multi", "ferplus-8": "multi"}


def test_the_package_ships_every_model():
    assert sorted(SHIPPED) == [m for m in shipped_models() if m in SHIPPED] and DEFAULT_MODEL in SHIPPED


def test_tiers_name_shipped_models():
    from ferkit.runtime.model import MODEL_ALIASES, resolve_model_path

    for alias, name in MODEL_ALIASES.items():
        assert name in SHIPPED and resolve_model_path(alias) == WEIGHTS_DIR / f"{name}.onnx"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_card_is_complete(name):
    card = ModelCard.load(WEIGHTS_DIR / f"{name}.json")
    n_classes, protocol = SHIPPED[name]
    assert len(card.classes) == n_classes and card.input["shape"] == [None, 1, 48, 48]
    assert {"mean", "std", "scale"} <= set(card.input) and card.tta in RUNTIME_TTA
    for split in ("PublicTest", "PrivateTest"):
        m = card.metrics[split]
        assert m["protocol"] == protocol and m["tta"] == card.tta and 0.5 < m["accuracy"] < 1
        assert m["sample"]["every"] == 8 and 0.5 < m["sample"]["accuracy"] < 1  # the quick check evaluate repeats
        assert 0.9 * m["faces"] / 8 <= m["sample"]["faces"] <= 3589 / 8 + 1
    t = card.training
    assert t["command"].startswith("ferkit train ") and t["wall_seconds"] > 0 and t["hardware"]
    assert t["train_split"] == "Training" and t["val_split"] == "PublicTest"
    assert set(t["data_sha256"]) >= {"fer2013.csv.gz"} | ({"fer2013new.csv"} if n_classes == 8 else set())
    assert t["onnx_check"]["split"] == "PrivateTest"  # every PrivateTest face the protocol scores
    assert t["onnx_check"]["faces"] == card.metrics["PrivateTest"]["faces"]
    assert t["onnx_check"]["argmax_disagreements"] == 0 and t["onnx_check"]["max_abs_prob_diff"] < 1e-4
    if name in FIXED_TTA:
        assert card.tta == FIXED_TTA[name] and "tta_choice" not in t
    else:
        assert t["tta_choice"]["split"] == "PublicTest" and t["tta_choice"]["chosen"] == card.tta
        public = card.prior_correction["uncorrected"]["PublicTest"] if card.prior_correction else card.metrics["PublicTest"]
        assert public["accuracy"] == max(t["tta_choice"]["accuracy"].values())  # chosen there, before any prior correction
    for member in t.get("soup_members", []):  # a weight soup: every member's recipe is on record
        assert member["command"].startswith("ferkit train ") and member["wall_seconds"] > 0
    assert (WEIGHTS_DIR / f"{name}.onnx").stat().st_size < 20 * 2**20


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_card_figures_are_what_evaluate_prints(name, data_dir, tmp_path):
    """`ferkit evaluate` on the shipped ONNX (card's TTA) gives the card's figure for its quick check: every 8th
    PrivateTest face, which export scores through the same path as the whole split's figure beside it."""
    from ferkit.train.provenance import sha256

    card = ModelCard.load(WEIGHTS_DIR / f"{name}.json")
    csv = real_data_dir() / "fer2013.csv.gz"
    assert card.training["data_sha256"]["fer2013.csv.gz"] == sha256(csv)  # the very file it was trained on
    sample = card.metrics["PrivateTest"]["sample"]
    extra = ["--ferplus", str(data_dir / "fer2013new.csv")] if SHIPPED[name][0] == 8 else []
    r = run_cli("evaluate", name, data_dir, "--split", "PrivateTest", "--every", sample["every"], "--json",
                "--out", tmp_path, *extra, timeout=None)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads(r.stdout)
    assert m["tta"] == card.tta and m["data"]["sample_every"] == sample["every"] == 8
    assert m["data"]["faces_in_split"] == card.metrics["PrivateTest"]["faces"] and m["n"] == sample["faces"]
    assert m["accuracy"] == pytest.approx(sample["accuracy"], abs=1e-5)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_onnx_matches_the_shipped_torch_weights(name, fer2013):
    """On 512 PrivateTest faces: same argmax everywhere, probabilities within 1e-4."""
    torch = pytest.importorskip("torch", reason="comparing with torch needs ferkit[train]")
    from ferkit.preprocessing import normalize
    from ferkit.runtime.model import FacialExpressionModel
    from ferkit.train.export import load_shipped_torch

    model, classes = load_shipped_torch(WEIGHTS_DIR / f"{name}.safetensors")
    onnx = FacialExpressionModel(name, tta="none", precision="fp32", prior_correction=False)  # the network alone
    assert tuple(classes) == onnx.classes
    faces = fer2013.split("PrivateTest").images
    sample = faces[np.random.default_rng(0).choice(len(faces), 512, replace=False)]
    with torch.no_grad():
        p_torch = model(torch.from_numpy(normalize(sample))).softmax(1).numpy()
    p_onnx = onnx.predict_proba(sample)
    assert (p_torch.argmax(1) == p_onnx.argmax(1)).all()
    assert np.abs(p_torch - p_onnx).max() < 1e-4
