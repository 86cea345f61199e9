"""Prefixed SHA-256 of a batch of normalised ids: the compiled kernel, or hashlib when it is absent.

``prefixed_digests(ids, prefix, width)`` is, for every id, ``SHA-256(prefix || utf8(norm(id)))[:width]``
with ``norm`` = :func:`fedrisk.crypto.psi.normalize_id` (as :func:`fedrisk.crypto.psi.normalize_ids`
applies it, including its fast path for integer arrays). It is the per-id step of the PSI order keys
(:mod:`fedrisk.algorithms.vertical.row_order`), which RR22 alignment runs over every id of a party
before its PSI library can start: a million ids took about a CPU-second in a Python loop.

:mod:`fedrisk.crypto._idhash` (built by setup.py against OpenSSL's libcrypto, Debian ``libssl-dev``;
optional) runs that loop in C with OpenSSL's SHA-256 and without the GIL; it re-implements
``norm`` only for integers and plain ASCII ``str`` and calls :func:`~fedrisk.crypto.psi.normalize_id`
for everything else, so both paths give the same bytes (tested with hypothesis). Without the
compiled module, or with ``FEDRISK_NATIVE=0``, the hashlib path runs.
"""
from __future__ import annotations

import functools
import hashlib
import os
from typing import Any, Sequence

import numpy as np

from fedrisk.crypto import psi

try:  # the compiled kernel is optional (see setup.py)
    from fedrisk.crypto import _idhash as _native
except ImportError:  # pragma: no cover - depends on the build
    _native = None

if os.environ.get("FEDRISK_NATIVE", "").strip() == "0":
    _native = None

__all__ = ["AVAILABLE", "prefixed_digests", "prefixed_digests_python", "hash_strings"]

#: whether the compiled kernel is in use
AVAILABLE = _native is not None


def prefixed_digests(ids: Sequence[Any], prefix: bytes, width: int, *, casefold: bool = False) -> np.ndarray:
    """``(n, width)`` uint8: ``SHA-256(prefix || utf8(normalize_id(id, casefold)))[:width]`` per id.

    Parameters
    ----------
    ids : sequence or numpy array
        Raw ids (ints, str, bytes, numpy scalars, ...); integer arrays are hashed without any
        per-id Python object.
    prefix : bytes
        The domain-separated prefix (the caller's domain tag and salt).
    width : int
        Bytes kept of each 32-byte digest (1..32).
    casefold : bool, default False
        As :func:`fedrisk.crypto.psi.normalize_id`.
    """
    if _native is None:
        return prefixed_digests_python(ids, prefix, width, casefold=casefold)
    if isinstance(ids, np.ndarray) and ids.dtype.kind in "iu":
        signed = ids.dtype.kind == "i"
        arr = np.ascontiguousarray(ids.ravel(), dtype=np.int64 if signed else np.uint64)
        raw = _native.digest_ints(arr, signed, bytes(prefix), int(width))
    else:
        if isinstance(ids, np.ndarray) and ids.dtype.kind in "UO":
            ids = ids.tolist()  # plain str (U) or the objects themselves (O), as iterating gives
        norm = functools.partial(psi.normalize_id, casefold=bool(casefold))
        raw = _native.digest_objects(ids, bytes(prefix), int(width), bool(casefold), norm)
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, width)


def prefixed_digests_python(ids: Sequence[Any], prefix: bytes, width: int, *, casefold: bool = False) -> np.ndarray:
    """The hashlib path of :func:`prefixed_digests` (the fallback, and the tests' reference)."""
    return hash_strings(psi.normalize_ids(ids, casefold=casefold), prefix, width)


def hash_strings(strings: Sequence[str], prefix: bytes, width: int) -> np.ndarray:
    """``(n, width)``: ``SHA-256(prefix || utf8(s))[:width]`` per string as given (no normalisation),
    with hashlib, one digest call per string."""
    copy = hashlib.sha256(bytes(prefix)).copy

    def digest(s: str) -> bytes:
        h = copy()
        h.update(s.encode("utf-8"))
        return h.digest()

    raw = np.frombuffer(b"".join([digest(s) for s in strings]), dtype=np.uint8).reshape(-1, 32)
    return np.ascontiguousarray(raw[:, :width])
