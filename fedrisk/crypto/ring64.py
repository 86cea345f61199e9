"""Fixed-point encoding of float vectors into the ring Z/2^64 (numpy ``uint64`` wraparound).

A float ``v`` is encoded as ``round(v * 2^frac_bits)`` taken modulo 2^64, i.e. the two's
complement bit pattern of an ``int64``. Sums of encodings are plain ``uint64`` additions (numpy
wraps silently), and a sum decodes correctly as long as the true fixed-point sum lies in
``[-2^63, 2^63)``, that is ``|sum| < 2^(63 - frac_bits)`` in float terms.

Range and precision for the default ``frac_bits = 24``: values up to ``2^39 ≈ 5.5e11`` in
absolute sum, resolution ``2^-24 ≈ 6e-8`` (rounding error at most ``2^-25`` per value per
party). Data that is not standardised (e.g. raw balances squared) needs fewer fractional bits.
"""
from __future__ import annotations

import numpy as np

from fedrisk.errors import CryptoError

__all__ = ["DEFAULT_FRAC_BITS", "max_abs_value", "encode", "decode"]

DEFAULT_FRAC_BITS = 24


def _check_frac_bits(frac_bits: int) -> None:
    if not 0 <= int(frac_bits) <= 52:
        raise CryptoError(f"frac_bits={frac_bits} must lie in 0..52 (float64 has a 53-bit significand)")


def max_abs_value(frac_bits: int = DEFAULT_FRAC_BITS, n_summands: int = 1) -> float:
    """Largest ``|v|`` each of ``n_summands`` parties may encode so that their sum cannot wrap.

    ``2^(63 - frac_bits) / n_summands``, less one unit for rounding.
    """
    _check_frac_bits(frac_bits)
    if n_summands < 1:
        raise CryptoError("n_summands must be at least 1")
    return _scaled_bound(n_summands) / 2.0 ** frac_bits


def _scaled_bound(n_summands: int) -> float:
    """The largest float64 not above ``(2^63 - 1) // n``: the bound on ``|rint(v * 2^frac)|``.

    Computed from the integer, not as ``2.0**63 / n - 1``, which rounds back up to ``2^63 / n``
    in float64 and lets a value at the limit wrap.
    """
    bound = (2**63 - 1) // n_summands
    f = float(bound)
    return float(np.nextafter(f, 0.0)) if int(f) > bound else f


def encode(values: np.ndarray, frac_bits: int = DEFAULT_FRAC_BITS, n_summands: int = 1) -> np.ndarray:
    """Encode floats as ``uint64`` fixed-point ring elements.

    Parameters
    ----------
    values : array_like
        Finite floats, 1-D.
    frac_bits : int
        Fractional bits of the fixed-point representation; every party must use the same.
    n_summands : int
        How many encodings will be added together. Each value must satisfy
        ``|v| <= max_abs_value(frac_bits, n_summands)``, so that the sum of all parties' values
        cannot wrap around the ring even in the worst case.

    Returns
    -------
    numpy.ndarray
        ``uint64`` array of the same length.

    Raises
    ------
    CryptoError
        If a value is not finite or is too large: raised *before* anything wraps, so an overflow
        can never silently corrupt an aggregate.

    Notes
    -----
    The bound is per party and deliberately conservative: a party cannot see the others'
    values, so it checks that ``n_summands`` copies of its own largest value would still fit.
    """
    _check_frac_bits(frac_bits)
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise CryptoError(f"fixed-point encoding takes a 1-D vector; got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        bad = int(np.flatnonzero(~np.isfinite(v))[0])
        raise CryptoError(f"cannot encode a non-finite value (position {bad}: {v[bad]}) into the fixed-point ring")
    limit = max_abs_value(frac_bits, n_summands)
    scaled = np.rint(np.ldexp(v, frac_bits))
    if v.size:
        i = int(np.argmax(np.abs(scaled)))
        if abs(scaled[i]) > _scaled_bound(n_summands):
            raise CryptoError(
                f"value {v[i]:.6g} at position {i} is too large for the 64-bit fixed-point ring with "
                f"frac_bits={frac_bits} and {n_summands} parties (limit {limit:.6g}); the sum could wrap. "
                f"Standardise the data or lower frac_bits"
            )
    return scaled.astype(np.int64).view(np.uint64)


def decode(ring: np.ndarray, frac_bits: int = DEFAULT_FRAC_BITS) -> np.ndarray:
    """Decode a ``uint64`` ring element (e.g. a sum of encodings) back to floats."""
    _check_frac_bits(frac_bits)
    r = np.ascontiguousarray(ring, dtype=np.uint64)
    return np.ldexp(r.view(np.int64).astype(np.float64), -frac_bits)
