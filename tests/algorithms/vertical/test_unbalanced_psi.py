"""Unbalanced PSI over the in-memory channel: same result as ECDH, what each party receives, the
cache across jobs, key rotation, and the one-line errors of a missing/stale cache or a bad key file."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fedrisk.algorithms.vertical import ub_store as st
from fedrisk.algorithms.vertical.alignment import align_parties
from fedrisk.algorithms.vertical.unbalanced_psi import UbSettings, ub_align
from fedrisk.crypto import oprf, psi
from fedrisk.errors import ConfigError, DataError, FedriskError
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork
from fedrisk.transport.codec import encode

SALT = "fedrisk:job-7:train"


@pytest.fixture
def sets():
    rng = np.random.default_rng(3)
    bureau = rng.choice(10**9, 6000, replace=False) + 10**9
    lender = np.concatenate([rng.choice(bureau, 400, replace=False), rng.choice(10**8, 200, replace=False)])
    rng.shuffle(lender)
    return lender, bureau


def _encoded(tmp_path, bureau, chunks=3):
    store = tmp_path / "bureau-store"
    st.create_key(store, "bureau")
    st.encode_ids(np.array_split(bureau, chunks), st.load_key(store, "bureau"), store, "bureau", "ids")
    return store


def _job(tmp_path, lender, bureau, *, fetch=True, capture=True, salt=SALT):
    net = InMemoryNetwork(["lender", "bureau"], capture=capture, recv_timeout=30.0, tag_prefixes=("psi.",))
    res = run_roles({
        "lender": lambda ch: ub_align(ch, "bureau", lender, key_holder=False, salt=salt,
                                      store_dir=tmp_path / "lender-store", fetch=fetch),
        "bureau": lambda ch: ub_align(ch, "lender", bureau, key_holder=True, salt=salt,
                                      store_dir=tmp_path / "bureau-store"),
    }, network=net)
    return res["lender"], res["bureau"], net


def _frames(env):
    return encode(env.job, env.sender, env.to, env.tag, env.kind, env.body)


def test_oprf_blind_evaluate_finalize_equals_direct_evaluation():
    key = oprf.new_key()
    ids = [f"C{i:07d}" for i in range(1500)] + ["é-ü", " x "]
    norm = psi.normalize_ids(ids)
    inv, blinded = oprf.blind(norm, "ctx")
    got = oprf.finalize(norm, inv, oprf.blind_evaluate(blinded, key))
    assert np.array_equal(got, oprf.evaluate(norm, key, "ctx"))
    assert not np.array_equal(oprf.evaluate(norm[:10], oprf.new_key(), "ctx"), got[:10])  # another key, other values
    assert not np.array_equal(oprf.evaluate(norm[:10], key, "other"), got[:10])  # another epoch context
    inv2, blinded2 = oprf.blind(norm[:10], "ctx")
    assert not np.array_equal(blinded2, blinded[:10])  # fresh randomness each time


def test_same_intersection_and_order_as_ecdh(tmp_path, sets):
    lender, bureau = sets
    _encoded(tmp_path, bureau)
    ub = UbSettings("bureau", None, True)

    def run(protocol):
        def role(me, ids):
            def go(ch):
                s = None if protocol == "ecdh" else UbSettings("bureau", tmp_path / f"{me}-store", True)
                return align_parties(ch, "lender", ["bureau"], ids, salt=SALT, protocol=protocol, unbalanced=s)
            return go
        return run_roles({"lender": role("lender", lender), "bureau": role("bureau", bureau)})

    assert ub.fetch
    e, u = run("ecdh"), run("unbalanced")
    for me in ("lender", "bureau"):
        assert np.array_equal(e[me].indices, u[me].indices) and u[me].protocol == "unbalanced"
    assert u["lender"].size == len(set(lender.tolist()) & set(bureau.tolist())) == 400
    assert lender[u["lender"].indices].tolist() == bureau[u["bureau"].indices].tolist()
    assert u["lender"].peer_sizes == {"bureau": len(bureau)} and u["bureau"].peer_sizes == {"lender": len(lender)}


def test_what_each_party_receives(tmp_path, sets):
    lender, bureau = sets
    _encoded(tmp_path, bureau)
    rl, rb, net = _job(tmp_path, lender, bureau)
    raw = {str(v).encode() for v in np.concatenate([lender, bureau])}
    raw |= {int(v).to_bytes(8, o) for v in np.concatenate([lender, bureau]) for o in ("little", "big")}
    for party in ("lender", "bureau"):
        blob = b"".join(_frames(e) for e in net[party].captured)
        assert not [r for r in raw | {SALT.encode()} if r in blob], f"{party} received raw ids"
    got_b = net["bureau"].captured
    # the bureau receives the hello, which set the lender holds (none: its first job), one blinded element
    # per lender id, and the match positions: nothing else
    assert {e.tag.split(".")[2] for e in got_b} == {"hello", "have", "blinded", "matches"}
    assert next(e.body for e in got_b if e.tag.endswith(".have")) == {"have": None}
    blinded = np.concatenate([e.body for e in got_b if ".blinded." in e.tag])
    assert blinded.shape == (len(lender), 32)
    h2g = psi.hash_to_group(psi.normalize_ids(lender), st.context(1, st.load_key(tmp_path / "bureau-store", "bureau").fingerprint))
    assert not (set(map(bytes, blinded)) & set(map(bytes, h2g)))  # not the unblinded hashes
    matches = next(e.body for e in got_b if e.tag.endswith(".matches"))
    assert matches.dtype == np.int64 and len(matches) == rb.size == 400 and np.all(np.diff(matches) > 0)
    assert {e.kind for e in got_b} == {"public-parameter", "masked", "plaintext-by-design"}
    # the lender receives the encoded set once (first job) and one evaluated element per id
    got_l = net["lender"].captured
    assert {e.kind for e in got_l} <= {"public-parameter", "masked", "control"}
    cache = np.concatenate([e.body for e in got_l if ".cache." in e.tag and not e.tag.endswith("head")])
    assert cache.shape == (len(bureau), oprf.OUTPUT_BYTES)
    # every message is in the ledgers, with psi tags
    for party in ("lender", "bureau"):
        entries = net[party].ledger.entries
        assert entries and all(e["tag"].startswith("psi.ub.") for e in entries)


def test_second_job_reuses_the_cache_and_costs_the_small_side(tmp_path, sets):
    lender, bureau = sets
    _encoded(tmp_path, bureau)
    first = _job(tmp_path, lender, bureau)
    second = _job(tmp_path, lender, bureau)
    assert np.array_equal(first[0].indices, second[0].indices) and np.array_equal(first[1].indices, second[1].indices)
    net = second[2]
    assert not [e for e in net["lender"].captured if ".cache." in e.tag]
    sent = sum(e["bytes"] for e in net["bureau"].ledger.entries)
    assert sent < 40 * len(lender) + 4096  # 32 bytes per lender id plus small messages, nothing per bureau id


def test_rotation_makes_the_cache_stale(tmp_path, sets):
    lender, bureau = sets
    store = _encoded(tmp_path, bureau)
    _job(tmp_path, lender, bureau)
    old = st.find_cache(tmp_path / "lender-store", "bureau")
    new = st.rotate_key(store, "bureau")
    assert new.epoch == 2 and not (store / "epoch-1").exists()
    with pytest.raises(ConfigError, match="no encoded set for key epoch 2") as ei:  # not yet re-encoded
        _job(tmp_path, lender, bureau)
    assert "fedrisk psi encode" in str(ei.value) and "\n" not in str(ei.value)
    st.encode_ids([bureau], new, store, "bureau", "ids")
    with pytest.raises(ConfigError, match=r"stale \(has epoch 1, 'bureau' is at key epoch 2\).*fetch_encoded = true") as ei:
        _job(tmp_path, lender, bureau, fetch=False)
    assert "\n" not in str(ei.value)
    rl, rb, net = _job(tmp_path, lender, bureau)
    assert rl.size == 400 and [e for e in net["lender"].captured if ".cache." in e.tag]
    cur = st.find_cache(tmp_path / "lender-store", "bureau")
    assert cur[1]["epoch"] == 2 and not old[0].exists()


def test_missing_cache_without_fetch_is_one_line(tmp_path, sets):
    lender, bureau = sets
    _encoded(tmp_path, bureau)
    with pytest.raises(ConfigError, match=r"stale \(has none.*fetch_encoded = true") as ei:
        _job(tmp_path, lender, bureau, fetch=False)
    assert "\n" not in str(ei.value)
    # the fetch it asks for: 6,000 bureau ids x 12 bytes, said as 0.1 MB (it said "0 MB" below half a MB)
    assert "(0.1 MB over the job's channel)" in str(ei.value), str(ei.value)


def test_a_corrupt_cache_is_fetched_again_or_refused_in_one_line(tmp_path, sets, caplog):
    lender, bureau = sets
    _encoded(tmp_path, bureau)
    first = _job(tmp_path, lender, bureau)
    path, _ = st.find_cache(tmp_path / "lender-store", "bureau")
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(ConfigError, match=r"is damaged \(has epoch 1, 'bureau' is at key epoch 1\).*fetch_encoded = true") as ei:
        _job(tmp_path, lender, bureau, fetch=False)
    assert "\n" not in str(ei.value)
    warned = [r.getMessage() for r in caplog.records if "is corrupt" in r.getMessage()]
    assert warned and not any("fetched again" in w for w in warned)  # the log must not contradict the error
    rl, rb, net = _job(tmp_path, lender, bureau)  # fetched again, not a dead end
    assert [e for e in net["lender"].captured if ".cache." in e.tag]
    assert np.array_equal(rl.indices, first[0].indices) and np.array_equal(rb.indices, first[1].indices)


@pytest.mark.parametrize("have", ["x", {"have": None, "extra": 1}, {}, None])
def test_a_malformed_have_is_one_line_at_the_bureau(tmp_path, sets, have):
    from fedrisk.algorithms.vertical import unbalanced_psi as ub
    from fedrisk.errors import ProtocolError

    lender, bureau = sets
    _encoded(tmp_path, bureau)

    def crafted_lender(ch):
        ch.recv("bureau", "psi.ub.hello")
        ch.send("bureau", "psi.ub.hello", {"version": ub._VERSION, "role": "client", "count": 3, "batch": 512,
                                            "salt_check": ub.pp._salt_check(SALT), "fetch": True},
                kind="public-parameter")
        ch.send("bureau", "psi.ub.have", have, kind="public-parameter")

    net = InMemoryNetwork(["lender", "bureau"], recv_timeout=10.0, tag_prefixes=("psi.",))
    with pytest.raises(ProtocolError, match="have from 'lender' is malformed") as ei:
        run_roles({"bureau": lambda ch: ub_align(ch, "lender", bureau, key_holder=True, salt=SALT,
                                                 store_dir=tmp_path / "bureau-store"),
                   "lender": crafted_lender}, network=net)
    assert "\n" not in str(ei.value)


def _reads_of(monkeypatch, folder):
    """Record every whole-file read (``Path.read_bytes``: how set files are read) of a file under ``folder``."""
    import pathlib

    seen, real = [], pathlib.Path.read_bytes

    def spy(self):
        data = real(self)
        if folder in self.resolve().parents:
            seen.append((self.name, len(data)))
        return data

    monkeypatch.setattr(pathlib.Path, "read_bytes", spy)
    return seen


def test_a_stale_cache_is_not_read_past_its_header(tmp_path, sets, monkeypatch):
    """The lender reads its whole cache only when the header names the set the bureau announces."""
    lender, bureau = sets
    store = _encoded(tmp_path, bureau)
    _job(tmp_path, lender, bureau)
    reads = _reads_of(monkeypatch, (tmp_path / "lender-store").resolve())
    _job(tmp_path, lender, bureau)  # current cache: read once, verified, used
    assert [name for name, _ in reads] == [st.find_cache(tmp_path / "lender-store", "bureau")[0].name]
    assert reads[0][1] > 12 * len(bureau)
    reads.clear()
    st.encode_ids([bureau], st.rotate_key(store, "bureau"), store, "bureau", "ids")
    rl, _, net = _job(tmp_path, lender, bureau)  # stale: fetched without reading the old copy
    assert reads == [] and [e for e in net["lender"].captured if ".cache." in e.tag] and rl.size == 400
    st.encode_ids([bureau], st.rotate_key(store, "bureau"), store, "bureau", "ids")
    with pytest.raises(ConfigError, match=r"stale \(has epoch 2, 'bureau' is at key epoch 3\)"):
        _job(tmp_path, lender, bureau, fetch=False)
    assert reads == []


@pytest.mark.parametrize("fingerprint", ["x/../../../victim/planted", "../../outside", "ABCDEF0123456789", "0" * 15])
def test_a_bureau_cannot_choose_where_the_lender_writes(tmp_path, sets, monkeypatch, fingerprint):
    """The bureau's fingerprint names the lender's cache file: only 16 lower-case hex digits are accepted."""
    import dataclasses

    from fedrisk.algorithms.vertical import unbalanced_psi as ub

    lender, bureau = sets
    _encoded(tmp_path, bureau)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "epoch-3-important.bin").write_bytes(b"keep")
    real = ub._server_state

    def lying(me, store_dir, ids):
        key, head, index, digests = real(me, store_dir, ids)
        return dataclasses.replace(key, fingerprint=fingerprint), dict(head, fingerprint=fingerprint), index, digests

    monkeypatch.setattr(ub, "_server_state", lying)
    with pytest.raises(FedriskError, match="illegal form"):
        _job(tmp_path, lender, bureau)
    assert [p.name for p in victim.iterdir()] == ["epoch-3-important.bin"]
    written = [p for p in tmp_path.rglob("*.bin") if "bureau-store" not in p.parts]
    assert [p.name for p in written] == ["epoch-3-important.bin"]


def test_rotation_removes_only_the_old_encodings(tmp_path, sets):
    lender, bureau = sets
    store = _encoded(tmp_path, bureau)
    (store / "epoch-2024-exports").mkdir()
    (store / "epoch-2024-exports" / "report.csv").write_text("mine")
    (store / "epoch-1" / "notes.txt").write_text("mine too")
    new = st.rotate_key(store, "bureau")
    assert new.epoch == 2
    assert (store / "epoch-2024-exports" / "report.csv").read_text() == "mine"
    assert sorted(p.name for p in (store / "epoch-1").iterdir()) == ["notes.txt"]


def test_a_non_canonical_evaluated_element_is_refused(tmp_path, sets, monkeypatch):
    """Bit 255 set is never a canonical ristretto255 encoding (the bundled libsodium ignores it)."""
    key = oprf.new_key()
    norm = psi.normalize_ids([f"C{i}" for i in range(20)])
    inv, blinded = oprf.blind(norm, "ctx")
    ev = oprf.blind_evaluate(blinded, key)
    ev[7, 31] |= 0x80
    with pytest.raises(FedriskError, match="row 7 is not a canonical"):
        oprf.finalize(norm, inv, ev)
    blinded[3, 31] |= 0x80
    with pytest.raises(FedriskError, match="row 3 is not a canonical"):
        psi.reblind(blinded, key)


@pytest.mark.parametrize("damage,match", [
    ("missing", "no OPRF key file"),
    ("mode", r"may be read by other users \(mode 644\).*chmod 600"),
    ("json", r"not a valid fedrisk OPRF key file \(not JSON\)"),
    ("key", r"\(bad key\)"),
    ("fingerprint", "fingerprint does not match"),
])
def test_bad_key_file_is_one_line_at_both(tmp_path, sets, damage, match):
    lender, bureau = sets
    store = _encoded(tmp_path, bureau)
    kf = store / "key.json"
    doc = json.loads(kf.read_text())
    if damage == "missing":
        kf.unlink()
    elif damage == "mode":
        kf.chmod(0o644)
    elif damage == "json":
        kf.write_text("{nope")
    elif damage == "key":
        kf.write_text(json.dumps({**doc, "key": "00" * 32}))
    else:
        kf.write_text(json.dumps({**doc, "fingerprint": "0" * 16}))
    with pytest.raises(ConfigError, match=match) as ei:
        _job(tmp_path, lender, bureau)
    assert "\n" not in str(ei.value)
    # the lender gets a one-line refusal that names the command, not the bureau's path
    seen = {}

    def lender_role(ch):
        try:
            return ub_align(ch, "bureau", lender, key_holder=False, salt=SALT, store_dir=tmp_path / "lender-store")
        except FedriskError as e:
            seen["lender"] = str(e)
            raise

    net = InMemoryNetwork(["lender", "bureau"], recv_timeout=30.0, tag_prefixes=("psi.",))
    with pytest.raises(ConfigError):
        run_roles({"lender": lender_role,
                   "bureau": lambda ch: ub_align(ch, "lender", bureau, key_holder=True, salt=SALT,
                                                 store_dir=tmp_path / "bureau-store")}, network=net)
    assert "fedrisk psi key|encode SPEC --party bureau" in seen["lender"] and "\n" not in seen["lender"]
    assert str(tmp_path) not in seen["lender"]


def test_key_file_created_private_and_not_overwritten(tmp_path):
    k = st.create_key(tmp_path / "s", "bureau")
    kf = tmp_path / "s" / "key.json"
    assert kf.stat().st_mode & 0o777 == 0o600 and k.epoch == 1 and "key" not in repr(k).lower().replace("oprfkey", "")
    doc = json.loads(kf.read_text())
    assert set(doc) == {"format", "version", "epoch", "created", "key", "fingerprint"}
    with pytest.raises(ConfigError, match="already exists.*--rotate"):
        st.create_key(tmp_path / "s", "bureau")


def test_bureau_data_changed_since_encoding(tmp_path, sets):
    lender, bureau = sets
    _encoded(tmp_path, bureau)
    with pytest.raises(DataError, match=r"not the set encoded for key epoch 1.*fedrisk psi encode") as ei:
        _job(tmp_path, lender, bureau[:-1])
    assert "\n" not in str(ei.value)


def test_duplicate_ids_at_encoding_name_rows(tmp_path):
    store = tmp_path / "s"
    st.create_key(store, "bureau")
    with pytest.raises(DataError, match="rows 2 and 5 of ids hold the same id"):
        st.encode_ids([["a", "b", "c"], ["d", "e", " c"]], st.load_key(store, "bureau"), store, "bureau", "ids")


def test_roles_and_salt_must_agree(tmp_path, sets):
    lender, bureau = sets
    _encoded(tmp_path, bureau)
    with pytest.raises(ConfigError, match="different PSI salt"):
        net = InMemoryNetwork(["lender", "bureau"], recv_timeout=30.0, tag_prefixes=("psi.",))
        run_roles({"lender": lambda ch: ub_align(ch, "bureau", lender, key_holder=False, salt="other",
                                                 store_dir=tmp_path / "lender-store"),
                   "bureau": lambda ch: ub_align(ch, "lender", bureau, key_holder=True, salt=SALT,
                                                 store_dir=tmp_path / "bureau-store")}, network=net)


def test_disjoint_sets_raise_at_both(tmp_path, sets):
    _, bureau = sets
    _encoded(tmp_path, bureau)
    with pytest.raises(DataError, match="intersection .* is empty"):
        _job(tmp_path, np.arange(5, 50), bureau)


def test_index_of_another_encoding_is_refused(tmp_path, sets):
    lender, bureau = sets
    store = _encoded(tmp_path, bureau)
    saved = (store / "epoch-1" / "index.bin").read_bytes()
    st.encode_ids([bureau[:-1]], st.load_key(store, "bureau"), store, "bureau", "ids")
    (store / "epoch-1" / "index.bin").write_bytes(saved)  # an index left from the earlier encoding
    with pytest.raises(ConfigError, match="holds an index of another encoding.*fedrisk psi encode"):
        _job(tmp_path, lender, bureau)
