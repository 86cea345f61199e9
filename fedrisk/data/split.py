"""Choose a vertical job's test rows from the ids alone, so every party agrees without talking.

Three rules, set in the job spec's ``[evaluation]`` table (at most one):

``test_rule = "id % K == R"``
    Integer ids only: a row is a test row when its id modulo ``K`` is ``R``. Kept because existing
    results (and their published figures) were measured with it.

``test_fraction = 0.2``
    Any id type (text, zero-padded, UUIDs). A row is a test row when a keyed hash of its
    normalised id falls below the fraction::

        key  = SHA-256("fedrisk.test-split.v1" || 0x00 || job name || 0x00 || decimal seed)
        h    = HMAC-SHA-256(key, normalize_id(id))          # normalize_id from fedrisk.crypto.psi
        test = int.from_bytes(h[:8], "big") < fraction * 2**64

    Job name and seed are shared settings that every party must already agree on (the start-up
    handshake refuses mismatches), so every party computes the same split locally and no message
    is exchanged. The key keeps the split from being a public property of an id (a customer is not
    always a test row across jobs); changing the seed gives another split. The ids are normalised
    exactly as PSI normalises them, so ``"C0005002"`` stays distinct from ``"C5002"`` at every party.

``test_column = "is_test"``
    A 0/1 column in the label holder's file; the label holder tells the feature holders which
    aligned rows are test rows (see :mod:`fedrisk.tasks.vertical_roles`).

Without any of them, vertical tasks use ``id % 5 == 0`` when every aligned id is an integer (as
before) and ``test_fraction = 0.2`` otherwise; the choice depends only on the intersection, which
every party holds, so it is the same everywhere.
"""
from __future__ import annotations

import hashlib
import hmac
from typing import Sequence

import numpy as np

from fedrisk.errors import DataError

__all__ = ["split_key", "hashed_test_mask", "id_hashes", "all_integer_ids", "DEFAULT_FRACTION", "column_test_mask"]

#: test fraction used when a vertical job has non-integer ids and no ``[evaluation]`` rule
DEFAULT_FRACTION = 0.2
_DOMAIN = b"fedrisk.test-split.v1"


def split_key(job: str, seed: int) -> bytes:
    """The HMAC key of the hashed split, derived from the job name and seed (shared settings)."""
    return hashlib.sha256(_DOMAIN + b"\x00" + job.encode("utf-8") + b"\x00" + str(int(seed)).encode()).digest()


def hashed_test_mask(ids: Sequence[object] | np.ndarray, fraction: float, key: bytes) -> np.ndarray:
    """Boolean mask: ``True`` where the keyed hash of the normalised id falls below ``fraction``.

    Parameters
    ----------
    ids : array-like
        Ids of any type; normalised as PSI normalises them (:func:`fedrisk.crypto.psi.normalize_id`).
    fraction : float
        Expected share of test rows, strictly between 0 and 1.
    key : bytes
        From :func:`split_key`; identical at every party of a job.
    """
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"test fraction {fraction!r} must be strictly between 0 and 1")
    cut = int(float(fraction) * 2**64)
    return np.array([h < cut for h in id_hashes(ids, key).tolist()], dtype=bool)


def id_hashes(ids: Sequence[object] | np.ndarray, key: bytes) -> np.ndarray:
    """The 64-bit keyed hash of every normalised id (``uint64``), which :func:`hashed_test_mask` cuts."""
    from fedrisk.crypto.psi import normalize_id

    out = np.empty(len(ids), dtype=np.uint64)
    for i, v in enumerate(ids):
        h = hmac.new(key, normalize_id(v).encode("utf-8"), hashlib.sha256).digest()
        out[i] = int.from_bytes(h[:8], "big")
    return out


def all_integer_ids(ids: Sequence[object] | np.ndarray) -> bool:
    """Whether every id is a (possibly signed, space-padded) decimal integer."""
    for v in ids:
        s = str(v).strip()
        if not (s.lstrip("+-").isdigit() and s.lstrip("+-").isascii()):
            return False
    return True


def column_test_mask(values: np.ndarray, column: str, party: str) -> np.ndarray:
    """Validate a 0/1 (or boolean, or ``true``/``false`` text) test-column and return it as a mask."""
    import pandas as pd

    s = pd.Series(values)
    if s.isna().any():
        raise DataError(f"party {party!r}: evaluation.test_column {column!r} is empty in {int(s.isna().sum())} rows; "
                        "mark every row 0 (train) or 1 (test)")
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.to_numpy(dtype=bool)
    text = s.astype(str).str.strip().str.lower()
    mapping = {"0": False, "1": True, "0.0": False, "1.0": True, "false": False, "true": True}
    bad = ~text.isin(list(mapping))
    if bad.any():
        raise DataError(f"party {party!r}: evaluation.test_column {column!r} must hold only 0 and 1 "
                        f"(1 = test row); {int(bad.sum())} rows hold something else")
    return text.map(mapping).to_numpy(dtype=bool)
