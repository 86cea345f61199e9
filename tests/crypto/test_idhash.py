"""The compiled id hasher gives the bytes of hashlib over normalize_id, for every kind of id."""
from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrisk.crypto import idhash, psi

SETTINGS = settings(max_examples=150, deadline=None)
native_only = pytest.mark.skipif(
    not idhash.AVAILABLE,
    reason="the compiled kernel fedrisk.crypto._idhash is not built (needs a C compiler and libssl-dev)")

# every character but lone surrogates (which UTF-8 cannot encode, in either path), so whitespace of
# all kinds (ASCII separators 0x1c-0x1f, NEL, em space), case pairs whose folding changes length
# ("ß", "İ") and long strings are all drawn
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
ascii_texts = st.text(alphabet=st.characters(max_codepoint=127), max_size=40)
int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)
id_values = st.one_of(texts, ascii_texts, int64s, st.integers(min_value=-(2**80), max_value=2**80),
                      texts.map(lambda s: s.encode("utf-8")), st.floats(allow_nan=False), st.booleans(),
                      int64s.map(np.int64), ascii_texts.map(np.str_))
prefixes = st.binary(max_size=100)


def reference(ids, prefix: bytes, width: int, casefold: bool) -> np.ndarray:
    """One hashlib call per id over normalize_ids: the definition of the keys."""
    norm = psi.normalize_ids(ids, casefold=casefold)
    out = [hashlib.sha256(prefix + s.encode("utf-8")).digest()[:width] for s in norm]
    return np.frombuffer(b"".join(out), dtype=np.uint8).reshape(-1, width)


@contextmanager
def python_fallback():
    saved = idhash._native
    idhash._native = None
    try:
        yield
    finally:
        idhash._native = saved


def test_kernel_is_built_where_required():
    # CI sets FEDRISK_REQUIRE_IDHASH=1 where the OpenSSL headers and a compiler are there
    if os.environ.get("FEDRISK_REQUIRE_IDHASH") == "1":
        assert idhash.AVAILABLE, "fedrisk.crypto._idhash did not build; install gcc and libssl-dev"


@given(st.lists(id_values, max_size=30), prefixes, st.integers(min_value=1, max_value=32), st.booleans())
@SETTINGS
def test_mixed_ids_hash_as_hashlib_over_normalize_id(ids, prefix, width, casefold):
    want = reference(ids, prefix, width, casefold)
    assert np.array_equal(idhash.prefixed_digests(ids, prefix, width, casefold=casefold), want)
    with python_fallback():
        assert np.array_equal(idhash.prefixed_digests(ids, prefix, width, casefold=casefold), want)


@given(st.lists(texts, max_size=30), prefixes, st.booleans())
@SETTINGS
def test_string_arrays_hash_as_hashlib_over_normalize_id(ids, prefix, casefold):
    for arr in (np.array(ids, dtype=object), np.array(ids, dtype=str) if ids else np.array([], dtype=str)):
        got = idhash.prefixed_digests(arr, prefix, 16, casefold=casefold)
        assert np.array_equal(got, reference(arr, prefix, 16, casefold))


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int8, np.uint64, np.uint16])
@given(data=st.data(), prefix=prefixes, casefold=st.booleans())
@SETTINGS
def test_integer_arrays_hash_as_their_decimal_digits(dtype, data, prefix, casefold):
    info = np.iinfo(dtype)
    values = data.draw(st.lists(st.integers(min_value=int(info.min), max_value=int(info.max)), max_size=30))
    values += [int(info.min), int(info.max), 0]
    arr = np.array(values, dtype=dtype)
    got = idhash.prefixed_digests(arr, prefix, 16, casefold=casefold)
    assert np.array_equal(got, reference(arr, prefix, 16, casefold))
    assert np.array_equal(got, reference([str(v) for v in values], prefix, 16, False))


def test_documented_edge_cases():
    prefix = b"fedrisk.test\x00"
    ids = ["", " ", "\x1c12\x1f", "\u2003x\u2003", "\x85y\x85", "Straße", "STRASSE", "İ", "AbC ", "x" * 100_000,
           b" ab ", 12, np.int64(-12), -(2**63), 2**64 - 1, 12.0, np.float32(0.1), True, "é" * 7]
    for casefold in (False, True):
        assert np.array_equal(idhash.prefixed_digests(ids, prefix, 32, casefold=casefold),
                              reference(ids, prefix, 32, casefold))
    assert idhash.prefixed_digests([], prefix, 16).shape == (0, 16)
    assert idhash.prefixed_digests(np.array([], dtype=np.int64), prefix, 16).shape == (0, 16)


def test_bad_input_fails_as_the_python_path_does():
    with pytest.raises(UnicodeDecodeError):
        idhash.prefixed_digests([b"\xff"], b"p", 16)
    with pytest.raises(UnicodeEncodeError):
        idhash.prefixed_digests(["\ud800"], b"p", 16)


@native_only
def test_kernel_refuses_a_bad_width():
    with pytest.raises(ValueError, match="width"):
        idhash._native.digest_ints(np.arange(3, dtype=np.int64), True, b"p", 33)
    with pytest.raises(ValueError, match="width"):
        idhash._native.digest_objects(["a"], b"p", 0, False, psi.normalize_id)


def test_case_folding_leaves_the_interpreters_shared_objects_alone():
    """One-character upper-case ids used to be lowered inside CPython's shared one-byte ``bytes``
    objects, so ``b"A"`` read ``b"a"`` everywhere in the process afterwards (numpy then failed far
    away, e.g. ``np.require(..., "C")`` with "Unknown flag")."""
    letters = [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    codes = list(range(ord("A"), ord("Z") + 1))
    got = idhash.prefixed_digests([*letters, " Q ", "AB"], b"p", 16, casefold=True)
    assert np.array_equal(got, reference([*letters, " Q ", "AB"], b"p", 16, True))
    # (the shared objects themselves, read as numbers: a list of them would change along with them)
    assert [bytes([c])[0] for c in codes] == codes
    assert [c.encode()[0] for c in letters] == codes
