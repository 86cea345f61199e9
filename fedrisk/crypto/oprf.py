"""A Diffie-Hellman OPRF over ristretto255 (libsodium, through ``rbcl``), for unbalanced PSI.

The construction is the "2HashDH" oblivious PRF of Jarecki, Kiayias & Krawczyk (ASIACRYPT 2014),
standardised as the base mode (``modeOPRF``) of RFC 9497 ("Oblivious Pseudorandom Functions
(OPRFs) Using Prime-Order Groups") with the ristretto255-SHA512 ciphersuite::

    F(k, x) = Hash(x, k * H2G(x))                          the server holds k, nobody else
    client: r random scalar;     B = r * H2G(x)            -> server        (Blind)
    server:                      E = k * B                 -> client        (BlindEvaluate)
    client: Z = r^-1 * E = k * H2G(x);   y = Hash(x, Z)                     (Finalize)

``B`` is a uniformly random group element whatever ``x`` is, so the server learns nothing of
``x``; the client learns ``F(k, x)`` for its own inputs only, and ``F(k, .)`` is pseudo-random
to anyone without ``k`` (one-more Gap-DH in the ristretto255 group, hashes as random oracles).

Primitives are libsodium's (the same as :mod:`fedrisk.crypto.psi`'s ECDH path):
``crypto_core_ristretto255_from_hash`` (H2G of a 64-byte SHA-512 digest),
``crypto_scalarmult_ristretto255``, ``crypto_core_ristretto255_scalar_random`` and
``crypto_core_ristretto255_scalar_invert``. The encodings follow fedrisk's conventions rather than
the RFC's byte strings (so outputs are not interoperable with RFC 9497 test vectors):

    H2G(x)   = ristretto255_from_hash(SHA-512(psi.hash_prefix(context) || utf8(norm(x))))
    Hash(x,Z)= SHA-512(FINALIZE_DOMAIN || len(x) u32 BE || utf8(norm(x)) || Z)[:OUTPUT_BYTES]

``context`` names the key epoch (see :mod:`fedrisk.algorithms.vertical.ub_store`), so outputs of
different epochs are unrelated even for equal keys.

Output length. ``OUTPUT_BYTES = 12`` (96 bits), as in SecretFlow's unbalanced PSI. A false match
needs one of the client's ``m`` outputs to equal one of the server's ``N`` outputs for different
ids; with pseudo-random outputs the expected number of such pairs is ``m * N / 2**96``: for a
1M-id lender against a 10M-id bureau, ``1e13 / 7.9e28 ≈ 1.3e-16`` per job. A collision inside the
server's own set (``N**2 / 2**97 ≈ 6e-16`` at 10M) is detected when the set is encoded.

All kernels are pure ``bytes -> bytes`` functions run in the shared process pool
(:mod:`fedrisk.crypto.workers`), like :mod:`fedrisk.crypto.psi`'s.
"""
from __future__ import annotations

import hashlib
import struct
from concurrent.futures import Future
from typing import Any, Sequence

import numpy as np

from fedrisk.crypto import psi
from fedrisk.crypto.sodium import rbcl
from fedrisk.errors import CryptoError

__all__ = ["OUTPUT_BYTES", "FINALIZE_DOMAIN", "evaluate", "blind", "blind_evaluate", "finalize",
           "evaluate_kernel", "blind_kernel", "finalize_kernel", "check_key", "key_fingerprint", "new_key"]

#: Bytes kept of each OPRF output (see the module docstring for why 12 is enough).
OUTPUT_BYTES = 12
#: Domain tag of the finalisation hash; bump the version if the encoding changes.
FINALIZE_DOMAIN = b"fedrisk.oprf.ristretto255-sha512.finalize.v1\x00"
_PT = psi.POINT_BYTES
#: group order of ristretto255 (little-endian scalars must be below it)
_L = 2**252 + 27742317777372353535851937790883648493
_INLINE_BELOW = 1024

_from_hash = rbcl.crypto_core_ristretto255_from_hash
_mult = rbcl.crypto_scalarmult_ristretto255


def new_key() -> bytes:
    """A fresh OPRF key: a uniform non-zero scalar from libsodium's CSPRNG (32 bytes, little-endian)."""
    return rbcl.crypto_core_ristretto255_scalar_random()


def check_key(key: Any) -> bytes:
    """Return ``key`` if it is a canonical non-zero ristretto255 scalar, else raise :class:`CryptoError`."""
    if not isinstance(key, bytes) or len(key) != psi.SCALAR_BYTES:
        raise CryptoError(f"an OPRF key must be {psi.SCALAR_BYTES} bytes")
    v = int.from_bytes(key, "little")
    if not 0 < v < _L:
        raise CryptoError("an OPRF key must be a non-zero scalar below the ristretto255 group order")
    return key


def key_fingerprint(key: bytes) -> str:
    """16 hex chars naming a key without revealing it: a hash of its public element ``k * G``."""
    pub = rbcl.crypto_scalarmult_ristretto255_base(check_key(key))
    return hashlib.sha256(b"fedrisk.oprf.key-fingerprint.v1\x00" + pub).hexdigest()[:16]


def _final(ident: bytes, z: bytes) -> bytes:
    return hashlib.sha512(FINALIZE_DOMAIN + struct.pack(">I", len(ident)) + ident + z).digest()[:OUTPUT_BYTES]


# ---------------------------------------------------------------------------------------------
# Kernels (pure bytes -> bytes; run in worker processes)
# ---------------------------------------------------------------------------------------------
def evaluate_kernel(key: bytes, prefix: bytes, ids: Sequence[bytes]) -> bytes:
    """The key holder's direct evaluation ``Hash(x, k * H2G(x))`` of its own UTF-8 ids, concatenated."""
    base = hashlib.sha512(prefix)
    out = bytearray(OUTPUT_BYTES * len(ids))
    for i, ident in enumerate(ids):
        h = base.copy()
        h.update(ident)
        out[i * OUTPUT_BYTES:(i + 1) * OUTPUT_BYTES] = _final(ident, _mult(key, _from_hash(h.digest())))
    return bytes(out)


def _batch_invert(scalars: list[bytes]) -> list[bytes]:
    """Inverses of non-zero scalars with one field inversion (Montgomery's trick: 3 products each).

    A libsodium inversion costs about as much as half a scalar multiplication of a point; one per
    id was a fifth of the client's work.
    """
    mul = rbcl.crypto_core_ristretto255_scalar_mul
    prefix = []
    acc = None
    for r in scalars:
        acc = r if acc is None else mul(acc, r)
        prefix.append(acc)
    if acc is None:
        return []
    inv = rbcl.crypto_core_ristretto255_scalar_invert(acc)
    out = [b""] * len(scalars)
    for i in range(len(scalars) - 1, 0, -1):
        out[i] = mul(inv, prefix[i - 1])
        inv = mul(inv, scalars[i])
    out[0] = inv
    return out


def blind_kernel(prefix: bytes, ids: Sequence[bytes]) -> tuple[bytes, bytes]:
    """Client blinding: fresh ``r`` per id; returns (the inverses ``r^-1``, the elements ``r * H2G(x)``)."""
    base = hashlib.sha512(prefix)
    rs = [rbcl.crypto_core_ristretto255_scalar_random() for _ in ids]
    pts = bytearray(_PT * len(ids))
    for i, ident in enumerate(ids):
        h = base.copy()
        h.update(ident)
        pts[i * _PT:(i + 1) * _PT] = _mult(rs[i], _from_hash(h.digest()))
    return b"".join(_batch_invert(rs)), bytes(pts)


def finalize_kernel(inverses: bytes, ids: Sequence[bytes], evaluated: bytes) -> bytes:
    """Client finalisation: ``Hash(x, r^-1 * E)`` for every id; ``ValueError("row i")`` on a bad element.

    A bad element is a non-canonical encoding (bit 255 included: :func:`fedrisk.crypto.psi.refuse_bit_255`)
    or the identity.
    """
    psi.refuse_bit_255(evaluated)
    out = bytearray(OUTPUT_BYTES * len(ids))
    for i, ident in enumerate(ids):
        lo = i * _PT
        try:
            z = _mult(inverses[lo:lo + _PT], evaluated[lo:lo + _PT])
        except RuntimeError:
            raise ValueError(f"row {i} is not a valid non-identity ristretto255 element") from None
        out[i * OUTPUT_BYTES:(i + 1) * OUTPUT_BYTES] = _final(ident, z)
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# Batch API over the process pool
# ---------------------------------------------------------------------------------------------
def _chunks(n: int) -> list[tuple[int, int]]:
    size = psi.chunk_size(n)
    return [(lo, min(n, lo + size)) for lo in range(0, n, size)]


def _run(fn: Any, jobs: list[tuple], inline: bool, starts: Sequence[int] = (), what: str = "OPRF kernel failed") -> list[Any]:
    """Every job's result, in order; a kernel's ``ValueError("row i")`` becomes a :class:`CryptoError`
    naming the row of the whole batch (``starts[j]`` is job ``j``'s first row)."""
    futs: list[Future] = [psi.submit_kernel(fn, *a, inline=inline) for a in jobs]
    try:
        return [psi.kernel_result(f, starts[j] if starts else 0, what) for j, f in enumerate(futs)]
    finally:
        for f in futs:
            f.cancel()


def _encode(ids: Sequence[str]) -> list[bytes]:
    return [s.encode("utf-8") for s in ids]


def evaluate(norm_ids: Sequence[str], key: bytes, context: str) -> np.ndarray:
    """``F(k, x)`` for the key holder's own normalised ids: ``(n, OUTPUT_BYTES) uint8``, input order."""
    check_key(key)
    enc, prefix = _encode(norm_ids), psi.hash_prefix(context)
    parts = _run(evaluate_kernel, [(key, prefix, enc[a:b]) for a, b in _chunks(len(enc))],
                 len(enc) < _INLINE_BELOW)
    return np.frombuffer(b"".join(parts), dtype=np.uint8).reshape(-1, OUTPUT_BYTES).copy()


def blind(norm_ids: Sequence[str], context: str) -> tuple[np.ndarray, np.ndarray]:
    """Client step 1: ``(inverses (n, 32) uint8 kept secret, blinded (n, 32) uint8 sent to the key holder)``."""
    enc, prefix = _encode(norm_ids), psi.hash_prefix(context)
    parts = _run(blind_kernel, [(prefix, enc[a:b]) for a, b in _chunks(len(enc))], len(enc) < _INLINE_BELOW)
    inv = np.frombuffer(b"".join(p[0] for p in parts), dtype=np.uint8).reshape(-1, _PT).copy()
    pts = np.frombuffer(b"".join(p[1] for p in parts), dtype=np.uint8).reshape(-1, _PT).copy()
    return inv, pts


def blind_evaluate(blinded: np.ndarray, key: bytes) -> np.ndarray:
    """Key-holder step: ``k * B`` for every received element (:func:`fedrisk.crypto.psi.reblind`).

    Raises :class:`CryptoError` naming the row if an element is not a canonical non-identity encoding.
    """
    return psi.reblind(blinded, check_key(key))


def finalize(norm_ids: Sequence[str], inverses: np.ndarray, evaluated: np.ndarray) -> np.ndarray:
    """Client step 2: ``F(k, x)`` from the key holder's answers; ``(n, OUTPUT_BYTES) uint8``.

    Raises
    ------
    CryptoError
        If an answer is not a canonical non-identity element (names the row).
    """
    enc = _encode(norm_ids)
    inv = np.ascontiguousarray(inverses).tobytes()
    ev = np.ascontiguousarray(evaluated).tobytes()
    chunks = _chunks(len(enc))
    jobs = [(inv[a * _PT:b * _PT], enc[a:b], ev[a * _PT:b * _PT]) for a, b in chunks]
    parts = _run(finalize_kernel, jobs, len(enc) < _INLINE_BELOW, [a for a, _ in chunks], "cannot finalise the OPRF")
    return np.frombuffer(b"".join(parts), dtype=np.uint8).reshape(-1, OUTPUT_BYTES).copy()
