"""Shared test setup: one parse cache for the whole session, and the real data set located by path."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

# One cache dir per test session (subprocesses inherit it): the real CSV is parsed once, not per test.
os.environ.setdefault("FERKIT_CACHE", os.path.join(tempfile.gettempdir(), "ferkit-test-cache"))

FERKIT = [sys.executable, "-m", "ferkit.apps.cli"]


def data_dir_or_skip() -> Path:
    from ferkit.data import default_data_dir, find_fer2013_csv

    root = default_data_dir()
    if find_fer2013_csv(root) is None:
        why = f"real data absent: no fer2013.csv[.gz] in {root} (set FERKIT_DATA to the folder holding it)"
        if os.environ.get("FERKIT_REQUIRE_DATA"):  # CI sets this: there, missing data is a failure, not a skip
            pytest.fail(why)
        pytest.skip(why)
    return root


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return data_dir_or_skip()


@pytest.fixture(scope="session")
def fer2013(data_dir):
    from ferkit.data import load_dataset

    return load_dataset(data_dir)
