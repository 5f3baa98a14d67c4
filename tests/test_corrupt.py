"""Camera faults as training augmentation, on real faces: each fault changes a face the way its name says,
the draws follow the generator, the chance is honoured, and a training run with them resumes exactly
(that part is in test_train's "modern" recipe)."""

from __future__ import annotations

import numpy as np
import pytest

from ferkit.errors import ConfigError
from ferkit.train.config import TrainConfig
from ferkit.train.corrupt import FAULTS, corrupt_faces


@pytest.fixture(scope="module")
def faces(fer2013):
    return fer2013.split("Training").images[:200]


def _detail(x: np.ndarray) -> float:
    """Mean absolute difference of horizontal neighbours: fine detail, which blur and low resolution remove."""
    return float(np.abs(np.diff(x.astype(float), axis=-1)).mean())


@pytest.mark.parametrize("kind", list(FAULTS))
def test_each_fault_changes_the_face_and_keeps_its_form(faces, kind):
    rng = np.random.default_rng(0)
    out = np.stack([FAULTS[kind](f, rng) for f in faces])
    assert out.shape == faces.shape and out.dtype == np.uint8
    changed = (out != faces).reshape(len(faces), -1).mean(axis=1)
    assert np.median(changed) > 0.3, (kind, np.median(changed))


def test_blur_and_low_resolution_remove_detail_and_noise_adds_it(faces):
    rng = np.random.default_rng(1)
    base = _detail(faces)
    for kind in ("blur", "lowres"):
        assert _detail(np.stack([FAULTS[kind](f, rng) for f in faces])) < 0.8 * base, kind
    assert _detail(np.stack([FAULTS["noise"](f, rng) for f in faces])) > 1.2 * base


def test_draws_follow_the_generator_and_the_chance(faces):
    before = faces.copy()
    a = corrupt_faces(faces, np.random.default_rng(7), 0.5)
    b = corrupt_faces(faces, np.random.default_rng(7), 0.5)
    c = corrupt_faces(faces, np.random.default_rng(8), 0.5)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    touched = (a != faces).reshape(len(faces), -1).any(axis=1).mean()
    assert 0.35 < touched < 0.65, touched  # about half of 200 faces
    assert corrupt_faces(faces, np.random.default_rng(7), 0.0) is faces
    every = (corrupt_faces(faces, np.random.default_rng(7), 1.0) != faces).reshape(len(faces), -1).any(axis=1)
    assert every.mean() > 0.97, every.mean()  # a blank face (FER2013 has some) may come out as it went in
    assert np.array_equal(faces, before)  # the input is never changed in place


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_the_chance_must_be_a_probability(value):
    with pytest.raises(ConfigError, match="--corrupt"):
        TrainConfig(data="x", corrupt=value).validate()
