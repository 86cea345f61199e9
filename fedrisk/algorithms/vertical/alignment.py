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
* ``"unbalanced"`` (two parties: a small lender and a bureau with a very large set, ``[psi]
  key_holder``): :mod:`fedrisk.algorithms.vertical.unbalanced_psi` (tags ``psi.ub.*``), a DH-OPRF
  whose key holder encodes its set once per key epoch, so a job costs the small side's size.
  Federated predict (which passes no ``unbalanced`` settings) aligns its small batches by ECDH.

What each party learns: the size of every peer's id set, which of its own customers are in the
intersection (``reveal="both"``, needed so each party can pick its rows), and at a feature holder,
which of its matches with the label holder are missing at some other feature holder. Nobody
learns ids outside the intersection.

Diagnostics, local only: ids match only when written exactly alike (after trimming spaces), so a
*partial* format mismatch (some ids zero-padded, ``12.0`` for ``12``, case) silently shrinks the
intersection. When the intersection is below :data:`SMALL_OVERLAP` of the smallest id set, or
empty, every party logs a warning with counts of its OWN id formats (:func:`describe_id_formats`:
digits only, leading zeros on some, decimals, case, spaces, non-ASCII; counts and lengths, never
an id) and what to compare with the partners. Nothing is sent for this: each party uses only the
sizes the PSI already told it.

The salt binds the blinded values to one job (``<job id>:<purpose>``) so that values seen in one
run say nothing in another.
"""
from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from fedrisk.algorithms.vertical.psi_protocol import align_many
from fedrisk.algorithms.vertical.row_order import canonical_order
from fedrisk.errors import ConfigError, DataError
from fedrisk.transport.channel import Channel

__all__ = ["Alignment", "align_parties", "alignment_salt", "PROTOCOLS", "describe_id_formats", "SMALL_OVERLAP"]

#: PSI protocols a job can choose (``[psi] protocol``); the first is the default.
PROTOCOLS = ("ecdh", "rr22", "unbalanced")
#: below this share of the smallest id set the intersection is called unexpectedly small (a warning)
SMALL_OVERLAP = 0.9
#: what to compare when ids do not match: the rule of :func:`fedrisk.crypto.psi.normalize_id`
MATCH_RULE = ("ids match only when written exactly alike after trimming spaces ('00123' and '123', 'C1' and 'c1' "
              "do not; a file whose every id is written like '123.0' is read as '123', one mixing '123.0' and '124' "
              "is left as written)")
_DECIMAL_ID = re.compile(r"^[+-]?\d+\.\d*$")


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
                  rr22_stats: dict | None = None, unbalanced: Any = None) -> Alignment:
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
        to half of it (:func:`~fedrisk.algorithms.vertical.rr22_psi.bucket_size`) and spills this
        party's keys to disk beyond the other half; what stays outside the bound is measured in
        docs/scale.md.
    spill_dir : path, optional
        The party's run/tmp directory for spill files (ECDH streaming, RR22's keys and the RR22
        library's private folder).
    rr22_stats : dict, optional
        Filled, for ``"rr22"``, with each pairwise run's :class:`~fedrisk.algorithms.vertical.rr22_psi.Rr22Stats`
        by peer (byte counts and where the time went; the PSI benchmark reports them).
    unbalanced : UbSettings, optional
        For ``"unbalanced"``: this party's :class:`~fedrisk.algorithms.vertical.unbalanced_psi.UbSettings`
        (key holder, store directory, fetch flag). Without it the alignment runs ECDH (the
        federated-predict path, whose batches are small).

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
    if protocol == "unbalanced" and unbalanced is None:
        protocol = "ecdh"
    t0 = time.perf_counter()
    try:
        if protocol == "unbalanced":
            from fedrisk.algorithms.vertical.unbalanced_psi import ub_align

            if len(feature_holders) != 1:
                raise ConfigError("psi.protocol = 'unbalanced' aligns exactly two parties; use 'ecdh' or 'rr22'")
            peer = feature_holders[0] if channel.me == label_holder else label_holder
            res = ub_align(channel, peer, ids, key_holder=channel.me == unbalanced.key_holder, salt=salt,
                           store_dir=unbalanced.store_dir, fetch=unbalanced.fetch, tag=f"{tag}.ub")
        elif protocol == "rr22":
            from fedrisk.algorithms.vertical.rr22_psi import rr22_align_many

            res = rr22_align_many(channel, label_holder, list(feature_holders), ids, salt=salt, reveal="both",
                                  tag=f"{tag}.rr22", stats=rr22_stats, memory_mb=memory_mb, spill_dir=spill_dir)
        else:
            res = align_many(channel, label_holder, list(feature_holders), ids, salt=salt, reveal="both", tag=tag,
                             memory_mb=memory_mb, spill_dir=spill_dir)
    except DataError as e:
        if log is not None and "is empty" in str(e):  # no match at all: say how this party writes its ids
            log.warning("PSI alignment: no id matched; %s. This party's ids: %s", MATCH_RULE, describe_id_formats(ids))
        raise
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
        _warn_small(log, out, ids)
    return out


def describe_id_formats(ids: Sequence[Any]) -> str:
    """Counts of the formats of this party's ids, for its own log (never an id, only counts and lengths).

    Flags the mixes that make ids of the same customer differ between institutions: digit-only ids
    with leading zeros on some but not all, ids written as decimal numbers (``12.0``), letters in
    mixed case, inner spaces, non-ASCII text and Unicode forms that are not NFC.
    """
    vals = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
    if isinstance(ids, np.ndarray) and ids.dtype.kind in "iu":
        return f"{len(vals)} ids, all integers (no leading zeros possible)"
    texts = [(v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else str(v)).strip() for v in vals]
    digits = [t for t in texts if t.isascii() and t.isdigit()]
    zeros = sum(1 for t in digits if len(t) > 1 and t[0] == "0")
    decimals = sum(1 for t in texts if _DECIMAL_ID.match(t))
    lower = sum(1 for t in texts if any(c.isalpha() for c in t) and t == t.lower() and t != t.upper())
    upper = sum(1 for t in texts if any(c.isalpha() for c in t) and t == t.upper() and t != t.lower())
    mixed = sum(1 for t in texts if t != t.lower() and t != t.upper())
    spaces = sum(1 for t in texts if any(c.isspace() for c in t))
    non_ascii = sum(1 for t in texts if not t.isascii())
    not_nfc = sum(1 for t in texts if not t.isascii() and unicodedata.normalize("NFC", t) != t)
    parts = [f"{len(texts)} ids"]
    if digits:
        lens = sorted({len(t) for t in digits})
        span = f"{lens[0]}" if len(lens) == 1 else f"{lens[0]}-{lens[-1]}"
        parts.append(f"{len(digits)} digits only (lengths {span})")
        if 0 < zeros < len(digits):
            parts.append(f"leading zeros on some: {zeros} padded, {len(digits) - zeros} not (pad all or none, "
                         "as the partners do)")
        elif zeros:
            parts.append("all with leading zeros (partners must pad alike)")
    if decimals:
        parts.append(f"{decimals} written as decimal numbers like 12.0 (export ids as text or integers)")
    if (lower and upper) or mixed:
        parts.append(f"mixed upper and lower case: {upper} upper, {lower} lower, {mixed} both")
    if spaces:
        parts.append(f"{spaces} with inner spaces")
    if non_ascii:
        parts.append(f"{non_ascii} non-ASCII" + (f" ({not_nfc} not in Unicode NFC form)" if not_nfc else ""))
    return "; ".join(parts)


def _warn_small(log: Any, out: Alignment, ids: Sequence[Any]) -> None:
    """Log at this party when the intersection is unexpectedly small (see the module docstring)."""
    smallest = min([out.own_rows, *out.peer_sizes.values()]) if out.peer_sizes else out.own_rows
    if log is None or smallest == 0 or out.size >= SMALL_OVERLAP * smallest:
        return
    log.warning("PSI alignment: only %d of this party's %d rows are in the intersection (%.0f%% of the smallest id "
                "set, %d ids); if the customers overlap this little by design, ignore this; otherwise %s. Compare "
                "id formats with the partners; this party's: %s", out.size, out.own_rows, 100 * out.size / smallest,
                smallest, MATCH_RULE, describe_id_formats(ids))
