"""The DH-OPRF: blind/evaluate/finalize equals direct evaluation for any ids; keys are checked."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from fedrisk.crypto import oprf, psi
from fedrisk.errors import CryptoError

_KEY = oprf.new_key()


@settings(max_examples=25, deadline=None)
@given(hs.lists(hs.text(min_size=1, max_size=30).filter(lambda s: s.strip()), min_size=1, max_size=20, unique=True))
def test_oblivious_evaluation_equals_direct(ids):
    norm = psi.normalize_ids(ids)
    inv, blinded = oprf.blind(norm, "epoch-1")
    got = oprf.finalize(norm, inv, oprf.blind_evaluate(blinded, _KEY))
    assert got.shape == (len(ids), oprf.OUTPUT_BYTES)
    assert np.array_equal(got, oprf.evaluate(norm, _KEY, "epoch-1"))


def test_keys_are_checked_and_fingerprints_stable():
    with pytest.raises(CryptoError):
        oprf.check_key(b"\x00" * 32)
    with pytest.raises(CryptoError):
        oprf.check_key(b"\xff" * 32)  # above the group order
    with pytest.raises(CryptoError):
        oprf.check_key(b"short")
    assert oprf.key_fingerprint(_KEY) == oprf.key_fingerprint(bytes(_KEY)) != oprf.key_fingerprint(oprf.new_key())


def test_a_bad_evaluated_element_is_named():
    norm = ["a", "b"]
    inv, blinded = oprf.blind(norm, "c")
    bad = oprf.blind_evaluate(blinded, _KEY)
    bad[1] = 0  # the identity encoding
    with pytest.raises(CryptoError, match="row 1"):
        oprf.finalize(norm, inv, bad)


@pytest.mark.parametrize("damage,match", [("identity", "not a valid non-identity"), ("bit255", "bit 255 set")])
def test_a_bad_element_in_a_later_chunk_is_named_by_its_row_in_the_batch(damage, match):
    """Large batches run in chunks in the process pool; the error names the row of the whole batch."""
    n = 2000
    norm = [f"C{i}" for i in range(n)]
    inv, blinded = oprf.blind(norm, "c")
    ev = oprf.blind_evaluate(blinded, _KEY)
    row = n - 5  # in the last chunk, far past its start
    assert len({a for a in range(0, n, psi.chunk_size(n)) if a <= row}) > 1
    if damage == "identity":
        ev[row] = 0
    else:
        ev[row, 31] |= 0x80
    with pytest.raises(CryptoError, match=rf"^cannot finalise the OPRF: row {row} .*{match}"):
        oprf.finalize(norm, inv, ev)
