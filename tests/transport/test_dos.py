"""Abuse by an authenticated peer (issue 12 item 7): each test performs the attack, with small limits.

Before the fix: 100 frames of 4 MB under a tag nobody reads stayed in memory (+405 MiB), a 16 MiB
header of ``[]`` cost +830 MiB and 9 s of CPU, a refused frame's 10 MB name was echoed into the log
and kept in memory, and an abort reason could forge log lines.
"""
from __future__ import annotations

import io
import json
import logging
import struct
import threading
import time
import tracemalloc

import numpy as np
import pytest

from fedrisk.errors import CodecError, TransportError
from fedrisk.runtime.demo import free_ports
from fedrisk.transport import grpc_channel
from fedrisk.transport.certs import make_dev_pki, tls_files
from fedrisk.transport.channel import InMemoryNetwork, Mailbox, MailboxLimits, QueueFull
from fedrisk.transport.codec import MAGIC, MAX_HEADER_BYTES, decode, encode
from fedrisk.transport.grpc_channel import GrpcChannel
from fedrisk.transport.safe_text import EscapingFormatter, safe_text

SMALL = MailboxLimits(max_queued_bytes=1 << 20, max_queued_frames=50, unread_ttl=60.0)


def _frame(tag: str, nbytes: int, sender: str = "evil", to: str = "bank") -> bytes:
    return encode("job", sender, to, tag, "masked", np.zeros(nbytes, np.uint8))


# -- unread frames -------------------------------------------------------------------------------
def test_unread_frames_from_one_peer_are_bounded():
    box = Mailbox("bank", "job", ["evil", "good"], limits=SMALL)
    accepted = 0
    with pytest.raises(QueueFull, match="unread messages"):
        for i in range(100):  # 100 x 40 KB = 4 MB under tags nobody reads
            box.put(_frame(f"junk.{i}", 40_000))
            accepted += 1
    assert box.queued_bytes("evil") <= SMALL.max_queued_bytes
    assert accepted < 30
    # another peer is not starved by the flood
    box.put(_frame("t.ok", 1000, sender="good"))
    assert box.take("good", "t.ok", timeout=1).body.size == 1000


def test_too_many_small_frames_are_bounded():
    box = Mailbox("bank", "job", ["evil"], limits=SMALL)
    with pytest.raises(QueueFull):
        for i in range(1000):
            box.put(_frame(f"junk.{i}", 1))
    assert len(box._boxes) == SMALL.max_queued_frames


def test_unread_frames_expire_and_a_later_recv_says_so():
    box = Mailbox("bank", "job", ["evil"], limits=MailboxLimits(1 << 20, 50, unread_ttl=0.2))
    box.put(_frame("junk.0", 100_000))
    assert box.queued_bytes("evil") > 100_000
    time.sleep(0.3)
    box.put(_frame("junk.1", 10))  # any activity sweeps
    assert box.queued_bytes("evil") < 2000
    t0 = time.monotonic()
    with pytest.raises(TransportError, match="junk.0.*unread for more than"):
        box.take("evil", "junk.0", timeout=30)
    assert time.monotonic() - t0 < 5  # fails at once, not after the recv timeout


def test_frame_larger_than_the_whole_queue_is_refused_for_good():
    box = Mailbox("bank", "job", ["evil"], limits=MailboxLimits(10_000, 50))
    with pytest.raises(CodecError, match="queue limit") as e:
        box.put(_frame("big", 20_000))
    assert not isinstance(e.value, QueueFull)


def test_honest_sender_ahead_of_its_reader_waits_instead_of_failing():
    net = InMemoryNetwork(["a", "b"], limits=MailboxLimits(200_000, 5), recv_timeout=30)
    sent = []

    def sender():
        for i in range(40):
            net["a"].send("b", f"t.{i}", np.full(20_000, i, np.uint8), kind="masked")
            sent.append(i)

    th = threading.Thread(target=sender)
    th.start()
    got = []
    for i in range(40):
        time.sleep(0.005)
        got.append(int(net["b"].recv("a", f"t.{i}")[0]))
        assert net["b"].mailbox.queued_bytes("a") <= 200_000
    th.join(10)
    assert got == list(range(40)) and sent == got


# -- header bombs --------------------------------------------------------------------------------
def _raw_frame(header: bytes, blob: bytes = b"") -> bytes:
    return MAGIC + struct.pack(">I", len(header)) + header + blob


def _envelope_with(body_json: str) -> bytes:
    return ('{"v":1,"job":"job","sender":"evil","to":"bank","tag":"t.x","kind":"masked","body":' + body_json + "}").encode()


def test_header_of_many_empty_lists_is_refused_before_parsing():
    # 2 MiB of [] parsed into ~700,000 lists under the old 64 MiB cap (~100 MB; 16 MiB -> 830 MiB)
    frame = _raw_frame(_envelope_with("[" + ",".join(["[]"] * 700_000) + "]"))
    tracemalloc.start()
    try:
        with pytest.raises(CodecError, match="header"):
            decode(frame)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"decoding a refused header took {peak / 2**20:.1f} MiB"


def test_header_just_under_the_byte_cap_but_full_of_values_is_refused():
    body = "[" + ",".join(["0"] * (MAX_HEADER_BYTES // 3)) + "]"
    header = _envelope_with(body)
    assert len(header) <= MAX_HEADER_BYTES
    with pytest.raises(CodecError, match="JSON values"):
        decode(_raw_frame(header))


def test_deep_nesting_is_refused_cleanly():
    with pytest.raises(CodecError):
        decode(_raw_frame(_envelope_with("[" * 200_000 + "]" * 200_000)))


def test_encode_refuses_what_decode_would():
    with pytest.raises(CodecError, match="numpy arrays"):
        encode("job", "a", "b", "t.x", "model", list(range(100_000)))


# -- what is echoed ------------------------------------------------------------------------------
def test_refusal_message_quotes_little_of_the_peer_and_no_newline():
    evil = "x" * 10_000_000 + "\n2026-01-01 00:00:00 bank INFO forged"
    header = json.dumps({"v": 1, "job": evil[:900_000] + evil[-40:], "sender": "evil", "to": "bank", "tag": "t",
                         "kind": "masked", "body": None}).encode()
    with pytest.raises(CodecError) as e:
        decode(_raw_frame(header))
    assert len(str(e.value)) < 300 and "\n" not in str(e.value)


def test_safe_text_cuts_then_escapes():
    s = safe_text("a" * 5000 + "\r\n\x1b[2J\u2028", 100)
    assert len(s) < 150 and "more" in s
    assert safe_text("ok\nINFO forged") == "ok\\nINFO forged"
    assert safe_text(b"\xff\x00bytes") == "\ufffd\\x00bytes"


def test_log_lines_cannot_be_forged():
    out = io.StringIO()
    log = logging.getLogger("fedrisk.test.forge")
    log.handlers.clear()
    log.propagate = False
    h = logging.StreamHandler(out)
    h.setFormatter(EscapingFormatter("%(levelname)s %(message)s"))
    log.addHandler(h)
    log.warning("peer said %s", "hello\n2026-01-01 bank-a INFO all parties agree\r")
    assert out.getvalue().count("\n") == 1
    assert out.getvalue().startswith("WARNING peer said hello\\n2026")


# -- over mutual TLS -----------------------------------------------------------------------------
@pytest.fixture()
def pair(tmp_path):
    certs = make_dev_pki(["bank", "evil"], tmp_path / "pki")
    p1, p2 = free_ports(2)
    addrs = {"bank": f"127.0.0.1:{p1}", "evil": f"127.0.0.1:{p2}"}
    bank = GrpcChannel("bank", addrs, "job", tls_files(certs, "bank"), connect_timeout=5, limits=SMALL,
                       max_bytes=256_000).start()
    evil = GrpcChannel("evil", addrs, "job", tls_files(certs, "evil"), connect_timeout=5, recv_timeout=1.0,
                       max_bytes=256_000)
    yield bank, evil
    evil.close()
    bank.close()


def test_flood_over_mtls_is_held_at_the_queue_limit(pair):
    bank, evil = pair
    with pytest.raises(TransportError, match="queue stayed full"):
        for i in range(100):  # 100 x 100 KB to tags bank never reads
            evil.send("bank", f"junk.{i}", np.zeros(100_000, np.uint8), kind="masked")
    assert bank.mailbox.queued_bytes("evil") <= SMALL.max_queued_bytes
    assert bank.refused_count["evil:queue-full"] >= 1
    assert len(bank.refused) == 0  # back-pressure is not logged frame by frame


def test_refused_frames_over_mtls_are_bounded_in_memory_and_log(pair, caplog):
    bank, evil = pair
    stub = evil._stub("bank")
    bad = _raw_frame(_envelope_with("null").replace(b'"tag":"t.x"', b'"tag":"' + b"A" * 200_000 + b'\\nforged"'))
    caplog.set_level(logging.WARNING, logger="fedrisk.transport")
    for _ in range(grpc_channel.LOGGED_REFUSALS + 30):
        with pytest.raises(Exception):
            stub(bad, timeout=5)
    assert bank.refused_count["evil"] == grpc_channel.LOGGED_REFUSALS + 30
    logged = [r.getMessage() for r in caplog.records if r.name == "fedrisk.transport"]
    assert len(logged) <= grpc_channel.LOGGED_REFUSALS + 1
    assert sum(map(len, logged)) < 40_000 and not any("\n" in m for m in logged)
    assert all(len(r) < 1000 for r in bank.refused)


def test_abort_reason_from_a_peer_is_cut_and_escaped(pair):
    bank, evil = pair
    reason = "x" * 100_000 + "\n2026-01-01 bank INFO done"
    evil._stub("bank")(encode("job", "evil", "bank", "ctl.abort", "control", {"reason": reason}), timeout=5)
    assert bank.mailbox.failure is not None
    assert len(bank.mailbox.failure) < 1200 and "\n" not in bank.mailbox.failure


def test_handshake_does_not_echo_a_peers_huge_setting():
    from fedrisk.runtime.handshake import handshake
    from fedrisk.runtime.threads import run_roles

    settings = {"task": {"kind": "horizontal.lr"}}

    def evil(ch):
        ch.send("driver", "ctl.hello", {"settings": {"task": {"kind": "x" * 900_000 + "\nforged"}}, "version": "1"},
                kind="control")
        return ch.recv("driver", "ctl.start")

    with pytest.raises(Exception) as e:
        run_roles({"driver": lambda ch: handshake(ch, "driver", ["driver", "evil"], settings), "evil": evil})
    assert "different job spec" in str(e.value)
    assert len(str(e.value)) < 1000 and "\nforged" not in str(e.value)
