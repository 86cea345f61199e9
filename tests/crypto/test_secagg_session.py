"""Session-mode secure aggregation: correct sums over many rounds, dropouts, refills, capture and attacks."""
from __future__ import annotations

import time

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrisk.crypto import ring64, shamir
from fedrisk.crypto.prg_mask import context, mask
from fedrisk.crypto.secagg_session import (
    _PROTO, SessionSecureAggregation, _round_pair_info, _self_info, _split_pks)
from fedrisk.crypto.secure_aggregation import SecureAggregation, _share_key, default_threshold
from fedrisk.errors import ConfigError, ProtocolError, TransportError
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork

from tests.crypto.test_secure_aggregation import _leaves, _pki

COORD = "coordinator"


class _Died(Exception):
    """Raised inside a party to simulate a crash."""


class DiesAtRound(SessionSecureAggregation):
    """Honest until aggregation number ``at`` (0-based, counted over submits), then crashes before masking."""

    def __init__(self, at: int, late: float | None = None, **kw):
        super().__init__(**kw)
        self.at, self.late, self.count = at, late, 0

    def _send_masked(self, channel, coordinator, tag, y):
        k, self.count = self.count, self.count + 1
        if k == self.at:
            if self.late is None:
                raise _Died
            time.sleep(self.late)  # arrives after the coordinator's dropout timeout
        super()._send_masked(channel, coordinator, tag, y)


def run_session(vectors: dict[str, list[np.ndarray]], coord_agg, party_aggs: dict | None = None,
                capture: bool = False, recv_timeout: float = 20.0):
    """Every party submits its list of vectors (one per aggregation); the coordinator collects them all."""
    names = sorted(vectors)
    rounds = len(next(iter(vectors.values())))
    length = len(vectors[names[0]][0])
    party_aggs = party_aggs or {}
    net = InMemoryNetwork([*names, COORD], capture=capture, recv_timeout=recv_timeout)

    def party(name):
        def role(ch):
            agg = party_aggs.get(name, coord_agg)
            for k in range(rounds):
                try:
                    agg.submit(ch, COORD, f"t.r{k}", vectors[name][k])
                except _Died:
                    return f"died at {k}"
            return "ok"
        return role

    roles = {n: party(n) for n in names}
    roles[COORD] = lambda ch: [coord_agg.collect(ch, names, f"t.r{k}", length) for k in range(rounds)]
    out = run_roles(roles, network=net)
    return out[COORD], net, out


def _vectors(names, rounds, length, seed=0):
    rng = np.random.default_rng(seed)
    return {n: [rng.normal(size=length) * 100 for _ in range(rounds)] for n in names}


# -- correctness ----------------------------------------------------------------------------------
@settings(max_examples=12, deadline=None)
@given(n=st.integers(2, 5), per_session=st.integers(1, 4), aggs=st.integers(1, 7), length=st.integers(1, 30),
       seed=st.integers(0, 2**31))
def test_session_sums_equal_plain_sums_across_refills(n, per_session, aggs, length, seed):
    names = [f"bank{i}" for i in range(n)]
    vecs = _vectors(names, aggs, length, seed)
    results, _, _ = run_session(vecs, SessionSecureAggregation(rounds=per_session, dropout_timeout=2.0))
    for k, res in enumerate(results):
        assert res.contributors == tuple(names)
        assert np.max(np.abs(res.total - sum(v[k] for v in vecs.values()))) <= n * 2.0 ** -23


def test_dropout_mid_session_leaves_the_others_sum_and_the_party_stays_out():
    names = ["bank1", "bank2", "bank3", "bank4"]  # t = 3: one dropout tolerated
    vecs = _vectors(names, 6, 8, seed=1)
    coord = SessionSecureAggregation(rounds=10, dropout_timeout=0.5, key_timeout=1.0)
    results, net, out = run_session(vecs, coord, {"bank3": DiesAtRound(2, dropout_timeout=0.5, rounds=10)})
    assert out["bank3"] == "died at 2"
    for k, res in enumerate(results):
        alive = names if k < 2 else ["bank1", "bank2", "bank4"]
        assert res.contributors == tuple(alive)
        np.testing.assert_allclose(res.total, sum(vecs[p][k] for p in alive), atol=1e-5)
    # one setup only: the dropout did not force a new session
    assert [e["tag"] for e in net[COORD].ledger.entries if e["tag"].endswith(".sa.inbox")] == ["t.r0.sa.inbox"] * 4


def test_late_party_is_never_unmasked_and_rejoins_only_at_the_next_setup():
    """bank2 is late in aggregation 1: out of the sum there and in aggregation 2 (it is told it is
    excluded), back after the batch of 3 is used up and a fresh setup runs at aggregation 3."""
    names = ["bank1", "bank2", "bank3", "bank4"]
    vecs = _vectors(names, 5, 6, seed=2)
    coord = SessionSecureAggregation(rounds=3, dropout_timeout=1.0, key_timeout=1.0)
    results, net, _ = run_session(vecs, coord, {"bank2": DiesAtRound(1, late=1.6, dropout_timeout=1.0, rounds=3)},
                                  capture=True)
    expect = [names, ["bank1", "bank3", "bank4"], ["bank1", "bank3", "bank4"], names, names]
    for k, res in enumerate(results):
        assert res.contributors == tuple(expect[k])
        np.testing.assert_allclose(res.total, sum(vecs[p][k] for p in expect[k]), atol=1e-5)
    # the late vector of aggregation 1 arrived but nobody revealed bank2's self-mask for that round
    reveals = [e for e in net[COORD].captured if e.tag == "t.r1.sa.reveal"]
    assert reveals and all("bank2" not in e.body["b"] and "bank2" in e.body["s"] for e in reveals)
    # in aggregation 2 nobody masks with bank2 or reveals anything of it
    assert all("bank2" not in e.body["b"] and "bank2" not in e.body["s"]
               for e in net[COORD].captured if e.tag == "t.r2.sa.reveal")


def test_below_threshold_in_a_session_round_is_an_error():
    names = ["bank1", "bank2", "bank3"]  # t = 3: no dropout tolerated
    vecs = _vectors(names, 2, 3)
    coord = SessionSecureAggregation(dropout_timeout=0.3, key_timeout=0.5)
    with pytest.raises(Exception, match="fewer than the threshold 3"):
        run_session(vecs, coord, {"bank1": DiesAtRound(1, dropout_timeout=0.3)}, recv_timeout=3.0)


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="rounds per session"):
        SessionSecureAggregation(rounds=0)
    with pytest.raises(ConfigError):
        SessionSecureAggregation(rounds=True)


def test_mismatched_rounds_are_refused():
    names = ["bank1", "bank2"]
    vecs = _vectors(names, 1, 3)
    with pytest.raises(Exception, match="same"):
        run_session(vecs, SessionSecureAggregation(rounds=4, dropout_timeout=0.5),
                    {"bank1": SessionSecureAggregation(rounds=5)}, recv_timeout=3.0)


# -- what the coordinator sees ---------------------------------------------------------------------
def test_coordinator_never_receives_an_unmasked_vector_over_many_rounds():
    names = [f"bank{i}" for i in range(1, 6)]
    vecs = _vectors(names, 7, 64, seed=5)
    coord = SessionSecureAggregation(rounds=3, dropout_timeout=0.5, key_timeout=1.0)
    _, net, _ = run_session(vecs, coord, {"bank4": DiesAtRound(4, dropout_timeout=0.5, rounds=3)}, capture=True)
    captured = net[COORD].captured
    assert {e.kind for e in captured} <= {"public-parameter", "ciphertext", "masked", "plaintext-by-design"}
    n_masked = 0
    for env in captured:
        for leaf in _leaves(env.body):
            for n, vs in vecs.items():
                for v in vs:
                    enc = ring64.encode(v, n_summands=5)
                    if isinstance(leaf, bytes):
                        assert enc.tobytes()[:64] not in leaf and v.tobytes()[:64] not in leaf
                        continue
                    if leaf.shape == v.shape:
                        assert not np.array_equal(leaf, enc)
                        assert abs(np.corrcoef(ring64.decode(leaf.astype(np.uint64)), v)[0, 1]) < 0.6
        n_masked += env.kind == "masked"
    assert n_masked == 5 * 7 - 3  # bank4 masked nothing from aggregation 4 on


def test_messages_per_aggregation():
    """Single-round mode: 7 messages per party at the coordinator; session mode: 3 after the setup."""
    names = ["bank1", "bank2", "bank3"]
    vecs = _vectors(names, 6, 4)
    counts = {}
    for label, agg in {"single": SecureAggregation(dropout_timeout=2.0),
                       "session": SessionSecureAggregation(rounds=6, dropout_timeout=2.0)}.items():
        net = InMemoryNetwork([*names, COORD], capture=True)
        roles = {n: (lambda ch, n=n: [agg.submit(ch, COORD, f"t.r{k}", vecs[n][k]) for k in range(6)]) for n in names}
        roles[COORD] = lambda ch: [agg.collect(ch, names, f"t.r{k}", 4) for k in range(6)]
        run_roles(roles, network=net)
        sent = [e["tag"].split(".sa.")[0] for e in net[COORD].ledger.entries]
        received = [e.tag.split(".sa.")[0] for e in net[COORD].captured]
        counts[label] = [sent.count(f"t.r{k}") + received.count(f"t.r{k}") for k in range(6)]
    assert counts["single"] == [7 * 3] * 6
    assert counts["session"] == [7 * 3] + [3 * 3] * 5


# -- authentication and the consistency check --------------------------------------------------------
@pytest.fixture(scope="module")
def pki():
    return _pki(["bank1", "bank2", "bank3", "bank4"])


def _signed(pki, cls=SessionSecureAggregation, **kw):
    keys, certs = pki
    return {n: cls(signing_key_pem=keys[n], peer_certs_pem=certs, parties=list(certs), **kw) for n in certs}


def test_signed_session_runs_the_check_only_in_rounds_with_a_dropout(pki):
    keys, certs = pki
    names = sorted(certs)
    vecs = _vectors(names, 5, 6, seed=7)
    aggs = _signed(pki, dropout_timeout=0.5, rounds=8)
    aggs["bank2"] = DiesAtRound(2, signing_key_pem=keys["bank2"], peer_certs_pem=certs, parties=names,
                                dropout_timeout=0.5, rounds=8)
    coord = SessionSecureAggregation(peer_certs_pem=certs, dropout_timeout=0.5, key_timeout=1.0, rounds=8)
    results, net, _ = run_session(vecs, coord, aggs, capture=True)
    for k, res in enumerate(results):
        alive = names if k < 2 else [p for p in names if p != "bank2"]
        np.testing.assert_allclose(res.total, sum(vecs[p][k] for p in alive), atol=1e-5)
    confirms = sorted({e.tag.split(".sa.")[0] for e in net[COORD].captured if e.tag.endswith(".sa.confirm")})
    assert confirms == ["t.r2"]  # the only aggregation in which a mask key was revealed


def test_tampered_session_key_signature_is_refused(pki):
    keys, certs = pki
    names = sorted(certs)

    class Forger(SessionSecureAggregation):
        def _sign(self, msg):
            return super()._sign(msg + b"x")

    aggs = _signed(pki, dropout_timeout=0.5, rounds=2)
    aggs["bank1"] = Forger(signing_key_pem=keys["bank1"], peer_certs_pem=certs, parties=names, rounds=2)
    with pytest.raises(Exception, match="does not verify"):
        run_session(_vectors(names, 1, 3), SessionSecureAggregation(peer_certs_pem=certs, rounds=2), aggs,
                    recv_timeout=3.0)


# -- a deviating coordinator colluding with one bank ----------------------------------------------------
VICTIM, COLLUDER = "bank1", "bank2"


class Colluder(SessionSecureAggregation):
    def __init__(self, leak, **kw):
        super().__init__(**kw)
        self.leak = leak

    def prepare(self, channel, coordinator, tag):
        super().prepare(channel, coordinator, tag)
        pend = self.__dict__["_pending"].get((channel.me, channel.job, tag))
        if pend is not None:
            self.leak["c_sk"], self.leak["s_sk"] = pend


def _recv_all(ch, senders, tag, timeout=2.0):
    out = {}
    for p in senders:
        try:
            out[p] = ch.recv(p, tag, timeout=timeout)
        except TransportError:
            pass
    return out


def _try_unmask(job, sid, tag, r, names, t, keys, masked, b_sh, s_sh, leak):
    """The coordinator's best effort to strip the victim's masks for round index r."""
    if len(b_sh) < t:
        return f"only {len(b_sh)} shares of the victim's self-mask seed"
    y = masked - mask(shamir.reconstruct_bytes(b_sh, t, 32), _self_info(job, sid, tag, r, VICTIM), len(masked))
    for j in names:
        if j == VICTIM:
            continue
        if j == COLLUDER:
            secret = leak["s_sk"][r].exchange(X25519PublicKey.from_public_bytes(_split_pks(keys[VICTIM]["s_pk"])[r]))
        else:
            if len(s_sh) < t:
                return f"only {len(s_sh)} shares of the victim's mask key"
            sk = X25519PrivateKey.from_private_bytes(shamir.reconstruct_bytes(s_sh, t, 32))
            secret = sk.exchange(X25519PublicKey.from_public_bytes(_split_pks(keys[j]["s_pk"])[r]))
        y = y - mask(secret, _round_pair_info(job, sid, tag, r, VICTIM, j), len(masked))
    return ring64.decode(y, ring64.DEFAULT_FRAC_BITS)


def _session_attack(n: int, schedule: bool):
    """Split view in one round (``schedule=False``), or across rounds (``schedule=True``): in round 0
    everyone but the victim is told it survived (shares of its seed b^0); in the next aggregation
    they are told it dropped in round 0 (asking for shares of its mask key s_sk^0)."""
    names = [f"bank{i}" for i in range(1, n + 1)]
    t = default_threshold(n)
    honest = names[2:]
    h1, h2 = honest[:max(0, t - 2)], honest[max(0, t - 2):]
    vectors = {p: np.full(4, float(i + 1)) * 3.25 for i, p in enumerate(names)}
    leak: dict = {}
    sid = "t.r0"

    def coordinator(ch):
        job = ch.job
        keys = _recv_all(ch, names, f"{sid}.sa.keys")
        for p in names:
            ch.send(p, f"{sid}.sa.keylist", {"threshold": t, "rounds": 4, "keys": keys}, kind="public-parameter")
        shares = _recv_all(ch, names, f"{sid}.sa.shares")
        for p in names:
            ch.send(p, f"{sid}.sa.inbox", {"members": names, "shares": {j: shares[j][p] for j in names if j != p}},
                    kind="ciphertext")
        xs = {p: k + 1 for k, p in enumerate(names)}
        ct = shares[VICTIM][COLLUDER]
        key = _share_key(leak["c_sk"], keys[VICTIM]["c_pk"], job, sid, VICTIM, COLLUDER)
        plain = ChaCha20Poly1305(key).decrypt(ct[:12], ct[12:], context(_PROTO, job, sid, VICTIM, COLLUDER))
        SB = shamir.SHARE_BYTES
        s_sh = {xs[COLLUDER]: plain[0:SB]}          # the colluder's share of s_sk_victim^0
        b_sh = {xs[COLLUDER]: plain[4 * SB:5 * SB]}  # ... and of b_victim^0
        others = [p for p in names if p != VICTIM]
        if schedule:
            masked = _recv_all(ch, names, f"{sid}.sa.masked")
            for p in others:  # round 0, told to everyone but the victim: "the victim survived"
                ch.send(p, f"{sid}.sa.unmask", {"survivors": names, "dropped": [], "round": 0}, kind="control")
            for p, m in _recv_all(ch, others, f"{sid}.sa.reveal").items():
                b_sh[xs[p]] = m["b"][VICTIM]
            # next aggregation: "the victim dropped in round 0" -- but the others are at round 1 now
            tag = "t.r1"
            _recv_all(ch, others, f"{tag}.sa.masked")
            for p in others:
                ch.send(p, f"{tag}.sa.unmask", {"survivors": others, "dropped": [VICTIM], "round": 0}, kind="control")
            for p, m in _recv_all(ch, others, f"{tag}.sa.reveal", timeout=1.0).items():
                s_sh[xs[p]] = m["s"][VICTIM]
            return _try_unmask(job, sid, sid, 0, names, t, keys, masked[VICTIM], b_sh, s_sh, leak)
        masked = _recv_all(ch, names, f"{sid}.sa.masked")
        for p in names:
            if p in h2:
                req = {"survivors": others, "dropped": [VICTIM], "round": 0}
            else:
                req = {"survivors": names, "dropped": [], "round": 0}
            ch.send(p, f"{sid}.sa.unmask", req, kind="control")
        for p, m in _recv_all(ch, names, f"{sid}.sa.reveal").items():
            if VICTIM in m["b"]:
                b_sh[xs[p]] = m["b"][VICTIM]
            if VICTIM in m["s"]:
                s_sh[xs[p]] = m["s"][VICTIM]
        return _try_unmask(job, sid, sid, 0, names, t, keys, masked[VICTIM], b_sh, s_sh, leak)

    def party(p):
        def role(ch):
            agg = Colluder(leak, parties=names, rounds=4) if p == COLLUDER else \
                SessionSecureAggregation(parties=names, rounds=4)
            try:
                agg.submit(ch, COORD, sid, vectors[p])
                agg.submit(ch, COORD, "t.r1", vectors[p])
            except (ProtocolError, TransportError) as e:
                return f"refused: {e}"
            return "ok"
        return role

    roles = {p: party(p) for p in names}
    roles[COORD] = coordinator
    out = run_roles(roles, capture=True, recv_timeout=4.0)
    got = out[COORD]
    return out, isinstance(got, np.ndarray) and np.allclose(got, vectors[VICTIM], atol=1e-6)


@pytest.mark.parametrize("n", [3, 4, 5])
def test_split_view_in_a_session_round_recovers_nothing(n):
    out, recovered = _session_attack(n, schedule=False)
    assert not recovered
    assert isinstance(out[COORD], str) and "only" in out[COORD]


@pytest.mark.parametrize("n", [3, 4, 5])
def test_scheduling_rounds_differently_for_the_victim_recovers_nothing(n):
    out, recovered = _session_attack(n, schedule=True)
    assert not recovered
    # the honest parties revealed b^0 of the victim in round 0, so for the victim's round they are
    # at round 1 and refuse the coordinator's "round 0" request: no share of s_sk^0 leaves them
    assert isinstance(out[COORD], str)
    for p in [f"bank{i}" for i in range(3, n + 1)]:
        assert out[p].startswith("refused")
        if n > 3:  # (at n = 3 the shrunken survivor list is below the threshold first)
            assert "this party is at round 1" in out[p]


def test_ledger_kinds_in_session_rounds():
    names = ["bank1", "bank2", "bank3"]
    _, net, _ = run_session(_vectors(names, 3, 5), SessionSecureAggregation(rounds=3, dropout_timeout=2.0))
    kinds = {(e["tag"].split(".sa.")[0], e["tag"].rsplit(".sa.", 1)[1]): e["kind"] for e in net["bank1"].ledger.entries}
    assert kinds == {("t.r0", "keys"): "public-parameter", ("t.r0", "shares"): "ciphertext",
                     **{(f"t.r{k}", "masked"): "masked" for k in range(3)},
                     **{(f"t.r{k}", "reveal"): "plaintext-by-design" for k in range(3)}}
    coord = {e["tag"].rsplit(".sa.", 1)[1]: e["kind"] for e in net[COORD].ledger.entries}
    assert coord == {"keylist": "public-parameter", "inbox": "ciphertext", "unmask": "control"}


def test_a_tag_used_twice_in_a_session_is_refused():
    names = ["bank1", "bank2"]
    agg = SessionSecureAggregation(rounds=4, dropout_timeout=1.0)
    roles = {p: (lambda ch: [agg.submit(ch, COORD, "same", np.ones(2)) for _ in range(2)]) for p in names}
    roles[COORD] = lambda ch: [agg.collect(ch, names, "same", 2) for _ in range(2)]
    with pytest.raises(Exception, match="already used"):
        run_roles(roles, recv_timeout=3.0)


@settings(max_examples=6, deadline=None)
@given(n=st.integers(4, 5), per_session=st.integers(2, 5), data=st.data())
def test_random_dropout_schedules_keep_every_sum_right(n, per_session, data):
    """Up to n - t banks die at random aggregations; every sum is over exactly the banks still in."""
    names = [f"bank{i}" for i in range(n)]
    aggs = 6
    t = default_threshold(n)
    dying = data.draw(st.lists(st.sampled_from(names), max_size=n - t, unique=True))
    die_at = {p: data.draw(st.integers(0, aggs - 1)) for p in dying}
    vecs = _vectors(names, aggs, 5, seed=n * 100 + per_session)
    kw = dict(rounds=per_session, dropout_timeout=0.3, key_timeout=0.4)
    results, _, out = run_session(vecs, SessionSecureAggregation(**kw),
                                  {p: DiesAtRound(k, **kw) for p, k in die_at.items()}, recv_timeout=10.0)
    for k, res in enumerate(results):
        alive = [p for p in names if die_at.get(p, aggs) > k]
        assert res.contributors == tuple(alive)
        np.testing.assert_allclose(res.total, sum(vecs[p][k] for p in alive), atol=1e-5)
    assert all(out[p] == f"died at {k}" for p, k in die_at.items())
