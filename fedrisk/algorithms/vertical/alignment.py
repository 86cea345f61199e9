"""Align the rows of a label holder and one or more feature holders by ECDH-PSI, before any vertical job.

Real partner files are neither in the same order nor over the same customers. Every vertical run
(training and federated inference) therefore starts here: :func:`align_parties` runs the
ristretto255 ECDH-PSI of :mod:`fedrisk.algorithms.vertical.psi_protocol` as a star around the label
holder (``align_many``) and returns, at every party, the positions of its own rows in the common
intersection, **in one order shared by all parties**. Rows outside the intersection are ignored.

Message flow: that of ``align_many`` (tags ``psi.*``): with each feature holder the label holder
exchanges blinded ids, re-blinds the other's, compares; then sends each feature holder which of
its pairwise matches are in the common intersection (``psi.keep``).

What each party learns: the size of every peer's id set, which of its own customers are in the
intersection (``reveal="both"``, needed so each party can pick its rows), and at a feature holder,
which of its matches with the label holder are missing at some other feature holder. Nobody
learns ids outside the intersection.

The salt binds the blinded values to one job (``<job id>:<purpose>``) so that values seen in one
run say nothing in another.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from fedrisk.algorithms.vertical.psi_protocol import align_many
from fedrisk.errors import ConfigError
from fedrisk.transport.channel import Channel

__all__ = ["Alignment", "align_parties", "alignment_salt"]


@dataclass(frozen=True)
class Alignment:
    """This party's view of the alignment.

    Attributes
    ----------
    indices : numpy.ndarray of int64
        Positions of this party's rows in the intersection, in the common order.
    size : int
        Intersection size (identical at every party).
    own_rows : int
        Rows this party brought.
    peer_sizes : dict of str to int
        Id-set size of each peer this party ran PSI with.
    seconds : float
        Wall time of the alignment.
    """

    indices: np.ndarray
    size: int
    own_rows: int
    peer_sizes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"size": self.size, "own_rows": self.own_rows, "peer_sizes": dict(self.peer_sizes),
                "seconds": round(self.seconds, 3)}


def alignment_salt(job_id: str, purpose: str = "train") -> str:
    """The PSI salt every party derives from the job spec: ``"<job>:<purpose>"``."""
    return f"fedrisk:{job_id}:{purpose}"


def align_parties(channel: Channel, label_holder: str, feature_holders: Sequence[str], ids: Sequence[Any], *,
                  salt: str, tag: str = "psi", log: Any = None) -> Alignment:
    """Private set intersection of all parties' ids; every party calls this with its own ``ids``.

    Parameters
    ----------
    channel : Channel
        This party's channel.
    label_holder : str
        The PSI leader.
    feature_holders : sequence of str
        The followers, in the job spec's order (identical at every party).
    ids : sequence
        This party's ids, one per row (strings or integers, normalised as in ``psi``).
    salt : str
        Per-job salt, e.g. :func:`alignment_salt`.
    tag : str
        Tag namespace (``"psi"`` or ``"psi.<something>"``).
    log : logging.Logger, optional
        Where to report the intersection size.

    Returns
    -------
    Alignment

    Raises
    ------
    DataError
        No overlapping ids, duplicated or empty ids (one line naming the party).
    """
    if not feature_holders:
        raise ConfigError("a vertical job needs at least one feature holder besides the label holder")
    t0 = time.perf_counter()
    res = align_many(channel, label_holder, list(feature_holders), ids, salt=salt, reveal="both", tag=tag)
    assert res.indices is not None
    out = Alignment(np.asarray(res.indices, dtype=np.int64), int(res.size), len(ids), dict(res.peer_sizes),
                    time.perf_counter() - t0)
    if log is not None:
        log.info("PSI alignment: %d of this party's %d rows are in the intersection of all %d parties (%.2f s)",
                 out.size, out.own_rows, len(feature_holders) + 1, out.seconds)
    return out
