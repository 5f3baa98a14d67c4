"""Model cards are authoritative: ModelCard.load checks everything the run time relies on, and the run
time normalises faces with the card's own input block."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ferkit import preprocessing
from ferkit.errors import ModelError
from ferkit.modelcard import ModelCard
from ferkit.runtime.model import FacialExpressionModel, resolve_model_path


@pytest.fixture(scope="module")
def shipped() -> tuple[Path, dict]:
    onnx = resolve_model_path(None)
    return onnx, json.loads(onnx.with_suffix(".json").read_text())


def beside(tmp_path: Path, shipped, card: dict | str, name: str = "m") -> Path:
    """The shipped ONNX file (linked) with `card` beside it."""
    onnx = tmp_path / f"{name}.onnx"
    onnx.symlink_to(shipped[0])
    onnx.with_suffix(".json").write_text(card if isinstance(card, str) else json.dumps(card))
    return onnx


@pytest.mark.parametrize("body, why", [
    ("[]", r"not a model card \(a JSON list, not an object\)"),
    ("null", r"not a model card \(a JSON null"),
    ("7", r"not a model card \(a JSON number"),
    ("{'name': 1}", r"not a model card \(not JSON"),
    ('{"name": "x", "architecture": "y"}', r"missing classes"),
    ('{"name": "x", "classes": "a,b", "architecture": "y"}', r"'classes' must be a non-empty list"),
    ('{"name": "x", "classes": ["a", 2], "architecture": "y"}', r"'classes' must be a non-empty list of class names"),
    ('{"name": "x", "classes": ["a", "a"], "architecture": "y"}', r"names a class twice"),
    ('{"name": "x", "classes": ["a"], "architecture": "y", "tta": "ten"}', r"tta 'ten': unknown TTA mode"),
    ('{"name": "x", "classes": ["a"], "architecture": "y", "input": [1]}', r"'input' must be an object"),
    ('{"name": "x", "classes": ["a"], "architecture": "y", "input": {"mean": "half"}}', r"input mean 'half' must be a number"),
    ('{"name": "x", "classes": ["a"], "architecture": "y", "input": {"std": -1}}', r"input std -1 must be above 0"),
    ('{"name": "x", "classes": ["a"], "architecture": "y", "input": {"shape": [null, 1, 48, 40]}}', r"input shape"),
    ('{"name": "x", "classes": ["a"], "architecture": "y", "input": {"name": "x"}}', r"input name 'x'"),
    ('{"name": "x", "classes": ["a"], "architecture": "y", "input": {"dtype": "float16"}}', r"input dtype 'float16'"),
])
def test_load_refuses_what_the_runtime_cannot_use(tmp_path, body, why):
    path = tmp_path / "card.json"
    path.write_text(body)
    with pytest.raises(ModelError, match=why) as err:
        ModelCard.load(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_load_fills_what_an_older_card_leaves_out(tmp_path):
    path = tmp_path / "old.json"
    path.write_text('{"name": "x", "classes": ["a", "b"], "architecture": "y", "tta": null, "unknown": 1}')
    card = ModelCard.load(path)
    assert card.tta == "none" and card.input_size == 48
    assert (card.mean, card.std) == (preprocessing.MEAN, preprocessing.STD)
    card.save(tmp_path / "again.json")
    assert ModelCard.load(tmp_path / "again.json") == card


def test_runtime_normalises_with_the_cards_mean_and_std(tmp_path, shipped):
    onnx, good = shipped
    faces = np.random.default_rng(3).integers(0, 256, (4, 48, 48), dtype=np.uint8)
    std = FacialExpressionModel(onnx, tta="none", precision="fp32", prior_correction=False)
    other = FacialExpressionModel(beside(tmp_path, shipped, {**good, "input": {**good["input"], "mean": 0.3, "std": 0.4}}),
                                  tta="none", prior_correction=False)  # the network's own output, as raw is
    assert (other.mean, other.std) == (0.3, 0.4)
    np.testing.assert_array_equal(other.preprocess(faces), preprocessing.normalize(faces, 0.3, 0.4))
    raw = std.session.run(["probabilities"], {"faces": preprocessing.normalize(faces, 0.3, 0.4)})[0]
    np.testing.assert_allclose(other.predict_proba(faces), raw, atol=1e-6)
    assert np.abs(other.predict_proba(faces) - std.predict_proba(faces)).max() > 1e-3  # the card's numbers matter


def test_a_card_that_does_not_match_its_onnx_file_is_refused_at_load(tmp_path, shipped):
    _, good = shipped
    m = beside(tmp_path, shipped, {**good, "input": {**good["input"], "shape": [None, 1, 64, 64]}}, "size64")
    with pytest.raises(ModelError, match=r"size64\.onnx: its input 'faces' has shape \[N, 1, 48, 48\] but its card "
                                         r"size64\.json says \[N, 1, 64, 64\]"):
        FacialExpressionModel(m)


def test_an_onnx_file_with_the_right_names_and_the_wrong_shape_is_refused(tmp_path, shipped):
    """A real graph taking `faces` (N, 3, 48, 48) and giving `probabilities`: refused at load, not per face."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    n_classes = len(shipped[1]["classes"])
    w = helper.make_tensor("w", TensorProto.FLOAT, [3, n_classes], np.ones(3 * n_classes, np.float32).tolist())
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["faces"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "rgb", [helper.make_tensor_value_info("faces", TensorProto.FLOAT, ["N", 3, 48, 48])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", n_classes])], [w])
    path = tmp_path / "rgb.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    path.with_suffix(".json").write_text(json.dumps(shipped[1]))
    with pytest.raises(ModelError, match=r"rgb\.onnx: its input 'faces' has shape \[N, 3, 48, 48\] but its card"):
        FacialExpressionModel(path)
