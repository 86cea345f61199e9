"""A per-phase wall-clock timer the trainers fill and report in their model's ``phases``.

Both roles of a federated trainer want to say where their seconds went (binning, histograms,
split finding, waiting for a partner, sending), and a context manager per phase keeps that
bookkeeping out of the protocol steps. ``send``/``recv`` wrap a :class:`Channel` call so that time
blocked on a partner (``idle``) is told apart from time spent putting bytes on the wire
(``network``).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator

from fedrisk.transport.channel import Channel


class PhaseTimer:
    """Seconds per phase; ``idle`` is time blocked in ``recv``, ``network`` time in ``send``.

    Attributes
    ----------
    t : dict of str to float
        Accumulated seconds per phase name (a phase entered twice adds up).
    """

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
        """``channel.send`` timed as ``network``."""
        with self("network"):
            channel.send(to, tag, obj, kind=kind)

    def recv(self, channel: Channel, frm: str, tag: str) -> Any:
        """``channel.recv`` timed as ``idle`` (waiting for the partner)."""
        with self("idle"):
            return channel.recv(frm, tag)
