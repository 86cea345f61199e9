"""ECDH private-set-intersection primitives over ristretto255 (libsodium, through ``rbcl``).

Pure functions over Python strings and ``(n, 32) uint8`` numpy arrays; no networking. The
two-party message flow lives in :mod:`fedrisk.algorithms.vertical.psi_protocol`.

The construction (Meadows 1986; Huberman, Franklin & Hogg 1999; the "DH-PSI" of most
federated-learning stacks) rests on commutativity of scalar multiplication in a prime-order group:
with secret scalars ``a`` (one party) and ``b`` (the other), ``b * (a * H(x)) == a * (b * H(x))``,
so two parties can compare ``ab * H(x)`` without either learning the other's ``x`` outside the
intersection (under the decisional Diffie-Hellman assumption in the ristretto255 group, with
``H`` modelled as a random oracle).

Identifier normalisation (both parties must use the same settings)::

    norm(id)  = str(id).strip()              # bytes are decoded as UTF-8 first
    norm(id)  = norm(id).casefold()          # only when casefold=True
    H(id)     = ristretto255_from_hash(SHA-512(DOMAIN || 0x00 || len(salt) as u32 BE || salt || norm(id)))

``salt`` is a per-job string both parties know (e.g. the job id plus a random value chosen when
the job is set up); it separates jobs, so blinded values from one job say nothing in another.
Consequences of ``str``: the int ``12``, the numpy int ``np.int64(12)`` and the string ``"12"``
all match; ``"012"``, ``"12.0"`` and the float ``12.0`` do not match ``12``. Normalise leading
zeros or float-typed ids in the data layer before PSI if they should match (the loader,
:mod:`fedrisk.data.loading`, reads integral float ids, and a column whose every id is written
like ``"12.0"``, as the integers).

Wire form: a batch of group elements is an ``(n, 32) uint8`` array of canonical ristretto255
encodings. Heavy batch work (hash-to-group + blind, re-blind) runs in a lazily created
module-level process pool, one worker per available core, over chunks of raw bytes: the kernels
(:func:`hash_and_blind_kernel`, :func:`reblind_kernel`) are pure ``bytes -> bytes`` functions so
they can move to another executor (e.g. Ray) unchanged.
"""
from __future__ import annotations

import hashlib
import struct
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from fedrisk.crypto.sodium import rbcl
from fedrisk.crypto.workers import broken_pool_error, process_pool, shutdown_pools, worker_count
from fedrisk.errors import CryptoError

__all__ = [
    "DOMAIN",
    "POINT_BYTES",
    "SCALAR_BYTES",
    "normalize_id",
    "normalize_ids",
    "hash_prefix",
    "random_key",
    "hash_to_group",
    "blind",
    "hash_and_blind",
    "reblind",
    "iter_hash_and_blind",
    "submit_reblind",
    "submit_hash_and_blind",
    "hash_and_blind_kernel",
    "reblind_kernel",
    "refuse_bit_255",
    "submit_kernel",
    "kernel_result",
    "points_from_future",
    "chunk_size",
    "worker_count",
    "get_pool",
    "shutdown_pool",
    "INLINE_BELOW",
]

#: Domain-separation tag of the hash-to-group input; bump the version if the encoding changes.
DOMAIN = b"fedrisk.psi.ristretto255.v1"
#: Bytes of a canonical ristretto255 group element and of a scalar.
POINT_BYTES = 32
SCALAR_BYTES = 32
#: Batches smaller than this run in the calling thread: a pool round trip costs more than it saves.
INLINE_BELOW = 1024

_from_hash = rbcl.crypto_core_ristretto255_from_hash
_scalarmult = rbcl.crypto_scalarmult_ristretto255


# ---------------------------------------------------------------------------------------------
# Normalisation and hashing
# ---------------------------------------------------------------------------------------------
def normalize_id(value: Any, *, casefold: bool = False) -> str:
    """Normalise one identifier: ``str(value).strip()``, then optionally ``casefold()``.

    Parameters
    ----------
    value : Any
        An identifier: int, str, numpy scalar, or UTF-8 ``bytes``.
    casefold : bool, default False
        Also case-fold (a stronger ``lower()``), so ``"AB12"`` matches ``"ab12"``.

    Returns
    -------
    str
        The normalised identifier.

    Notes
    -----
    ``12``, ``np.int64(12)`` and ``"12"`` normalise alike; ``"012"`` and ``12.0`` do not.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        s = bytes(value).decode("utf-8").strip()
    else:
        s = str(value).strip()
    return s.casefold() if casefold else s


def normalize_ids(ids: Iterable[Any], *, casefold: bool = False) -> list[str]:
    """Normalise every identifier with :func:`normalize_id`; order is kept."""
    if isinstance(ids, np.ndarray) and ids.dtype.kind in "iu":
        # ``tolist`` yields Python ints, whose ``str`` is the same as numpy's and much faster.
        out = [str(v) for v in ids.tolist()]
        return out  # integers never carry spaces or case
    if casefold:
        return [normalize_id(v, casefold=True) for v in ids]
    return [normalize_id(v) for v in ids]


def hash_prefix(salt: str | bytes) -> bytes:
    """The fixed prefix of every hash-to-group input: ``DOMAIN || 0x00 || len(salt) u32 BE || salt``.

    The length prefix makes the split between salt and identifier unambiguous, so no
    ``(salt, id)`` pair can collide with another ``(salt', id')``.
    """
    sb = salt.encode("utf-8") if isinstance(salt, str) else bytes(salt)
    return DOMAIN + b"\x00" + struct.pack(">I", len(sb)) + sb


def random_key() -> bytes:
    """A fresh secret blinding scalar (32 bytes, uniform in ``[1, L)``, from libsodium's CSPRNG)."""
    return rbcl.crypto_core_ristretto255_scalar_random()


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes) or len(key) != SCALAR_BYTES:
        raise CryptoError(f"a PSI key must be {SCALAR_BYTES} bytes from random_key()")
    return key


def _encode_ids(ids: Sequence[str]) -> list[bytes]:
    return [s.encode("utf-8") for s in ids]


def _as_points(points: Any) -> bytes:
    arr = np.asarray(points)
    if arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != POINT_BYTES:
        raise CryptoError(f"group elements must be an (n, {POINT_BYTES}) uint8 array, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr).tobytes()


def _to_array(raw: bytes) -> np.ndarray:
    return np.frombuffer(bytearray(raw), dtype=np.uint8).reshape(-1, POINT_BYTES)


# ---------------------------------------------------------------------------------------------
# Kernels: pure bytes -> bytes, safe to run in any worker process
# ---------------------------------------------------------------------------------------------
def hash_and_blind_kernel(key: bytes | None, prefix: bytes, ids: Sequence[bytes]) -> bytes:
    """Hash each UTF-8 id to the group and multiply by ``key`` (skip the multiply when ``key`` is None).

    Returns the concatenated 32-byte encodings, one per id, in input order.
    """
    base = hashlib.sha512(prefix)
    out = bytearray(POINT_BYTES * len(ids))
    pos = 0
    for ident in ids:
        h = base.copy()
        h.update(ident)
        p = _from_hash(h.digest())
        if key is not None:
            p = _scalarmult(key, p)
        out[pos : pos + POINT_BYTES] = p
        pos += POINT_BYTES
    return bytes(out)


def refuse_bit_255(points: bytes) -> None:
    """Raise ``ValueError("row i ...")`` at the first 32-byte encoding in ``points`` with bit 255 set.

    Such an encoding is never canonical, but the bundled libsodium ignores that bit, so its decoder
    would accept two encodings of one element. Every kernel that decodes a peer's elements
    (:func:`reblind_kernel`, :func:`fedrisk.crypto.oprf.finalize_kernel`) calls this first; the
    batch functions map the chunk's row to the batch's (:func:`kernel_result`).
    """
    if len(points) % POINT_BYTES:
        raise ValueError(f"{len(points)} bytes is not a whole number of {POINT_BYTES}-byte points")
    top = points[POINT_BYTES - 1::POINT_BYTES]
    if max(top, default=0) & 0x80:
        i = next(j for j, b in enumerate(top) if b & 0x80)
        raise ValueError(f"row {i} is not a canonical ristretto255 encoding (bit 255 set)")


def reblind_kernel(key: bytes, points: bytes) -> bytes:
    """Multiply each 32-byte group element in ``points`` by ``key``.

    Raises ``ValueError("row i")`` if an element is not a canonical ristretto255 encoding or is the
    identity (libsodium refuses both, except bit 255: :func:`refuse_bit_255`), so a malformed peer
    message cannot pass silently.
    """
    refuse_bit_255(points)
    n = len(points) // POINT_BYTES
    out = bytearray(len(points))
    for i in range(n):
        lo = i * POINT_BYTES
        try:
            out[lo : lo + POINT_BYTES] = _scalarmult(key, points[lo : lo + POINT_BYTES])
        except RuntimeError:
            raise ValueError(f"row {i} is not a valid non-identity ristretto255 element") from None
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# The process pool: shared with the other crypto kernels (fedrisk.crypto.workers)
# ---------------------------------------------------------------------------------------------
get_pool = process_pool
shutdown_pool = shutdown_pools


class _Done(Future):
    """A future that is already resolved (small batches computed inline)."""

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        super().__init__()
        if error is not None:
            self.set_exception(error)
        else:
            self.set_result(value)


def submit_kernel(fn: Any, *args: Any, inline: bool) -> Future:
    """Run ``fn(*args)`` in the pool, or now in this thread when ``inline``; errors come through the future."""
    if inline:
        try:
            return _Done(fn(*args))
        except Exception as e:  # noqa: BLE001 - surfaced through the future, like the pool does
            return _Done(error=e)
    return get_pool().submit(fn, *args)


def chunk_size(n: int) -> int:
    """Rows per pool task / wire batch: a few tasks per worker, between 512 and 16384 rows."""
    per = -(-n // (4 * worker_count())) if n else 1
    return int(min(16384, max(512, per)))


# ---------------------------------------------------------------------------------------------
# Batch API
# ---------------------------------------------------------------------------------------------
def hash_to_group(ids: Sequence[str], salt: str | bytes) -> np.ndarray:
    """Map normalised ids to ristretto255 elements (unblinded; for tests and diagnostics).

    Parameters
    ----------
    ids : sequence of str
        Normalised identifiers (see :func:`normalize_ids`).
    salt : str or bytes
        The per-job salt.

    Returns
    -------
    numpy.ndarray
        ``(len(ids), 32) uint8`` canonical encodings.
    """
    return _to_array(hash_and_blind_kernel(None, hash_prefix(salt), _encode_ids(ids)))


def blind(points: np.ndarray, key: bytes) -> np.ndarray:
    """Multiply every element of an ``(n, 32) uint8`` array by the secret scalar ``key``.

    Same operation as :func:`reblind`; the separate name reads better at the first blinding.
    """
    return reblind(points, key)


def hash_and_blind(ids: Sequence[str], key: bytes, salt: str | bytes) -> np.ndarray:
    """``key * H(id)`` for every normalised id, using the process pool for large batches.

    Returns
    -------
    numpy.ndarray
        ``(len(ids), 32) uint8``, in input order.
    """
    parts = list(iter_hash_and_blind(ids, key, salt))
    return np.concatenate(parts) if parts else np.empty((0, POINT_BYTES), np.uint8)


def reblind(points: np.ndarray, key: bytes) -> np.ndarray:
    """Multiply every element of an ``(n, 32) uint8`` array by ``key`` (pool for large batches).

    Raises
    ------
    CryptoError
        If an element is not a canonical, non-identity ristretto255 encoding.
    """
    _check_key(key)
    raw = _as_points(points)
    n = len(raw) // POINT_BYTES
    size = chunk_size(n)
    futs = [
        (lo, submit_kernel(reblind_kernel, key, raw[lo * POINT_BYTES : (lo + size) * POINT_BYTES], inline=n < INLINE_BELOW))
        for lo in range(0, n, size)
    ]
    parts = [_result(f, lo) for lo, f in futs]
    return np.concatenate(parts) if parts else np.empty((0, POINT_BYTES), np.uint8)


def kernel_result(fut: Future, offset: int = 0, what: str = "cannot blind") -> Any:
    """The result of a kernel's future; its ``ValueError("row i ...")`` becomes one :class:`CryptoError`.

    ``offset`` is the chunk's first row in the batch, so the error names the batch's row, whichever
    chunk (and worker) found it.
    """
    try:
        return fut.result()
    except BrokenProcessPool:
        raise broken_pool_error() from None
    except ValueError as e:
        msg = str(e)
        if msg.startswith("row "):
            row, _, rest = msg[4:].partition(" ")
            msg = f"row {int(row) + offset} {rest}"
        raise CryptoError(f"{what}: {msg}") from None


def _result(fut: Future, offset: int = 0) -> np.ndarray:
    return _to_array(kernel_result(fut, offset))


def iter_hash_and_blind(ids: Sequence[str], key: bytes, salt: str | bytes, *,
                        chunk: int | None = None) -> Iterator[np.ndarray]:
    """Submit ``key * H(id)`` for all ids to the pool at once; yield the chunks in order as they finish.

    Parameters
    ----------
    ids : sequence of str
        Normalised identifiers, already in the order they will be sent (i.e. shuffled).
    key : bytes
        Secret scalar from :func:`random_key`.
    salt : str or bytes
        The per-job salt.
    chunk : int, optional
        Rows per chunk; default :func:`chunk_size`.

    Yields
    ------
    numpy.ndarray
        ``(k, 32) uint8`` blocks whose concatenation is ``hash_and_blind(ids, key, salt)``.

    Notes
    -----
    Everything is submitted to the pool when this is called (not at the first ``next``), so the
    workers keep going while the caller exchanges parameters and sends the finished blocks.
    """
    _check_key(key)
    prefix = hash_prefix(salt)
    n = len(ids)
    size = chunk or chunk_size(n)
    inline = n < INLINE_BELOW
    futs = [submit_kernel(hash_and_blind_kernel, key, prefix, _encode_ids(ids[lo : lo + size]), inline=inline)
            for lo in range(0, n, size)]
    return _in_order(futs)


def _in_order(futs: list[Future]) -> Iterator[np.ndarray]:
    try:
        for f in futs:
            yield _result(f)
    finally:
        for f in futs:
            f.cancel()


def submit_reblind(points: np.ndarray, key: bytes) -> Future:
    """Start :func:`reblind` of one batch in the pool; the future resolves to raw ``bytes``.

    Use :func:`points_from_future` to turn the result into an array with a :class:`CryptoError`
    on invalid input.
    """
    _check_key(key)
    raw = _as_points(points)
    return submit_kernel(reblind_kernel, key, raw, inline=len(raw) // POINT_BYTES < INLINE_BELOW)


def points_from_future(fut: Future) -> np.ndarray:
    """Result of :func:`submit_reblind` as an ``(n, 32) uint8`` array (raises :class:`CryptoError`)."""
    return _result(fut)


def submit_hash_and_blind(ids: Sequence[str], key: bytes, salt: str | bytes) -> Future:
    """Start ``key * H(id)`` for one batch of normalised ids; resolve with :func:`points_from_future`.

    The streaming PSI (:mod:`fedrisk.algorithms.vertical.psi_stream`) keeps only a few such batches
    in flight, so memory stays bounded whatever the size of the set.
    """
    _check_key(key)
    enc = _encode_ids(ids)
    return submit_kernel(hash_and_blind_kernel, key, hash_prefix(salt), enc, inline=len(enc) < INLINE_BELOW)
