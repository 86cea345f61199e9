"""ECDH-PSI row alignment over the in-memory channel: correctness, order, privacy of what is received."""
from __future__ import annotations

import numpy as np
import pytest

from fedrisk.algorithms.vertical.psi_protocol import PsiResult, align_many, psi_align
from fedrisk.crypto import psi
from fedrisk.errors import ConfigError, DataError, ProtocolError
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork
from fedrisk.transport.codec import encode

SALT = "job-42:7f3a"


def _pair(ids_l, ids_f, *, capture=False, kw_l=None, kw_f=None, **kw):
    net = InMemoryNetwork(["lender", "payco"], capture=capture, recv_timeout=30.0, tag_prefixes=("psi.",))
    res = run_roles(
        {
            "lender": lambda ch: psi_align(ch, "payco", ids_l, leader=True, salt=SALT, **kw, **(kw_l or {})),
            "payco": lambda ch: psi_align(ch, "lender", ids_f, leader=False, salt=SALT, **kw, **(kw_f or {})),
        },
        network=net,
    )
    return res["lender"], res["payco"], net


def _id_sets(rng, n_l, n_f, n_common):
    pool = rng.choice(10**12, n_l + n_f - n_common, replace=False) + 10**11
    common = pool[:n_common]
    a = np.concatenate([common, pool[n_common:n_l]])
    b = np.concatenate([common, pool[n_l:]])
    rng.shuffle(a)
    rng.shuffle(b)
    return a, b


def _check_aligned(ids_l, ids_f, rl: PsiResult, rf: PsiResult):
    expected = set(psi.normalize_ids(ids_l)) & set(psi.normalize_ids(ids_f))
    for r in (rl, rf):
        assert r.indices.dtype == np.int64 and r.size == len(r.indices) == len(expected)
        assert len(np.unique(r.indices)) == r.size
    al = [psi.normalize_id(ids_l[i]) for i in rl.indices]
    af = [psi.normalize_id(ids_f[i]) for i in rf.indices]
    assert al == af  # same customers, same order at both parties
    assert set(al) == expected


@pytest.mark.parametrize("n_l,n_f,n_common", [(300, 200, 120), (50, 400, 50), (257, 257, 257)])
def test_equals_plain_intersection_in_one_order(n_l, n_f, n_common):
    a, b = _id_sets(np.random.default_rng(n_l + n_f), n_l, n_f, n_common)
    rl, rf, _ = _pair(a, b)
    _check_aligned(a, b, rl, rf)
    assert rl.peer_sizes == {"payco": n_f} and rf.peer_sizes == {"lender": n_l}


def test_order_is_by_doubly_blinded_value_not_input_order():
    a = np.arange(1000, 1400)
    rl, rf, _ = _pair(a, a[::-1].copy())
    _check_aligned(a, a[::-1], rl, rf)
    assert not np.array_equal(rl.indices, np.arange(400))


def test_disjoint_sets_raise_data_error_at_both():
    errors = {}

    def role(name, peer, ids, leader):
        def fn(ch):
            try:
                psi_align(ch, peer, ids, leader=leader, salt=SALT)
            except DataError as e:
                errors[name] = str(e)
        return fn

    run_roles({"l": role("l", "f", list(range(100)), True), "f": role("f", "l", list(range(100, 200)), False)})
    assert set(errors) == {"l", "f"}
    assert "empty" in errors["l"] and "'012'" in errors["l"]


def test_duplicates_rejected_naming_party_not_id():
    ids_f = ["x-1", "x-2", " x-1", "x-3", "x-1 "]
    with pytest.raises(DataError) as ei:
        _pair(["x-1", "x-9"], ids_f)
    msg = str(ei.value)
    assert "'payco'" in msg and "3 times" in msg and "rows 0 and 2" in msg
    assert "x-1" not in msg


def test_casefold_duplicates_and_matching():
    with pytest.raises(DataError, match="case"):
        _pair(["A1", "a1"], ["a1"], casefold=True)
    rl, rf, _ = _pair(["AB-1", "cd-2", "ef-3"], ["ab-1", "CD-2", "zz"], casefold=True)
    assert rl.size == 2
    assert [["AB-1", "cd-2", "ef-3"][i].lower() for i in rl.indices] == [["ab-1", "CD-2", "zz"][i].lower() for i in rf.indices]


def test_int_and_str_ids_normalise_as_documented():
    ids_l = [12, 13, 14, 99]
    ids_f = ["12", " 13 ", "014", "99.0", "x"]
    rl, rf, _ = _pair(ids_l, ids_f)
    assert sorted(ids_l[i] for i in rl.indices) == [12, 13]
    _check_aligned(ids_l, ids_f, rl, rf)


def _frames(env):
    return encode(env.job, env.sender, env.to, env.tag, env.kind, env.body)


def test_received_messages_hold_no_raw_ids():
    rng = np.random.default_rng(7)
    a, b = _id_sets(rng, 300, 300, 150)
    ids_l = [f"LND{v}" for v in a]
    ids_f = [f"LND{v}" for v in b]
    rl, rf, net = _pair(ids_l, ids_f, capture=True)
    _check_aligned(ids_l, ids_f, rl, rf)
    raw = {s.encode() for s in ids_l + ids_f} | {str(v).encode() for v in np.concatenate([a, b])}
    raw |= {int(v).to_bytes(8, o) for v in np.concatenate([a, b]) for o in ("little", "big")}
    for party in ("lender", "payco"):
        captured = net[party].captured
        assert captured and all(e.tag.startswith("psi.") for e in captured)
        blob = b"".join(_frames(e) for e in captured)
        leaked = [r for r in raw | {SALT.encode()} if r in blob]
        assert not leaked, f"{party} received raw ids: {leaked[:3]}"
        assert {e.kind for e in captured} <= {"public-parameter", "masked", "control"}


def test_ledger_records_every_message_with_psi_tags():
    rl, rf, net = _pair(list(range(600)), list(range(300, 900)))
    for party in ("lender", "payco"):
        entries = net[party].ledger.entries
        assert entries and all(e["tag"].startswith("psi.") for e in entries)
        masked = sum(e["bytes"] for e in entries if e["kind"] == "masked")
        assert masked >= 32 * (600 + 600)  # own blinded set + the peer's set re-blinded


def _spearman(x, y):
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def test_sent_order_is_shuffled():
    """Reconstruct, from what each party received back, the row behind every sent position."""
    n = 1500  # above INLINE_BELOW: the pooled path
    ids = np.arange(5_000, 5_000 + n)
    try:
        rl, rf, net = _pair(ids, ids, capture=True)
    finally:
        psi.shutdown_pool()
    for party, res in (("lender", rl), ("payco", rf)):
        # Each party gets its own doubly-blinded values back in the order it sent them; the agreed
        # order sorts them, and res.indices maps that order to input rows.
        back = [e for e in net[party].captured if ".reblinded." in e.tag]
        back.sort(key=lambda e: int(e.tag.rsplit(".", 1)[1]))
        sent = np.concatenate([e.body for e in back]).view(np.dtype((np.void, 32))).ravel()
        rank = np.argsort(np.argsort(sent))
        rows_in_sent_order = res.indices[rank]
        assert sorted(rows_in_sent_order) == list(range(n))
        assert abs(_spearman(np.arange(n), rows_in_sent_order)) < 0.15
        assert abs(_spearman(np.arange(n), res.indices)) < 0.15


def test_leader_only_reveal():
    a, b = _id_sets(np.random.default_rng(3), 200, 250, 80)
    rl, rf, net = _pair(a, b, capture=True, reveal="leader")
    assert rf.indices is None and rf.size is None and rf.peer_sizes == {"lender": 200}
    assert rl.size == 80
    assert set(a[rl.indices]) == set(a) & set(b)
    follower_got = {e.tag.split(".")[1] for e in net["payco"].captured}
    assert follower_got == {"hello", "blinded"}  # never its own re-blinded values, no size


def test_settings_mismatch_and_roles():
    with pytest.raises(ConfigError, match="salt"):
        run_roles({
            "l": lambda ch: psi_align(ch, "f", [1, 2], leader=True, salt="a"),
            "f": lambda ch: psi_align(ch, "l", [1, 2], leader=False, salt="b"),
        })
    with pytest.raises(ConfigError, match="lead"):
        run_roles({
            "l": lambda ch: psi_align(ch, "f", [1, 2], leader=True, salt="a"),
            "f": lambda ch: psi_align(ch, "l", [1, 2], leader=True, salt="a"),
        })
    with pytest.raises(ConfigError, match="reveal"):
        _pair([1, 2], [1, 2], kw_l={"reveal": "leader"})
    with pytest.raises(ConfigError, match="psi."):
        _pair([1, 2], [1, 2], tag="align")


def test_malformed_peer_batch_is_a_protocol_error():
    def fake_follower(ch):
        hello = ch.recv("l", "psi.hello")
        ch.send("l", "psi.hello", {**hello, "role": "follower", "count": 2, "batch": 512}, kind="public-parameter")
        ch.send("l", "psi.blinded.0", np.full((2, 32), 0xFF, np.uint8), kind="masked")
        ch.recv("l", "psi.done")

    with pytest.raises(ProtocolError, match="malformed"):
        run_roles({"l": lambda ch: psi_align(ch, "f", [1, 2, 3], leader=True, salt="s"), "f": fake_follower})

    def short_follower(ch):
        hello = ch.recv("l", "psi.hello")
        ch.send("l", "psi.hello", {**hello, "role": "follower", "count": 3, "batch": 512}, kind="public-parameter")
        ch.send("l", "psi.blinded.0", psi.hash_to_group(["a", "b"], "s"), kind="masked")
        ch.recv("l", "psi.done")

    with pytest.raises(ProtocolError, match=r"\(3, 32\)"):
        run_roles({"l": lambda ch: psi_align(ch, "f", [1, 2, 3], leader=True, salt="s"), "f": short_follower})


# -- more than two parties --------------------------------------------------------------------
def _many(ids_by_party, **kw):
    parties = list(ids_by_party)
    leader, followers = parties[0], parties[1:]
    net = InMemoryNetwork(parties, capture=True, recv_timeout=30.0, tag_prefixes=("psi.",))
    res = run_roles({p: (lambda ch, p=p: align_many(ch, leader, followers, ids_by_party[p], salt=SALT, **kw))
                     for p in parties}, network=net)
    return res, net


def test_align_many_common_order_at_all_parties():
    rng = np.random.default_rng(11)
    universe = rng.choice(10**9, 900, replace=False)
    ids = {
        "lender": rng.permutation(universe[:600]),
        "payco": rng.permutation(np.concatenate([universe[100:500], universe[700:800]])),
        "bureau": rng.permutation(np.concatenate([universe[200:650], universe[800:900]])),
    }
    res, net = _many(ids)
    expected = set(ids["lender"]) & set(ids["payco"]) & set(ids["bureau"])
    aligned = {p: ids[p][r.indices] for p, r in res.items()}
    assert set(aligned["lender"]) == expected and len(expected) == 300
    assert np.array_equal(aligned["lender"], aligned["payco"])
    assert np.array_equal(aligned["lender"], aligned["bureau"])
    assert res["lender"].peer_sizes == {"payco": 500, "bureau": 550}
    assert {e.sender for e in net["payco"].captured} == {"lender"}  # followers never talk to each other
    keep = [e for e in net["payco"].captured if e.tag == "psi.keep"]
    assert len(keep) == 1 and keep[0].kind == "plaintext-by-design" and len(keep[0].body) == 300


def test_align_many_leader_only_and_empty():
    ids = {"l": list(range(50)), "f1": list(range(20, 80)), "f2": list(range(30, 90))}
    res, _ = _many(ids, reveal="leader")
    assert res["f1"].indices is None and res["f2"].indices is None
    assert sorted(res["l"].indices) == list(range(30, 50))
    with pytest.raises(DataError, match="empty"):
        _many({"l": list(range(50)), "f1": list(range(0, 25)), "f2": list(range(25, 50))})


def test_peer_declared_count_does_not_set_the_wait():
    # issue 12 item 7: a follower declaring 2**31 - 1 ids made the leader wait
    # recv_timeout + 2 ms x 2**31 (~4.3 million s, 50 days) for batches that never come
    waits = []

    def lying_follower(ch):
        hello = ch.recv("l", "psi.hello")
        ch.send("l", "psi.hello", {**hello, "role": "follower", "count": 2**31 - 1, "batch": 512},
                kind="public-parameter")

    def leader(ch):
        real = ch.recv

        def timed_recv(frm, tag, timeout=None):
            if tag.startswith("psi.blinded"):
                waits.append(timeout)
                timeout = 0.2  # do not actually sit out the budget
            return real(frm, tag, timeout)

        ch.recv = timed_recv
        return psi_align(ch, "f", [1, 2, 3], leader=True, salt="s")

    net = InMemoryNetwork(["l", "f"], recv_timeout=5.0, tag_prefixes=("psi.",))
    with pytest.raises(Exception):
        run_roles({"l": leader, "f": lying_follower}, network=net)
    assert waits and max(waits) <= 5.0 + 2e-3 * 6 + 1e-9, waits
