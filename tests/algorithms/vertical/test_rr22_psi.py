"""RR22 PSI (optional ``fedrisk[psi]`` extra): same result and order as ECDH, TLS on the job's
certificates, a foreign CA refused, every library byte in the ledger, and what each party received.

Skipped with a clear message when the extra is not installed (CI installs it; see the report)."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from fedrisk.algorithms.vertical.alignment import align_parties, alignment_salt
from fedrisk.algorithms.vertical.rr22_psi import (
    Rr22Stats,
    _item_digests,
    _item_text,
    _link_wait,
    _OwnKeys,
    _read_output,
    item_chars,
    rr22_align,
)
from fedrisk.algorithms.vertical.row_order import hex_keys, id_digests, order_digests, order_keys
from fedrisk.crypto import spu_binding
from fedrisk.errors import ConfigError, DataError, FedriskError, ProtocolError
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.certs import make_dev_pki, tls_files
from fedrisk.transport.channel import InMemoryNetwork

needs_extra = pytest.mark.skipif(
    not spu_binding.available(),
    reason="RR22 PSI needs the optional extra, not installed here: pip install --no-deps spu==0.9.5 "
           "(or pip install 'fedrisk[psi]')")


def _ids(rng, pool, keep, n_extra, offset):
    own = rng.choice(pool, keep, replace=False)
    return rng.permutation(np.concatenate([own, offset + np.arange(n_extra)]))


@pytest.fixture()
def pki(tmp_path):
    return make_dev_pki(["lender", "payco", "bureau"], tmp_path / "certs")


def _with_tls(net, pki):
    """In-memory channels have no TLS of their own; give each the job's files as GrpcChannel has."""
    for p in net.parties:
        net[p].tls = tls_files(pki, p)
    return net


@needs_extra
def test_three_parties_same_intersection_and_order_as_ecdh(pki):
    rng = np.random.default_rng(3)
    pool = np.arange(10_000, 14_000)
    ids = {"lender": _ids(rng, pool, 3000, 200, 50_000), "payco": _ids(rng, pool, 2800, 300, 60_000),
           "bureau": _ids(rng, pool, 3100, 100, 70_000)}
    ids["payco"] = np.array([f" {v} " for v in ids["payco"]], dtype=object)  # strings, padded: normalised alike
    salt = alignment_salt("rr22-test")
    out = {}
    for protocol in ("ecdh", "rr22"):
        # generous: the label holder runs its pairs one after the other, and a loaded CI machine is slow
        net = _with_tls(InMemoryNetwork(list(ids), tag_prefixes=("psi.",), recv_timeout=240), pki)
        out[protocol] = run_roles(
            {p: (lambda p: lambda ch: align_parties(ch, "lender", ["payco", "bureau"], ids[p], salt=salt,
                                                    protocol=protocol))(p) for p in ids}, network=net)
    want = set(ids["lender"].tolist()) & set(int(v) for v in ids["payco"]) & set(ids["bureau"].tolist())
    for p in ids:
        assert np.array_equal(out["rr22"][p].indices, out["ecdh"][p].indices), p
        assert out["rr22"][p].protocol == "rr22" and out["rr22"][p].size == len(want)
    aligned = {p: np.array([int(v) for v in ids[p][out["rr22"][p].indices]]) for p in ids}
    assert set(aligned["lender"].tolist()) == want
    assert np.array_equal(aligned["lender"], aligned["payco"]) and np.array_equal(aligned["lender"], aligned["bureau"])


@needs_extra
def test_ledger_counts_every_byte_that_crossed_and_nothing_but_masked_bytes_arrive(pki):
    rng = np.random.default_rng(4)
    a = rng.permutation(np.arange(1_000_000, 1_004_000))
    b = rng.permutation(np.concatenate([np.arange(1_002_000, 1_004_000), np.arange(2_000_000, 2_003_000)]))
    net = InMemoryNetwork(["lender", "payco"], capture=True, tag_prefixes=("psi.",), recv_timeout=240)
    # The library's own receive/request timeouts do not follow the channel's: they are at least
    # ten minutes (rr22_psi._MIN_LINK_WAIT_S). With the channel's 240 s this test once failed in
    # a loaded CI run with the library's "Get data timeout ... ALLGATHER" (its peer starved).
    assert _link_wait(net["lender"], len(a), len(b)) >= 600
    wire = {p: 0 for p in net.parties}
    for p in net.parties:  # what actually crossed: every frame handed to the transport
        ch = net[p]
        deliver = ch._deliver

        def counted(to, frame, _p=p, _deliver=deliver):
            wire[_p] += len(frame)
            _deliver(to, frame)
        ch._deliver = counted
    stats = {p: Rr22Stats() for p in net.parties}
    # no library TLS here, so the privacy check below inspects the protocol's own bytes
    res = run_roles({"lender": lambda ch: rr22_align(ch, "payco", a, leader=True, salt="s", stats=stats["lender"]),
                     "payco": lambda ch: rr22_align(ch, "lender", b, leader=False, salt="s", stats=stats["payco"])},
                    network=net)
    assert res["lender"].size == res["payco"].size == 2000
    assert np.array_equal(a[res["lender"].indices], b[res["payco"].indices])
    for p, q in (("lender", "payco"), ("payco", "lender")):
        assert net[p].ledger.bytes_sent == wire[p] > stats[p].bytes_out > 100_000
        assert stats[p].bytes_out == stats[q].bytes_in  # the relay delivered every byte it read
        data = [e for e in net[q].captured if e.tag.startswith("psi.rr22.link.d.")]
        assert sum(len(e.body) for e in data) == stats[p].bytes_out
        assert len(data) == stats[p].frames_out == len([e for e in net[p].ledger.entries if ".link.d." in e["tag"]])
        # only protocol messages arrive: never a raw id of the sender, as text or as an 8-byte integer
        sender_ids = a if p == "lender" else b
        blob = b"".join(e.body for e in data)
        assert {e.kind for e in net[q].captured} <= {"masked", "control", "public-parameter"}
        for v in sender_ids[:200].tolist():
            assert str(v).encode() not in blob and int(v).to_bytes(8, "little") not in blob
        hello = next(e.body for e in net[q].captured if e.tag == "psi.rr22.hello")
        assert not any(str(v) in json.dumps(hello) for v in sender_ids[:200].tolist())


@needs_extra
def test_library_tls_refuses_a_peer_certified_by_a_foreign_ca(pki, tmp_path, monkeypatch, capfd):
    from fedrisk.algorithms.vertical import rr22_psi

    # One connection try (each costs ~10 s of the library's own retries; production: 10) and one link
    # attempt (production: 2; the retry is tested with a link that never answers, below): ~12 s, not 60.
    monkeypatch.setattr(rr22_psi, "_CONNECT_RETRIES", 1)
    monkeypatch.setattr(rr22_psi, "_LINK_ATTEMPTS", 1)
    foreign = make_dev_pki(["payco"], tmp_path / "foreign", ca_name="not the job's CA")
    net = InMemoryNetwork(["lender", "payco"], tag_prefixes=("psi.",), recv_timeout=60)
    tls = {"lender": tls_files(pki, "lender"), "payco": tls_files(foreign, "payco")}
    ids = np.arange(500)
    t0 = time.monotonic()
    with pytest.raises(ProtocolError) as e:
        run_roles({p: (lambda p: lambda ch: rr22_align(ch, "payco" if p == "lender" else "lender", ids,
                                                       leader=p == "lender", salt="s", tls=tls[p]))(p)
                   for p in tls}, network=net)
    # the library itself refused the link (not our deadline), and its TLS said why
    assert "failed in the PSI library" in str(e.value) and "certificate" in str(e.value)
    assert "stacktrace" not in str(e.value) and "\n" not in str(e.value)
    assert "certificate verify failed" in capfd.readouterr().err  # the library processes' own log
    assert time.monotonic() - t0 < 120


@needs_extra
def test_settings_must_agree_and_duplicates_are_named(pki):
    net = InMemoryNetwork(["lender", "payco"], tag_prefixes=("psi.",))
    with pytest.raises(ConfigError, match="salt"):
        run_roles({"lender": lambda ch: rr22_align(ch, "payco", np.arange(10), leader=True, salt="a"),
                   "payco": lambda ch: rr22_align(ch, "lender", np.arange(10), leader=False, salt="b")}, network=net)
    net = InMemoryNetwork(["lender", "payco"], tag_prefixes=("psi.",))
    with pytest.raises(DataError, match=r"'lender'.*more than once"):
        rr22_align(net["lender"], "payco", ["7", " 7", "8"], leader=True, salt="a")


def test_rr22_without_the_extra_is_one_clear_line(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(spu_binding, "_loaded", None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "spu" else real(name, *a))
    with pytest.raises(ConfigError) as e:
        spu_binding.load(purpose="job.toml: psi.protocol = 'rr22'")
    msg = str(e.value)
    assert "\n" not in msg and "pip install" in msg and "psi.protocol = 'rr22'" in msg and "'ecdh'" in msg
    net = InMemoryNetwork(["lender", "payco"], tag_prefixes=("psi.",))
    with pytest.raises(ConfigError, match="pip install"):
        align_parties(net["lender"], "lender", ["payco"], np.arange(5), salt="s", protocol="rr22")
    assert net["lender"].ledger.entries == []  # refused before anything was sent


def test_order_keys_are_the_salted_sha256_hex_they_always_were():
    import hashlib

    from fedrisk.algorithms.vertical.row_order import ORDER_DOMAIN
    from fedrisk.crypto import psi

    ids = ["1", "abc", "\u00e9t\u00e9", "", "x" * 300] + [str(i) for i in range(500)]
    base = ORDER_DOMAIN + b"\x00" + psi.hash_prefix("salt")
    want = [hashlib.sha256(base + s.encode()).hexdigest()[:32].encode() for s in ids]
    assert order_keys(ids, "salt").tolist() == want
    assert hex_keys(order_digests(ids, "salt")).tolist() == want
    assert order_keys([], "salt").shape == (0,)
    # raw ids hashed in one step (the compiled kernel when built): the same keys, as RR22's items
    raw = [" 1 ", "abc", "\u00e9t\u00e9", "", "x" * 300] + list(range(500))
    assert hex_keys(id_digests(raw, "salt")).tolist() == want
    assert hex_keys(id_digests(np.arange(500), "salt")).tolist() == want[5:]


def _result_file(path, items, quoted=False):
    body = b"".join((b'"%s"' % h if quoted else h) + (b"\r\n" if quoted else b"\n") for h in items)
    path.write_bytes((b'"k"\r\n' if quoted else b'"k"\n') + body)
    return path


def _items(dig, width=12):
    return [bytes(row) for row in _item_text(dig, width)]


@pytest.mark.parametrize("width", [12, 16])
def test_items_are_the_keys_first_bytes_in_base64url(width):
    import base64

    rng = np.random.default_rng(3)
    dig = rng.integers(0, 256, size=(500, 16), dtype=np.uint8)
    dig[0] = 0
    dig[1] = 255
    text = _item_text(dig, width)
    assert text.shape == (500, item_chars(width)) and item_chars(12) == 16 and item_chars(16) == 22
    assert _items(dig, width) == [base64.urlsafe_b64encode(bytes(d[:width])).rstrip(b"=") for d in dig]
    assert np.array_equal(_item_digests(text, "lender", width), dig[:, :width])
    with pytest.raises(ProtocolError, match="not this party's keys"):
        _item_digests(np.frombuffer(b"+" * item_chars(width), dtype=np.uint8).reshape(1, -1), "lender", width)
    if width == 16:
        bad = text[:1].copy()
        bad[0, -1] = ord("B")  # unused low bits set: not an encoding of 16 bytes
        with pytest.raises(ProtocolError, match="not this party's keys"):
            _item_digests(bad, "lender", width)


@pytest.mark.parametrize("width", [12, 16])
@pytest.mark.parametrize("tie", [False, True])
def test_library_result_maps_back_to_rows_in_key_order(tmp_path, tie, width):
    rng = np.random.default_rng(7)
    dig = rng.integers(0, 256, size=(3000, 16), dtype=np.uint8)
    if tie:  # keys sharing their first 64 bits take the full-key path
        dig[10, :8] = dig[20, :8]
        dig[30, :8] = dig[20, :8]
    keys = _OwnKeys(dig)
    assert keys.hi_unique is not tie and len(keys.duplicates()) == 0 and keys.prefix_unique(width)
    rows = rng.choice(3000, 1200, replace=False)
    if tie:
        rows = np.unique(np.concatenate([rows, [10, 20, 30]]))
    items = _items(dig[rng.permutation(rows)], width)  # the library writes its matches in its own order
    want = rows[np.argsort(hex_keys(dig[rows]))]
    for quoted in (False, True):  # fixed layout, and quoted CSV through the parser
        got = _read_output(_result_file(tmp_path / f"out{quoted}.csv", items, quoted), keys, "lender", width)
        assert np.array_equal(got, want)
    chars = item_chars(width)
    with pytest.raises(ProtocolError, match="does not hold"):
        _read_output(_result_file(tmp_path / "bad.csv", [b"A" * chars]), keys, "lender", width)
    with pytest.raises(ProtocolError, match="twice"):
        _read_output(_result_file(tmp_path / "twice.csv", [items[0], items[0]]), keys, "lender", width)
    with pytest.raises(ProtocolError, match="not this party's keys"):
        _read_output(_result_file(tmp_path / "notb64.csv", [b"*" * chars]), keys, "lender", width)
    with pytest.raises(ProtocolError, match="not this party's keys"):  # an item of the other width
        _read_output(_result_file(tmp_path / "wide.csv", [items[0] + b"AAAAAA"]), keys, "lender", width)
    dup = dig.copy()
    dup[5] = dup[6]
    assert len(_OwnKeys(dup).duplicates()) == 1


def test_keys_sharing_96_bits_are_not_unique_at_that_width():
    rng = np.random.default_rng(8)
    dig = rng.integers(0, 256, size=(100, 16), dtype=np.uint8)
    dig[7, :12] = dig[40, :12]  # the same first 96 bits, different keys
    keys = _OwnKeys(dig)
    assert len(keys.duplicates()) == 0 and keys.prefix_unique(16) and not keys.prefix_unique(12)
    dig[7, :9] = dig[40, :9]
    dig[7, 9:] = dig[40, 9:] ^ 1
    assert _OwnKeys(dig).prefix_unique(12)  # 72 shared bits only


@needs_extra
def test_a_party_whose_keys_share_96_bits_makes_both_use_full_items(monkeypatch):
    from fedrisk.algorithms.vertical import rr22_psi

    real = rr22_psi._OwnKeys.prefix_unique
    monkeypatch.setattr(rr22_psi._OwnKeys, "prefix_unique",
                        lambda self, width: False if self.n == 3000 and width == 12 else real(self, width))
    written = []
    real_write = rr22_psi._write_input
    monkeypatch.setattr(rr22_psi, "_write_input", lambda path, keys, width: (written.append((keys.n, width)),
                                                                            real_write(path, keys, width)))
    rng = np.random.default_rng(10)
    a = rng.permutation(np.arange(0, 3000))
    b = rng.permutation(np.arange(1000, 5000))
    net = InMemoryNetwork(["lender", "payco"], capture=True, tag_prefixes=("psi.",), recv_timeout=120)
    res = run_roles({"lender": lambda ch: rr22_align(ch, "payco", a, leader=True, salt="s"),
                     "payco": lambda ch: rr22_align(ch, "lender", b, leader=False, salt="s")}, network=net)
    assert res["lender"].size == res["payco"].size == 2000
    assert np.array_equal(a[res["lender"].indices], b[res["payco"].indices])
    # each party writes its input at its own width while the hello waits; payco (12) writes again at 16
    assert sorted(written) == [(3000, 16), (4000, 12), (4000, 16)]
    assert written.index((4000, 12)) < written.index((4000, 16))
    assert next(e.body for e in net["payco"].captured if e.tag == "psi.rr22.hello")["item_bytes"] == 16
    assert next(e.body for e in net["lender"].captured if e.tag == "psi.rr22.hello")["item_bytes"] == 12


def test_bucket_size_follows_the_memory_budget():
    from fedrisk.algorithms.vertical.rr22_psi import bucket_size

    assert bucket_size(None) == 2**20  # the library's default: one bucket per million ids
    assert bucket_size(1500) == 2**20
    assert bucket_size(48) == 2**15  # 24 MiB / 400 B = 62914 items -> 2^15
    assert bucket_size(0.5) == 2**12  # never below the floor


@needs_extra
def test_parties_with_different_budgets_run_with_the_smaller_bucket():
    """The library refuses peers whose configs differ, so the hello settles on one bucket size."""
    rng = np.random.default_rng(9)
    a = rng.permutation(np.arange(0, 9000))
    b = rng.permutation(np.arange(4000, 12000))
    net = InMemoryNetwork(["lender", "payco"], tag_prefixes=("psi.",), recv_timeout=600)
    res = run_roles({"lender": lambda ch: rr22_align(ch, "payco", a, leader=True, salt="s", memory_mb=4),
                     "payco": lambda ch: rr22_align(ch, "lender", b, leader=False, salt="s")}, network=net)
    assert res["lender"].size == res["payco"].size == 5000
    assert np.array_equal(a[res["lender"].indices], b[res["payco"].indices])
    hello = [e for e in net["lender"].ledger.entries if e["tag"].endswith(".hello")]
    assert len(hello) == 1


def _library_children() -> list[int]:
    """Pids of this process's live children running the PSI library (``fedrisk.crypto.spu_process``)."""
    import os
    from pathlib import Path

    me, found = os.getpid(), []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == me and b"spu_process" in (d / "cmdline").read_bytes():
                found.append(int(d.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _link_leftovers() -> tuple[list[str], list[str]]:
    """Relay/event threads alive, and RR22 temporary folders left (in the test's own temp folder)."""
    import glob
    import tempfile
    import threading

    threads = [t.name for t in threading.enumerate() if t.name.startswith(("relay-", "spu-events-"))]
    return threads, sorted(glob.glob(f"{tempfile.gettempdir()}/fedrisk-rr22-*"))


@pytest.fixture()
def black_hole():
    """A loopback port that accepts connections and never answers (its backlog completes the handshake)."""
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    yield s.getsockname()[1]
    s.close()


def _silence_links(monkeypatch, port, calls, tmp_path, deadline_s: float = 8.0):
    """The lender's library is told its peer lives at ``port`` for its first ``calls`` link set-ups;
    a link set-up is given up after ``deadline_s`` (a test whose every link is silenced waits it out
    at every attempt, so it takes a short one)."""
    import tempfile

    from fedrisk.algorithms.vertical import rr22_psi

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # teammates' runs use the system's

    real = rr22_psi._link_job
    seen = {"n": 0}

    def job(channel, peer, *a, **kw):
        out = real(channel, peer, *a, **kw)
        if channel.me == "lender" and seen["n"] < calls:
            seen["n"] += 1
            out["parties"] = [[p, f"127.0.0.1:{port}" if p == peer else addr] for p, addr in out["parties"]]
        return out
    monkeypatch.setattr(rr22_psi, "_link_job", job)
    monkeypatch.setattr(rr22_psi, "_LINK_DEADLINE_S", deadline_s)


@needs_extra
def test_a_link_that_never_answers_is_given_up_and_tried_once_more_cleanly(pki, monkeypatch, black_hole, tmp_path):
    """The library's link set-up has a deadline: past it both parties kill their library's process
    and try again over a fresh relay; the job then ends as usual, and nothing of the first try is left."""
    _silence_links(monkeypatch, black_hole, 1, tmp_path)
    before = _link_leftovers()
    rng = np.random.default_rng(5)
    a = rng.permutation(np.arange(0, 3000))
    b = rng.permutation(np.arange(1000, 5000))
    net = InMemoryNetwork(["lender", "payco"], capture=True, tag_prefixes=("psi.",), recv_timeout=120)
    stats = {p: Rr22Stats() for p in net.parties}
    t0 = time.monotonic()
    res = run_roles({"lender": lambda ch: rr22_align(ch, "payco", a, leader=True, salt="s", stats=stats["lender"]),
                     "payco": lambda ch: rr22_align(ch, "lender", b, leader=False, salt="s", stats=stats["payco"])},
                    network=net)
    assert time.monotonic() - t0 < 100  # not the library's ten-minute receive timeout
    assert res["lender"].size == res["payco"].size == 2000
    assert np.array_equal(a[res["lender"].indices], b[res["payco"].indices])
    assert stats["lender"].attempts == stats["payco"].attempts == 2
    # the lender's library never got its link up, so it said so; both then ran over the second relay
    assert [e.body for e in net["payco"].captured if e.tag.endswith(".linked")] == [False, True]
    assert [e.body for e in net["lender"].captured if e.tag.endswith(".linked")][-1] is True
    for p, q in (("lender", "payco"), ("payco", "lender")):
        data = [e for e in net[q].captured if ".link" in e.tag and ".d." in e.tag]
        assert any(".link.r1.d." in e.tag for e in data)
        # the ledger still holds every relayed byte, of both attempts
        assert sum(len(e.body) for e in data) == stats[p].bytes_out == stats[q].bytes_in
        assert len(data) == stats[p].frames_out == len([e for e in net[p].ledger.entries if ".d." in e["tag"]])
    assert _library_children() == []
    assert _link_leftovers() == before


@needs_extra
def test_a_link_that_never_comes_up_fails_with_one_line_at_both_parties(pki, monkeypatch, black_hole, tmp_path):
    # no link ever comes up here, so both attempts wait out the deadline: 3 s each, not 8 (CI time)
    _silence_links(monkeypatch, black_hole, 2, tmp_path, deadline_s=3.0)
    before = _link_leftovers()
    net = InMemoryNetwork(["lender", "payco"], tag_prefixes=("psi.",), recv_timeout=120)
    errors = {}

    def role(p):
        def run(ch):
            try:
                rr22_align(ch, "payco" if p == "lender" else "lender", np.arange(500), leader=p == "lender", salt="s")
            except FedriskError as e:
                errors[p] = e
        return run
    t0 = time.monotonic()
    run_roles({p: role(p) for p in ("lender", "payco")}, network=net)
    assert time.monotonic() - t0 < 100
    assert set(errors) == {"lender", "payco"}
    for p, e in errors.items():
        msg = str(e)
        assert "\n" not in msg and "RR22" in msg and "2 attempts" in msg and "stacktrace" not in msg, msg
    assert "did not come up within 3 s" in str(errors["lender"])
    assert _library_children() == []
    assert _link_leftovers() == before
