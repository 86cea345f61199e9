"""Expand a secret into a pseudo-random ``uint64`` mask vector (HKDF-SHA256 -> ChaCha20 keystream).

``mask(secret, context, n)`` derives a 256-bit ChaCha20 key with HKDF-SHA256 from ``secret``
(an X25519 shared secret or a random seed), with ``context`` as HKDF ``info`` so that the same
secret gives unrelated masks for different jobs, rounds, tags and party pairs; the keystream is
read as ``n`` little-endian ``uint64`` words. Uniform in Z/2^64, so a masked value
``x + mask mod 2^64`` is uniform and independent of ``x``.

Nothing here is a new primitive: HKDF and ChaCha20 come from ``cryptography``; the keystream is
generated in C and viewed with :func:`numpy.frombuffer`, so a 1,000-element mask costs a few
microseconds.
"""
from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedrisk.errors import CryptoError

__all__ = ["context", "derive_key", "mask"]

_DOMAIN = b"fedrisk.prg-mask.v1"
# Each key is used for one keystream only, so a fixed nonce (and counter 0) is safe.
_NONCE = bytes(16)


def context(*parts: str | bytes) -> bytes:
    """Unambiguous byte encoding of several labels (each length-prefixed) for HKDF ``info``."""
    out = bytearray()
    for p in parts:
        b = p.encode() if isinstance(p, str) else bytes(p)
        out += len(b).to_bytes(4, "big") + b
    return bytes(out)


def derive_key(secret: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 of ``secret`` bound to ``info`` (use :func:`context` to build it)."""
    if len(secret) < 16:
        raise CryptoError("refusing to derive a key from a secret shorter than 16 bytes")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=_DOMAIN + info).derive(secret)


def mask(secret: bytes, info: bytes, n: int) -> np.ndarray:
    """``n`` pseudo-random ``uint64`` words from ``secret`` and ``info``.

    Notes
    -----
    Two calls with the same ``(secret, info)`` return the same mask: that is how the two parties
    of a pair (and, after reconstruction, the coordinator) derive identical masks. Callers must
    put everything that distinguishes one use from another (job, tag, pair, purpose) in ``info``.
    """
    if n < 0:
        raise CryptoError("mask length must be non-negative")
    enc = Cipher(algorithms.ChaCha20(derive_key(secret, info), _NONCE), mode=None).encryptor()
    stream = enc.update(bytes(8 * n))
    return np.frombuffer(stream, dtype="<u8").astype(np.uint64, copy=False)
