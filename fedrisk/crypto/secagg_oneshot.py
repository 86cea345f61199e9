"""One-message secure aggregation: session keys, pairwise masks, and no in-round dropout recovery.

:class:`OneShotSessionAggregation` is :class:`~fedrisk.crypto.secagg_session.SessionSecureAggregation`
(same setup, once per ``rounds`` aggregations, same per-round X25519 mask keys, same signed key
lists) with the unmasking round trip removed. Bonawitz's protocol spends two round trips per sum:
the masked vectors, then a survivor list and the parties' reveals of self-mask (or dropped
parties' mask-key) shares. The reveal exists only to *recover* a sum when some party's vector is
missing. An algorithm that restarts its own step when a party drops out (horizontal boosting
restarts the tree: :mod:`fedrisk.algorithms.horizontal.gbdt`) does not need that recovery, and a
level of a tree then costs one message per bank instead of three.

Message flow (``C`` coordinator, ``P_i`` party ``i``; ``R`` the session roster, ``r`` the round)::

  Setup (first aggregation of a session): exactly as SessionSecureAggregation (keys -> keylist ->
  shares -> inbox). The Shamir shares dealt there are never revealed by this class.

  Every aggregation (round r):
    P_i -> C  .sa.masked   y_i = enc(x_i) + sum_{j in R, i<j} PRG(s_ij^r) - sum_{j in R, i>j} PRG(s_ij^r)   masked
              s_ij^r = X25519(s_sk_i^r, s_pk_j^r), PRG keyed by HKDF bound to job|sid|tag|r|pair
    C: if every member of R sent its vector, sum_i y_i = enc(sum_i x_i) (the pairwise masks cancel);
       otherwise the round yields nothing: :class:`IncompleteRound` names the parties that sent, the
       session ends at the coordinator, and the algorithm tells the survivors (they call
       :meth:`OneShotSessionAggregation.abandon`) before the next sum sets up a new session.

Messages at the coordinator per aggregation, ``n`` parties: ``n`` (against ``3n`` for session
Bonawitz, ``7n`` single-round), plus ``4n`` per setup.

Security argument
-----------------
*What the coordinator learns.* Per round ``r`` each ``y_i`` is ``enc(x_i)`` plus pairwise masks
from keys used in round ``r`` only; no party ever reveals a share of anything (no ``b`` seed, no
mask key), so the coordinator can remove no mask individually: a pairwise mask ``PRG(s_ij^r)``
cancels only when both ``y_i`` and ``y_j`` are added. The sum of *all* roster members is therefore
the only function of the round's vectors it can compute; with a member's vector missing, the
remaining sum carries that member's masks and is uniform in Z/2^64. That is the same output
Bonawitz's protocol gives when nobody drops out, and *less* than it gives when someone does
(no sum over survivors). A party's own vector is hidden from any coalition of the coordinator
and other parties that leaves at least one other honest party in the roster (the honest pair's
mask is unknown to the coalition) — as in Bonawitz, where a coalition of all other parties
learns ``x_i`` from the sum anyway.

*What the missing self-mask changes.* Bonawitz's self-mask ``b_i`` protects a vector that arrives
*after* its sender was declared dropped and its mask keys were revealed. Here mask keys are never
revealed, so a late vector only completes the full sum (the intended output). The self-mask and
its reveal are therefore dropped, and with them the reveal's round trip.

*Across rounds* (what the algorithm must respect). When a round fails, the algorithm must not
re-aggregate *the same vectors* over the survivors: the sum over everyone (if the missing vector
arrives late) minus the sum over the survivors would be the missing party's vector. Horizontal
boosting restarts the tree from its root over the survivors — the same exposure Bonawitz's
survivor sums have (see the gbdt module's "Dropouts" paragraph); differential privacy is what
bounds it. Newton LR (:class:`OptimisticSessionAggregation`, below) re-evaluates at a point the
failed round never evaluated and switches to Bonawitz sums; each bank checks the point itself
(:mod:`fedrisk.algorithms.horizontal.newton_lr`, "One-shot rounds").

Dropouts therefore cost a failed round and a new setup (4 messages per party) instead of a
reveal; with a stable federation that is never paid.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from fedrisk.algorithms.horizontal.aggregation import AggregateResult
from fedrisk.crypto import ring64
from fedrisk.crypto.secagg_session import SessionSecureAggregation, _add_pairwise_masks, _CoordSession, _PartySession
from fedrisk.crypto.secure_aggregation import _gather
from fedrisk.errors import CryptoError, ProtocolError
from fedrisk.transport.channel import Channel

__all__ = ["OneShotSessionAggregation", "OptimisticSessionAggregation", "IncompleteRound"]


class IncompleteRound(ProtocolError):
    """A one-shot round in which some roster member's masked vector never came: no sum exists.

    ``contributors`` are the parties whose vectors arrived (the survivors the algorithm may go on
    with); ``missing`` those that did not.
    """

    def __init__(self, tag: str, contributors: Sequence[str], missing: Sequence[str]) -> None:
        self.contributors = tuple(sorted(contributors))
        self.missing = tuple(sorted(missing))
        super().__init__(f"secure aggregation {tag!r}: no masked vector from {list(self.missing)}; the round's sum "
                         f"cannot be opened (one-shot masking has no in-round recovery)")


class OneShotSessionAggregation(SessionSecureAggregation):
    """Session secure aggregation with one message per party per sum (see the module docstring).

    Parameters are those of :class:`~fedrisk.crypto.secagg_session.SessionSecureAggregation`.
    ``collect`` raises :class:`IncompleteRound` when a member of the session stays silent for
    ``round_timeout``; the caller must then call :meth:`abandon` at every party still in (the
    session is over at the coordinator) before the next aggregation, which sets up afresh.
    """

    #: the caller restarts its own step after a dropout (collect may raise IncompleteRound)
    recovers_dropouts = False

    def abandon(self, channel: Channel) -> None:
        """Party side: forget this job's session (the coordinator ended it after an incomplete round)."""
        st = self._sessions(channel).get(("party", channel.me, channel.job))
        if st is not None:
            st.dead = True

    def _session_mask(self, job: str, tag: str, me: str, x: np.ndarray, st: _PartySession) -> np.ndarray:
        try:
            y = ring64.encode(x, self.frac_bits, n_summands=len(st.roster))
        except CryptoError as e:
            raise CryptoError(f"{me}: {e}") from None
        return _add_pairwise_masks(y, job, tag, me, st)  # no self-mask: nothing is ever revealed

    def _round(self, channel: Channel, coordinator: str, tag: str, st: _PartySession, y: np.ndarray) -> None:
        # index r is spent the moment its masks leave; nothing of it is ever revealed
        st.r += 1
        self._send_masked(channel, coordinator, tag, y)

    def _coord_round(self, channel: Channel, parties: list[str], tag: str, length: int, st: _CoordSession,
                     first_timeout: float) -> AggregateResult:
        if set(parties) != set(st.roster):
            raise ProtocolError(f"secure aggregation {tag!r}: one-shot sessions sum over their whole roster "
                                f"{st.roster}, asked for {sorted(parties)}; end the session (abandon) first")
        st.r += 1
        masked = _gather(channel, st.roster, f"{tag}.sa.masked", first_timeout)
        for p, y in masked.items():
            if not isinstance(y, np.ndarray) or y.dtype != np.uint64 or y.shape != (length,):
                raise ProtocolError(f"secure aggregation: party {p!r} sent a masked vector of "
                                    f"{getattr(y, 'dtype', type(y).__name__)} {getattr(y, 'shape', '')} under {tag!r}; "
                                    f"expected uint64 ({length},)")
        missing = [p for p in st.roster if p not in masked]
        if missing:
            raise IncompleteRound(tag, sorted(masked), missing)  # collect() ends the session
        total = np.zeros(length, dtype=np.uint64)
        for y in masked.values():
            total += y
        return AggregateResult(ring64.decode(total, self.frac_bits), st.roster)


class OptimisticSessionAggregation(OneShotSessionAggregation):
    """Session secure aggregation whose caller picks, per sum, one-shot or Bonawitz (with recovery).

    ``submit(..., one_shot=True)`` / ``collect(..., one_shot=True)`` run a sum as
    :class:`OneShotSessionAggregation` does (one masked vector per party, no self-mask, nothing ever
    revealed; :class:`IncompleteRound` when a roster member stays silent); without the flag a sum
    runs as :class:`~fedrisk.crypto.secagg_session.SessionSecureAggregation` (self-mask, survivor
    list, reveal, recovery of dropouts inside the round). Both kinds share one session: each
    round index ``r`` has its own mask keys (and self-mask seed) and is used by exactly one sum, in
    one mode, so the per-index argument of either class holds unchanged — a one-shot index is
    never revealed, a Bonawitz index reveals at most one kind of share per party. After an
    incomplete one-shot round the session is over (the coordinator drops it; parties call
    :meth:`abandon`) and the next sum sets up afresh.

    Why: in a stable federation a one-shot sum costs the coordinator ``n`` messages instead of
    ``3n``. What the caller must guarantee (the "same-vectors rule" of the module docstring): after
    an incomplete one-shot round it never sums the same quantities again over the survivors —
    Newton LR (:mod:`fedrisk.algorithms.horizontal.newton_lr`) moves to a point no earlier sum
    evaluated, and uses Bonawitz sums from then on.
    """

    #: with one_shot=False every sum recovers dropouts in-round, as SessionSecureAggregation
    recovers_dropouts = True

    def _one_shot_tags(self) -> set:
        with self._pending_lock():
            return self.__dict__.setdefault("_one_shot", set())

    def submit(self, channel: Channel, coordinator: str, tag: str, vector: np.ndarray, *, one_shot: bool = False) -> None:
        """Party side; ``one_shot`` as in the class docstring (must match the coordinator's ``collect``)."""
        if one_shot:
            self._one_shot_tags().add(tag)
        super().submit(channel, coordinator, tag, vector)

    def collect(self, channel: Channel, parties: Sequence[str], tag: str, length: int, *,
                one_shot: bool = False) -> AggregateResult:
        """Coordinator side; raises :class:`IncompleteRound` for a one-shot sum with a silent member."""
        if one_shot:
            self._one_shot_tags().add(tag)
        return super().collect(channel, parties, tag, length)

    def _session_mask(self, job: str, tag: str, me: str, x: np.ndarray, st: _PartySession) -> np.ndarray:
        if tag in self._one_shot_tags():
            return super()._session_mask(job, tag, me, x, st)
        return SessionSecureAggregation._session_mask(self, job, tag, me, x, st)

    def _round(self, channel: Channel, coordinator: str, tag: str, st: _PartySession, y: np.ndarray) -> None:
        if tag in self._one_shot_tags():
            return super()._round(channel, coordinator, tag, st, y)
        return SessionSecureAggregation._round(self, channel, coordinator, tag, st, y)

    def _coord_round(self, channel: Channel, parties: list[str], tag: str, length: int, st: _CoordSession,
                     first_timeout: float) -> AggregateResult:
        if tag in self._one_shot_tags():
            if set(parties) != set(st.roster):
                # a member was lost before the round (e.g. the model's send to it failed): a one-shot
                # sum over fewer parties never opens, so the round fails as if its vector were missing
                st.r += 1
                raise IncompleteRound(tag, sorted(set(parties) & set(st.roster)), sorted(set(st.roster) - set(parties)))
            return super()._coord_round(channel, parties, tag, length, st, first_timeout)
        return SessionSecureAggregation._coord_round(self, channel, parties, tag, length, st, first_timeout)

    @classmethod
    def like(cls, agg: SessionSecureAggregation) -> "OptimisticSessionAggregation":
        """The same settings as session aggregation ``agg`` (threshold, graph, keys, timeouts)."""
        return cls(rounds=agg.rounds, round_timeout=agg.round_timeout, threshold=agg.threshold,
                   frac_bits=agg.frac_bits, dropout_timeout=agg.dropout_timeout, key_timeout=agg.key_timeout,
                   signing_key_pem=agg.signing_key_pem, peer_certs_pem=agg.peer_certs_pem, parties=agg.parties,
                   colluders=agg.colluders, graph=agg.graph, degree=agg.degree)
