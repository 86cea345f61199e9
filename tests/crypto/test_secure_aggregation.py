"""Secure aggregation: correct sums, dropout recovery, and a coordinator that sees only masked data."""
from __future__ import annotations

import datetime
import time

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrisk.algorithms.horizontal.aggregation import Aggregation
from fedrisk.crypto import prg_mask, ring64
from fedrisk.crypto.secure_aggregation import SecureAggregation, default_threshold
from fedrisk.errors import ConfigError, CryptoError, ProtocolError
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork

COORD = "coordinator"


class _Died(Exception):
    """Raised inside a party to simulate a crash right after the share step."""


class DiesAfterShares(SecureAggregation):
    def _send_masked(self, channel, coordinator, tag, y):
        raise _Died


class LateMasked(SecureAggregation):
    """Sends its masked vector only after the coordinator's dropout timeout has passed."""

    def __init__(self, delay: float, **kw):
        super().__init__(**kw)
        self.delay = delay

    def _send_masked(self, channel, coordinator, tag, y):
        time.sleep(self.delay)
        super()._send_masked(channel, coordinator, tag, y)


def aggregate(vectors: dict[str, np.ndarray], tag: str = "t.r1", coord_agg: Aggregation | None = None,
              party_aggs: dict[str, Aggregation] | None = None, capture: bool = False):
    """Run one aggregation over an in-memory network; return (coordinator result, network, party results)."""
    names = sorted(vectors)
    coord_agg = coord_agg or SecureAggregation(dropout_timeout=2.0)
    party_aggs = party_aggs or {}
    length = len(next(iter(vectors.values())))
    net = InMemoryNetwork([*names, COORD], capture=capture, recv_timeout=20.0)

    def party(name):
        def role(ch):
            try:
                party_aggs.get(name, coord_agg).submit(ch, COORD, tag, vectors[name])
            except _Died:
                return "died"
            return "ok"
        return role

    roles = {n: party(n) for n in names}
    roles[COORD] = lambda ch: coord_agg.collect(ch, names, tag, length)
    out = run_roles(roles, network=net)
    return out[COORD], net, out


def _leaves(obj):
    """Every array / bytes leaf in a decoded payload."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _leaves(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _leaves(v)
    elif isinstance(obj, (np.ndarray, bytes)):
        yield obj


# -- correctness ----------------------------------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(n_parties=st.integers(2, 4), data=st.data())
def test_masked_sum_equals_plain_sum(n_parties, data):
    length = data.draw(st.integers(1, 40))
    floats = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
    vecs = {f"bank{i}": np.array(data.draw(st.lists(floats, min_size=length, max_size=length)))
            for i in range(n_parties)}
    res, _, _ = aggregate(vecs)
    expected = sum(vecs.values())
    assert res.contributors == tuple(sorted(vecs))
    assert np.max(np.abs(res.total - expected)) <= n_parties * 2.0 ** -24


def test_large_vector_and_default_threshold():
    rng = np.random.default_rng(0)
    vecs = {f"b{i}": rng.normal(size=1000) * 100 for i in range(3)}
    res, _, _ = aggregate(vecs)
    np.testing.assert_allclose(res.total, sum(vecs.values()), atol=3 * 2.0 ** -24)
    assert default_threshold(3) == 3 and default_threshold(4) == 3 and default_threshold(2) == 2


def test_one_bank_dies_after_share_step():
    rng = np.random.default_rng(1)
    vecs = {f"bank{i}": rng.normal(size=50) for i in range(1, 5)}
    aggs = {"bank4": DiesAfterShares(dropout_timeout=0.5)}
    res, net, out = aggregate(vecs, coord_agg=SecureAggregation(dropout_timeout=0.5), party_aggs=aggs, capture=True)
    assert out["bank4"] == "died"
    assert res.contributors == ("bank1", "bank2", "bank3")
    expected = vecs["bank1"] + vecs["bank2"] + vecs["bank3"]
    np.testing.assert_allclose(res.total, expected, atol=4 * 2.0 ** -24)
    # the coordinator asked for bank4's mask key shares and never for its self-mask seed shares
    reveals = [e.body for e in net[COORD].captured if e.tag.endswith(".sa.reveal")]
    assert len(reveals) == 3
    for r in reveals:
        assert set(r["s"]) == {"bank4"}
        assert set(r["b"]) == {"bank1", "bank2", "bank3"}


def test_late_party_is_excluded_and_never_unmasked():
    rng = np.random.default_rng(2)
    vecs = {f"bank{i}": rng.normal(size=20) for i in range(1, 5)}
    aggs = {"bank2": LateMasked(delay=0.8, dropout_timeout=0.3)}
    res, net, out = aggregate(vecs, coord_agg=SecureAggregation(dropout_timeout=0.3), party_aggs=aggs, capture=True)
    assert res.contributors == ("bank1", "bank3", "bank4")
    np.testing.assert_allclose(res.total, vecs["bank1"] + vecs["bank3"] + vecs["bank4"], atol=4 * 2.0 ** -24)
    reveals = [e for e in net[COORD].captured if e.tag.endswith(".sa.reveal")]
    assert sorted(e.sender for e in reveals) == ["bank1", "bank3", "bank4"]
    assert all("bank2" not in e.body["b"] for e in reveals)


def test_below_threshold_survivors_is_an_error():
    rng = np.random.default_rng(3)
    vecs = {f"bank{i}": rng.normal(size=10) for i in range(1, 4)}  # threshold 2
    aggs = {"bank1": DiesAfterShares(), "bank2": DiesAfterShares()}
    with pytest.raises(ProtocolError, match="threshold"):
        aggregate(vecs, coord_agg=SecureAggregation(dropout_timeout=0.3), party_aggs=aggs, capture=True)


def test_explicit_threshold_mismatch_refused():
    vecs = {f"bank{i}": np.ones(3) for i in range(1, 4)}
    with pytest.raises(ProtocolError, match="threshold"):
        aggregate(vecs, coord_agg=SecureAggregation(threshold=2, dropout_timeout=0.5),
                  party_aggs={"bank1": SecureAggregation(threshold=3)})


def test_single_party_refused():
    with pytest.raises(ConfigError, match="at least 2"):
        aggregate({"bank1": np.ones(3)})


# -- fixed point ----------------------------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1e9, 1e9, allow_nan=False), min_size=1, max_size=30), st.integers(8, 32))
def test_fixed_point_round_trip(values, frac_bits):
    v = np.array(values)
    if np.max(np.abs(v)) > ring64.max_abs_value(frac_bits):
        with pytest.raises(CryptoError):
            ring64.encode(v, frac_bits)
        return
    back = ring64.decode(ring64.encode(v, frac_bits), frac_bits)
    assert np.max(np.abs(back - v)) <= 2.0 ** -(frac_bits + 1) + 1e-12 * np.max(np.abs(v))


def test_overflow_refused_on_the_party_side_before_sending():
    # 2^(63-24) / 3 parties ~ 1.8e11: a value of 1e12 could wrap the ring
    vecs = {"bank1": np.array([1e12, 0.0]), "bank2": np.zeros(2), "bank3": np.zeros(2)}
    with pytest.raises(CryptoError, match="too large"):
        aggregate(vecs, capture=True)
    with pytest.raises(CryptoError, match="non-finite"):
        ring64.encode(np.array([np.nan]))


def test_prg_mask_is_deterministic_and_context_bound():
    a = prg_mask.mask(b"s" * 32, prg_mask.context("pair", "job", "t.r1", "a", "b"), 64)
    assert a.dtype == np.uint64 and a.shape == (64,)
    np.testing.assert_array_equal(a, prg_mask.mask(b"s" * 32, prg_mask.context("pair", "job", "t.r1", "a", "b"), 64))
    assert not np.array_equal(a, prg_mask.mask(b"s" * 32, prg_mask.context("pair", "job", "t.r2", "a", "b"), 64))
    assert prg_mask.context("ab", "c") != prg_mask.context("a", "bc")


# -- privacy ----------------------------------------------------------------------------------------
def test_masked_vector_is_independent_of_the_update():
    """Over many rounds, each party's masked vector (read as the coordinator would) is uncorrelated with its update."""
    rng = np.random.default_rng(4)
    names = ["bank1", "bank2", "bank3"]
    agg = SecureAggregation(dropout_timeout=5.0)
    net = InMemoryNetwork([*names, COORD], capture=True, recv_timeout=20.0)
    truth: dict[tuple[str, str], np.ndarray] = {}
    for r in range(25):
        tag = f"t.r{r}"
        # updates with a strong common structure, the worst case for leakage
        vecs = {n: np.linspace(-1, 1, 400) * (1 + r) + rng.normal(size=400) for n in names}
        truth.update({(n, tag): v for n, v in vecs.items()})
        roles = {n: (lambda ch, n=n, tag=tag, vecs=vecs: agg.submit(ch, COORD, tag, vecs[n])) for n in names}
        roles[COORD] = lambda ch, tag=tag: agg.collect(ch, names, tag, 400)
        run_roles(roles, network=net)
    xs, ys = [], []
    for env in net[COORD].captured:
        if env.kind == "masked":
            assert env.tag.endswith(".sa.masked")
            x = truth[(env.sender, env.tag[: -len(".sa.masked")])]
            y = ring64.decode(env.body)  # what decoding a single masked vector would give
            assert abs(np.corrcoef(x, y)[0, 1]) < 0.25
            xs.append(x)
            ys.append(y)
    assert len(xs) == 75
    pooled = np.corrcoef(np.concatenate(xs), np.concatenate(ys))[0, 1]
    assert abs(pooled) < 0.03  # 30,000 samples: null standard error ~0.006
    # the same test would see the unmasked encodings at once
    assert np.corrcoef(xs[0], ring64.decode(ring64.encode(xs[0])))[0, 1] > 0.999


def test_coordinator_never_receives_an_unmasked_update():
    rng = np.random.default_rng(5)
    vecs = {f"bank{i}": rng.normal(size=64) for i in range(1, 5)}
    aggs = {"bank3": DiesAfterShares(dropout_timeout=0.5)}
    _, net, _ = aggregate(vecs, coord_agg=SecureAggregation(dropout_timeout=0.5), party_aggs=aggs, capture=True)
    captured = net[COORD].captured
    assert {e.kind for e in captured} <= {"public-parameter", "ciphertext", "masked", "plaintext-by-design"}
    encoded = {n: ring64.encode(v, n_summands=4) for n, v in vecs.items()}
    for env in captured:
        for leaf in _leaves(env.body):
            for n, v in vecs.items():
                if isinstance(leaf, bytes):
                    assert v.tobytes() not in leaf and encoded[n].tobytes()[:64] not in leaf
                    continue
                assert leaf.shape != v.shape or not np.allclose(leaf.astype(np.float64), v)
                if leaf.shape == v.shape:
                    assert not np.array_equal(leaf, encoded[n])
                    assert abs(np.corrcoef(ring64.decode(leaf.astype(np.uint64)), v)[0, 1]) < 0.6


def test_ledger_kinds():
    vecs = {f"bank{i}": np.ones(5) * i for i in range(1, 4)}
    _, net, _ = aggregate(vecs)
    kinds = {e["tag"].rsplit(".sa.", 1)[1]: e["kind"] for e in net["bank1"].ledger.entries}
    assert kinds == {"keys": "public-parameter", "shares": "ciphertext", "masked": "masked",
                     "reveal": "plaintext-by-design"}
    coord = {e["tag"].rsplit(".sa.", 1)[1]: e["kind"] for e in net[COORD].ledger.entries}
    assert coord == {"keylist": "public-parameter", "inbox": "ciphertext", "unmask": "control"}


# -- authentication -------------------------------------------------------------------------------
def _pki(names):
    keys, certs = {}, {}
    now = datetime.datetime.now(datetime.timezone.utc)
    for n in names:
        k = ec.generate_private_key(ec.SECP256R1())
        subj = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, n)])
        cert = (x509.CertificateBuilder().subject_name(subj).issuer_name(subj).public_key(k.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now)
                .not_valid_after(now + datetime.timedelta(days=1)).sign(k, hashes.SHA256()))
        keys[n] = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
        certs[n] = cert.public_bytes(serialization.Encoding.PEM)
    return keys, certs


@pytest.fixture(scope="module")
def pki():
    return _pki(["bank1", "bank2", "bank3", "bank4"])


def test_signed_keys_and_consistency_check(pki):
    keys, certs = pki
    rng = np.random.default_rng(6)
    vecs = {n: rng.normal(size=30) for n in certs}
    aggs = {n: SecureAggregation(dropout_timeout=0.5, signing_key_pem=keys[n], peer_certs_pem=certs) for n in certs}
    aggs["bank4"] = DiesAfterShares(dropout_timeout=0.5, signing_key_pem=keys["bank4"], peer_certs_pem=certs)
    coord = SecureAggregation(dropout_timeout=0.5, peer_certs_pem=certs)
    res, net, _ = aggregate(vecs, coord_agg=coord, party_aggs=aggs, capture=True)
    np.testing.assert_allclose(res.total, vecs["bank1"] + vecs["bank2"] + vecs["bank3"], atol=4 * 2.0 ** -24)
    assert sum(e.tag.endswith(".sa.confirm") for e in net[COORD].captured) == 3


def test_bad_signature_refused_by_parties(pki):
    keys, certs = pki
    names = ["bank1", "bank2", "bank3"]
    vecs = {n: np.ones(4) for n in names}
    aggs = {n: SecureAggregation(dropout_timeout=0.5, signing_key_pem=keys[n], peer_certs_pem=certs) for n in names}
    # bank2 signs with a key that does not match its certificate (an impostor's keys)
    aggs["bank2"] = SecureAggregation(dropout_timeout=0.5, signing_key_pem=keys["bank4"], peer_certs_pem=certs)
    coord = SecureAggregation(dropout_timeout=0.5)  # a relay that does not check: the parties must
    with pytest.raises(ProtocolError, match="'bank2'.*does not verify"):
        aggregate(vecs, coord_agg=coord, party_aggs=aggs)


def test_unsigned_keys_refused_when_certs_are_configured(pki):
    _, certs = pki
    names = ["bank1", "bank2", "bank3"]
    vecs = {n: np.ones(4) for n in names}
    with pytest.raises(ProtocolError, match="no signature"):
        aggregate(vecs, coord_agg=SecureAggregation(dropout_timeout=0.5, peer_certs_pem=certs),
                  party_aggs={n: SecureAggregation() for n in names})


def test_party_refuses_to_reveal_both_secrets_of_one_party():
    """A malicious coordinator that calls a party both dropped and surviving gets no shares."""
    names = ["bank1", "bank2", "bank3"]
    agg = SecureAggregation()
    tag = "t.r1"

    def evil(ch):
        keys = {p: ch.recv(p, f"{tag}.sa.keys") for p in names}
        for p in names:
            ch.send(p, f"{tag}.sa.keylist", {"threshold": 3, "keys": keys}, kind="public-parameter")
        shares = {p: ch.recv(p, f"{tag}.sa.shares") for p in names}
        for p in names:
            ch.send(p, f"{tag}.sa.inbox", {"members": names, "shares": {j: shares[j][p] for j in names if j != p}},
                    kind="ciphertext")
        for p in names:
            ch.recv(p, f"{tag}.sa.masked")
        for p in names:  # bank1 "dropped" (reveal its mask key) and "survived" (reveal its self-mask seed)
            ch.send(p, f"{tag}.sa.unmask", {"survivors": names, "dropped": ["bank1"]}, kind="control")
        return [e for e in ch.captured if e.tag.endswith(".sa.reveal")]

    roles = {n: (lambda ch, n=n: agg.submit(ch, COORD, tag, np.ones(3))) for n in names}
    roles[COORD] = evil
    with pytest.raises(ProtocolError, match="inconsistent"):
        run_roles(roles, capture=True)


def test_prepare_advertises_keys_before_submit():
    rng = np.random.default_rng(7)
    names = ["bank1", "bank2", "bank3"]
    vecs = {n: rng.normal(size=8) for n in names}
    agg = SecureAggregation(dropout_timeout=2.0)

    def bank(ch, n):
        agg.prepare(ch, COORD, "t.r1")
        agg.prepare(ch, COORD, "t.r1")  # idempotent
        time.sleep(0.05)  # "local training"
        agg.submit(ch, COORD, "t.r1", vecs[n])

    net = InMemoryNetwork([*names, COORD], capture=True)
    roles = {n: (lambda ch, n=n: bank(ch, n)) for n in names}
    roles[COORD] = lambda ch: agg.collect(ch, names, "t.r1", 8)
    res = run_roles(roles, network=net)[COORD]
    np.testing.assert_allclose(res.total, sum(vecs.values()), atol=3 * 2.0 ** -24)
    assert sum(e.tag == "t.r1.sa.keys" for e in net[COORD].captured) == 3
    assert agg.__dict__["_pending"] == {}


def test_coordinator_refuses_forged_keys_and_tells_the_parties(pki):
    keys, certs = pki
    names = ["bank1", "bank2", "bank3"]
    aggs = {n: SecureAggregation(signing_key_pem=keys[n]) for n in names}
    aggs["bank3"] = SecureAggregation(signing_key_pem=keys["bank1"])  # signs as someone else
    net = InMemoryNetwork([*names, COORD])
    coord = SecureAggregation(peer_certs_pem=certs)
    errors = {}

    def bank(ch, n):
        try:
            aggs[n].submit(ch, COORD, "t.r1", np.ones(2))
        except ProtocolError as e:
            errors[n] = str(e)

    roles = {n: (lambda ch, n=n: bank(ch, n)) for n in names}
    roles[COORD] = lambda ch: coord.collect(ch, names, "t.r1", 2)
    with pytest.raises(ProtocolError, match="'bank3'"):
        run_roles(roles, network=net)
    assert set(errors) == set(names) and all("aborted" in e and "bank3" in e for e in errors.values())


def test_coordinator_cannot_shrink_the_key_list_to_a_victim_and_a_colluder():
    """With 4 job parties, a key list of {victim, colluder} and t=2 would strip the victim's masks."""
    names = ["bank1", "bank2", "bank3", "bank4"]
    tag = "t.r1"

    def evil(ch):
        keys = {p: ch.recv(p, f"{tag}.sa.keys") for p in names}
        small = {p: keys[p] for p in ("bank1", "bank2")}
        ch.send("bank1", f"{tag}.sa.keylist", {"threshold": 2, "keys": small}, kind="public-parameter")
        return "sent"

    def victim(ch):
        SecureAggregation(parties=names).submit(ch, COORD, tag, np.ones(3))

    roles = {n: (lambda ch, n=n: SecureAggregation(parties=names).prepare(ch, COORD, tag)) for n in names[1:]}
    roles["bank1"] = victim
    roles[COORD] = evil
    with pytest.raises(ProtocolError, match="below the safe threshold 3 for 4 parties"):
        run_roles(roles, capture=True)


def test_key_list_naming_a_stranger_is_refused():
    names = ["bank1", "bank2", "bank3"]
    tag = "t.r1"

    def evil(ch):
        keys = {p: ch.recv(p, f"{tag}.sa.keys") for p in names}
        keys["mallory"] = keys.pop("bank3")
        ch.send("bank1", f"{tag}.sa.keylist", {"threshold": 2, "keys": keys}, kind="public-parameter")

    roles = {n: (lambda ch, n=n: SecureAggregation(parties=names).prepare(ch, COORD, tag)) for n in names[1:]}
    roles["bank1"] = lambda ch: SecureAggregation(parties=names).submit(ch, COORD, tag, np.ones(3))
    roles[COORD] = evil
    with pytest.raises(ProtocolError, match="outside the job"):
        run_roles(roles, capture=True)


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_values_at_the_ring_limit_do_not_wrap_and_beyond_it_raise(n):
    limit = ring64.max_abs_value(24, n)
    enc = ring64.encode(np.array([limit, -limit]), 24, n)
    total = np.zeros(2, np.uint64)
    for _ in range(n):
        total = total + enc
    np.testing.assert_allclose(ring64.decode(total, 24), [n * limit, -n * limit], rtol=1e-12)
    with pytest.raises(CryptoError, match="too large"):
        ring64.encode(np.array([limit * (1 + 1e-9)]), 24, n)


def test_a_bank_that_died_does_not_stall_later_rounds():
    """Round 1: bank3 dies after the share step. Round 2: it sends nothing; the coordinator waits only
    the short dropout timeout for it, not the long key timeout. Three banks tolerate a dropout only
    with the threshold 2 chosen explicitly (the safe default for three is 3)."""
    names = ["bank1", "bank2", "bank3"]
    coord = SecureAggregation(threshold=2, dropout_timeout=1.0, key_timeout=60.0)
    vec = {n: np.full(4, i + 1.0) for i, n in enumerate(names)}

    def bank(name):
        def role(ch):
            agg = DiesAfterShares(threshold=2) if name == "bank3" else SecureAggregation(threshold=2)
            try:
                agg.submit(ch, COORD, "t.r1", vec[name])
            except _Died:
                return "died"
            agg.submit(ch, COORD, "t.r2", vec[name])
            return "ok"
        return role

    def coordinator(ch):
        first = coord.collect(ch, names, "t.r1", 4)
        t0 = time.monotonic()
        second = coord.collect(ch, names, "t.r2", 4)
        return first, second, time.monotonic() - t0

    roles = {n: bank(n) for n in names}
    roles[COORD] = coordinator
    out = run_roles(roles, recv_timeout=60.0)
    first, second, seconds = out[COORD]
    np.testing.assert_allclose(first.total, vec["bank1"] + vec["bank2"], atol=1e-5)
    np.testing.assert_allclose(second.total, vec["bank1"] + vec["bank2"], atol=1e-5)
    assert second.contributors == ("bank1", "bank2") and seconds < 10
