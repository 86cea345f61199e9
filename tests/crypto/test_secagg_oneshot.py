"""One-shot session secure aggregation: exact sums, one message per party per sum, no sum (and no
share) when a member is missing, a fresh session after abandon, and nothing unmasked at the coordinator."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrisk.crypto import ring64
from fedrisk.crypto.secagg_oneshot import IncompleteRound, OneShotSessionAggregation
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork

from tests.crypto.test_secagg_session import _vectors

COORD = "coordinator"


class _Died(Exception):
    pass


class DiesAt(OneShotSessionAggregation):
    """Honest until its ``at``-th masked vector (0-based), which it never sends."""

    def __init__(self, at: int, **kw):
        super().__init__(**kw)
        self.at, self.count = at, 0

    def _send_masked(self, channel, coordinator, tag, y):
        k, self.count = self.count, self.count + 1
        if k == self.at:
            raise _Died
        super()._send_masked(channel, coordinator, tag, y)


@settings(max_examples=10, deadline=None)
@given(n=st.integers(2, 5), per_session=st.integers(1, 4), aggs=st.integers(1, 7), length=st.integers(1, 30),
       seed=st.integers(0, 2 ** 16))
def test_sums_are_exact_across_session_refills(n, per_session, aggs, length, seed):
    names = [f"p{i}" for i in range(n)]
    vec = _vectors(names, aggs, length, seed)
    agg = OneShotSessionAggregation(rounds=per_session, dropout_timeout=5.0)
    net = InMemoryNetwork([*names, COORD], recv_timeout=20.0)
    roles = {p: (lambda p: lambda ch: [agg.submit(ch, COORD, f"t.r{k}", vec[p][k]) for k in range(aggs)])(p)
             for p in names}
    roles[COORD] = lambda ch: [agg.collect(ch, names, f"t.r{k}", length) for k in range(aggs)]
    res = run_roles(roles, network=net)[COORD]
    for k, r in enumerate(res):
        assert r.contributors == tuple(names)
        np.testing.assert_allclose(r.total, sum(vec[p][k] for p in names), atol=1e-5)


def test_one_message_per_party_per_sum_and_nothing_unmasked():
    names = ["a", "b", "c"]
    rounds = 6
    vec = _vectors(names, rounds, 40, 1)
    agg = OneShotSessionAggregation(rounds=8, dropout_timeout=5.0)
    net = InMemoryNetwork([*names, COORD], capture=True, recv_timeout=20.0)
    roles = {p: (lambda p: lambda ch: [agg.submit(ch, COORD, f"t.r{k}", vec[p][k]) for k in range(rounds)])(p)
             for p in names}
    roles[COORD] = lambda ch: [agg.collect(ch, names, f"t.r{k}", 40) for k in range(rounds)]
    run_roles(roles, network=net)
    got = net[COORD].captured
    # after the one setup (keys, shares per party), each aggregation is exactly one masked vector per party
    per_round = [e for e in got if e.tag.endswith(".sa.masked")]
    assert len(per_round) == rounds * len(names)
    assert not [e for e in got if e.tag.endswith((".sa.reveal", ".sa.unmask"))]
    assert {e.kind for e in got} <= {"public-parameter", "ciphertext", "masked"}
    for e in per_round:
        k = int(e.tag.split(".r")[1].split(".")[0])
        plain = ring64.encode(vec[e.sender][k], n_summands=3)
        assert e.body.dtype == np.uint64 and np.mean(e.body == plain) < 0.05
    # and the coordinator sent nothing but the setup's key list and share relay
    sent = [e for e in net[names[0]].captured if e.sender == COORD]
    assert {e.tag.rsplit(".", 1)[-1] for e in sent} <= {"keylist", "inbox"}


def test_a_missing_member_voids_the_sum_and_abandon_starts_a_new_session():
    names = ["a", "b", "c", "d"]
    vec = _vectors(names, 3, 10, 2)
    agg = OneShotSessionAggregation(rounds=16, dropout_timeout=0.5, round_timeout=0.5)
    dying = DiesAt(1, rounds=16, dropout_timeout=0.5, round_timeout=0.5)
    net = InMemoryNetwork([*names, COORD], recv_timeout=20.0)

    def party(p):
        def role(ch):
            a = dying if p == "d" else agg
            a.submit(ch, COORD, "t.r0", vec[p][0])
            try:
                a.submit(ch, COORD, "t.r1", vec[p][1])
            except _Died:
                return "died"
            a.abandon(ch)  # the algorithm tells the survivors the session ended
            a.submit(ch, COORD, "t.r2", vec[p][2])
            return "ok"
        return role

    def coordinator(ch):
        first = agg.collect(ch, names, "t.r0", 10)
        with pytest.raises(IncompleteRound) as e:
            agg.collect(ch, names, "t.r1", 10)
        assert e.value.missing == ("d",) and e.value.contributors == ("a", "b", "c")
        # a new session over the survivors: their sum, nothing of d
        return first, agg.collect(ch, ["a", "b", "c"], "t.r2", 10)

    out = run_roles({**{p: party(p) for p in names}, COORD: coordinator}, network=net)
    first, last = out[COORD]
    assert out["d"] == "died"
    np.testing.assert_allclose(first.total, sum(vec[p][0] for p in names), atol=1e-5)
    assert last.contributors == ("a", "b", "c")
    np.testing.assert_allclose(last.total, sum(vec[p][2] for p in "abc"), atol=1e-5)


def test_the_survivors_masked_vectors_of_a_void_round_do_not_sum_to_anything():
    """Without d's vector the other three carry d's pairwise masks: their sum is not theirs."""
    names = ["a", "b", "c", "d"]
    vec = _vectors(names, 1, 50, 3)
    agg = OneShotSessionAggregation(rounds=4, dropout_timeout=0.5, round_timeout=0.5)
    net = InMemoryNetwork([*names, COORD], capture=True, recv_timeout=20.0)
    dying = DiesAt(0, rounds=4, dropout_timeout=0.5, round_timeout=0.5)

    def party(p):
        def role(ch):
            try:
                (dying if p == "d" else agg).submit(ch, COORD, "t.r0", vec[p][0])
            except _Died:
                pass
        return role

    def coordinator(ch):
        with pytest.raises(IncompleteRound):
            agg.collect(ch, names, "t.r0", 50)

    run_roles({**{p: party(p) for p in names}, COORD: coordinator}, network=net)
    masked = [e.body for e in net[COORD].captured if e.tag == "t.r0.sa.masked"]
    assert len(masked) == 3
    total = masked[0] + masked[1] + masked[2]
    plain = ring64.encode(sum(vec[p][0] for p in "abc"), n_summands=4)
    assert np.mean(total == plain) < 0.05


@settings(max_examples=8, deadline=None)
@given(n=st.integers(2, 5), per_session=st.integers(1, 4), modes=st.lists(st.booleans(), min_size=1, max_size=6),
       length=st.integers(1, 20), seed=st.integers(0, 2 ** 16))
def test_optimistic_sessions_mix_one_shot_and_bonawitz_sums_exactly(n, per_session, modes, length, seed):
    """One session, each sum one-shot or Bonawitz as the caller says: exact sums; reveals only in Bonawitz ones."""
    from fedrisk.crypto.secagg_oneshot import OptimisticSessionAggregation

    names = [f"p{i}" for i in range(n)]
    vec = _vectors(names, len(modes), length, seed)
    agg = OptimisticSessionAggregation(rounds=per_session, dropout_timeout=5.0)
    net = InMemoryNetwork([*names, COORD], capture=True, recv_timeout=20.0)
    roles = {p: (lambda p: lambda ch: [agg.submit(ch, COORD, f"t.r{k}", vec[p][k], one_shot=o)
                                       for k, o in enumerate(modes)])(p) for p in names}
    roles[COORD] = lambda ch: [agg.collect(ch, names, f"t.r{k}", length, one_shot=o) for k, o in enumerate(modes)]
    res = run_roles(roles, network=net)[COORD]
    for k, r in enumerate(res):
        np.testing.assert_allclose(r.total, sum(vec[p][k] for p in names), atol=1e-5)
        revealed = [e for e in net[COORD].captured if e.tag == f"t.r{k}.sa.reveal"]
        assert len(revealed) == (0 if modes[k] else n)


def test_an_optimistic_one_shot_sum_over_fewer_than_the_session_roster_is_void():
    from fedrisk.crypto.secagg_oneshot import OptimisticSessionAggregation

    names = ["a", "b", "c"]
    vec = _vectors(names, 2, 10, 3)
    agg = OptimisticSessionAggregation(rounds=8, dropout_timeout=5.0)
    net = InMemoryNetwork([*names, COORD], recv_timeout=20.0)
    roles = {p: (lambda p: lambda ch: agg.submit(ch, COORD, "t.r0", vec[p][0]))(p) for p in names}

    def coordinator(ch):
        first = agg.collect(ch, names, "t.r0", 10)  # a Bonawitz sum sets the session up over a, b, c
        with pytest.raises(IncompleteRound) as e:
            agg.collect(ch, ["a", "b"], "t.r1", 10, one_shot=True)  # c was lost before the round
        return first, e.value

    roles[COORD] = coordinator
    first, err = run_roles(roles, network=net)[COORD]
    np.testing.assert_allclose(first.total, sum(vec[p][0] for p in names), atol=1e-5)
    assert err.contributors == ("a", "b") and err.missing == ("c",)
