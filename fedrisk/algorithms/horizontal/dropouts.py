"""Which banks are still in a horizontal job: the coordinator's roster of contributors, round by round.

Horizontal training survives the loss of a bank as long as secure aggregation's threshold holds:
every sum the coordinator opens is over the banks that contributed to it, and each protocol's
round is built only from that round's sums (see the "Dropouts" paragraphs of
:mod:`~fedrisk.algorithms.horizontal.newton_lr` and :mod:`~fedrisk.algorithms.horizontal.gbdt`).
This module is the coordinator-side bookkeeping around that, written against the ``Channel``
interface only:

* :meth:`Roster.start` (after the steps that need every bank: schema, standardisation, bins)
  tells the channel that losing a bank is that bank's dropout, not the job's failure
  (:meth:`~fedrisk.transport.channel.Channel.tolerate_dropouts`): a send to a dead or partitioned
  bank then fails within ``send_timeout`` seconds and marks it down instead of raising;
* :meth:`Roster.record` takes a round's :class:`AggregateResult`; a bank that is not among its
  contributors is dropped for this and every later round (:meth:`Channel.mark_down`: later sends
  to it are skipped, receives from it fail at once), and the round's contributors are kept for the
  log and ``metrics.json``;
* :meth:`Roster.require` stops the job with one line naming the dropped banks and why once fewer
  banks than the threshold remain;
* :meth:`Roster.finish` tells every dropped bank that is still alive (``ctl.dropped``) that the job
  went on without it, so it stops instead of waiting for its receive timeout.

Messages: only ``ctl.dropped`` (coordinator -> dropped bank, kind control, the reason text the
coordinator recorded: "left the sums of round 3" or the transport error). A bank learns nothing
from it it did not know: it was the one that went silent.

Rejoin (:meth:`Roster.readmit`, at a round boundary): a dropped bank that comes back (``fedrisk
party --resume`` for that bank: a new process, the start-up handshake answered mid-job by the
coordinator's runtime through the ``admit`` callable) is taken back before the round's model
broadcast. It is sent ``hlr.rejoin`` (coordinator -> bank, kind aggregate: the agreed scaler, the
bank count and the round it joins at — what it received at the start anyway), then the round's
model like every bank, and is in that round's sums. Horizontal LR banks hold no state between
rounds, so nothing else is needed; secure aggregation must then take it into the round's key
exchange, which the single-round protocol does every round (session mode would keep it
``excluded`` until its next setup, so the runtime refuses the rejoin there with one line). The
threshold is fixed from *all* banks at the start, so a shrinking roster never lowers the
privacy bar.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import numpy as np

from fedrisk.algorithms.horizontal.aggregation import Aggregation, AggregateResult
from fedrisk.errors import ProtocolError
from fedrisk.transport import expect
from fedrisk.transport.channel import Channel

__all__ = ["Roster", "fixed_threshold", "rejoin_scaler"]


def fixed_threshold(agg: Aggregation, n_banks: int) -> Aggregation:
    """``agg`` with its threshold fixed from all ``n_banks`` (a copy), so aggregating over fewer keeps the bar.

    Secure aggregation's default threshold is computed from the parties of each call; later
    rounds call it with the banks still in. Plain aggregation (no threshold) is returned as is.
    """
    if getattr(agg, "threshold", False) is None:
        from fedrisk.crypto.secure_aggregation import default_threshold

        colluders = getattr(agg, "colluders", None)
        # SecAgg+ sparse graph: each bank's secrets are shared among its k + 1 neighbourhood only
        degree = agg._degree(n_banks) if hasattr(agg, "_degree") else n_banks - 1
        holders = n_banks if degree >= n_banks - 1 else degree + 1
        agg = copy.copy(agg)
        agg.threshold = default_threshold(holders) if colluders is None else default_threshold(holders, colluders)
    return agg


class Roster:
    """The banks still in the job and who contributed to each round (coordinator side).

    Parameters
    ----------
    channel : Channel
        The coordinator's channel.
    banks : sequence of str
        Every bank of the job.
    agg : Aggregation
        The aggregation in use; its ``threshold`` (secure aggregation) is the fewest banks a round
        may have. Plain aggregation has none (one bank will do), but it reads every listed bank's
        vector, so a bank that dies mid-round stops the job unless the aggregation skips it.
    send_timeout : float
        Seconds a send to a bank may take before the bank counts as dropped out.
    log : callable, optional
        Receives one line per dropout.
    """

    def __init__(self, channel: Channel, banks: Sequence[str], agg: Aggregation, send_timeout: float = 10.0,
                 log: Callable[[str], None] | None = None) -> None:
        self.channel = channel
        self.banks = sorted(banks)
        self.active = list(self.banks)
        threshold = getattr(agg, "threshold", None)
        # plain sums (an explicit opt-out of privacy) have no privacy threshold: any bank left will do
        self.threshold = int(threshold) if threshold is not None else 1
        self.send_timeout = send_timeout
        self.say = log or (lambda s: None)
        #: bank -> (round it was dropped at, reason)
        self.dropped: dict[str, tuple[int, str]] = {}
        #: round -> contributors to that round's sums
        self.contributors: dict[int, list[str]] = {}
        #: bank -> the rounds it rejoined at, with the dropout each ended
        self.rejoined: dict[str, list[dict]] = {}

    def watch(self) -> None:
        """Before the all-bank steps: a bank that dies makes the job stop within ``send_timeout``-ish, named.

        (Without it the coordinator would wait for a killed bank for its whole receive timeout.)
        """
        self.channel.watch(self.banks, send_timeout=self.send_timeout)

    def start(self) -> None:
        """From now on a bank's loss is its dropout, not the job's failure."""
        self.channel.tolerate_dropouts(self.banks, send_timeout=self.send_timeout)

    def broadcast(self, r: int, tag: str, obj: Any, *, kind: str) -> None:
        """Send to every bank still in; a bank that cannot be reached is dropped (round ``r``)."""
        self.channel.broadcast(list(self.active), tag, obj, kind=kind)  # concurrently over gRPC
        self._sync(r)

    def _sync(self, r: int) -> None:
        down = self.channel.down
        for b in [b for b in self.active if b in down]:
            self._drop(b, r, down[b])

    def _drop(self, b: str, r: int, reason: str) -> None:
        self.active.remove(b)
        self.dropped[b] = (r, reason)
        self.channel.mark_down(b, reason)
        self.say(f"round {r}: bank {b!r} dropped out ({reason}); continuing with {self.active} "
                 f"(threshold {self.threshold} of {len(self.banks)})")

    def require(self, r: int) -> None:
        """Stop with one line if fewer banks than the threshold are left."""
        self._sync(r)
        if len(self.active) < self.threshold:
            gone = "; ".join(f"{b} at round {rr}: {why}" for b, (rr, why) in sorted(self.dropped.items()))
            raise ProtocolError(f"round {r}: only {len(self.active)} of {len(self.banks)} banks are left "
                                f"({self.active}), fewer than the secure-aggregation threshold {self.threshold}. Dropped: {gone}. "
                                f"Restart the job with the banks online, or lower the threshold explicitly")

    def record(self, r: int, res: AggregateResult) -> list[str]:
        """Keep round ``r``'s contributors; drop every bank that is not among them. Returns them."""
        got = sorted(res.contributors)
        self.contributors[r] = got
        down = self.channel.down
        for b in [b for b in self.active if b not in got]:
            self._drop(b, r, down.get(b, f"left the sums of round {r}"))
        return got

    def readmit(self, r: int, admit: Callable[[str, int], bool] | None, welcome: dict[str, Any]) -> list[str]:
        """Take back, before round ``r``, every dropped bank that asked to rejoin and that ``admit`` accepts."""
        back = []
        for b in sorted(self.dropped) if admit is not None else []:
            if not admit(b, r):
                continue
            was, why = self.dropped.pop(b)
            self.channel.mark_up(b)
            self.active = sorted([*self.active, b])
            self.rejoined.setdefault(b, []).append({"round": r, "dropped_at": was, "reason": why})
            self.channel.send(b, "hlr.rejoin", {**welcome, "first_round": r}, kind="aggregate")
            self.say(f"round {r}: bank {b!r} rejoined (dropped at round {was}); continuing with {self.active}")
            back.append(b)
        return back

    def finish(self) -> None:
        """Tell the dropped banks that are still alive that the job went on without them."""
        if self.dropped:
            told = self.channel.tell_dropped(
                sorted(self.dropped), "it left the secure sums; the job finished with the other banks")
            if told:
                self.say(f"told {told} that the job went on without them")

    def summary(self) -> dict:
        """What the coordinator's outputs say about membership."""
        return {"contributors": {str(r): c for r, c in self.contributors.items()},
                "dropped": {b: {"round": r, "reason": why} for b, (r, why) in sorted(self.dropped.items())},
                **({"rejoined": dict(sorted(self.rejoined.items()))} if self.rejoined else {})}


def rejoin_scaler(channel: Channel, coordinator: str, d: int) -> dict[str, Any]:
    """A rejoining bank's stand-in for the standardisation agreement: the ``hlr.rejoin`` message.

    Read as the first-time ``hlr.scaler`` is (:func:`~fedrisk.algorithms.horizontal.standardisation.agree_bank`):
    ``d`` finite means, ``d`` finite positive scales and a whole ``first_round``; anything else is one
    :class:`ProtocolError` naming this bank, the coordinator, the tag and the field.
    """
    me, tag = channel.me, "hlr.rejoin"
    msg = dict(expect.mapping(channel.recv(coordinator, tag), me, coordinator, tag))
    msg["mean"] = expect.vector(msg, "mean", d, me, coordinator, tag)
    msg["scale"] = expect.vector(msg, "scale", d, me, coordinator, tag, positive=True)
    msg["first_round"] = expect.integer(msg, "first_round", me, coordinator, tag, lo=1)
    return msg


def agreed_roster(channel: Channel, banks: Sequence[str], aggregation: Aggregation,
                  agree: Callable[[Aggregation], Any], log: Any = None) -> tuple[Aggregation, "Roster", Any]:
    """Run the all-bank agreement under watch, then switch to dropout tolerance.

    The threshold is fixed from all banks first (so a later loss never lowers it); while
    ``agree(agg)`` runs every bank is needed, so a dead one stops the job soon, named; from its
    return on, a lost bank is a dropout, not the job's failure. Returns ``(agg, roster, agree(agg))``.
    """
    agg = fixed_threshold(aggregation, len(banks))
    roster = Roster(channel, list(banks), agg, send_timeout=float(getattr(agg, "dropout_timeout", 10.0)), log=log)
    roster.watch()
    agreed = agree(agg)
    roster.start()
    return agg, roster, agreed
