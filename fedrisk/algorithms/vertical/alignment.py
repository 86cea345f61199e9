"""Align the rows of a label holder and one or more feature holders by PSI, before any vertical job.

Real partner files are neither in the same order nor over the same customers. Every vertical run
(training and federated inference) therefore starts here: :func:`align_parties` runs a private set
intersection as a star around the label holder and returns, at every party, the positions of its
own rows in the common intersection, **in one canonical order shared by all parties** (sorted by
a salted hash of the id, :mod:`~fedrisk.algorithms.vertical.row_order`): the same order whichever
protocol ran, and in every run of the same job. Rows outside the intersection are ignored.

Protocols (the job spec's ``[psi] protocol``, identical at every party):

* ``"ecdh"`` (default, no extra dependency): the ristretto255 ECDH-PSI of
  :mod:`fedrisk.algorithms.vertical.psi_protocol` (``align_many``; tags ``psi.*``): with each
  feature holder the label holder exchanges blinded ids, re-blinds the other's, compares; then
  sends each feature holder which of its pairwise matches are in the common intersection
  (``psi.keep``).
* ``"rr22"`` (optional extra ``fedrisk[psi]``): SecretFlow's RR22 through
  :mod:`fedrisk.algorithms.vertical.rr22_psi` (``rr22_align_many``; tags ``psi.rr22.*``), the same
  star with the library's link tunnelled over the channel; ~20x less CPU per id.

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
from fedrisk.algorithms.vertical.row_order import canonical_order
from fedrisk.errors import ConfigError
from fedrisk.transport.channel import Channel

__all__ = ["Alignment", "align_parties", "alignment_salt", "PROTOCOLS"]

#: PSI protocols a job can choose (``[psi] protocol``); the first is the default.
PROTOCOLS = ("ecdh", "rr22")


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
    protocol: str = "ecdh"

    def summary(self) -> dict[str, Any]:
        return {"size": self.size, "own_rows": self.own_rows, "peer_sizes": dict(self.peer_sizes),
                "seconds": round(self.seconds, 3), "protocol": self.protocol}


def alignment_salt(job_id: str, purpose: str = "train") -> str:
    """The PSI salt every party derives from the job spec: ``"<job>:<purpose>"``."""
    return f"fedrisk:{job_id}:{purpose}"


def align_parties(channel: Channel, label_holder: str, feature_holders: Sequence[str], ids: Sequence[Any], *,
                  salt: str, tag: str = "psi", log: Any = None, protocol: str = "ecdh",
                  memory_mb: float | None = None, spill_dir: Any = None,
                  rr22_stats: dict | None = None) -> Alignment:
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
    protocol : {"ecdh", "rr22"}, default "ecdh"
        The job's ``[psi] protocol``; every party must pass the same (the protocols' hellos
        differ, so a mismatch fails at once). ``"rr22"`` needs the ``fedrisk[psi]`` extra.
    memory_mb : float, optional
        ``[psi] memory_mb``: above it the ECDH path streams through disk
        (:mod:`~fedrisk.algorithms.vertical.psi_stream`); RR22 sizes the library's hash buckets
        to half of it (:func:`~fedrisk.algorithms.vertical.rr22_psi.bucket_size`), which is not a
        bound on its whole run (see docs/scale.md).
    spill_dir : path, optional
        The party's run/tmp directory for the streaming path's spill files.
    rr22_stats : dict, optional
        Filled, for ``"rr22"``, with each pairwise run's :class:`~fedrisk.algorithms.vertical.rr22_psi.Rr22Stats`
        by peer (byte counts and where the time went; the PSI benchmark reports them).

    Returns
    -------
    Alignment

    Raises
    ------
    DataError
        No overlapping ids, duplicated or empty ids (one line naming the party).
    ConfigError
        Unknown protocol, or ``"rr22"`` without the optional extra installed.
    """
    if not feature_holders:
        raise ConfigError("a vertical job needs at least one feature holder besides the label holder")
    if protocol not in PROTOCOLS:
        raise ConfigError(f"psi.protocol {protocol!r} is not one of {PROTOCOLS}")
    t0 = time.perf_counter()
    if protocol == "rr22":
        from fedrisk.algorithms.vertical.rr22_psi import rr22_align_many

        res = rr22_align_many(channel, label_holder, list(feature_holders), ids, salt=salt, reveal="both",
                              tag=f"{tag}.rr22", stats=rr22_stats, memory_mb=memory_mb)
    else:
        res = align_many(channel, label_holder, list(feature_holders), ids, salt=salt, reveal="both", tag=tag,
                         memory_mb=memory_mb, spill_dir=spill_dir)
    assert res.indices is not None
    if protocol == "rr22":
        # already in the canonical order: RR22's items are the order keys, and its rows come back
        # sorted by them (re-hashing the intersection here cost ~0.7 CPU-s per million rows)
        indices = np.asarray(res.indices, dtype=np.int64)
    else:
        indices = canonical_order(ids if isinstance(ids, np.ndarray) else list(ids), res.indices, salt)
    out = Alignment(indices, int(res.size), len(ids), dict(res.peer_sizes), time.perf_counter() - t0, protocol)
    if log is not None:
        log.info("PSI alignment (%s): %d of this party's %d rows are in the intersection of all %d parties (%.2f s)",
                 protocol, out.size, out.own_rows, len(feature_holders) + 1, out.seconds)
    return out
