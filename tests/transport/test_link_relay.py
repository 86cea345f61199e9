"""The link relay carries a local TCP conversation to the peer's local server over the Channel only,
byte for byte, and every relayed byte is in the sender's ledger (no optional extra needed)."""
from __future__ import annotations

import os
import socket
import threading

from fedrisk.transport.channel import InMemoryNetwork
from fedrisk.transport.link_relay import ChannelLinkRelay


def _server(handler):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)

    def loop():
        conn, _ = srv.accept()
        with conn:
            handler(conn)
        srv.close()

    threading.Thread(target=loop, daemon=True).start()
    return srv.getsockname()[1]


def _read_exactly(conn, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        assert chunk, "stream ended early"
        buf += chunk
    return bytes(buf)


def test_bytes_cross_both_ways_through_the_channel_and_are_counted():
    net = InMemoryNetwork(["a", "b"], capture=True, tag_prefixes=("psi.",))
    request = os.urandom(3 * 2**20 + 17)  # several relay chunks
    reply = os.urandom(2**20 + 5)
    got = {}

    def b_server(conn):  # b's "library": reads the request, answers, closes
        got["request"] = _read_exactly(conn, len(request))
        conn.sendall(reply)

    b_port = _server(b_server)
    a_relay = ChannelLinkRelay(net["a"], "b", "psi.t.link", target_port=1)  # a's library never gets called
    b_relay = ChannelLinkRelay(net["b"], "a", "psi.t.link", target_port=b_port)
    try:
        with socket.create_connection(("127.0.0.1", a_relay.port)) as c:  # a's "library" calls "b"
            c.sendall(request)
            answer = _read_exactly(c, len(reply))
    finally:
        a_relay.close()
        b_relay.close()
    assert got["request"] == request and answer == reply
    assert a_relay.bytes_out == b_relay.bytes_in == len(request)
    assert b_relay.bytes_out >= len(reply) and a_relay.bytes_in == len(reply)
    # every relayed byte is in a frame the sender's ledger recorded, and arrived as one
    for sender, receiver, relay in (("a", "b", a_relay), ("b", "a", b_relay)):
        data = [e for e in net[receiver].captured if e.tag.startswith("psi.t.link.d.")]
        assert sum(len(e.body) for e in data) == relay.bytes_out
        ledger = [e for e in net[sender].ledger.entries if e["tag"].startswith("psi.t.link.d.")]
        assert len(ledger) == len(data) and sum(e["bytes"] for e in ledger) > relay.bytes_out
        assert {e.kind for e in net[receiver].captured} <= {"masked", "control"}


def test_a_peer_that_never_listens_is_reported_not_waited_for_forever():
    net = InMemoryNetwork(["a", "b"], tag_prefixes=("psi.",))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # closed again: nobody listens there
    a_relay = ChannelLinkRelay(net["a"], "b", "psi.t.link", target_port=1)
    b_relay = ChannelLinkRelay(net["b"], "a", "psi.t.link", target_port=dead, connect_timeout=1.0)
    try:
        with socket.create_connection(("127.0.0.1", a_relay.port)) as c:
            c.sendall(b"hello")
            c.settimeout(30)
            for _ in range(200):
                if b_relay.error is not None:
                    break
                threading.Event().wait(0.05)
    finally:
        a_relay.close()
        b_relay.close()
    assert b_relay.error is not None and "did not listen" in str(b_relay.error)
