"""Helpers both SecureBoost roles use on the wire: timed send/recv, row bits, checked integer arrays."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from fedrisk.errors import ProtocolError
from fedrisk.transport.channel import Channel


class _Phases:
    """Seconds per phase; ``idle`` is time blocked in ``recv``, ``network`` time in ``send``."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.t[name] = self.t.get(name, 0.0) + time.perf_counter() - t0

    def send(self, channel: Channel, to: str, tag: str, obj: Any, kind: str) -> None:
        with self("network"):
            channel.send(to, tag, obj, kind=kind)

    def recv(self, channel: Channel, frm: str, tag: str) -> Any:
        with self("idle"):
            return channel.recv(frm, tag)


def peak_rss_mb() -> float:
    """This process's peak resident set so far, in MiB (threads included; pool workers not)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _pack_bits(mask: np.ndarray) -> np.ndarray:
    return np.packbits(mask.astype(bool))


def _unpack_bits(bits: Any, n: int, who: str) -> np.ndarray:
    if not isinstance(bits, np.ndarray) or bits.dtype != np.uint8 or bits.size != (n + 7) // 8:
        raise ProtocolError(f"{who}: expected {(n + 7) // 8} bytes of row bits, got {getattr(bits, 'shape', type(bits))}")
    return np.unpackbits(bits, count=n).astype(bool)



def _int_array(x: Any, who: str, what: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "iu":
        raise ProtocolError(f"{who}: {what} must be an integer array")
    return x.astype(np.int64)
