"""The label holder's gradient encryption: precomputed single-use obfuscators and batch encryption."""
from __future__ import annotations

from typing import Any, Callable

#: rows per streamed chunk of encrypted gradients
_CHUNK_ROWS = 6_000


def encrypt_rows(private_key: Any, plaintexts: list[int]) -> list:
    """Encrypt packed rows with the label holder's key (the crypto pool parallelises large batches)."""
    return private_key.encrypt(plaintexts)



class _Obfuscators:
    """Queue of precomputed OU obfuscators ``h^r`` of the label holder (single use each).

    :meth:`prefetch` starts fresh ones on the crypto pool; :meth:`take` hands out exactly ``k``
    of them and forgets them, or ``None`` if fewer than ``k`` were prefetched (the caller then
    encrypts with fresh randomness made on the spot), so no obfuscator is ever used twice.
    """

    def __init__(self, key: Any) -> None:
        self.key = key
        self.w = key.obfuscator_bytes
        self.pending: list[Callable[[], bytes]] = []
        self.n_pending = 0
        self.buf = b""

    def prefetch(self, count: int) -> None:
        size = -(-count // 8)
        for lo in range(0, count, size):
            # made ahead of need, at lower CPU priority: they fill idle cores instead of delaying
            # the feature holders' histograms or this party's decryptions
            self.pending.extend(self.key.obfuscators_async(min(size, count - lo), tasks=1, background=True))
        self.n_pending += count

    def take(self, k: int) -> bytes | None:
        need = k * self.w
        if len(self.buf) + self.n_pending * self.w < need:
            return None
        while len(self.buf) < need:
            blob = self.pending.pop(0)()
            self.n_pending -= len(blob) // self.w
            self.buf += blob
        out, self.buf = self.buf[:need], self.buf[need:]
        return out
