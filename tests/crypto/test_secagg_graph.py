"""SecAgg+ sparse mask graph: the graph itself, exact sums, dropouts, capture, and refusals."""
from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from fedrisk.crypto import ring64
from fedrisk.crypto.secagg_graph import choose_degree, graph_seed, neighbours, sparse_degree
from fedrisk.crypto.secagg_session import SessionSecureAggregation
from fedrisk.crypto.secure_aggregation import default_threshold
from fedrisk.errors import ConfigError

from tests.crypto.test_secagg_session import COORD, DiesAtRound, _vectors, run_session
from tests.crypto.test_secure_aggregation import _leaves

NAMES = [f"bank{i:02d}" for i in range(14)]  # sparse_degree(14) = 10 < 13: the sparse graph is used


def _connected(nodes: set, nbrs: dict) -> bool:
    if not nodes:
        return True
    start = next(iter(nodes))
    seen, todo = {start}, [start]
    while todo:
        for q in nbrs[todo.pop()] & nodes:
            if q not in seen:
                seen.add(q)
                todo.append(q)
    return seen == nodes


# -- the graph ---------------------------------------------------------------------------------------
def test_neighbours_are_deterministic_from_the_public_seed_and_k_regular():
    names = [f"p{i}" for i in range(30)]
    seed = graph_seed("job", "sid", {p: bytes([i]) * 64 for i, p in enumerate(names)})
    g1, g2 = neighbours(names, 10, seed), neighbours(list(reversed(names)), 10, seed)
    assert g1 == g2  # every party computes the same graph, whatever order it lists the members in
    assert all(len(v) == 10 and p not in v for p, v in g1.items())
    assert all(p in g1[q] for p, v in g1.items() for q in v)  # symmetric
    other = neighbours(names, 10, graph_seed("job", "sid", {p: bytes([i + 1]) * 64 for i, p in enumerate(names)}))
    assert other != g1  # fresh keys give a fresh graph
    assert graph_seed("job", "sid", {"a": b"1" * 64}) != graph_seed("job", "sid2", {"a": b"1" * 64})


def test_harary_graph_survives_the_removal_of_any_k_minus_1_parties():
    names = [f"p{i}" for i in range(16)]
    k = 4
    g = neighbours(names, k, b"s" * 32)
    for removed in itertools.combinations(names, k - 1):
        assert _connected(set(names) - set(removed), g)
    # and k removals can cut it (so the party-side check d + colluders <= k - 1 is the right bound)
    assert any(not _connected(set(names) - set(r), g) for r in itertools.combinations(names, k))


def test_degree_choice():
    assert choose_degree(10, "auto") == 9 and choose_degree(5, "sparse") == 4  # complete for small n
    assert choose_degree(50, "auto") == sparse_degree(50) == 14
    assert choose_degree(50, "complete") == 49
    assert choose_degree(1000, "auto") == 22
    assert choose_degree(50, "sparse", degree=8) == 8
    for bad in (dict(mode="ring"), dict(degree=7), dict(degree=2)):
        with pytest.raises(ConfigError):
            choose_degree(50, **{"mode": "sparse", **bad})


# -- the protocol --------------------------------------------------------------------------------------
def test_sparse_sums_are_exact_and_shares_go_to_neighbours_only():
    vecs = _vectors(NAMES, 5, 20, seed=3)
    agg = SessionSecureAggregation(rounds=3, graph="sparse", dropout_timeout=5.0)
    results, net, _ = run_session(vecs, agg, capture=True, recv_timeout=30.0)
    for k, res in enumerate(results):
        assert res.contributors == tuple(NAMES)
        np.testing.assert_allclose(res.total, sum(vecs[p][k] for p in NAMES), atol=1e-5)
    shares = [e for e in net[COORD].captured if e.tag.endswith(".sa.shares")]
    assert len(shares) == 2 * len(NAMES)  # two setups (rounds=3, 5 aggregations)
    assert {len(e.body) for e in shares} == {10}  # k = 10 neighbours, not n - 1 = 13
    reveals = [e for e in net[COORD].captured if e.tag == "t.r1.sa.reveal"]
    assert {len(e.body["b"]) for e in reveals} == {11}  # own + k neighbours' self-mask shares
    keylist = next(e for e in net[NAMES[0]].captured if e.tag.endswith(".sa.keylist"))
    assert keylist.body["degree"] == 10 and keylist.body["threshold"] == default_threshold(11)


def test_complete_graph_is_kept_for_small_federations():
    names = NAMES[:5]
    vecs = _vectors(names, 2, 4, seed=4)
    results, net, _ = run_session(vecs, SessionSecureAggregation(rounds=2, dropout_timeout=5.0), capture=True)
    assert {len(e.body) for e in net[COORD].captured if e.tag.endswith(".sa.shares")} == {4}
    np.testing.assert_allclose(results[1].total, sum(vecs[p][1] for p in names), atol=1e-5)


def test_sparse_dropout_is_recovered_and_the_next_sum_deals_a_new_graph():
    vecs = _vectors(NAMES, 5, 8, seed=5)
    coord = SessionSecureAggregation(rounds=10, graph="sparse", dropout_timeout=1.0, key_timeout=2.0)
    party = dict(rounds=10, graph="sparse", dropout_timeout=1.0)
    results, net, out = run_session(vecs, coord, {"bank05": DiesAtRound(2, **party)}, recv_timeout=30.0)
    assert out["bank05"] == "died at 2"
    alive = [p for p in NAMES if p != "bank05"]
    for k, res in enumerate(results):
        expect = NAMES if k < 2 else alive
        assert res.contributors == tuple(expect)
        np.testing.assert_allclose(res.total, sum(vecs[p][k] for p in expect), atol=1e-5)
    # the dropout ended the sparse session: aggregation 3 set up a new graph over the 13 survivors
    inboxes = [e["tag"] for e in net[COORD].ledger.entries if e["tag"].endswith(".sa.inbox")]
    assert sorted(set(inboxes)) == ["t.r0.sa.inbox", "t.r3.sa.inbox"]


def test_coordinator_sees_only_masked_vectors_with_the_sparse_graph():
    vecs = _vectors(NAMES, 3, 64, seed=6)
    coord = SessionSecureAggregation(rounds=3, graph="sparse", dropout_timeout=1.0, key_timeout=2.0)
    _, net, _ = run_session(vecs, coord, {"bank07": DiesAtRound(1, graph="sparse", rounds=3, dropout_timeout=1.0)},
                            capture=True, recv_timeout=30.0)
    captured = net[COORD].captured
    assert {e.kind for e in captured} <= {"public-parameter", "ciphertext", "masked", "plaintext-by-design"}
    n_masked = 0
    for env in captured:
        for leaf in _leaves(env.body):
            for v in (v for vs in vecs.values() for v in vs):
                enc = ring64.encode(v, n_summands=len(NAMES))
                if isinstance(leaf, bytes):
                    assert enc.tobytes()[:64] not in leaf and v.tobytes()[:64] not in leaf
                elif leaf.shape == v.shape:
                    assert not np.array_equal(leaf, enc)
                    assert abs(np.corrcoef(ring64.decode(leaf.astype(np.uint64)), v)[0, 1]) < 0.6
        n_masked += env.kind == "masked"
    assert n_masked == 14 * 3 - 2


def test_too_many_dropouts_for_the_graph_are_refused():
    """Degree 4, one colluder: at most 2 dropouts per round keep the honest graph connected; 3 do not."""
    names = NAMES[:12]
    vecs = _vectors(names, 1, 4, seed=7)
    kw = dict(graph="sparse", degree=4, rounds=2, dropout_timeout=0.5, key_timeout=2.0, threshold=2)
    dying = {p: DiesAtRound(0, **kw) for p in ("bank01", "bank04", "bank08")}
    with pytest.raises(Exception, match="sparse mask graph of degree 4"):
        run_session(vecs, SessionSecureAggregation(**kw), dying, recv_timeout=5.0)


def test_mismatched_graph_settings_are_refused():
    vecs = _vectors(NAMES, 1, 3)
    with pytest.raises(Exception, match="secure_aggregation_graph"):
        run_session(vecs, SessionSecureAggregation(rounds=2, graph="sparse", dropout_timeout=1.0),
                    {"bank03": SessionSecureAggregation(rounds=2, graph="complete")}, recv_timeout=5.0)


def test_random_graph_sums_with_random_small_dropouts():
    rnd = random.Random(11)
    names = NAMES[:12]
    vecs = _vectors(names, 2, 5, seed=8)
    victim = rnd.choice(names)
    kw = dict(graph="sparse", rounds=4, dropout_timeout=1.0)
    results, _, _ = run_session(vecs, SessionSecureAggregation(key_timeout=2.0, **kw),
                                {victim: DiesAtRound(1, **kw)}, recv_timeout=30.0)
    alive = [p for p in names if p != victim]
    np.testing.assert_allclose(results[1].total, sum(vecs[p][1] for p in alive), atol=1e-5)


def test_one_shot_aggregation_on_the_sparse_graph_sums_exactly():
    from fedrisk.crypto.secagg_oneshot import OneShotSessionAggregation

    vecs = _vectors(NAMES, 3, 6, seed=9)
    results, net, _ = run_session(vecs, OneShotSessionAggregation(rounds=4, graph="sparse", dropout_timeout=5.0),
                                  capture=True, recv_timeout=30.0)
    for k, res in enumerate(results):
        np.testing.assert_allclose(res.total, sum(vecs[p][k] for p in NAMES), atol=1e-5)
    assert {len(e.body) for e in net[COORD].captured if e.tag.endswith(".sa.shares")} == {10}


def test_the_graph_is_a_shared_spec_setting():
    from fedrisk.runtime.spec import SecuritySpec

    assert SecuritySpec().secure_aggregation_graph == "auto"
    with pytest.raises(Exception, match="secure_aggregation_graph"):
        SecuritySpec(secure_aggregation_graph="ring")


def test_horizontal_fixed_threshold_counts_the_share_holders_of_the_sparse_graph():
    from fedrisk.algorithms.horizontal.dropouts import fixed_threshold

    assert fixed_threshold(SessionSecureAggregation(), 50).threshold == default_threshold(15)  # k = 14
    assert fixed_threshold(SessionSecureAggregation(graph="complete"), 50).threshold == default_threshold(50)
    assert fixed_threshold(SessionSecureAggregation(), 4).threshold == default_threshold(4)
