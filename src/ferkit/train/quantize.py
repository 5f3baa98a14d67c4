"""Static int8 versions of an ONNX classifier: onnxruntime's quantisation tools, checked against fp32.

The graph goes through `quant_pre_process` (shape inference, constant folding), then `quantize_static`
in QDQ format with per-channel int8 weights and uint8 activations whose ranges come from calibration on
Training faces (normalised exactly as the run time feeds them). Weights keep to 7 bits (`reduce_range`):
on x86 CPUs without VNNI (AVX2, plain AVX-512) onnxruntime multiplies uint8 by int8 with VPMADDUBSW, whose
16-bit pair sums saturate with full-range weights; the same file then scores several points lower there than
on a VNNI CPU (measured: the fast tier fell from 69.5% to 43.6% on an AVX2 Zen 3). 7-bit weights cannot
saturate, so one file gives the same answers on every CPU. Every candidate calibration method is
scored against the fp32 model on PublicTest only; the chosen one is then checked on PrivateTest at the
card's TTA. The int8 file is written beside the fp32 file (`NAME.int8.onnx`) and recorded in the card's
`int8` block only when it keeps the accuracy (within `max_drop`) and agrees with fp32's argmax on at
least `min_agreement` of the faces; otherwise nothing is written.

Needs `onnx` (the `train` extra); the run time never imports this module.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from ferkit.errors import DataError, UsageError, require_extra
from ferkit.fileio import atomic_write_bytes, atomic_write_json

METHODS = ("minmax", "entropy", "percentile")
CALIBRATION_SPLIT = "Training"
CHOICE_SPLIT = "PublicTest"
CHECK_SPLIT = "PrivateTest"
SAMPLE_EVERY = 8  # as ferkit.evaluation.SAMPLE_EVERY: the every-8th-face figure cards record
MAX_BYTES = 20 * 10**6  # a shipped file stays under 20 MB
CALIB_BATCH = 32  # faces a calibration run takes; ranges and histograms are merged after each (memory bounded)
FLOAT_TAIL = ("Softmax", "Gemm", "MatMul")  # the classifier's last layer and softmax stay float (see float_tail)


def _ort_quant():
    require_extra("train", "ferkit quantize", "onnx")
    import onnxruntime.quantization as q

    return q


@contextlib.contextmanager
def _quiet():
    """onnxruntime's quantiser prints its progress on stdout and logs advice on the root logger: neither
    belongs in our output (stdout may be JSON)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def calibration_faces(faces, n: int, seed: int = 0) -> np.ndarray:
    """`n` Training faces (uint8, in the data's order), drawn without replacement by `seed`."""
    try:
        train = faces.split(CALIBRATION_SPLIT)
    except DataError:
        raise DataError(f"calibration needs a {CALIBRATION_SPLIT} split; the data has "
                        f"{', '.join(faces.split_names())}") from None
    if n < 1:
        raise UsageError(f"--calibration {n}: must be at least 1 face")
    n = min(n, len(train))
    idx = np.sort(np.random.default_rng(seed).choice(len(train), n, replace=False))
    return train.images[idx]


def _reader(x: np.ndarray, batch: int):
    """A CalibrationDataReader over normalised faces (N, 1, S, S), `batch` at a time, with the range
    interface onnxruntime uses to merge ranges batch by batch (memory bounded by a batch, not by N)."""
    q = _ort_quant()

    class FaceReader(q.CalibrationDataReader):
        def __init__(self):
            self.batches = [x[i:i + batch] for i in range(0, len(x), batch)]
            self.set_range(0, len(self.batches))

        def __len__(self):
            return len(self.batches)

        def set_range(self, start_index: int, end_index: int):
            self._it = iter(self.batches[start_index:end_index])

        def get_next(self):
            b = next(self._it, None)
            return None if b is None else {"faces": b}

    return FaceReader()


def quantize_file(src: str | Path, dst: str | Path, calibration: np.ndarray, method: str = "minmax") -> dict:
    """Write a static int8 (QDQ, per-channel weights) version of the fp32 ONNX `src` to `dst`, activation
    ranges calibrated on `calibration`: float32 network input (N, 1, S, S). Returns the settings used."""
    q = _ort_quant()
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise UsageError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    calib_method = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
                    "percentile": q.CalibrationMethod.Percentile}[method]
    with tempfile.TemporaryDirectory(prefix="ferkit-quant-") as tmp:
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        with _quiet():
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        floats = float_head(pre) + float_tail(pre)
        with _quiet():
            q.quantize_static(
                str(pre), str(out), _reader(np.ascontiguousarray(calibration, np.float32), CALIB_BATCH),
                quant_format=q.QuantFormat.QDQ, per_channel=True, activation_type=q.QuantType.QUInt8,
                weight_type=q.QuantType.QInt8, calibrate_method=calib_method, nodes_to_exclude=floats,
                reduce_range=True,  # 7-bit weights: no VPMADDUBSW saturation on CPUs without VNNI
                extra_options={"CalibStridedMinMax": 1})  # ranges merged batch by batch: memory bounded
        atomic_write_bytes(dst, out.read_bytes())
    return {"method": method, "format": "QDQ", "per_channel": True, "weights": "int8", "reduce_range": True,
            "activations": "uint8", "pre_process": "quant_pre_process", "float_nodes": floats}


def float_tail(path: str | Path) -> list[str]:
    """Names of the nodes that make the output from the last Gemm/MatMul on (that layer and the softmax): left in
    float, so probabilities are not rounded to steps of 1/255 (small ones to 0) and the 7-8 logits keep their
    precision; the layer is a few thousand multiply-adds a face, nothing against the convolutions."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {o: n for n in graph.node for o in n.output}
    names, node = [], producer.get(graph.output[0].name)
    while node is not None and node.op_type in FLOAT_TAIL:
        names.append(node.name)
        if node.op_type != "Softmax":
            break
        node = producer.get(node.input[0])
    return names


def float_head(path: str | Path) -> list[str]:
    """Names of the Convs that read the grey network input itself (one channel): left in float. With one input
    channel an int8 convolution's inner products are 9 long, so the kernel spends its time quantising,
    requantising and reordering, not multiplying (measured: the fast tier's first conv took 79 of 290 µs a face
    in int8; kept float, a one-face call ran 1.2-1.3x faster, batched 1.1-1.4x)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    source = graph.input[0].name
    return [n.name for n in graph.node if n.op_type == "Conv" and n.input and n.input[0] == source]


def _predictor(path: Path, mean: float, std: float, threads: int | None):
    from ferkit.modelcard import INPUT_NAME, OUTPUT_NAME
    from ferkit.preprocessing import normalize
    from ferkit.runtime.session import create_session

    session = create_session(path, threads)
    return lambda faces: session.run([OUTPUT_NAME], {INPUT_NAME: normalize(faces, mean, std)})[0]


def compare(fp32, int8, faces, card, tta: str, progress: bool = False, fp32_probs=None) -> tuple[dict, np.ndarray]:
    """Accuracy of both predictors (uint8 faces -> probabilities) on a FaceSet at `tta`, the card's prior
    correction applied where it has one (as the run time does), and how often their argmax agrees.
    Returns (figures, fp32's probabilities) so fp32 is scored once however many candidates there are."""
    from ferkit.evaluation import align_classes, predict_tta

    _, keep, y = align_classes(faces.class_names, faces.labels, card.classes)
    if not keep.any():
        raise DataError(f"none of the data's classes ({', '.join(faces.class_names)}) is known to the model")
    adjust = getattr(card, "adjust", None) or (lambda p: p)
    images = faces.images[keep]
    if fp32_probs is None:
        fp32_probs = adjust(predict_tta(fp32, images, tta, progress=progress))
    p8 = adjust(predict_tta(int8, images, tta, progress=progress))
    a32, a8 = fp32_probs.argmax(1), p8.argmax(1)
    quick = np.flatnonzero(keep) % SAMPLE_EVERY == 0  # the cards' quick check: faces 0, 8, 16, ... of the set
    return {"faces": int(len(y)), "tta": tta, "accuracy": round(float(np.mean(a8 == y)), 5),
            "accuracy_fp32": round(float(np.mean(a32 == y)), 5),
            "argmax_agreement": round(float(np.mean(a8 == a32)), 5),
            "max_abs_prob_diff": round(float(np.abs(p8 - fp32_probs).max()), 5),
            "sample": {"every": SAMPLE_EVERY, "faces": int(quick.sum()),
                       "accuracy": round(float(np.mean(a8[quick] == y[quick])), 5)}}, fp32_probs


def quantize_model(model: str | Path, data: str | Path, *, ferplus: str | Path | None = None,
                   methods: tuple[str, ...] = METHODS, calibration: int = 1000, seed: int = 0,
                   tta: str | None = None, every: int | None = None, choice_tta: str = "none",
                   max_drop: float = 0.003, min_agreement: float = 0.98, threads: int | None = None,
                   progress: bool = False, command: str | None = None, faces=None) -> dict:
    """Quantise `model` (an .onnx with its card, or a shipped name), choose the calibration method on
    PublicTest, check it on PrivateTest, and keep it (file beside the model, card's `int8` block) if it
    passes. Returns the report: every candidate's PublicTest figures, the PrivateTest check, `kept`."""
    import onnxruntime as ort

    from ferkit.data import load_dataset
    from ferkit.evaluation import every_nth
    from ferkit.modelcard import ModelCard
    from ferkit.preprocessing import check_tta, normalize
    from ferkit.runtime.model import resolve_model_path
    from ferkit.runtime.precision import cpu_isa, cpu_model, int8_name
    from ferkit.fileio import sha256

    _ort_quant()
    src = resolve_model_path(model)
    card_path = src.with_suffix(".json")
    card = ModelCard.load(card_path)
    tta = check_tta(tta or card.tta, "--tta")
    check_tta(choice_tta, "--choice-tta")
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise UsageError(f"--method {(bad or [''])[0]!r}: choose among {', '.join(METHODS)}")
    if not 0 <= max_drop < 1 or not 0 < min_agreement <= 1:
        raise UsageError(f"--max-drop {max_drop} / --min-agreement {min_agreement}: fractions, e.g. 0.003 and 0.98")
    if faces is None:
        faces = load_dataset(data, ferplus=ferplus)
    calib_u8 = calibration_faces(faces, calibration, seed)
    calib = normalize(calib_u8, card.mean, card.std)
    choice_faces, check_faces = (every_nth(faces.split(s), every) for s in (CHOICE_SPLIT, CHECK_SPLIT))
    fp32 = _predictor(src, card.mean, card.std, threads)
    dst = src.with_name(int8_name(src))
    report = {"model": str(src), "candidates": {}, "onnxruntime": ort.__version__}
    with tempfile.TemporaryDirectory(prefix="ferkit-quant-") as tmp:
        p32, settings = None, {}
        for method in methods:
            cand = Path(tmp) / f"{method}.onnx"
            settings[method] = quantize_file(src, cand, calib, method)
            fig, p32 = compare(fp32, _predictor(cand, card.mean, card.std, threads), choice_faces, card, choice_tta,
                               progress, p32)
            report["candidates"][method] = {k: v for k, v in fig.items() if k != "sample"}
            if progress:
                print(f"{method}: {CHOICE_SPLIT} agreement {fig['argmax_agreement']:.4f}, accuracy "
                      f"{fig['accuracy']:.4f} (fp32 {fig['accuracy_fp32']:.4f})", file=sys.stderr)
        # fewest argmax changes against fp32 on PublicTest, then accuracy there
        chosen = max(methods, key=lambda m: (report["candidates"][m]["argmax_agreement"],
                                             report["candidates"][m]["accuracy"]))
        cand = Path(tmp) / f"{chosen}.onnx"
        check, _ = compare(fp32, _predictor(cand, card.mean, card.std, threads), check_faces, card, tta, progress)
        size = cand.stat().st_size
        drop = check["accuracy_fp32"] - check["accuracy"]
        kept = drop <= max_drop + 1e-9 and check["argmax_agreement"] >= min_agreement and size < MAX_BYTES
        protocol = card.metrics.get(CHECK_SPLIT, {}).get("protocol")
        if every and every > 1:  # a sample already: no quick check of it
            check.pop("sample")
        check = {"split": CHECK_SPLIT, "every": every or 1, **({"protocol": protocol} if protocol else {}), **check}
        record = {
            "file": dst.name, "sha256": sha256(cand), "size_bytes": size, "fp32_sha256": sha256(src),
            CHECK_SPLIT: check,
            "calibration": {"split": CALIBRATION_SPLIT, "faces": int(len(calib_u8)), "seed": seed, **settings[chosen],
                            "choice": {"split": CHOICE_SPLIT, "tta": choice_tta, "faces": int(len(choice_faces)),
                                       "by": "argmax agreement with fp32, then accuracy",
                                       "candidates": report["candidates"]}},
            "prior_tau": float((getattr(card, "prior_correction", None) or {}).get("tau", 0.0)),  # figures after it
            "limits": {"max_accuracy_drop": max_drop, "min_argmax_agreement": min_agreement},
            "onnxruntime": ort.__version__,
            "checked_on": {"cpu": cpu_model(), "isa": cpu_isa()},  # int8 kernels differ by CPU (see the top)
            **({"command": command} if command else {}),
        }
        if kept:
            atomic_write_bytes(dst, cand.read_bytes())
            # the card as it is now, only its int8 block replaced (whatever else changed meanwhile is kept)
            data = json.loads(card_path.read_text(encoding="utf-8"))
            atomic_write_json(card_path, {**data, "int8": record})
            ModelCard.load(card_path)
            for path in (dst, card_path):  # readable by all, as the files beside them
                with contextlib.suppress(OSError):
                    os.chmod(path, 0o644)
    return {**report, "chosen": chosen, "record": record, "kept": kept, "accuracy_drop": round(drop, 5),
            "file": str(dst) if kept else None, "card": str(card_path)}
