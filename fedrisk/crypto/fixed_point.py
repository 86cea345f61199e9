"""Signed binary fixed-point encoding of float vectors into integers, and back.

A float ``x`` at precision ``s`` becomes the integer ``round(x * 2**s)``; decoding divides by
``2**s``. Scaling by a power of two is exact in floating point, so the only error is the final
rounding: ``|decode(encode(x)) - x| <= 2**-(s+1)`` for every finite ``x``.

Signed integers meet a modular plaintext space (Paillier: ``Z_n``; Okamoto-Uchiyama: ``Z_p``)
through :func:`to_residues` / :func:`from_residues`: a negative ``m`` is stored as ``m mod M``
and a residue in the upper half ``(M // 2, M)`` is read back as negative. Invariant: every signed
integer with ``|m| < M // 2`` round-trips; homomorphic sums keep that property as long as the
true (integer) sum stays inside the same interval — which is what the packing layer
(:mod:`fedrisk.crypto.packing`) guarantees by construction for packed values, and what callers of
the plain float API must keep in mind for sums of huge values (a 2048-bit key leaves ~2,000 bits,
so float64 data at 32-bit precision cannot reach it).
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Iterable, Sequence

import numpy as np

from fedrisk.errors import CryptoError

__all__ = [
    "DEFAULT_PRECISION",
    "encode",
    "decode",
    "to_residues",
    "from_residues",
]

#: Fractional bits used when a caller does not choose: resolution 2**-32 ~ 2.3e-10.
DEFAULT_PRECISION = 32

_INT64_SAFE = float(2**62)


def _check_precision(precision: int) -> int:
    if not isinstance(precision, (int, np.integer)) or isinstance(precision, bool) or not 0 <= precision <= 1024:
        raise CryptoError(f"fixed-point precision must be an integer number of bits in [0, 1024], got {precision!r}")
    return int(precision)


def encode(values: np.ndarray | Sequence[float], precision: int = DEFAULT_PRECISION) -> list[int]:
    """Encode floats as signed integers ``round(x * 2**precision)`` (round half to even).

    Parameters
    ----------
    values : array_like of float
        Any shape; flattened in C order.
    precision : int
        Fractional bits.

    Returns
    -------
    list of int
        Python ints, unbounded.

    Raises
    ------
    CryptoError
        If a value is NaN or infinite (it has no fixed-point form).
    """
    s = _check_precision(precision)
    arr = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise CryptoError(f"cannot encode value {arr[bad]!r} at position {bad}: only finite floats have a fixed-point form")
    if arr.size == 0:
        return []
    with np.errstate(over="ignore"):
        scaled = np.rint(np.ldexp(arr, s))
    if np.abs(scaled).max() < _INT64_SAFE:
        return scaled.astype(np.int64).tolist()
    return [_scale_exact(v, s) for v in arr.tolist()]


def _scale_exact(x: float, s: int) -> int:
    """``round(x * 2**s)`` (half to even) in exact integer arithmetic, for magnitudes beyond int64."""
    mant, exp = math.frexp(x)
    m = int(mant * (1 << 53))  # exact: 53-bit significand
    shift = exp - 53 + s
    if shift >= 0:
        return m << shift
    return round(Fraction(m, 1 << -shift))


def decode(ints: Iterable[int], precision: int = DEFAULT_PRECISION) -> np.ndarray:
    """Decode signed integers to float64 by dividing by ``2**precision``.

    Parameters
    ----------
    ints : iterable of int
        Signed integers (not residues: see :func:`from_residues`).
    precision : int
        Fractional bits used at encoding time (after a product of two encoded values, the sum
        of both precisions).

    Returns
    -------
    numpy.ndarray
        1-D float64; magnitudes beyond float64 range become ``inf`` with the right sign.
    """
    s = _check_precision(precision)
    vals = [int(v) for v in ints]
    if not vals:
        return np.empty(0, dtype=np.float64)
    if max(abs(v) for v in vals).bit_length() <= 62:
        return np.ldexp(np.asarray(vals, dtype=np.int64).astype(np.float64), -s)
    out = np.empty(len(vals), dtype=np.float64)
    for i, v in enumerate(vals):
        try:
            out[i] = v / (1 << s)  # exact-rounded true division of Python ints
        except OverflowError:
            out[i] = np.inf if v > 0 else -np.inf
    return out


def to_residues(ints: Iterable[int], modulus: int, bound_bits: int | None = None) -> list[int]:
    """Map signed integers into ``[0, modulus)`` (negatives wrap to the upper half).

    Parameters
    ----------
    ints : iterable of int
    modulus : int
        Plaintext modulus ``M``.
    bound_bits : int, optional
        Largest allowed ``|m|.bit_length()``; defaults to what ``|m| < M // 2`` allows.

    Raises
    ------
    CryptoError
        If a value is outside the signed range, before anything is encrypted.
    """
    half = modulus // 2
    limit = (1 << bound_bits) if bound_bits is not None else half
    out = []
    for i, v in enumerate(ints):
        v = int(v)
        if not -limit < v < limit or not -half < v < half:
            raise CryptoError(
                f"plaintext at position {i} has {abs(v).bit_length()} bits, outside the signed plaintext range "
                f"({min(limit, half).bit_length()} bits); lower the precision, clip the values or use a larger key"
            )
        out.append(v % modulus)
    return out


def from_residues(residues: Iterable[int], modulus: int) -> list[int]:
    """Inverse of :func:`to_residues`: residues above ``modulus // 2`` are negative."""
    half = modulus // 2
    return [int(r) - modulus if r > half else int(r) for r in residues]
