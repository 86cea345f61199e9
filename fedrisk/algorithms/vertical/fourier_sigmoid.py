"""The sigmoid as a line plus a periodic sine series, and scores as fractions of its period.

One job: the plaintext mathematics behind the exact vertical-LR solver with several feature
holders (:mod:`fedrisk.algorithms.vertical.hetero_lr_multi`). No party's data and no cryptography
here; the protocol module decides who computes what.

On ``[-P, P]``::

    sigma(z) = 1/2 + z / (2P) + g(z),      g(z) = sigma(z) - 1/2 - z / (2P)

``g`` is odd, ``g(+-P) = -+sigma(-P)`` (about ``e^-P``), its odd derivatives agree at ``+-P`` and its
even ones are ``O(e^-P)`` there, so its ``2P``-periodic extension is smooth up to ``~e^-P`` and its
sine series ``sum_k b_k sin(k w z)``, ``w = pi / P``, converges geometrically: ``sigma``'s poles at
``+-i pi`` give a rate ``exp(-pi^2 k / P)``, i.e. ``K ~ P ln(1/tol) / pi^2`` terms (``P = 16``: 22
terms for 1e-6, 7 for 1e-2). The periodic extension still approximates ``sigma`` past ``P``:
for ``P < |z| < 2P`` the line plus the shifted ``g`` gives ``1 + sigma(z - 2P)`` (mirrored for
``z < -P``), off by about ``e^-(2P - |z|)``. So with ``L = ln(4 / tol)`` one half-period ``P``
covers every ``|z| <= 2P - L`` (:func:`valid_bound`), and :func:`half_period` picks
``P = (max(Z, 4) + L) / 2`` for a bound ``Z`` on ``|z|``, rounded up to a ``2^(1/8)`` grid (the
``e^-P`` mismatch at ``+-P`` stays out of that range: :func:`terms` measures it).

Why periodic: ``sin(k w z)`` depends on ``z`` only modulo ``2P``, so parties can add their scores
modulo ``2P`` under masks drawn uniformly from ``[0, 2P)`` -- perfectly hiding, unlike real-valued
masks. Scores therefore travel as fractions of the period in fixed point: ``u -> round(u / (2P) *
2^48) mod 2^48`` (:func:`to_fraction`; resolution ``2P / 2^48``, about 1e-13 for ``P = 16``), and
masks are uniform 48-bit integers from the OS CSPRNG (:func:`uniform_fractions`), so the masked sum
is *exactly* uniform. :func:`phases` turns a fraction into ``e^{i k w z}`` with the product ``k v``
taken modulo ``2^48`` in integers, so no phase loses precision however large ``k`` is.

The coefficients come from a type-I discrete sine transform of ``g`` on 8192 points of
``[0, P]`` (trapezoid rule on a smooth periodic function: exponentially accurate), and the
number of terms from checking the truncated series against ``sigma`` on a fine grid of
``[-valid_bound, valid_bound]`` (:func:`terms`): the announced tolerance is measured, not
estimated.
"""
from __future__ import annotations

import math
import os
from functools import lru_cache

import numpy as np
from scipy.fft import dst  # at import, not in the first sigmoid round of training (~0.3 s)

__all__ = ["FRACTION_BITS", "MAX_TERMS", "margin", "half_period", "valid_bound", "on_grid", "sine_coefficients", "terms",
           "to_fraction", "uniform_fractions", "add", "sub", "phases", "evaluate"]

FRACTION_BITS = 48
_MOD = np.uint64(1 << FRACTION_BITS)
_LOW = np.uint64((1 << FRACTION_BITS) - 1)
#: most sine terms a label holder may ask for (bounds the work it can make a feature holder do;
#: P = 168, five parties at the 64-logit cap, needs ~230 at 1e-6)
MAX_TERMS = 512
#: largest half-period (five parties' partial scores all at the 64-logit clip)
MAX_HALF_PERIOD = 256.0
_GRID = 8  # half-periods are powers of 2^(1/8): the announced P reveals the score bound to ~9 %
_SAMPLES = 8192


def margin(tol: float) -> float:
    """``L = ln(4 / tol)``: the sigmoid is within ``tol / 4`` of 0 or 1 beyond ``+-L``."""
    return math.log(4.0 / tol)


def half_period(z_bound: float, tol: float) -> float:
    """The half-period ``P`` for joint scores with ``|z| <= z_bound`` at tolerance ``tol``: the
    smallest power of 2^(1/8) at least ``(max(z_bound, 4) + L) / 2``, ``L = ln(4 / tol)``."""
    L = margin(tol)
    need = min((max(float(z_bound), 4.0) + L) / 2.0, MAX_HALF_PERIOD)
    return float(2.0 ** (math.ceil(_GRID * math.log2(need) - 1e-12) / _GRID))


def on_grid(P: float) -> bool:
    """Whether ``P`` is an agreed half-period (a power of 2^(1/8) in [2, 256])."""
    if not isinstance(P, float) or not np.isfinite(P) or not 2.0 <= P <= MAX_HALF_PERIOD:
        return False
    return P == 2.0 ** (round(_GRID * math.log2(P)) / _GRID)


def valid_bound(P: float, tol: float) -> float:
    """Largest ``|z|`` for which :func:`evaluate` with :func:`terms` ``(P, tol)`` is within ``tol``."""
    return 2.0 * P - margin(tol)


@lru_cache(maxsize=64)
def sine_coefficients(P: float) -> np.ndarray:
    """``b_1, b_2, ...`` (index ``k - 1``) of ``g``'s ``2P``-periodic sine series."""
    z = np.arange(1, _SAMPLES) * (P / _SAMPLES)
    g = 0.5 * np.tanh(0.5 * z) - z / (2.0 * P)  # sigma(z) - 1/2 - z / (2P)
    b = dst(g, type=1) / _SAMPLES
    b.setflags(write=False)
    return b


@lru_cache(maxsize=256)
def terms(P: float, tol: float) -> int:
    """Fewest terms ``K`` with ``|evaluate(z, P, K) - sigma(z)| <= tol`` on ``|z| <= valid_bound``
    (checked on a grid 20 times finer than the shortest period; at most :data:`MAX_TERMS`)."""
    b = sine_coefficients(P)
    Z = max(valid_bound(P, tol), 0.0)
    z = np.linspace(-Z, Z, 40 * MAX_TERMS + 1)
    err = 0.5 * np.tanh(0.5 * z) - z / (2.0 * P)  # sigma - line: what the series must match
    w = math.pi / P
    for k in range(1, MAX_TERMS + 1):
        err -= b[k - 1] * np.sin(k * w * z)
        if np.abs(err).max() <= tol:
            return k
    return MAX_TERMS


def evaluate(z: np.ndarray, P: float, K: int) -> np.ndarray:
    """The plaintext approximation ``1/2 + z / (2P) + sum_{k <= K} b_k sin(k w z)`` (tests, reference)."""
    z = np.asarray(z, dtype=np.float64)
    k = np.arange(1, K + 1)
    return 0.5 + z / (2.0 * P) + np.sin(np.multiply.outer(z, k * (math.pi / P))) @ sine_coefficients(P)[:K]


def to_fraction(u: np.ndarray, P: float) -> np.ndarray:
    """``u`` as a fraction of the period ``2P`` in 48-bit fixed point (uint64, modulo 2^48)."""
    q = np.rint(np.asarray(u, dtype=np.float64) * (2.0 ** FRACTION_BITS / (2.0 * P))).astype(np.int64)
    return q.view(np.uint64) & _LOW


def uniform_fractions(n: int) -> np.ndarray:
    """``n`` independent uniform 48-bit fractions from the OS CSPRNG (exactly uniform modulo 2^48)."""
    return np.frombuffer(os.urandom(8 * int(n)), dtype=np.uint64).copy() & _LOW


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a + b`` modulo 2^48 (uint64 wraps modulo 2^64, a multiple of 2^48)."""
    return (a + b) & _LOW


def sub(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a - b`` modulo 2^48."""
    return (a - b) & _LOW


def phases(v: np.ndarray, K: int) -> np.ndarray:
    """``e^{2 pi i k v / 2^48}`` for ``k = 1..K`` (``K x n`` complex): ``e^{i k w z}`` for the score
    ``z`` whose fraction is ``v``. ``k v`` is reduced modulo 2^48 in integers first."""
    v = np.asarray(v, dtype=np.uint64)
    k = np.arange(1, K + 1, dtype=np.uint64)
    kv = (np.multiply.outer(k, v) & _LOW).astype(np.float64) * (2.0 * math.pi / float(1 << FRACTION_BITS))
    return np.exp(1j * kv)
