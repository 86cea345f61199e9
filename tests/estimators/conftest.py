"""Small federations over the shared default-credit data for the estimator tests."""
from __future__ import annotations

import pandas as pd
import pytest

import fedrisk as fr


@pytest.fixture(scope="session")
def vertical_frames(shared_data):
    """The first 1500 customers of the vertical split (guest and host hold the same ids in the
    same order; the host's rows are shuffled so alignment is exercised)."""
    lender = pd.read_csv(shared_data / "default_credit_hetero_guest.csv", nrows=1500)
    payco = pd.read_csv(shared_data / "default_credit_hetero_host.csv", nrows=1500).sample(frac=1, random_state=1)
    return lender, payco.reset_index(drop=True)


@pytest.fixture(scope="session")
def horizontal_frames(shared_data):
    banks = {f"bank{i}": pd.read_csv(shared_data / f"default_credit_homo_{n}.csv", nrows=1200)
             for i, n in enumerate(["guest", "host_1", "host_2"], 1)}
    holdout = pd.read_csv(shared_data / "default_credit_homo_test.csv", nrows=1500)
    return banks, holdout


@pytest.fixture
def vfed(vertical_frames):
    lender, payco = vertical_frames
    return fr.Federation.vertical({"lender": lender, "payco": payco}, id="id", label="y", seed=7)


@pytest.fixture
def hfed(horizontal_frames):
    banks, _ = horizontal_frames
    return fr.Federation.horizontal(banks, id="id", label="y", seed=7)
