"""Test rows chosen from ids alone: keyed-hash fraction for any id type, and the 0/1 test column."""
from __future__ import annotations

import uuid

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrisk.data.split import all_integer_ids, column_test_mask, hashed_test_mask, split_key
from fedrisk.errors import DataError


def test_hashed_split_is_the_same_at_every_party_whatever_its_row_order():
    ids = [f"C{i:07d}" for i in range(5000)]
    key = split_key("job", 0)
    mask = dict(zip(ids, hashed_test_mask(ids, 0.2, key)))
    shuffled = list(np.random.default_rng(1).permutation(ids))
    # a partner with the same customers in another order (and padded with spaces) picks the same rows
    again = hashed_test_mask([f" {i} " for i in shuffled], 0.2, split_key("job", 0))
    assert all(mask[i] == m for i, m in zip(shuffled, again))


def test_hashed_split_fraction_and_key():
    ids = [str(uuid.UUID(int=i)) for i in range(20000)]
    a = hashed_test_mask(ids, 0.2, split_key("job", 0))
    assert 0.19 < a.mean() < 0.21
    # another seed or job gives another split (the split is not a public property of an id)
    b = hashed_test_mask(ids, 0.2, split_key("job", 1))
    c = hashed_test_mask(ids, 0.2, split_key("other-job", 0))
    assert (a != b).mean() > 0.2 and (a != c).mean() > 0.2
    # zero-padded ids are other ids than their unpadded form, exactly as in PSI
    key = split_key("j", 0)
    padded = hashed_test_mask([f"{i:05d}" for i in range(2000)], 0.5, key)
    plain = hashed_test_mask([str(i) for i in range(2000)], 0.5, key)
    assert (padded != plain).mean() > 0.3


@settings(max_examples=30, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12).filter(lambda s: s.strip()), min_size=1, max_size=50, unique=True),
       st.floats(0.05, 0.95))
def test_hashed_split_is_deterministic(ids, fraction):
    key = split_key("j", 3)
    np.testing.assert_array_equal(hashed_test_mask(ids, fraction, key), hashed_test_mask(list(ids), fraction, key))


def test_hashed_split_refuses_a_fraction_outside_0_1():
    with pytest.raises(ValueError):
        hashed_test_mask(["a"], 1.0, split_key("j", 0))


def test_integer_ids_are_recognised():
    assert all_integer_ids(["1", " 007", "-3", "12345678901234567890"])
    assert not all_integer_ids(["1", "C2"]) and not all_integer_ids(["1.5"]) and not all_integer_ids(["٣"])


def test_test_column_values():
    assert column_test_mask(np.array([0, 1, 1]), "t", "lender").tolist() == [False, True, True]
    assert column_test_mask(np.array(["true", "False", "1"], dtype=object), "t", "lender").tolist() == [True, False, True]
    with pytest.raises(DataError, match="'lender'.*test_column 't' must hold only 0 and 1"):
        column_test_mask(np.array([0, 2]), "t", "lender")
    with pytest.raises(DataError, match="empty in 1 rows"):
        column_test_mask(np.array([0, np.nan]), "t", "lender")
