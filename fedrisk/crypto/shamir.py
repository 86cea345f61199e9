"""Shamir secret sharing over the prime field GF(2^521 - 1).

A secret ``s`` (an integer below the field prime; 32-byte keys and seeds in practice) is the
constant term of a random polynomial ``f`` of degree ``threshold - 1``; the share for a non-zero
point ``x`` is ``(x, f(x))``. Any ``threshold`` shares give ``s`` by Lagrange interpolation at 0;
fewer give no information about it (every value of ``s`` is equally likely).

The field is the Mersenne prime ``2^521 - 1`` so that any 256-bit secret fits with room to
spare and every share value is a fixed 66 bytes on the wire (sizes leak nothing).
"""
from __future__ import annotations

import functools
import secrets
from typing import Iterable, Mapping, Sequence

from fedrisk.errors import CryptoError

__all__ = ["PRIME", "SHARE_BYTES", "split", "reconstruct", "split_bytes", "reconstruct_bytes"]

#: the field modulus, a Mersenne prime
PRIME = (1 << 521) - 1
#: bytes of one share value on the wire
SHARE_BYTES = (PRIME.bit_length() + 7) // 8


def _check_points(xs: Iterable[int]) -> list[int]:
    xs = [int(x) for x in xs]
    if len(set(xs)) != len(xs):
        raise CryptoError(f"Shamir share points must be distinct; got {xs}")
    bad = [x for x in xs if not 0 < x < PRIME]
    if bad:
        raise CryptoError(f"Shamir share points must lie in 1..p-1 (0 would be the secret itself); got {bad}")
    return xs


def split(secret: int, threshold: int, xs: Sequence[int]) -> dict[int, int]:
    """Share ``secret`` so that any ``threshold`` of the points ``xs`` recover it.

    Parameters
    ----------
    secret : int
        ``0 <= secret < PRIME``.
    threshold : int
        Number of shares needed to reconstruct; ``1 <= threshold <= len(xs)``.
    xs : sequence of int
        Distinct non-zero evaluation points, one per share holder.

    Returns
    -------
    dict
        ``{x: f(x)}`` for every ``x`` in ``xs``.

    Notes
    -----
    Coefficients come from :mod:`secrets` (the OS CSPRNG). Any ``threshold - 1`` shares are
    uniformly distributed whatever the secret: the scheme is information-theoretically hiding
    below the threshold, and offers no integrity (a wrong share silently gives a wrong secret
    when exactly ``threshold`` shares are combined; :func:`reconstruct` checks any extras).
    """
    xs = _check_points(xs)
    if not 0 <= secret < PRIME:
        raise CryptoError("Shamir secret must be a non-negative integer below the field prime")
    if not 1 <= threshold <= len(xs):
        raise CryptoError(f"Shamir threshold {threshold} must lie in 1..{len(xs)} (the number of shares)")
    coeffs = [secret] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    out = {}
    for x in xs:
        acc = 0
        for c in reversed(coeffs):  # Horner
            acc = (acc * x + c) % PRIME
        out[x] = acc
    return out


@functools.lru_cache(maxsize=4096)
def _lagrange_weights(xs: tuple[int, ...], at: int) -> tuple[int, ...]:
    """Lagrange basis values ``l_i(at)`` for the points ``xs``: public, so cached.

    A coordinator reconstructs many secrets per round from the same holders' points (and the
    same points round after round), so the modular inversions are paid once per point set.
    """
    out = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * (at - xj) % PRIME
                den = den * (xi - xj) % PRIME
        out.append(num * pow(den, -1, PRIME) % PRIME)
    return tuple(out)


def _interpolate_at(points: Sequence[tuple[int, int]], at: int) -> int:
    weights = _lagrange_weights(tuple(x for x, _ in points), at)
    return sum(w * y for w, (_, y) in zip(weights, points)) % PRIME


def reconstruct(shares: Mapping[int, int], threshold: int) -> int:
    """Recover the secret from at least ``threshold`` shares ``{x: y}``.

    The first ``threshold`` shares (by ``x``) are interpolated; every further share must lie on
    the same polynomial, otherwise :class:`~fedrisk.errors.CryptoError` is raised (a share was
    corrupted or came from another secret).
    """
    xs = _check_points(shares)
    if len(xs) < threshold:
        raise CryptoError(f"need {threshold} Shamir shares to reconstruct, got {len(xs)}")
    pts = sorted((x, int(shares[x]) % PRIME) for x in xs)
    base, extra = pts[:threshold], pts[threshold:]
    for x, y in extra:
        if _interpolate_at(base, x) != y:
            raise CryptoError(f"Shamir share at point {x} is inconsistent with the others (corrupted or foreign share)")
    return _interpolate_at(base, 0)


def split_bytes(secret: bytes, threshold: int, xs: Sequence[int]) -> dict[int, bytes]:
    """:func:`split` for a byte string (at most 64 bytes); shares are ``SHARE_BYTES`` long."""
    if len(secret) > 64:
        raise CryptoError("split_bytes shares secrets of at most 64 bytes")
    shares = split(int.from_bytes(secret, "big"), threshold, xs)
    return {x: y.to_bytes(SHARE_BYTES, "big") for x, y in shares.items()}


def reconstruct_bytes(shares: Mapping[int, bytes], threshold: int, length: int) -> bytes:
    """:func:`reconstruct` for shares made by :func:`split_bytes`; returns ``length`` bytes."""
    for x, y in shares.items():
        if len(y) != SHARE_BYTES:
            raise CryptoError(f"Shamir share at point {x} is {len(y)} bytes; expected {SHARE_BYTES}")
    s = reconstruct({x: int.from_bytes(y, "big") for x, y in shares.items()}, threshold)
    if s.bit_length() > 8 * length:
        raise CryptoError(f"reconstructed secret does not fit in {length} bytes (wrong shares)")
    return s.to_bytes(length, "big")
