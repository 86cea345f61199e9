import numpy as np
import pytest

from fedrisk.errors import CodecError, FedriskError, TransportError
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork
from fedrisk.transport.ledger import read_ledger


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
