"""The label holder's gradient encryption: precomputed single-use obfuscators and batch encryption."""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future
from typing import Any, Callable

import numpy as np

from fedrisk.transport.codec import BigInts

#: rows per streamed chunk of encrypted gradients
_CHUNK_ROWS = 6_000
#: obfuscators per background piece: small enough that a chunk finds most of its own ready
_OBF_PIECE = 1_000


def encrypt_rows(private_key: Any, plaintexts: list[int]) -> list:
    """Encrypt packed rows with the label holder's key (the crypto pool parallelises large batches)."""
    return private_key.encrypt(plaintexts)



class _Obfuscators:
    """Queue of precomputed OU obfuscators ``h^r`` of the label holder (single use each).

    :meth:`prefetch` tops the queue up with fresh ones made on the crypto pool's lower-priority
    threads, in pieces of :data:`_OBF_PIECE`; :meth:`take` hands out exactly ``k`` of them (waiting
    for their pieces) or ``None`` if fewer than ``k`` were queued; :meth:`take_ready` hands out, in
    queue order and without waiting, those whose pieces are already made (possibly none). Every
    value handed out is forgotten, so no obfuscator is ever used twice; the caller encrypts the
    rows it got none for with fresh randomness made on the spot.

    Why not wait: the queue is made at low priority so that it fills idle cores; on a busy host a
    low-priority piece can lag far behind, and waiting for it would put the whole tree (and the
    feature holders, who wait for its ciphertexts) behind the slowest background thread. The
    ciphertexts differ only in their randomness, so the model is the same either way.
    """

    def __init__(self, key: Any) -> None:
        self.key = key
        self.w = key.obfuscator_bytes
        self.pending: deque[tuple[Callable[[], bytes], int]] = deque()
        self.n_pending = 0
        self.buf = bytearray()

    @property
    def queued(self) -> int:
        """Obfuscators queued (made or being made) and not yet handed out."""
        return self.n_pending + len(self.buf) // self.w

    def prefetch(self, count: int) -> None:
        """Queue fresh obfuscators until ``count`` are queued (memory stays at one tree's worth)."""
        need = count - self.queued
        for lo in range(0, max(0, need), _OBF_PIECE):
            k = min(_OBF_PIECE, need - lo)
            # made ahead of need, at lower CPU priority: they fill idle cores instead of delaying
            # the feature holders' histograms or this party's decryptions
            for wait in self.key.obfuscators_async(k, tasks=1, background=True):
                self.pending.append((wait, k))
            self.n_pending += k

    def _pull(self) -> None:
        wait, k = self.pending.popleft()
        blob = wait()
        self.n_pending -= k
        self.buf += blob

    def take(self, k: int) -> bytes | None:
        """Exactly ``k`` obfuscators (waiting for them if need be), or ``None`` if fewer are queued."""
        need = k * self.w
        if self.queued < k:
            return None
        while len(self.buf) < need:
            self._pull()
        out = bytes(self.buf[:need])
        del self.buf[:need]
        return out

    def take_ready(self, k: int) -> bytes:
        """Up to ``k`` obfuscators that are already made, in queue order, without waiting."""
        while len(self.buf) < k * self.w and self.pending and _done(self.pending[0][0]):
            self._pull()
        need = min(len(self.buf) // self.w, k) * self.w
        out = bytes(self.buf[:need])
        del self.buf[:need]
        return out


    def close(self) -> int:
        """Forget the queue at the end of training: pieces not started yet are cancelled (nothing
        will take them; on a busy host the low-priority pool lags by up to a tree, whose ``h^r``
        would otherwise be made for nothing), running ones finish and are dropped. Returns the
        number of obfuscators cancelled."""
        cancelled = 0
        for wait, k in self.pending:
            fut = getattr(wait, "__self__", None)
            if isinstance(fut, Future) and fut.cancel():
                cancelled += k
        self.pending.clear()
        self.n_pending = 0
        self.buf = bytearray()
        return cancelled


def _done(wait: Callable[[], bytes]) -> bool:
    """Whether a piece's waiter would return at once: a ``Future.result`` of the local pools says
    so; a waiter of another kind is treated as ready (then :meth:`_Obfuscators.take_ready` waits
    for it, as :meth:`_Obfuscators.take` does)."""
    fut = getattr(wait, "__self__", None)
    return fut.done() if isinstance(fut, Future) else True


def encrypt_chunk_async(key: Any, packing: Any, gh: np.ndarray, obfuscators: _Obfuscators | None,
                        rows: Any = None) -> Callable[[], BigInts]:
    """Start encrypting one chunk of ``(g, h)`` rows; the returned function waits for its wire form.

    ``rows`` (a :class:`~fedrisk.algorithms.vertical.secureboost.row_packing.RowPacking`) puts
    ``rows.rows`` consecutive rows in each plaintext; ``None`` means one row per plaintext.
    Ciphertexts get the queue's ready obfuscators first; the rest are encrypted with fresh
    randomness in the same call's pool tasks (normal priority), so the chunk never waits on the
    background queue. The plaintexts, hence every decrypted sum and the model, do not depend on which.
    """
    k = 1 if rows is None else rows.rows
    if not hasattr(key, "encrypt_slots_to_wire_async"):
        return key.encrypt_to_wire_async(packing.pack(gh) if k == 1 else rows.packed(packing.slot_ints(gh)))
    slots = packing.slot_ints(gh)
    if k == 1:
        at, bounds = packing.slot_bits, packing.slot_bounds
    else:
        slots, at, bounds = rows.ciphertext_slots(slots), rows.offsets, packing.slot_bounds * k
    n = len(slots)
    obf = obfuscators.take_ready(n) if obfuscators is not None else b""
    m = len(obf) // obfuscators.w if obfuscators is not None else 0

    def start(v: np.ndarray, o: bytes | None) -> Callable[[], BigInts]:
        # same ciphertexts as encrypting the packed integers, g^m made slot by slot
        return key.encrypt_slots_to_wire_async(v, at, bounds, o)

    if m == n:
        return start(slots, obf)
    if m == 0:
        return start(slots, None)
    first, rest = start(slots[:m], obf), start(slots[m:], None)

    def joined() -> BigInts:
        a, b = first(), rest()
        return BigInts.from_blob(a.to_bytes() + b.to_bytes(), a.width, n)

    return joined
