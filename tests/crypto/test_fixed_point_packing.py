"""Fixed-point encoding and slot packing: round trips, exact sums at the bounds, overflow refused up front."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedrisk.crypto import fixed_point
from fedrisk.crypto.additive import generate_keypair
from fedrisk.crypto.packing import (
    SlotPacking,
    decrypt_packed,
    encrypt_packed,
    slot_bits_for,
)
from fedrisk.errors import CryptoError

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module", params=["paillier", "ou"])
def keys(request):
    return generate_keypair(request.param, 768 if request.param == "ou" else 512)


# --- fixed point ---------------------------------------------------------------------------------
@SETTINGS
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=10), st.integers(0, 80))
def test_fixed_point_round_trip(xs, s):
    ints = fixed_point.encode(np.array(xs), s)
    back = fixed_point.decode(ints, s)
    x = np.array(xs, dtype=np.float64)
    assert np.all(np.abs(back - x) <= 2.0 ** -(s + 1) + np.abs(x) * 2.0**-52)


def test_fixed_point_exact_for_huge_values():
    assert fixed_point.encode([1e300], 32) == [int(1e300) << 32]
    assert fixed_point.encode([-2.0**70 - 2.0**18], 0) == [-(2**70) - 2**18]
    assert fixed_point.encode([0.5, 1.5, 2.5], 0) == [0, 2, 2]  # half to even
    assert fixed_point.decode([1 << 2000], 1)[0] == np.inf
    with pytest.raises(CryptoError):
        fixed_point.encode([np.inf])
    with pytest.raises(CryptoError):
        fixed_point.encode([1.0], -1)


@SETTINGS
@given(st.lists(st.integers(-(2**60) + 1, 2**60 - 1), max_size=10))
def test_residues_round_trip(ms):
    mod = 2**61 + 1
    assert fixed_point.from_residues(fixed_point.to_residues(ms, mod), mod) == ms


def test_residue_range():
    with pytest.raises(CryptoError):
        fixed_point.to_residues([50], 101)  # |m| < 101 // 2 is the documented range
    assert fixed_point.to_residues([-49, 49], 101) == [52, 49]
    with pytest.raises(CryptoError):
        fixed_point.to_residues([2**10], 2**40, bound_bits=10)


# --- packing -------------------------------------------------------------------------------------
def test_slot_bits_formula():
    # 1000 terms of |x| <= 1 at 20 bits: largest sum 1000 * (2^20 + 1) needs 30 bits + sign
    assert slot_bits_for(1.0, 1000, 20) == (1000 * (2**20 + 1)).bit_length() + 1 == 31
    with pytest.raises(CryptoError):
        slot_bits_for(float("inf"), 10)
    with pytest.raises(CryptoError):
        slot_bits_for(1.0, 0)


@SETTINGS
@given(st.data())
def test_pack_unpack_and_sums(data):
    n_slots = data.draw(st.integers(1, 4))
    bounds = data.draw(st.lists(st.floats(0.0, 1e6), min_size=n_slots, max_size=n_slots))
    terms = data.draw(st.integers(1, 50))
    pk = SlotPacking.for_sums(bounds, terms, plaintext_bits=1000, precision=16)
    rows = data.draw(st.lists(st.tuples(*[st.floats(-b, b) for b in bounds]), min_size=terms, max_size=terms))
    vals = np.array(rows, dtype=np.float64).reshape(terms, n_slots)
    packed = pk.pack(vals)
    enc = np.array([fixed_point.encode(vals[:, j], 16) for j in range(n_slots)], dtype=object).T
    assert (pk.unpack_ints(packed) == enc).all()
    total = sum(packed)  # what a homomorphic sum computes
    assert pk.unpack_ints([total]).tolist() == [[sum(enc[:, j]) for j in range(n_slots)]]


def test_sums_at_the_bounds_are_exact():
    pk = SlotPacking.for_sums([1.0, 0.25, 3.0], 1000, plaintext_bits=500, precision=20)
    for sign in (1, -1):
        vals = sign * np.tile([1.0, 0.25, 3.0], (1000, 1))
        total = sum(pk.pack(vals))
        assert pk.unpack([total]).tolist() == [[sign * 1000.0, sign * 250.0, sign * 3000.0]]
    mixed = np.array([[1.0, -0.25, -3.0], [-1.0, 0.25, 3.0]] * 500)
    assert pk.unpack([sum(pk.pack(mixed))]).tolist() == [[0.0, 0.0, 0.0]]


def test_overflow_refused_before_it_can_happen():
    with pytest.raises(CryptoError, match="need"):
        SlotPacking.for_sums([1.0] * 40, 10**6, plaintext_bits=1000, precision=32)
    pk = SlotPacking.for_sums([1.0, 0.25], 100, plaintext_bits=200, precision=16)
    with pytest.raises(CryptoError, match="exceeds the slot bound"):
        pk.pack(np.array([[1.0, 0.26]]))
    with pytest.raises(CryptoError):
        pk.pack(np.array([[np.nan, 0.0]]))
    with pytest.raises(CryptoError):
        pk.pack(np.zeros((2, 3)))
    with pytest.raises(CryptoError):
        pk.check_terms(101)
    pk.check_terms(100)
    # a sum beyond the declared term count is caught when unpacked rather than misread
    over = sum(pk.pack(np.tile([1.0, 0.25], (100, 1)))) * 2**20
    with pytest.raises(CryptoError):
        pk.unpack_ints([over])


def test_encrypted_histogram_of_packed_rows(keys):
    pub, priv = keys
    rng = np.random.default_rng(4)
    n, nb = 300, 7
    vals = np.column_stack([rng.uniform(-1, 1, n), rng.uniform(0, 0.25, n)])
    pk = SlotPacking.for_sums([1.0, 0.25], n, plaintext_bits=pub.plaintext_bits, precision=16)
    cts = encrypt_packed(pub, pk, vals)
    assert np.allclose(decrypt_packed(priv, pk, cts[:5]), vals[:5], atol=2**-16)
    bins = rng.integers(0, nb, n)
    hist = pub.bin_sums(cts, bins, nb)
    want = np.array([vals[bins == b].sum(axis=0) for b in range(nb)])
    assert np.allclose(decrypt_packed(priv, pk, hist), want, atol=n * 2**-17)
