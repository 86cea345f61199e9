"""The shape of every "this connection must be refused" mTLS test, written once.

A test starts the channels, expects one ``send`` to fail with a :class:`TransportError` naming
the reason, may then inspect what the other side kept (nothing, or a ``refused`` note), and
closes every channel whatever happened.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import pytest

from fedrisk.errors import TransportError
from fedrisk.transport.grpc_channel import GrpcChannel


@contextmanager
def refused_send(channels: Sequence[GrpcChannel], sender: GrpcChannel, to: str, match: str,
                 kind: str = "model") -> Iterator[None]:
    """Assert ``sender.send(to, "t.x", 1)`` raises a TransportError matching ``match``; close ``channels`` on exit.

    The ``with`` body runs after the refused send (for checks of the receiving side).
    """
    try:
        with pytest.raises(TransportError, match=match):
            sender.send(to, "t.x", 1, kind=kind)
        yield
    finally:
        for ch in channels:
            ch.close()
