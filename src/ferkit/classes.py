"""The emotion vocabulary: canonical class names, FER2013 codes and folder-name synonyms."""

from __future__ import annotations

from ferkit.errors import UsageError

# FER2013's own codes 0..6, in its order; FER+ adds contempt as class 7.
EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FERPLUS_EMOTIONS: tuple[str, ...] = EMOTIONS + ("contempt",)

# FER+ vote columns in the order of fer2013new.csv.
FERPLUS_VOTE_COLUMNS: tuple[str, ...] = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF",
)

_SYNONYMS: dict[str, str] = {
    "anger": "angry", "angry": "angry", "mad": "angry",
    "disgust": "disgust", "disgusted": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear",
    "happy": "happy", "happiness": "happy", "joy": "happy",
    "sad": "sad", "sadness": "sad",
    "surprise": "surprise", "surprised": "surprise",
    "neutral": "neutral", "calm": "neutral",
    "contempt": "contempt",
}


def canonical_class(name: str) -> str | None:
    """Map a class or folder name ('Happiness', 'ANGER', 'surprised') to its canonical name, or None."""
    return _SYNONYMS.get(name.strip().lower())


def parse_class_list(spec: str | None) -> tuple[str, ...] | None:
    """Parse '--classes happy,sad' into canonical names; raise UsageError naming an unknown one."""
    if spec is None or not spec.strip():
        return None
    names = []
    for raw in spec.split(","):
        name = canonical_class(raw)
        if name is None:
            raise UsageError(f"--classes: unknown class {raw.strip()!r}; known: {', '.join(FERPLUS_EMOTIONS)}")
        if name not in names:
            names.append(name)
    return tuple(names)


# Canonical split names follow the Kaggle CSV; folder trees and users may say train/validation/test.
SPLITS: tuple[str, ...] = ("Training", "PublicTest", "PrivateTest")
_SPLIT_ALIASES: dict[str, str] = {
    "training": "Training", "train": "Training",
    "publictest": "PublicTest", "validation": "PublicTest", "val": "PublicTest", "valid": "PublicTest",
    "privatetest": "PrivateTest", "test": "PrivateTest", "fer2013test": "PrivateTest",
}
SPLIT_FOLDERS: dict[str, str] = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}


def canonical_split(name: str) -> str | None:
    """Map 'train', 'validation', 'PublicTest', ... to the canonical split name, or None."""
    return _SPLIT_ALIASES.get(name.strip().lower())
