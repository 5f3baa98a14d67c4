"""A call of a face or two runs on a one-thread session where that was measured faster on this machine:
measured once and cached, the cached verdict followed, and the same probabilities either way."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ferkit.runtime.model import FacialExpressionModel
from ferkit.runtime.precision import cache_path, cpu_model
from ferkit.runtime.small_calls import MARGIN, SMALL_VIEWS


def small_entries() -> dict:
    return {k: e for k, e in json.loads(cache_path().read_text()).items() if k.startswith("small calls")}


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FERKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FERKIT_PRECISION", "fp32")


def test_measured_once_then_read_and_followed(fresh_cache):
    first = FacialExpressionModel("fer2013-7-fast", threads=2)
    (key, entry), = small_entries().items()
    assert cpu_model() in key and "threads 2" in key and entry["views"] == 1  # the fast tier: one view a face
    ms = entry["ms_per_run"]
    assert entry["one_thread"] == (ms["1"] <= MARGIN * ms["2"]) and min(entry["runs"].values()) >= 3
    assert (first.small_session is not first.session) == entry["one_thread"]
    before = cache_path().read_text()
    FacialExpressionModel("fer2013-7-fast", threads=2)
    assert cache_path().read_text() == before  # read, not measured again
    for verdict in (True, False):  # the cached verdict is what decides
        cache_path().write_text(json.dumps({key: {**entry, "one_thread": verdict}}))
        m = FacialExpressionModel("fer2013-7-fast", threads=2)
        assert (m.small_session is not m.session) == verdict
        assert m.small_session.get_session_options().intra_op_num_threads == (1 if verdict else 2)


def test_the_views_of_one_face_are_what_is_timed(fresh_cache):
    """A face is one view under TTA none and two under flip: each is timed and cached on its own; a 16-view
    TTA reuses the largest small call's verdict."""
    FacialExpressionModel("fer2013-7-fast", threads=2, tta="none")
    FacialExpressionModel("fer2013-7-fast", threads=2, tta="flip")
    assert sorted(e["views"] for e in small_entries().values()) == [1, SMALL_VIEWS]
    FacialExpressionModel("fer2013-7-fast", threads=2, tta="multi")
    assert len(small_entries()) == 2


def test_one_thread_models_need_no_verdict(fresh_cache):
    m = FacialExpressionModel("fer2013-7-fast", threads=1)
    assert m.small_session is m.session
    assert not cache_path().exists() or not small_entries()


def test_small_and_large_calls_give_the_same_probabilities(fresh_cache, fer2013):
    faces = fer2013.split("PublicTest").images[:40]
    m = FacialExpressionModel("fer2013-7-fast", threads=2)
    (key, entry), = small_entries().items()
    cache_path().write_text(json.dumps({key: {**entry, "one_thread": True}}))
    m = FacialExpressionModel("fer2013-7-fast", threads=2, tta="flip")
    one_by_one = np.concatenate([m.predict_proba(f[None]) for f in faces])  # 2 views a call: the small session
    together = m.predict_proba(faces)  # 80 views a call: the model's threads
    np.testing.assert_allclose(one_by_one, together, atol=1e-5)
