"""The canonical order of aligned rows: every party sorts the intersection by a salted hash of the id.

After a private set intersection each party knows which of its own rows are in the intersection;
the parties still need one row order so that row ``k`` is the same customer everywhere. Sorting
by ``SHA-256(ORDER_DOMAIN || hash_prefix(salt) || norm(id))`` gives that order from the
intersecting ids alone (no message is needed), the same order whichever PSI protocol ran
(ristretto255 ECDH or RR22), and the same order in every run of the same job, so a seeded job
trains the same model whatever protocol aligned it. The order reveals nothing: it is a public
function of ids both parties already hold.

The same 128-bit keys are the items RR22 intersects (:mod:`fedrisk.algorithms.vertical.rr22_psi`):
fixed-width hex, so the library's CSV input needs no quoting, and salted per job like the
ristretto255 hash-to-group.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fedrisk.crypto import idhash, psi

__all__ = ["ORDER_DOMAIN", "KEY_CHARS", "order_keys", "order_digests", "id_digests", "hex_keys", "canonical_order"]

#: Domain-separation tag of the order keys; bump the version if the encoding changes.
ORDER_DOMAIN = b"fedrisk.psi.order.v1"
#: Hex characters per key (128 bits).
KEY_CHARS = 32


def order_digests(norm_ids: Sequence[str], salt: str) -> np.ndarray:
    """The raw 128-bit order keys of normalised ids, as an ``(n, 16)`` uint8 array.

    The bytes behind :func:`order_keys` (which is their lower-case hex), hashed with hashlib;
    :func:`id_digests` gives the same bytes from raw ids, with the compiled kernel when it is built.
    """
    return idhash.hash_strings(norm_ids, _prefix(salt), KEY_CHARS // 2)


def _prefix(salt: str) -> bytes:
    return ORDER_DOMAIN + b"\x00" + psi.hash_prefix(salt)


def id_digests(ids: Sequence[Any], salt: str, *, casefold: bool = False) -> np.ndarray:
    """The raw order keys of raw ids: ``order_digests(normalize_ids(ids, casefold=...), salt)``.

    Normalising and hashing in one step lets the compiled kernel (:mod:`fedrisk.crypto.idhash`)
    do both without a Python string per id (integer ids) or a Python call per id (ASCII strings);
    the bytes are the same as the two-step path's.
    """
    return idhash.prefixed_digests(ids, _prefix(salt), KEY_CHARS // 2, casefold=casefold)


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def hex_keys(digests: np.ndarray) -> np.ndarray:
    """``(n, 16)`` uint8 digests as the ``S32`` lower-case hex keys of :func:`order_keys`."""
    d = np.asarray(digests, dtype=np.uint8)
    out = np.empty((len(d), KEY_CHARS), dtype=np.uint8)
    out[:, 0::2] = _HEX[d >> 4]
    out[:, 1::2] = _HEX[d & 15]
    return out.view(f"S{KEY_CHARS}").ravel()


def order_keys(norm_ids: Sequence[str], salt: str) -> np.ndarray:
    """Salted 128-bit keys of normalised ids, as a fixed-width ``S32`` array of lower-case hex.

    Parameters
    ----------
    norm_ids : sequence of str
        Ids normalised with :func:`fedrisk.crypto.psi.normalize_ids` (same settings at every party).
    salt : str
        The job's PSI salt.
    """
    return hex_keys(order_digests(norm_ids, salt))


def canonical_order(ids: Sequence[Any], indices: np.ndarray, salt: str, *, casefold: bool = False) -> np.ndarray:
    """``indices`` (rows of ``ids`` in the intersection) re-ordered by their order keys.

    Every party calls this on its own rows of the same intersection and gets the same customer
    at the same position.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        return indices
    picked = ids[indices] if isinstance(ids, np.ndarray) else [ids[i] for i in indices.tolist()]
    keys = hex_keys(id_digests(picked, salt, casefold=casefold))
    return indices[np.argsort(keys, kind="stable")]
