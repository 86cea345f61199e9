"""Primitives of ECDH-PSI over ristretto255: normalisation, hash-to-group, blinding, batch kernels."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrisk.crypto import psi
from fedrisk.crypto.sodium import rbcl
from fedrisk.errors import CryptoError

ids_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
id_values = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), ids_text)
keys = st.builds(lambda _: psi.random_key(), st.integers())


# -- normalisation ----------------------------------------------------------------------------
def test_normalize_documented_cases():
    assert psi.normalize_id(12) == psi.normalize_id("12") == psi.normalize_id(" 12\n") == psi.normalize_id(np.int64(12))
    assert psi.normalize_id("012") != psi.normalize_id(12)
    assert psi.normalize_id(12.0) == "12.0"
    assert psi.normalize_id(b" ab ") == "ab"
    assert psi.normalize_id("AbC") == "AbC"
    assert psi.normalize_id("AbC", casefold=True) == "abc"
    assert psi.normalize_id("Straße", casefold=True) == psi.normalize_id("STRASSE", casefold=True)


def test_normalize_ids_int_array_matches_scalar_path():
    arr = np.array([0, -5, 12, 2**40], dtype=np.int64)
    assert psi.normalize_ids(arr) == [psi.normalize_id(v) for v in arr] == ["0", "-5", "12", str(2**40)]
    assert psi.normalize_ids(np.array([1, 2], np.uint16)) == ["1", "2"]


@given(id_values, st.booleans())
def test_normalize_is_idempotent(v, casefold):
    once = psi.normalize_id(v, casefold=casefold)
    assert psi.normalize_id(once, casefold=casefold) == once
    if isinstance(v, int):
        assert once == str(v)


def test_hash_prefix_is_unambiguous():
    assert psi.hash_prefix("ab") + b"c" != psi.hash_prefix("a") + b"bc"
    assert psi.hash_prefix("s").startswith(psi.DOMAIN + b"\x00")


# -- hash to group ----------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(st.lists(ids_text, min_size=1, max_size=8, unique=True), st.text(min_size=1, max_size=8))
def test_hash_to_group_valid_deterministic_injective(ids, salt):
    pts = psi.hash_to_group(ids, salt)
    assert pts.shape == (len(ids), 32) and pts.dtype == np.uint8
    assert all(rbcl.crypto_core_ristretto255_is_valid_point(bytes(p)) for p in pts)
    assert np.array_equal(pts, psi.hash_to_group(ids, salt))
    assert len({bytes(p) for p in pts}) == len(ids)
    assert not np.array_equal(pts, psi.hash_to_group(ids, salt + "x"))


# -- blinding ---------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(st.lists(ids_text, min_size=1, max_size=6, unique=True), keys, keys)
def test_blinding_commutes(ids, a, b):
    h = psi.hash_to_group(ids, "job")
    ab = psi.reblind(psi.blind(h, a), b)
    ba = psi.reblind(psi.blind(h, b), a)
    assert np.array_equal(ab, ba)
    if a != b:
        assert not np.array_equal(psi.blind(h, a), psi.blind(h, b))
        assert not np.array_equal(psi.blind(h, a), h)


@settings(max_examples=15, deadline=None)
@given(st.lists(id_values, min_size=0, max_size=6, unique_by=lambda v: psi.normalize_id(v)), keys)
def test_hash_and_blind_equals_blind_of_hash(ids, k):
    norm = psi.normalize_ids(ids)
    got = psi.hash_and_blind(norm, k, "salt")
    assert got.shape == (len(ids), 32)
    if ids:
        assert np.array_equal(got, psi.blind(psi.hash_to_group(norm, "salt"), k))


def test_reblind_rejects_invalid_and_identity_points():
    k = psi.random_key()
    good = psi.hash_to_group(["a", "b"], "s")
    bad = np.vstack([good, np.full((1, 32), 0xFF, np.uint8)])
    with pytest.raises(CryptoError, match="row 2"):
        psi.reblind(bad, k)
    with pytest.raises(CryptoError, match="row 0"):
        psi.reblind(np.zeros((1, 32), np.uint8), k)  # the identity element
    with pytest.raises(CryptoError, match=r"\(n, 32\) uint8"):
        psi.reblind(good.astype(np.int16), k)
    with pytest.raises(CryptoError, match="32 bytes"):
        psi.reblind(good, b"short")


def test_random_key_is_fresh_scalar():
    ks = {psi.random_key() for _ in range(8)}
    assert len(ks) == 8 and all(len(k) == psi.SCALAR_BYTES for k in ks)


# -- the process pool -------------------------------------------------------------------------
def test_pool_batches_equal_inline_kernels():
    n = psi.INLINE_BELOW + 500  # large enough for the pool path, several chunks
    ids = [f"cust-{i}" for i in range(n)]
    k1, k2 = psi.random_key(), psi.random_key()
    try:
        pooled = psi.hash_and_blind(ids, k1, "s")
        serial = np.frombuffer(psi.hash_and_blind_kernel(k1, psi.hash_prefix("s"), [s.encode() for s in ids]),
                               np.uint8).reshape(-1, 32)
        assert np.array_equal(pooled, serial)
        chunks = list(psi.iter_hash_and_blind(ids, k1, "s", chunk=600))
        assert [len(c) for c in chunks] == [600, 600, n - 1200]
        assert np.array_equal(np.concatenate(chunks), serial)
        re = psi.reblind(pooled, k2)
        assert np.array_equal(re, np.frombuffer(psi.reblind_kernel(k2, serial.tobytes()), np.uint8).reshape(-1, 32))
        assert np.array_equal(psi.points_from_future(psi.submit_reblind(pooled, k2)), re)
        bad = pooled.copy()
        bad[n - 3] = 0xFF
        with pytest.raises(CryptoError, match=f"row {n - 3}"):
            psi.reblind(bad, k2)
    finally:
        psi.shutdown_pool()


def test_chunk_size_bounds():
    assert psi.chunk_size(0) == 512
    assert psi.chunk_size(10) == 512
    assert psi.chunk_size(10**7) == 16384
