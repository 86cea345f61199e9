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

import hashlib
from typing import Any, Sequence

import numpy as np

from fedrisk.crypto import psi

__all__ = ["ORDER_DOMAIN", "KEY_CHARS", "order_keys", "canonical_order"]

#: Domain-separation tag of the order keys; bump the version if the encoding changes.
ORDER_DOMAIN = b"fedrisk.psi.order.v1"
#: Hex characters per key (128 bits).
KEY_CHARS = 32


def order_keys(norm_ids: Sequence[str], salt: str) -> np.ndarray:
    """Salted 128-bit keys of normalised ids, as a fixed-width ``S32`` array of lower-case hex.

    Parameters
    ----------
    norm_ids : sequence of str
        Ids normalised with :func:`fedrisk.crypto.psi.normalize_ids` (same settings at every party).
    salt : str
        The job's PSI salt.
    """
    base = hashlib.sha256(ORDER_DOMAIN + b"\x00" + psi.hash_prefix(salt))
    out = np.empty(len(norm_ids), dtype=f"S{KEY_CHARS}")
    for i, s in enumerate(norm_ids):
        h = base.copy()
        h.update(s.encode("utf-8"))
        out[i] = h.hexdigest()[:KEY_CHARS].encode("ascii")
    return out


def canonical_order(ids: Sequence[Any], indices: np.ndarray, salt: str, *, casefold: bool = False) -> np.ndarray:
    """``indices`` (rows of ``ids`` in the intersection) re-ordered by their order keys.

    Every party calls this on its own rows of the same intersection and gets the same customer
    at the same position.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        return indices
    picked = ids[indices] if isinstance(ids, np.ndarray) else [ids[i] for i in indices.tolist()]
    keys = order_keys(psi.normalize_ids(picked, casefold=casefold), salt)
    return indices[np.argsort(keys, kind="stable")]
