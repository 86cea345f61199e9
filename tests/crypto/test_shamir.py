"""Shamir secret sharing: any ``t`` shares recover the secret, fewer say nothing, corruption is caught."""
from __future__ import annotations

import itertools
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrisk.crypto import shamir
from fedrisk.errors import CryptoError


def _probably_prime(n: int, rounds: int = 16) -> bool:
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    rng = random.Random(1)
    for _ in range(rounds):
        x = pow(rng.randrange(2, n - 1), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def test_field_is_prime_and_fits_256_bit_secrets():
    assert _probably_prime(shamir.PRIME)
    assert shamir.PRIME > 2**256
    assert shamir.SHARE_BYTES == 66


@settings(max_examples=60, deadline=None)
@given(secret=st.integers(0, shamir.PRIME - 1), n=st.integers(1, 7), data=st.data())
def test_any_threshold_subset_reconstructs(secret, n, data):
    t = data.draw(st.integers(1, n))
    shares = shamir.split(secret, t, range(1, n + 1))
    subset = data.draw(st.lists(st.sampled_from(sorted(shares)), min_size=t, max_size=n, unique=True))
    assert shamir.reconstruct({x: shares[x] for x in subset}, t) == secret


@settings(max_examples=30, deadline=None)
@given(secret=st.binary(min_size=32, max_size=32), n=st.integers(2, 6), data=st.data())
def test_bytes_round_trip(secret, n, data):
    t = data.draw(st.integers(2, n))
    shares = shamir.split_bytes(secret, t, list(range(1, n + 1)))
    assert all(len(v) == shamir.SHARE_BYTES for v in shares.values())
    for subset in itertools.combinations(sorted(shares), t):
        assert shamir.reconstruct_bytes({x: shares[x] for x in subset}, t, 32) == secret


def test_below_threshold_is_refused():
    shares = shamir.split(12345, 3, [1, 2, 3, 4])
    with pytest.raises(CryptoError, match="need 3"):
        shamir.reconstruct({1: shares[1], 2: shares[2]}, 3)


def test_below_threshold_shares_are_consistent_with_every_secret():
    # t-1 shares plus any candidate secret at x=0 define a valid degree t-1 polynomial: the shares
    # alone cannot tell secrets apart. Check that both candidates interpolate through the shares.
    t = 3
    shares = shamir.split(42, t, [1, 2, 3, 4])
    partial = [(1, shares[1]), (2, shares[2])]
    for candidate in (42, 7, shamir.PRIME - 1):
        pts = partial + [(0, candidate)]
        # the polynomial through pts takes the candidate at 0 and the real shares at 1, 2
        assert shamir._interpolate_at(pts, 0) == candidate
        assert shamir._interpolate_at(pts, 1) == shares[1]


def test_shares_are_randomised():
    a = shamir.split(5, 2, [1, 2, 3])
    b = shamir.split(5, 2, [1, 2, 3])
    assert a != b
    assert shamir.reconstruct(a, 2) == shamir.reconstruct(b, 2) == 5


def test_corrupted_extra_share_detected():
    shares = shamir.split(999, 2, [1, 2, 3, 4])
    shares[4] = (shares[4] + 1) % shamir.PRIME
    with pytest.raises(CryptoError, match="inconsistent"):
        shamir.reconstruct(shares, 2)


@pytest.mark.parametrize("xs", [[1, 1, 2], [0, 1, 2], [1, shamir.PRIME]])
def test_bad_points_refused(xs):
    with pytest.raises(CryptoError):
        shamir.split(1, 2, xs)


@pytest.mark.parametrize("t", [0, 4])
def test_bad_threshold_refused(t):
    with pytest.raises(CryptoError, match="threshold"):
        shamir.split(1, t, [1, 2, 3])


def test_secret_out_of_range_refused():
    with pytest.raises(CryptoError):
        shamir.split(shamir.PRIME, 2, [1, 2])
    with pytest.raises(CryptoError):
        shamir.split_bytes(os.urandom(65), 2, [1, 2])
