import threading
import time

import numpy as np
import pytest

from fedrisk.errors import CodecError, FedriskError, TransportError
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryChannel, InMemoryNetwork
from fedrisk.transport.ledger import Ledger, read_ledger


def test_send_recv_in_order_and_ledger_records_every_message(tmp_path):
    net = InMemoryNetwork(["a", "b"], job="j", ledger_dir=str(tmp_path))
    for i in range(3):
        net["a"].send("b", "t.x", np.full(2, i), kind="model")
    assert [int(net["b"].recv("a", "t.x")[0]) for _ in range(3)] == [0, 1, 2]
    lines = read_ledger(tmp_path / "a.jsonl")
    assert len(lines) == 3 and {l["to"] for l in lines} == {"b"} and all(l["bytes"] > 0 for l in lines)
    assert set(lines[0]) == {"seq", "dir", "time", "from", "to", "tag", "kind", "bytes", "sha256", "prev"}
    assert net["a"].ledger.bytes_sent == sum(l["bytes"] for l in lines)


def test_messages_are_matched_by_sender_and_tag():
    net = InMemoryNetwork(["a", "b", "c"])
    net["a"].send("c", "t.1", 1, kind="metric")
    net["b"].send("c", "t.1", 2, kind="metric")
    net["a"].send("c", "t.2", 3, kind="metric")
    assert net["c"].recv("b", "t.1") == 2
    assert net["c"].recv("a", "t.2") == 3
    assert net["c"].recv("a", "t.1") == 1


def test_recv_timeout_names_party_and_tag():
    net = InMemoryNetwork(["a", "b"])
    with pytest.raises(TransportError, match=r"'t\.never'.*party 'a'"):
        net["b"].recv("a", "t.never", timeout=0.1)


def test_unknown_peer_and_missing_kind():
    net = InMemoryNetwork(["a", "b"])
    with pytest.raises(TransportError, match="unknown party 'z'"):
        net["a"].send("z", "t", 1, kind="model")
    with pytest.raises(TypeError):
        net["a"].send("b", "t", 1)  # the ledger kind is mandatory


def test_tag_whitelist_refuses_foreign_tags():
    net = InMemoryNetwork(["a", "b"], tag_prefixes=("hlr.",))
    with pytest.raises(CodecError, match="unknown tag"):
        net["a"].send("b", "psi.x", 1, kind="model")


def test_capture_records_what_a_party_received():
    net = InMemoryNetwork(["a", "b"], capture=True)
    net["a"].send("b", "t.x", {"v": 1}, kind="masked")
    assert [(e.sender, e.tag, e.kind, e.body) for e in net["b"].captured] == [("a", "t.x", "masked", {"v": 1})]


def test_run_roles_propagates_the_first_real_failure():
    def a(ch):
        raise ValueError("boom")

    def b(ch):
        return ch.recv("a", "t.x", timeout=30)

    with pytest.raises(FedriskError, match="party 'a' failed: ValueError: boom"):
        run_roles({"a": a, "b": b})


# -- dropouts (issue 14) --------------------------------------------------------------------------
def test_a_tolerated_peer_that_stops_is_down_not_the_jobs_failure():
    from fedrisk.runtime.threads import run_roles

    def coordinator(ch):
        ch.recv("b1", "hello")
        ch.tolerate_dropouts(["b1", "b2"], send_timeout=1.0)
        got = ch.recv("b1", "late", timeout=30)  # b2's failure below must not wake this with an error
        t0 = time.monotonic()
        with pytest.raises(TransportError, match="dropped out"):
            ch.recv("b2", "never", timeout=30)  # fails at once: b2 is down
        assert time.monotonic() - t0 < 5
        assert ch.send("b2", "x", 1, kind="control") == 0  # skipped, not raised
        ch.tell_dropped(["b2"], "left the sums of round 1")
        return got, ch.down

    def b1(ch):
        ch.send("coordinator", "hello", 1, kind="control")
        time.sleep(0.5)
        ch.send("coordinator", "late", 2, kind="control")

    def b2(ch):
        time.sleep(0.2)
        raise RuntimeError("killed")

    res = run_roles({"coordinator": coordinator, "b1": b1, "b2": b2})
    got, down = res["coordinator"]
    assert got == 2 and set(down) == {"b2"} and "b2" not in res


def test_without_tolerance_a_failing_party_still_stops_the_job():
    from fedrisk.errors import FedriskError
    from fedrisk.runtime.threads import run_roles

    def b2(ch):
        raise RuntimeError("boom")

    with pytest.raises(FedriskError, match="boom"):
        run_roles({"coordinator": lambda ch: ch.recv("b2", "x", timeout=30), "b2": b2})


def test_ctl_dropped_stops_the_dropped_party_with_one_line_and_a_ping_is_never_queued():
    net = InMemoryNetwork(["coordinator", "b1"])
    co, b1 = net["coordinator"], net["b1"]
    co.tolerate_dropouts(["b1"], send_timeout=1.0)
    co._probe("b1")  # a liveness probe lands and is dropped, nothing to read
    assert b1.mailbox.queued_bytes("coordinator") == 0 and "b1" not in co.down
    assert co.tell_dropped(["b1"], "left the sums of round 3") == ["b1"]
    with pytest.raises(TransportError, match="dropped from the job by 'coordinator'.*goes on without it"):
        b1.recv("coordinator", "hlr.newton.r4", timeout=5)


def test_a_silent_tolerated_peer_is_probed_and_marked_down_when_unreachable():
    class Dead(InMemoryChannel):
        def _deliver(self, to, frame):
            if to == "b1":
                raise TransportError("b1 unreachable")
            super()._deliver(to, frame)

    net = InMemoryNetwork(["coordinator", "b1"])
    co = Dead(net, "coordinator")
    co.tolerate_dropouts(["b1"], send_timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(TransportError, match="dropped out"):
        co.recv("b1", "stats", timeout=60)
    assert time.monotonic() - t0 < 5 and "unreachable" in co.down["b1"]


class _SlowParallel(InMemoryChannel):
    """In-memory channel with the gRPC channel's concurrent fan-out and a slow, failing delivery."""

    parallel_sends = 8

    def __init__(self, *a, fail=(), **kw):
        super().__init__(*a, **kw)
        self.fail = set(fail)
        self.in_flight = self.most_in_flight = 0
        self._count = threading.Lock()

    def _deliver(self, to, frame):
        with self._count:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(0.05)
            if to in self.fail:
                raise TransportError(f"{to} unreachable")
            super()._deliver(to, frame)
        finally:
            with self._count:
                self.in_flight -= 1


def test_send_many_fans_out_concurrently_and_every_party_gets_its_own_message(tmp_path):
    banks = [f"b{i}" for i in range(12)]
    net = InMemoryNetwork(["coordinator", *banks])
    co = _SlowParallel(net, "coordinator", ledger=Ledger("coordinator", tmp_path / "co.jsonl"))
    sent = co.send_many({b: {"for": b} for b in banks}, "inbox", kind="ciphertext")
    assert co.most_in_flight > 1  # overlapped, not one after the other
    assert [net[b].recv("coordinator", "inbox", timeout=5) for b in banks] == [{"for": b} for b in banks]
    lines = read_ledger(tmp_path / "co.jsonl")
    assert sorted(e["to"] for e in lines) == sorted(banks) and sum(e["bytes"] for e in lines) == sent
    assert co.broadcast(banks, "model", {"w": 1}, kind="model") > 0
    assert all(net[b].recv("coordinator", "model", timeout=5) == {"w": 1} for b in banks)
    co.close()


def test_send_many_tries_every_party_and_raises_the_first_failure_or_marks_tolerated_ones_down():
    banks = ["b1", "b2", "b3"]
    net = InMemoryNetwork(["coordinator", *banks])
    co = _SlowParallel(net, "coordinator", fail={"b2"})
    with pytest.raises(TransportError, match="b2 unreachable"):
        co.broadcast(banks, "x", 1, kind="control")
    assert net["b1"].recv("coordinator", "x", timeout=5) == 1 and net["b3"].recv("coordinator", "x", timeout=5) == 1
    co.tolerate_dropouts(banks, send_timeout=1.0)
    co.broadcast(banks, "y", 2, kind="control")  # a tolerated peer's failure is its dropout
    assert "b2" in co.down and net["b3"].recv("coordinator", "y", timeout=5) == 2
    co.close()
