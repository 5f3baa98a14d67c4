"""int8 versions of a model: `ferkit quantize` on a copy of a shipped model with a small calibration set, checked
on real PublicTest and PrivateTest faces; the card's int8 record; the run time loading the int8 file when asked,
timing both files once per machine when left to choose (the verdict cached), and never importing onnx."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _fer_small import assert_one_line_error, real_faces, run_cli
from ferkit.errors import ConfigError, ModelError
from ferkit.modelcard import ModelCard
from ferkit.runtime.model import WEIGHTS_DIR, FacialExpressionModel
from ferkit.runtime.precision import MARGIN, cache_path, cpu_isa, cpu_model

pytest.importorskip("onnx", reason="ferkit quantize needs ferkit[train] (onnx)")
NAME = "fer2013-7"


def copy_model(folder: Path, int8: bool = False, src: Path = WEIGHTS_DIR) -> Path:
    """The shipped fp32 model and its card in `folder`; the card's int8 block dropped unless `int8`."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / f"{NAME}.onnx", folder / f"{NAME}.onnx")
    card = json.loads((src / f"{NAME}.json").read_text())
    if int8:
        shutil.copyfile(src / card["int8"]["file"], folder / card["int8"]["file"])
    else:
        card.pop("int8", None)
    (folder / f"{NAME}.json").write_text(json.dumps(card, indent=2))
    return folder / f"{NAME}.onnx"


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, data_dir):
    """`ferkit quantize` on a copy of the shipped model: 64 calibration faces, minmax, every 8th test face."""
    onnx = copy_model(tmp_path_factory.mktemp("q") / "model")
    before = json.loads(onnx.with_suffix(".json").read_text())
    r = run_cli("quantize", onnx, data_dir, "--calibration", 64, "--method", "minmax", "--tta", "none",
                "--every", 8, "--max-drop", 0.02, "--min-agreement", 0.95, "--json", timeout=None)
    assert r.returncode == 0, r.stderr[-3000:]
    return onnx, json.loads(r.stdout), before


def test_quantize_keeps_an_int8_file_that_agrees_with_fp32(quantized):
    onnx, report, _ = quantized
    int8 = onnx.with_name(f"{NAME}.int8.onnx")
    assert report["kept"] and report["chosen"] == "minmax" and report["file"] == str(int8) and int8.is_file()
    choice = report["candidates"]["minmax"]
    assert choice["faces"] == 449 and choice["tta"] == "none"  # every 8th of PublicTest's 3,589 faces
    assert choice["argmax_agreement"] >= 0.95 and abs(choice["accuracy"] - choice["accuracy_fp32"]) <= 0.02
    # int8 weights: about a quarter of the fp32 file, far under the 20 MB a shipped file may take
    assert int8.stat().st_size < onnx.stat().st_size / 2 and int8.stat().st_size < 20 * 10**6


def test_the_card_records_the_figures_and_keeps_the_rest(quantized):
    from ferkit.train.provenance import sha256

    onnx, report, before = quantized
    card = ModelCard.load(onnx.with_suffix(".json"))
    rec = card.int8
    assert rec == report["record"] and rec["file"] == f"{NAME}.int8.onnx"
    assert rec["sha256"] == sha256(onnx.with_name(rec["file"])) and rec["fp32_sha256"] == sha256(onnx)
    chk = rec["PrivateTest"]
    assert chk["split"] == "PrivateTest" and chk["every"] == 8 and chk["faces"] == 449 and chk["tta"] == "none"
    assert chk["argmax_agreement"] >= 0.95 and 0.5 < chk["accuracy"] < 1 and 0.5 < chk["accuracy_fp32"] < 1
    cal = rec["calibration"]
    assert cal["split"] == "Training" and cal["faces"] == 64 and cal["method"] == "minmax"
    assert cal["format"] == "QDQ" and cal["per_channel"] is True and cal["choice"]["split"] == "PublicTest"
    assert cal["reduce_range"] is True  # 7-bit weights: the same answers on CPUs with and without VNNI
    assert rec["checked_on"] == {"cpu": cpu_model(), "isa": cpu_isa()}
    assert rec["command"].startswith("ferkit quantize ") and "--calibration 64" in rec["command"]
    after = json.loads(onnx.with_suffix(".json").read_text())
    assert {k: v for k, v in after.items() if k != "int8"} == {k: v for k, v in before.items() if k != "int8"}


def test_the_grey_input_s_conv_and_the_classifier_stay_float(quantized):
    """One input channel makes an int8 conv slow for its few multiply-adds (float_head); the last layer and
    the softmax stay float so probabilities keep their precision (float_tail)."""
    import onnx

    onnx_path, report, _ = quantized
    graph = onnx.load(str(onnx_path.with_name(f"{NAME}.int8.onnx"))).graph
    readers = [n for n in graph.node if graph.input[0].name in n.input]
    assert [n.op_type for n in readers] == ["Conv"]  # no QuantizeLinear in front: the face goes in as float
    floats = report["record"]["calibration"]["float_nodes"]
    assert floats[0] == readers[0].name and any(f.endswith("Softmax") for f in floats)


def test_the_runtime_loads_the_int8_file_when_asked(quantized):
    """On real PublicTest faces the int8 file gives the fp32 argmax almost everywhere, through the public API."""
    onnx, _, _ = quantized
    m8 = FacialExpressionModel(onnx, precision="int8", tta="none")
    m32 = FacialExpressionModel(onnx, precision="fp32", tta="none")
    assert (m8.precision, m8.file.name, m8.path) == ("int8", f"{NAME}.int8.onnx", onnx)  # path: the model, its card
    assert (m32.precision, m32.file, m32.path) == ("fp32", onnx, onnx)
    faces = real_faces().split("PublicTest").images[1::12]  # 300 faces, not the ones the check scored
    p8, p32 = m8.predict_proba(faces), m32.predict_proba(faces)
    assert len(faces) == 299 and np.allclose(p8.sum(1), 1, atol=1e-3)
    assert np.mean(p8.argmax(1) == p32.argmax(1)) >= 0.95
    assert 0 < np.abs(p8 - p32).max() < 0.5  # a different file ran, and close to fp32
    assert m8.predict(faces[0])[0] in m8.classes


def test_auto_times_both_once_per_machine_and_caches_the_verdict(quantized, tmp_path, monkeypatch):
    onnx, _, _ = quantized
    monkeypatch.setenv("FERKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FERKIT_PRECISION", raising=False)
    first = FacialExpressionModel(onnx)
    cache = json.loads(cache_path().read_text())
    (key, entry), = [(k, e) for k, e in cache.items() if "precision" in e]  # beside it: the small-call verdict
    assert cpu_model() in key and cpu_isa() in key and "onnxruntime" in key
    ms = entry["ms_per_run"]
    assert entry["precision"] == ("int8" if ms["int8"] <= MARGIN * ms["fp32"] else "fp32") == first.precision
    assert min(entry["runs"].values()) >= 3
    assert FacialExpressionModel(onnx).precision == first.precision
    assert json.loads(cache_path().read_text()) == cache  # read, not measured again
    # the cached verdict is what decides: the other one written there is followed
    other = "fp32" if first.precision == "int8" else "int8"
    cache_path().write_text(json.dumps({**cache, key: {**entry, "precision": other}}))
    assert FacialExpressionModel(onnx).precision == other


def test_auto_gives_every_thread_count_the_same_file(quantized, tmp_path, monkeypatch):
    """A one-thread worker of `ferkit analyze` and a two-thread `ferkit predict` on one machine must run the
    same file, or their probabilities differ: the verdict is the one timed at the run time's default threads."""
    from ferkit.fileio import sha256
    from ferkit.runtime.precision import verdict_key

    onnx, _, _ = quantized
    monkeypatch.setenv("FERKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FERKIT_THREADS", "2")
    monkeypatch.delenv("FERKIT_PRECISION", raising=False)
    FacialExpressionModel(onnx)
    cache = json.loads(cache_path().read_text())
    (key, entry), = [(k, e) for k, e in cache.items() if "precision" in e]
    shas = sha256(onnx), sha256(onnx.with_name(f"{NAME}.int8.onnx"))
    assert key == verdict_key(shas, 2)
    # verdicts that differ by threads, as they may on a CPU where int8 and fp32 tie
    cache_path().write_text(json.dumps({**cache, key: {**entry, "precision": "int8"},
                                        verdict_key(shas, 1): {**entry, "precision": "fp32"}}))
    picked = {t: FacialExpressionModel(onnx, threads=t).precision for t in (1, 2, 3)}
    assert picked == {1: "int8", 2: "int8", 3: "int8"}


def test_precision_from_the_environment(quantized, tmp_path, monkeypatch):
    onnx, _, _ = quantized
    plain = copy_model(tmp_path / "plain")  # no int8 version
    monkeypatch.setenv("FERKIT_PRECISION", "int8")
    assert FacialExpressionModel(onnx).precision == "int8"
    assert FacialExpressionModel(plain).precision == "fp32"  # int8 where a model has one
    assert FacialExpressionModel(onnx, precision="fp32").precision == "fp32"  # the argument wins
    monkeypatch.setenv("FERKIT_PRECISION", "fp32")
    assert FacialExpressionModel(onnx).precision == "fp32"
    monkeypatch.setenv("FERKIT_PRECISION", "fast")
    with pytest.raises(ConfigError, match=r"^FERKIT_PRECISION='fast': choose one of auto, fp32, int8$"):
        FacialExpressionModel(onnx)


def test_asking_for_int8_that_is_not_there_or_not_the_one_checked(quantized, tmp_path, monkeypatch):
    onnx, _, _ = quantized
    monkeypatch.delenv("FERKIT_PRECISION", raising=False)
    plain = copy_model(tmp_path / "plain")
    with pytest.raises(ModelError, match=r"plain/fer2013-7\.onnx: no int8 version \(its card lists none"):
        FacialExpressionModel(plain, precision="int8")
    with pytest.raises(ModelError, match=r"precision 'int4': choose one of auto, fp32, int8"):
        FacialExpressionModel(onnx, precision="int4")
    gone = copy_model(tmp_path / "gone", int8=True, src=onnx.parent)
    gone.with_name(f"{NAME}.int8.onnx").unlink()
    with pytest.raises(ModelError, match=r"lists fer2013-7\.int8\.onnx but that file is missing"):
        FacialExpressionModel(gone, precision="int8")
    assert FacialExpressionModel(gone).precision == "fp32"
    # an int8 file replaced after the check (here by the fp32 graph) is refused, and auto runs fp32
    swapped = copy_model(tmp_path / "swapped", int8=True, src=onnx.parent)
    shutil.copyfile(swapped, swapped.with_name(f"{NAME}.int8.onnx"))
    with pytest.raises(ModelError, match=r"not the int8 file its card checked \(fer2013-7\.int8\.onnx has changed"):
        FacialExpressionModel(swapped, precision="int8")
    assert FacialExpressionModel(swapped).precision == "fp32"


def test_the_runtime_runs_int8_without_onnx_or_training_code(quantized):
    onnx, _, _ = quantized
    code = ("import sys, numpy as np; from ferkit.runtime.model import FacialExpressionModel; "
            f"m = FacialExpressionModel({str(onnx)!r}, precision='int8'); m.predict(np.zeros((48, 48), np.uint8)); "
            "print(m.precision, sorted(k for k in sys.modules if k in ('onnx', 'torch') or k.startswith('ferkit.train')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=None)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["int8", "[]"]


def test_auto_never_picks_full_range_int8_where_it_saturates(quantized, tmp_path, monkeypatch):
    """An int8 file made without 7-bit weights (older ferkit) is left alone by auto on x86 without VNNI."""
    from ferkit.runtime import precision

    onnx, _, _ = quantized
    old = copy_model(tmp_path / "old", int8=True, src=onnx.parent)
    card = json.loads(old.with_suffix(".json").read_text())
    del card["int8"]["calibration"]["reduce_range"]
    old.with_suffix(".json").write_text(json.dumps(card))
    monkeypatch.setenv("FERKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FERKIT_PRECISION", raising=False)
    monkeypatch.setattr(precision, "cpu_isa", lambda: "avx2")
    assert precision.saturates_here(card["int8"]) and FacialExpressionModel(old).precision == "fp32"
    cached = json.loads(cache_path().read_text()) if cache_path().exists() else {}
    assert not [e for e in cached.values() if "precision" in e]  # decided without timing int8 against fp32
    assert FacialExpressionModel(old, precision="int8").precision == "int8"  # asked for by name: loaded
    monkeypatch.setattr(precision, "cpu_isa", lambda: "avx2 avx512f avx512_vnni")
    assert not precision.saturates_here(card["int8"])
    assert not precision.saturates_here(ModelCard.load(onnx.with_suffix(".json")).int8)


def test_an_int8_file_that_fails_the_check_is_not_written(tmp_path, data_dir):
    """One calibration face and a demand of perfect agreement: the report says why, nothing is written."""
    onnx = copy_model(tmp_path / "model")
    card_before = onnx.with_suffix(".json").read_bytes()
    r = run_cli("quantize", onnx, data_dir, "--calibration", 1, "--method", "minmax", "--tta", "none", "--every", 16,
                "--min-agreement", 1.0, timeout=None)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "not kept" in r.stdout and "nothing written" in r.stdout
    assert sorted(p.name for p in onnx.parent.iterdir()) == [f"{NAME}.json", f"{NAME}.onnx"]
    assert onnx.with_suffix(".json").read_bytes() == card_before


@pytest.mark.parametrize("args, fragment", [
    (["--method", "kmeans"], "--method 'kmeans': choose one of minmax, entropy, percentile"),
    (["--calibration", "0"], "--calibration 0: must be at least 1 face"),
    (["--tta", "twice"], "--tta 'twice': unknown TTA mode"),
])
def test_bad_options_are_one_line(args, fragment, tmp_path, data_dir):
    onnx = copy_model(tmp_path / "model")
    r = run_cli("quantize", onnx, data_dir, *args)
    assert_one_line_error(r, fragment)
    assert sorted(p.name for p in onnx.parent.iterdir()) == [f"{NAME}.json", f"{NAME}.onnx"]


def test_a_missing_model_is_one_line(tmp_path, data_dir):
    assert_one_line_error(run_cli("quantize", tmp_path / "none.onnx", data_dir), "none.onnx: no such model file")


SHIPPED_INT8 = sorted(p.stem for p in WEIGHTS_DIR.glob("*.json") if ModelCard.load(p).int8)


@pytest.mark.parametrize("name", SHIPPED_INT8)
def test_shipped_int8_files_meet_their_cards_limits(name):
    from ferkit.train.provenance import sha256

    card = ModelCard.load(WEIGHTS_DIR / f"{name}.json")
    rec, int8 = card.int8, WEIGHTS_DIR / card.int8["file"]
    assert int8.stat().st_size < 20 * 10**6 and rec["sha256"] == sha256(int8)
    assert rec["fp32_sha256"] == sha256(WEIGHTS_DIR / f"{name}.onnx")
    chk = rec["PrivateTest"]
    assert chk["every"] == 1 and chk["faces"] == card.metrics["PrivateTest"]["faces"] and chk["tta"] == card.tta
    pc = getattr(card, "prior_correction", None)  # the card's figures are after its prior correction, if any
    fp32 = card.metrics["PrivateTest"] if rec["prior_tau"] == (pc or {}).get("tau", 0.0) else \
        pc["uncorrected"]["PrivateTest"] if rec["prior_tau"] == 0 else None
    assert fp32 is not None, "the card's prior correction changed after its int8 check: run ferkit quantize again"
    assert chk["accuracy_fp32"] == pytest.approx(fp32["accuracy"], abs=1e-5)
    assert chk["accuracy_fp32"] - chk["accuracy"] <= 0.003 and chk["argmax_agreement"] >= 0.98
    assert rec["calibration"]["split"] == "Training" and rec["calibration"]["choice"]["split"] == "PublicTest"
    # full-range int8 weights saturate onnxruntime's uint8 x int8 kernels on CPUs without VNNI (AVX2)
    assert rec["calibration"]["reduce_range"] is True
    assert FacialExpressionModel(name, precision="int8").file == int8


@pytest.mark.parametrize("name", SHIPPED_INT8)
def test_shipped_int8_quick_check_is_what_evaluate_prints(name, data_dir, tmp_path):
    """`ferkit evaluate --precision int8 --every 8` gives the card's int8 quick-check figure (within a face or
    two: int8 arithmetic may round differently on another CPU)."""
    card = ModelCard.load(WEIGHTS_DIR / f"{name}.json")
    sample = card.int8["PrivateTest"]["sample"]
    extra = ["--ferplus", str(data_dir / "fer2013new.csv")] if len(card.classes) == 8 else []
    r = run_cli("evaluate", name, data_dir, "--precision", "int8", "--every", 8, "--json", "--out", tmp_path, *extra,
                timeout=None)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads(r.stdout)
    assert Path(m["model"]["path"]).name == card.int8["file"] and m["n"] == sample["faces"]
    assert m["accuracy"] == pytest.approx(sample["accuracy"], abs=2.5 / sample["faces"])


def test_evaluate_scores_fp32_unless_asked(data_dir, tmp_path):
    """The card's figures are fp32's: evaluate runs the fp32 file whatever this machine would pick."""
    r = run_cli("evaluate", NAME, data_dir, "--every", 64, "--tta", "none", "--json", "--out", tmp_path,
                timeout=None)
    assert r.returncode == 0, r.stderr[-2000:]
    assert Path(json.loads(r.stdout)["model"]["path"]).name == f"{NAME}.onnx"
