"""Shared fixtures: where the benchmark data lives, and skipping clearly when it is absent.

The default run (``make test``, what CI runs) leaves out tests marked ``extended``: further
variants of paths that a default test already covers end to end (another data set, another party
count, another seed). ``FEDRISK_TESTS=all`` runs them too, and also turns on every case of the
seeded fault/resume/rejoin/screenshot suites (``FEDRISK_FAULTS=all``, ``FEDRISK_SCREENSHOTS=all``).
Each ``extended`` mark names, in its ``reason``, the default test that still covers the path.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FEDRISK_SHARED_DATA", REPO.parent / "shared" / "data"))
#: FEDRISK_TESTS=all: every test, the extended variants and every seeded fault case included
ALL_TESTS = os.environ.get("FEDRISK_TESTS", "") == "all"
if ALL_TESTS:  # read by the seeded suites when their modules are imported, i.e. after this file
    os.environ.setdefault("FEDRISK_FAULTS", "all")
    os.environ.setdefault("FEDRISK_SCREENSHOTS", "all")


def pytest_collection_modifyitems(config, items):
    """Outside ``FEDRISK_TESTS=all``, skip ``extended`` tests, saying which default test covers them."""
    if ALL_TESTS:
        return
    for item in items:
        mark = item.get_closest_marker("extended")
        if mark is not None:
            covered = mark.kwargs.get("covered_by") or (mark.args[0] if mark.args else "")
            item.add_marker(pytest.mark.skip(reason=f"extended variant (FEDRISK_TESTS=all runs it); "
                                                    f"default coverage: {covered}"))


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
