"""The aggregation step of horizontal training, cut so that masking slots in without touching the algorithm.

Message flow of :class:`PlainAggregation` (one call pair per ``tag``)::

    party_i -> coordinator : vector_i            (kind "model": the coordinator sees each update)
    coordinator            : sum_i vector_i

:class:`~fedrisk.crypto.secure_aggregation.SecureAggregation` (and its multi-round session variant
:class:`~fedrisk.crypto.secagg_session.SessionSecureAggregation`) implement the same two methods
with Bonawitz-style masking, so the coordinator only ever learns the sum. Algorithms call
``submit`` on the party side and ``collect`` on the coordinator side and never know which one
they got. Weighted averages are computed by submitting ``n_k * w_k`` together with ``n_k`` and
dividing the two sums, so even dropout-tolerant aggregation keeps the weights right.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np

from fedrisk.errors import ProtocolError
from fedrisk.transport.channel import Channel

__all__ = ["Aggregation", "AggregateResult", "PlainAggregation", "prepare_round"]


class AggregateResult:
    """The sum of the submitted vectors and the parties whose vectors are in it."""

    __slots__ = ("total", "contributors")

    def __init__(self, total: np.ndarray, contributors: Sequence[str]) -> None:
        self.total = total
        self.contributors = tuple(contributors)


class Aggregation(ABC):
    """Sum float vectors held by parties at a coordinator.

    Invariant: ``collect`` returns ``sum(vector_i for i in contributors)`` (up to fixed-point
    error for masked schemes); what else the coordinator learns is the implementation's contract.
    """

    #: what the ledger calls a party's submission
    kind: str = "model"

    @abstractmethod
    def submit(self, channel: Channel, coordinator: str, tag: str, vector: np.ndarray) -> None:
        """Party side: contribute ``vector`` to the sum under ``tag``."""

    @abstractmethod
    def collect(self, channel: Channel, parties: Sequence[str], tag: str, length: int) -> AggregateResult:
        """Coordinator side: return the sum of the parties' vectors for ``tag``."""


def prepare_round(agg: Aggregation, channel: Channel, coordinator: str, tag: str) -> None:
    """Party side: let a masking scheme with a ``prepare`` step exchange its keys for ``tag`` now.

    Banks call this before computing their round's vector, so the key exchange overlaps their
    local work instead of following it; schemes without the step (plain sums) skip it.
    """
    prepare = getattr(agg, "prepare", None)
    if prepare is not None:
        prepare(channel, coordinator, tag)


class PlainAggregation(Aggregation):
    """No masking: the coordinator sees each party's vector. Only behind an explicit flag."""

    kind = "model"

    def submit(self, channel: Channel, coordinator: str, tag: str, vector: np.ndarray) -> None:
        channel.send(coordinator, tag, np.asarray(vector, dtype=np.float64), kind=self.kind)

    def collect(self, channel: Channel, parties: Sequence[str], tag: str, length: int) -> AggregateResult:
        total = np.zeros(length)
        for p in parties:
            v = channel.recv(p, tag)
            if not isinstance(v, np.ndarray) or v.shape != (length,):
                raise ProtocolError(f"party {p!r} sent an update of shape {getattr(v, 'shape', None)} under {tag!r}; expected ({length},)")
            total += v
        return AggregateResult(total, parties)
