"""What a batch job analyses with: the model, the detector, frame sampling and the chunk size.

`Settings` is plain data (JSON in `RESULTS/job.json`, the only argument a worker process or a Ray actor
gets). Two runs into one RESULTS folder must use the same settings, or their rows would not agree.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass

from ferkit.errors import UsageError

DEFAULT_CHUNK = 1000  # video frames per committed part file (the resume point after a kill)


@dataclass(frozen=True)
class Settings:
    model: str  # the .onnx path (resolved, absolute)
    model_name: str
    card_sha256: str  # sha256 of the model card's JSON file
    classes: tuple[str, ...]
    detector: str = "auto"  # resolved: yunet, centerface or haar
    min_score: float = 0.5
    detect_size: int | None = None  # None: the run time's defaults (photos vs video frames)
    tta: str | None = None  # None: the card's for images, at most flip for video frames
    every: int = 1  # analyse every Nth video frame ...
    fps: float | None = None  # ... or about this many frames per second of video
    chunk: int = DEFAULT_CHUNK

    def __post_init__(self):
        if self.every < 1:
            raise UsageError(f"--every must be 1 or more, not {self.every}")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise UsageError(f"--fps must be a positive number, not {self.fps}")
        if self.fps is not None and self.every != 1:
            raise UsageError("--every and --fps both choose which frames to analyse: pass one of them")
        if self.chunk < 1:
            raise UsageError(f"--chunk must be 1 or more frames, not {self.chunk}")
        if not 0 <= self.min_score <= 1:
            raise UsageError(f"--min-score must be in [0, 1], not {self.min_score}")
        if self.detect_size is not None and self.detect_size < 0:
            raise UsageError(f"--detect-size must be 0 (full size) or more, not {self.detect_size}")

    def to_json(self) -> dict:
        d = asdict(self)
        d["classes"] = list(self.classes)
        return d

    @classmethod
    def from_json(cls, d: dict) -> Settings:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["classes"] = tuple(known.get("classes", ()))
        return cls(**known)

    def differences(self, other: Settings) -> list[str]:
        """'name: old -> new' for each setting that changes the rows (the model, detection, sampling)."""
        a, b = self.to_json(), other.to_json()
        return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if k not in ("model",) and a[k] != b.get(k)]

    # -- which video frames are analysed (stateless, so a resumed video picks the same frames) --------
    def sampled(self, n: int, video_fps: float) -> bool:
        if self.fps is None:
            return n % self.every == 0
        if self.fps >= video_fps or n == 0:
            return True
        return math.floor(n * self.fps / video_fps) > math.floor((n - 1) * self.fps / video_fps)

    def frame_step(self, video_fps: float) -> float:
        """About how many source frames lie between two analysed ones."""
        return float(self.every) if self.fps is None else max(1.0, video_fps / self.fps)


def resolve(model: str | None = None, *, detector: str = "auto", **options) -> Settings:
    """Settings for a job: the model file located and its card read, the detector name resolved."""
    from ferkit.modelcard import ModelCard
    from ferkit.runtime.detectors import auto_detector_name
    from ferkit.runtime.model import resolve_model_path

    path = resolve_model_path(model)
    card_path = path.with_suffix(".json")
    try:
        raw = card_path.read_bytes()
        card = ModelCard.load(card_path)
    except OSError as exc:
        from ferkit.errors import ModelError

        raise ModelError(f"{card_path}: cannot read the model card ({exc.strerror or exc})") from None
    except (ValueError, TypeError) as exc:
        from ferkit.errors import ModelError

        raise ModelError(f"{card_path}: not a valid model card ({exc})") from None
    name = (detector or "auto").lower()
    if name == "auto":
        name = auto_detector_name()
    return Settings(model=str(path.resolve()), model_name=card.name, card_sha256=hashlib.sha256(raw).hexdigest(),
                    classes=tuple(card.classes), detector=name, **options)
