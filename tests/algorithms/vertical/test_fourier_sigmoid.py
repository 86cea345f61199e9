"""The periodic sigmoid: within its tolerance wherever it claims to be, and modular fractions that add up."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrisk.algorithms.vertical import fourier_sigmoid as fs
from fedrisk.algorithms.vertical.hetero_lr import sigmoid


@pytest.mark.parametrize("z_bound", [0.0, 3.0, 10.0, 30.0, 64.0, 192.0])
@pytest.mark.parametrize("tol", [1e-2, 1e-4, 1e-6])
def test_series_is_within_tolerance_on_the_whole_announced_range(z_bound, tol):
    """Max error of 1/2 + z/(2P) + sum_k b_k sin(k w z) against the float sigmoid, on a grid much
    finer than the one terms() used (offset from it), over |z| <= z_bound -- beyond P too."""
    P = fs.half_period(z_bound, tol)
    K = fs.terms(P, tol)
    assert fs.on_grid(P) and fs.valid_bound(P, tol) >= z_bound and K < fs.MAX_TERMS
    z = np.linspace(-z_bound, z_bound, 100_003) if z_bound else np.zeros(1)
    err = np.abs(fs.evaluate(z, P, K) - sigmoid(z)).max()
    assert err <= tol * 1.01, (P, K, err)
    # and the fewest such terms: one less misses the tolerance somewhere in the range
    if K > 1:
        zz = np.linspace(-fs.valid_bound(P, tol), fs.valid_bound(P, tol), 100_003)
        assert np.abs(fs.evaluate(zz, P, K - 1) - sigmoid(zz)).max() > tol


def test_term_counts_grow_like_p_log_inverse_tolerance():
    """K ~ P ln(1/tol) / pi^2 (sigma's poles at +-i pi): P = 16 needs ~22 terms at 1e-6."""
    for P in (2.0 ** (32 / 8), 2.0 ** (40 / 8), 2.0 ** (48 / 8)):  # 16, 32, 64
        K = fs.terms(P, 1e-6)
        assert 0.6 < K / (P * math.log(1e6) / math.pi ** 2) < 1.6, (P, K)
    b = fs.sine_coefficients(16.0)
    # geometric decay (rate exp(-pi^2 k / P)) down to the floor of the e^-P mismatch at +-P, ~2 e^-P / (pi k)
    assert abs(b[20]) < 1e-5 and abs(b[40]) < 4.0 * math.exp(-16.0) / (math.pi * 41)


def test_half_period_grid_is_checked():
    assert fs.on_grid(16.0) and fs.on_grid(2.0 ** (37 / 8))
    assert not fs.on_grid(16.5) and not fs.on_grid(1000.0) and not fs.on_grid(float("nan"))


@settings(max_examples=60, deadline=None)
@given(us=st.lists(st.floats(-64, 64, allow_nan=False), min_size=2, max_size=5),
       j=st.integers(0, 40), k=st.integers(1, 300))
def test_masked_fractions_give_the_phase_of_the_joint_score(us, j, k):
    """Label holder a = q_G - sum r, first holder v = q_1 + sum (q_j + r_j): a + v is the joint
    score's fraction of the period, and phases() is e^{i k w z} to ~1e-9 for k up to 300."""
    P = 2.0 ** ((24 + j) / 8)
    q = [fs.to_fraction(np.array([u]), P) for u in us]
    r = [fs.uniform_fractions(1) for _ in us[2:]]
    a = q[0]
    v = q[1]
    for qj, rj in zip(q[2:], r):
        a = fs.sub(a, rj)
        v = fs.add(v, fs.add(qj, rj))
    z = sum(us)
    got = fs.phases(a, k)[-1] * fs.phases(v, k)[-1]
    assert abs(got[0] - np.exp(1j * k * math.pi / P * z)) < 1e-9 * max(1.0, k * abs(z) / P)


def test_uniform_fractions_are_uniform():
    from scipy.stats import kstest

    r = fs.uniform_fractions(20_000)
    assert r.dtype == np.uint64 and not np.any(r >> np.uint64(fs.FRACTION_BITS))
    assert kstest(r.astype(np.float64) / 2.0 ** fs.FRACTION_BITS, "uniform").pvalue > 1e-4
