"""Batch modular products for the homomorphic hot loops: a compiled kernel with gmpy2 fallbacks.

Why: SecureBoost's cost is long runs of products modulo one fixed modulus — OU encryption
(``g^m h^r`` through fixed-base tables), encrypted histograms (products of ciphertexts grouped by
bin) and compression (squaring chains). :mod:`fedrisk.crypto._montgomery` (C over GMP's public
``mpn`` functions, Montgomery reduction, contiguous limb tables) does them without the per-product
Python objects and divisions of gmpy2, and releases the GIL, so a party's thread pool keeps every
core busy and secrets stay in its process. Measured at 2048 bits on this project's 2-core machine:
one grouped product ~1.6 us instead of ~2.7 us through gmpy2, and OU encryption by the key owner
through CRT (``mod p^2`` and ``mod q``, smaller limbs, software prefetch of table entries) ~2x
faster than the public-key path. On x86-64 CPUs with BMI2 and ADX the product itself is the
kernel's own mulx/adcx/adox CIOS code for moduli up to 32 limbs (the distributions' libgmp is a
generic build without them): another 21-29 % less CPU (a product mod ``n`` ~1.07 us, mod ``p^2``
~0.5 us); :func:`set_adx` / ``FEDRISK_NATIVE_ADX=0`` switch back to GMP's for comparison.

Every function here has the same contract with or without the compiled module (the fallbacks are
plain gmpy2 loops; tests check both agree bit for bit): big integers in and out are fixed-width
big-endian byte strings — the wire format — except :class:`PowerTable`, which a caller builds once
and reuses. ``FEDRISK_NATIVE=0`` disables the compiled module (to test or rule it out);
``python -m fedrisk.crypto.montgomery`` prints which one is active.

Not constant time, like gmpy2: timing depends on operand values and is visible only on the
computing party's own machine.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import gmpy2
import numpy as np
from gmpy2 import mpz

from fedrisk.errors import CryptoError

try:  # the compiled kernel is optional (see setup.py)
    from fedrisk.crypto import _montgomery as _native
except ImportError:  # pragma: no cover - depends on the build
    _native = None

if os.environ.get("FEDRISK_NATIVE", "").strip() == "0":
    _native = None
#: whether the compiled kernel uses its mulx/adx product (see :func:`set_adx`)
ADX = False
if _native is not None and hasattr(_native, "set_adx"):
    ADX = bool(_native.set_adx(os.environ.get("FEDRISK_NATIVE_ADX", "").strip() != "0"))

__all__ = ["AVAILABLE", "set_adx", "PowerTable", "power_table", "gather_products", "grouped_products",
           "multiply_vectors", "shift_products", "pow_list", "powmod_list", "crt_combine", "p_subgroup_shift",
           "width_of", "int_bytes"]

#: whether the compiled kernel is in use
AVAILABLE = _native is not None


def set_adx(on: bool) -> bool:
    """Use the compiled kernel's mulx/adx Montgomery product (``on``, the default where the CPU
    has BMI2 and ADX) or GMP's generic one, for calls from now on; returns whether the mulx/adx
    product is in use. Both give the same bytes; this exists to compare them (tests, benchmarks;
    ``FEDRISK_NATIVE_ADX=0`` switches it off at import)."""
    global ADX
    if _native is None or not hasattr(_native, "set_adx"):
        return False
    ADX = bool(_native.set_adx(bool(on)))
    return ADX


def width_of(modulus: int) -> int:
    """Byte width of ``modulus``'s fixed-width big-endian form."""
    return (int(modulus).bit_length() + 7) // 8


def int_bytes(x: int, modulus: int) -> bytes:
    """``x`` as big-endian bytes of ``modulus``'s width."""
    return int(x).to_bytes(width_of(modulus), "big")


def _from_blob(blob: bytes, w: int) -> list:
    fb = mpz.from_bytes
    return [fb(blob[i:i + w], "big") for i in range(0, len(blob), w)]


def _to_blob(values: Sequence[Any], w: int) -> bytes:
    return b"".join(mpz(v).to_bytes(w, "big") for v in values)


def _native_call(name: str, *args: Any) -> bytes:
    """Call the compiled kernel, which validates sizes, indices and values itself (once, in C); its
    ValueError/IndexError are this package's CryptoError."""
    try:
        return getattr(_native, name)(*args)
    except (ValueError, IndexError) as e:
        raise CryptoError(str(e)) from None


def _residues(blob: bytes, n: int) -> list:
    """The fallback's view of a value block: ``mpz`` values, each checked to be below ``n``."""
    m = mpz(n)
    vals = _from_blob(blob, width_of(n))
    if any(v >= m for v in vals):
        raise CryptoError("a value is not below the modulus")
    return vals


def _check_modulus(n: int) -> int:
    n = int(n)
    if n <= 1 or n % 2 == 0 or n.bit_length() > 16384:
        raise CryptoError(f"modulus must be odd, greater than 1 and at most 16384 bits (got {n.bit_length()} bits)")
    return n


def _check_blob(blob: bytes, w: int, what: str) -> int:
    if len(blob) % w:
        raise CryptoError(f"{what}: {len(blob)} bytes is not a whole number of {w}-byte values")
    return len(blob) // w


class PowerTable:
    """Powers of bases modulo one modulus, laid out for :func:`gather_products`.

    Compiled: a ``(entries, limbs)`` uint64 array in Montgomery form; fallback: a list of ``mpz``.
    Build with :func:`power_table`, combine with :meth:`concat` and slicing.
    """

    __slots__ = ("modulus", "entries")

    def __init__(self, modulus: int, entries: Any) -> None:
        self.modulus = int(modulus)
        self.entries = entries

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, s: slice) -> "PowerTable":
        if not isinstance(s, slice):
            raise TypeError("PowerTable takes slices only")
        return PowerTable(self.modulus, self.entries[s])

    @staticmethod
    def concat(tables: Sequence["PowerTable"]) -> "PowerTable":
        mods = {t.modulus for t in tables}
        if len(mods) != 1:
            raise CryptoError("tables of different moduli cannot be joined")
        first = tables[0].entries
        if isinstance(first, np.ndarray):
            return PowerTable(mods.pop(), np.ascontiguousarray(np.concatenate([t.entries for t in tables])))
        return PowerTable(mods.pop(), [e for t in tables for e in t.entries])


def power_table(modulus: int, base: int, count: int) -> PowerTable:
    """``base^0, ..., base^(count-1) mod modulus`` (odd modulus)."""
    n = _check_modulus(modulus)
    b = int(base) % n
    if count < 1:
        raise CryptoError("a power table needs at least one entry")
    if _native is not None:
        raw = _native_call("power_table", int_bytes(n, n), int_bytes(b, n), int(count))
        limbs = -(-n.bit_length() // 64)
        return PowerTable(n, np.frombuffer(raw, dtype=np.uint64).reshape(int(count), limbs))
    m, x, out = mpz(n), mpz(1), []
    bm = mpz(b)
    for _ in range(int(count)):
        out.append(x)
        x = x * bm % m
    return PowerTable(n, out)


def gather_products(table: PowerTable, index: np.ndarray, factors: bytes | None = None) -> bytes:
    """``out[i] = factors[i] * prod_j table[index[i, j]] mod n`` (``-1`` skips; no factor = 1).

    ``index``: ``(count, k)`` integers; ``factors``: ``count`` big-endian values of the modulus's
    width, each below it. Returns ``count`` values of that width.
    """
    n = table.modulus
    w = width_of(n)
    idx = np.ascontiguousarray(index, dtype=np.int64)
    if idx.ndim != 2:
        raise CryptoError("gather_products takes a (count, k) index")
    count, k = idx.shape
    if factors is not None and _check_blob(factors, w, "factors") != count:
        raise CryptoError(f"{len(factors) // w} factors for {count} products")
    if count == 0:
        return b""
    if _native is not None and isinstance(table.entries, np.ndarray):
        return _native_call("gather_products", int_bytes(n, n), np.ascontiguousarray(table.entries), idx, max(1, k),
                            factors)
    if idx.size and (idx.min() < -1 or idx.max() >= len(table)):
        raise CryptoError(f"table index outside [-1, {len(table)})")
    m = mpz(n)
    ent = table.entries
    fs = _residues(factors, n) if factors is not None else None
    out = []
    for i, row in enumerate(idx.tolist()):
        acc = fs[i] if fs is not None else mpz(1)
        for j in row:
            if j >= 0:
                acc = acc * ent[j] % m
        out.append(acc)
    return _to_blob(out, w)


def grouped_products(modulus: int, values: bytes, which: np.ndarray, group: np.ndarray, n_groups: int) -> bytes:
    """``out[g]`` = product of ``values[which[e]]`` over every ``e`` with ``group[e] == g``, mod ``n``.

    A group of ``c`` values costs ``c - 1`` products (plus one Montgomery correction when compiled);
    an empty group is 1. ``values`` and the result are big-endian of the modulus's width.
    """
    n = _check_modulus(modulus)
    w = width_of(n)
    n_vals = _check_blob(values, w, "values")
    wh = np.ascontiguousarray(which, dtype=np.int64).ravel()
    gr = np.ascontiguousarray(group, dtype=np.int64).ravel()
    if wh.shape != gr.shape:
        raise CryptoError("which and group differ in length")
    if _native is not None:
        return _native_call("grouped_products", int_bytes(n, n), values, wh, gr, int(n_groups))
    if wh.size and (wh.min() < 0 or wh.max() >= n_vals or gr.min() < 0 or gr.max() >= n_groups):
        raise CryptoError("grouped_products: an entry refers to a missing value or group")
    m = mpz(n)
    vals = _residues(values, n)
    out: list = [None] * int(n_groups)
    for i, g in zip(wh.tolist(), gr.tolist()):
        o = out[g]
        out[g] = vals[i] if o is None else o * vals[i] % m
    one = mpz(1)
    return _to_blob([one if v is None else v for v in out], w)


def multiply_vectors(modulus: int, vectors: Sequence[bytes], count: int) -> bytes:
    """Element-wise product of ``count``-long vectors mod ``n`` (all 1 when there are none): the
    merge of partial sums that parallel parts computed, in one grouped product."""
    n = _check_modulus(modulus)
    w = width_of(n)
    if any(_check_blob(v, w, "vector") != count for v in vectors):
        raise CryptoError(f"multiply_vectors: every vector must hold {count} values")
    if not vectors:
        return (1).to_bytes(w, "big") * count
    if len(vectors) == 1:
        return vectors[0]
    k = len(vectors)
    return grouped_products(n, b"".join(vectors), np.arange(k * count, dtype=np.int64),
                            np.tile(np.arange(count, dtype=np.int64), k), count)


def shift_products(modulus: int, values: bytes, group: int, shift: int) -> bytes:
    """Per run ``[c_0, ..., c_{g-1}]`` of ``group`` consecutive values (the last may be shorter):
    ``c_0 * c_1^(2^shift) * ... * c_{g-1}^(2^(shift (g-1))) mod n`` (Horner form)."""
    n = _check_modulus(modulus)
    w = width_of(n)
    count = _check_blob(values, w, "values")
    if group < 1 or shift < 0:
        raise CryptoError("shift_products needs group >= 1 and shift >= 0")
    if count == 0:
        return b""
    if _native is not None:
        return _native_call("shift_products", int_bytes(n, n), values, int(group), int(shift))
    m = mpz(n)
    e = mpz(1) << int(shift)
    cts = _residues(values, n)
    out = []
    for lo in range(0, count, group):
        run = cts[lo:lo + group]
        acc = run[-1]
        for c in reversed(run[:-1]):
            acc = gmpy2.powmod(acc, e, m) * c % m
        out.append(acc)
    return _to_blob(out, w)


def pow_list(modulus: int, values: bytes, exponent: int) -> bytes:
    """``values[i] ** exponent mod n`` for every value (big-endian of the modulus's width)."""
    n = _check_modulus(modulus)
    w = width_of(n)
    _check_blob(values, w, "values")
    e = int(exponent)
    if e < 0:
        raise CryptoError("pow_list takes a non-negative exponent")
    if _native is not None:
        return _native_call("pow_list", int_bytes(n, n), values, e.to_bytes(max(1, (e.bit_length() + 7) // 8), "big"))
    vals = _residues(values, n)
    return _to_blob(gmpy2.powmod_base_list(vals, e, mpz(n)) if vals else [], w)


def powmod_list(values: Sequence[Any], exponent: int, modulus: int) -> list:
    """``[v ** exponent mod modulus]`` for integers (any size: reduced first), as ``mpz``: the
    compiled kernel (GIL released, so a decryption batch splits over threads) or gmpy2's
    ``powmod_base_list``."""
    if _native is None:
        return list(gmpy2.powmod_base_list(list(values), exponent, modulus)) if len(values) else []
    n = _check_modulus(modulus)
    m, w = mpz(n), width_of(n)
    return _from_blob(pow_list(n, _to_blob([v % m for v in values], w), exponent), w)


def crt_combine(m1: int, m2: int, a: bytes, b: bytes, width: int) -> bytes:
    """``c[i]`` with ``c = a[i] mod m1`` and ``c = b[i] mod m2`` (coprime odd moduli, ``m1 >= m2``),
    big-endian of ``width`` bytes; ``a`` is big-endian of ``m1``'s width, ``b`` of ``m2``'s."""
    m1, m2 = _check_modulus(m1), _check_modulus(m2)
    if m1 < m2:
        raise CryptoError("crt_combine takes the larger modulus first")
    w1, w2 = width_of(m1), width_of(m2)
    if _check_blob(a, w1, "a") != _check_blob(b, w2, "b"):
        raise CryptoError("crt_combine: a and b differ in length")
    u = int(gmpy2.invert(m1, m2))
    if _native is not None:
        return _native_call("crt_combine", int_bytes(m1, m1), int_bytes(m2, m2), int_bytes(u, m2), a, b, int(width))
    A, B = _residues(a, m1), _residues(b, m2)
    M1, M2, U = mpz(m1), mpz(m2), mpz(u)
    return _to_blob([x + M1 * ((y - x) * U % M2) for x, y in zip(A, B)], width)


def p_subgroup_shift(p: int, consts: Sequence[int], v: np.ndarray, x: bytes) -> bytes:
    """``c[i] = x[i] (1 + p z_i) mod p^2`` with ``z_i = sum_j v[i, j] consts[j] mod p``.

    ``x``: big-endian values of ``p^2``'s width, each below ``p^2``; ``consts``: values below
    ``p``; ``v``: int64, one row of ``len(consts)`` values (``|v| < 2^62``) per ``x``. The OU key
    owner's plaintext part (:class:`fedrisk.crypto.okamoto_uchiyama._CrtEncryptor`): ``1 + p z`` is
    ``(1 + p)^z`` modulo ``p^2``, linear in ``z``, so it costs limb additions and one product
    modulo ``p`` instead of one table product modulo ``p^2`` per slot.
    """
    p = _check_modulus(p)
    p2 = p * p
    w2 = width_of(p2)
    count = _check_blob(x, w2, "x")
    vv = np.ascontiguousarray(v, dtype=np.int64)
    consts = [int(c) for c in consts]
    if vv.shape != (count, len(consts)) or not consts:
        raise CryptoError("p_subgroup_shift: v must hold one row of len(consts) values per x")
    if any(not 0 <= c < p for c in consts):
        raise CryptoError("p_subgroup_shift: a constant is not below p")
    if _native is not None and hasattr(_native, "p_subgroup_shift"):
        return _native_call("p_subgroup_shift", int_bytes(p, p), b"".join(int_bytes(c, p) for c in consts),
                            vv, x)
    if vv.size and np.abs(vv).max() >= 2**62:
        raise CryptoError("p_subgroup_shift: |v| must be below 2^62")
    P, P2 = mpz(p), mpz(p2)
    cs = [mpz(c) for c in consts]
    out = []
    for xi, row in zip(_residues(x, p2), vv.tolist()):  # each checked to be below p^2
        z = sum(int(a) * c for a, c in zip(row, cs)) % P
        out.append((xi + P * (xi % P * z % P)) % P2)
    return _to_blob(out, w2)


if __name__ == "__main__":  # pragma: no cover - a diagnostic for users
    print("fedrisk.crypto.montgomery:", ("compiled kernel (GMP mpn" + (", mulx/adx product up to 2048 bits)"
                                                                     if ADX else ")")) if AVAILABLE else
          "pure-gmpy2 fallback (reinstall with a C compiler and libgmp-dev for the compiled kernel)")
