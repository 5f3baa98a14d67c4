"""Model cards: the JSON that travels beside every ONNX file and says how to use it.

The ONNX graph takes `faces`: float32 (N, 1, 48, 48) made by `ferkit.preprocessing.normalize`, and
returns `probabilities`: float32 (N, C), softmax already applied, columns in `classes` order.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ferkit import preprocessing

INPUT_NAME = "faces"
OUTPUT_NAME = "probabilities"
RUNTIME_TTA = preprocessing.TTA_MODES  # the test-time augmentations a card may ask the runtime for


@dataclass
class ModelCard:
    name: str
    classes: list[str]
    architecture: str
    input: dict = field(
        default_factory=lambda: {
            "name": INPUT_NAME, "shape": [None, 1, preprocessing.INPUT_SIZE, preprocessing.INPUT_SIZE],
            "dtype": "float32", "color": "gray", "scale": "pixel / 255",
            "mean": preprocessing.MEAN, "std": preprocessing.STD,
        }
    )
    output: dict = field(default_factory=lambda: {"name": OUTPUT_NAME, "kind": "softmax probabilities"})
    tta: str = "none"  # a mode of preprocessing.tta_views: the runtime averages those views' probabilities
    metrics: dict = field(default_factory=dict)  # e.g. {"PrivateTest": {"accuracy": 0.72, "tta": "flip"}}
    training: dict = field(default_factory=dict)  # command, data sha256, wall time, hardware, epochs
    notes: str = ""

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        data = json.loads(Path(path).read_text())
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)
