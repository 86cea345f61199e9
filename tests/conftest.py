"""Shared fixtures: where the benchmark data lives, and skipping clearly when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FEDRISK_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ../shared/data folder; tests that need it skip with a message saying where it was looked for."""
    if not (SHARED_DATA / "default_credit_homo_guest.csv").is_file():
        pytest.skip(f"shared benchmark data not found at {SHARED_DATA} (set FEDRISK_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture
def german():
    """The German credit data set (finance and WOE protocol tests); skips when it is absent."""
    path = SHARED_DATA / "germancredit.csv"
    if not path.is_file():
        pytest.skip(f"germancredit.csv not found at {path}; put the shared data sets in ../shared/data")
    import pandas as pd

    return pd.read_csv(path)
