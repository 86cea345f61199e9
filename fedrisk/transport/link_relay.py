"""Carry a native library's TCP link to one peer over a fedrisk :class:`Channel`, counting every byte.

Some protocols come from compiled libraries that open their own sockets (SecretFlow's RR22 PSI
talks through a brpc link). Letting such a library reach the partner directly would bypass what
the job guarantees for every message: mutual TLS with the job's certificates, the authenticated
sender check, the tag whitelist and the ledger. Instead, inside each party's process:

* the library listens on a loopback port of its own (its "self" address), and
* it is told that the peer lives at this relay's loopback port.

The relay accepts the library's outgoing TCP connections, announces each one to the peer's relay
over the channel, and moves the bytes in both directions as channel messages. The peer's relay
opens the matching connection to its own library's loopback listener. Nothing of the library
leaves the machine except as channel frames, so the ledger records every byte (a frame is
recorded before it is handed to the transport) and gRPC's mutual TLS covers it.

Message flow (``<tag>`` is chosen by the caller, e.g. ``"psi.rr22.link"``); P is either party,
Q its peer:

==  ==========  ============================  ==========  ========================================
#   direction   tag                           kind        payload
==  ==========  ============================  ==========  ========================================
1   P -> Q      ``<tag>.open``                control     ``{"cid": n}``: P's library opened its
                                                          n-th connection to Q
2   P -> Q      ``<tag>.d.o<n>``              masked      bytes P's library wrote on its own
                                                          connection n (``b""``: end of stream)
3   P -> Q      ``<tag>.d.i<n>``              masked      bytes P's library wrote on Q's
                                                          connection n (``b""``: end of stream)
==  ==========  ============================  ==========  ========================================

What each party learns: exactly the byte stream the library would have sent over its own socket
(what that is, and what it reveals, is the wrapped protocol's business), plus when connections
open and close. The relay never interprets the bytes.

The loopback ports are reachable by other local processes of the same machine; the wrapped
library should authenticate its peer (RR22 runs with TLS on the job's certificates whenever the
channel has them).
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from fedrisk.errors import ProtocolError, TransportError
from fedrisk.transport.channel import Channel

__all__ = ["ChannelLinkRelay"]

log = logging.getLogger("fedrisk.transport")

#: Largest payload of one relayed frame: brpc writes in pieces of up to 1 MiB.
CHUNK = 1 << 20
#: How often blocked loops look at the stop flag. ``close`` waits for the channel-to-socket pump,
#: which notices the flag only when its receive times out: with 0.5 s, every RR22 run ended with
#: 0.4-0.5 s of idle waiting at both parties (measured with ``Rr22Stats.marks``); 20 wake-ups a
#: second per blocked loop cost nothing measurable.
_POLL = 0.05


class ChannelLinkRelay:
    """Relay between a local library's loopback link and the same library at ``peer``.

    Parameters
    ----------
    channel : Channel
        This party's channel; every relayed byte is sent through it (and so in its ledger).
    peer : str
        The party whose library ours talks to.
    tag : str
        Tag namespace of the relay's messages (must pass the channel's tag whitelist).
    target_port : int
        Loopback port where this party's library listens for the peer's connections.
    connect_timeout : float
        How long to retry connecting to ``target_port`` (the library may still be starting).

    Attributes
    ----------
    port : int
        Loopback port to give the library as the peer's address.
    bytes_out, bytes_in : int
        Payload bytes read from / written to the local library's sockets.
    frames_out : int
        Data frames sent to the peer (each one a ledger line).
    """

    def __init__(self, channel: Channel, peer: str, tag: str, target_port: int, *,
                 connect_timeout: float = 60.0) -> None:
        self.channel = channel
        self.peer = peer
        self.tag = tag
        self.target_port = int(target_port)
        self.connect_timeout = connect_timeout
        self.bytes_out = 0
        self.bytes_in = 0
        self.frames_out = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._count_lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(16)
        self._server.settimeout(_POLL)
        self.port: int = self._server.getsockname()[1]
        self._spawn(self._accept_loop, "accept")
        self._spawn(self._open_loop, "open")

    # -- threads ---------------------------------------------------------------------------------
    def _spawn(self, fn: Any, what: str, *args: Any) -> None:
        t = threading.Thread(target=self._guard, args=(fn, *args), daemon=True,
                             name=f"relay-{self.channel.me}-{self.peer}-{what}")
        with self._count_lock:
            self._threads.append(t)
        t.start()

    def _guard(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except BaseException as e:  # noqa: BLE001 - kept for the owner, who reports it
            if not self._stop.is_set():
                self.error = self.error or e
                log.debug("relay %s->%s: %s", self.channel.me, self.peer, e)

    def _track(self, sock: socket.socket) -> socket.socket:
        with self._count_lock:
            self._socks.append(sock)
        return sock

    def _accept_loop(self) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(None)
            self._track(conn)
            self.channel.send(self.peer, f"{self.tag}.open", {"cid": n}, kind="control")
            self._pumps(conn, send_tag=f"{self.tag}.d.o{n}", recv_tag=f"{self.tag}.d.i{n}")
            n += 1

    def _open_loop(self) -> None:
        while not self._stop.is_set():
            msg = self._recv(f"{self.tag}.open")
            if msg is None:
                return
            cid = msg.get("cid") if isinstance(msg, dict) else None
            if not isinstance(cid, int) or isinstance(cid, bool) or cid < 0:
                raise ProtocolError(f"{self.channel.me}: {self.tag}.open from {self.peer!r} is malformed")
            conn = self._connect_local()
            self._track(conn)
            self._pumps(conn, send_tag=f"{self.tag}.d.i{cid}", recv_tag=f"{self.tag}.d.o{cid}")

    def _connect_local(self) -> socket.socket:
        deadline = time.monotonic() + self.connect_timeout
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.settimeout(None)
                return conn
            except OSError:
                if self._stop.is_set() or time.monotonic() > deadline:
                    raise TransportError(f"{self.channel.me}: the local PSI library did not listen on "
                                         f"127.0.0.1:{self.target_port} within {self.connect_timeout:.0f} s") from None
                time.sleep(0.05)

    def _pumps(self, conn: socket.socket, send_tag: str, recv_tag: str) -> None:
        self._spawn(self._sock_to_channel, send_tag, conn, send_tag)
        self._spawn(self._channel_to_sock, recv_tag, conn, recv_tag)

    def _sock_to_channel(self, conn: socket.socket, tag: str) -> None:
        while True:
            try:
                data = conn.recv(CHUNK)
            except OSError:
                data = b""
            if self._stop.is_set():
                return
            self.channel.send(self.peer, tag, data, kind="masked")
            with self._count_lock:
                self.bytes_out += len(data)
                self.frames_out += 1
            if not data:
                return

    def _channel_to_sock(self, conn: socket.socket, tag: str) -> None:
        while True:
            data = self._recv(tag)
            if data is None:
                return
            if not isinstance(data, bytes):
                raise ProtocolError(f"{self.channel.me}: {tag} from {self.peer!r} is not bytes")
            if not data:
                try:
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            try:
                conn.sendall(data)
            except OSError:
                return  # the library closed its end; the peer learns it from our end of stream
            with self._count_lock:
                self.bytes_in += len(data)

    def _recv(self, tag: str) -> Any:
        """The next message under ``tag``, or None once the relay stops or the job aborts."""
        while not self._stop.is_set():
            try:
                return self.channel.recv(self.peer, tag, timeout=_POLL)
            except TransportError:
                if self.channel.mailbox.failure is not None:
                    return None
        return None

    # -- lifetime --------------------------------------------------------------------------------
    def close(self, timeout: float = 5.0) -> None:
        """Stop relaying, close every socket and wait for the relay's threads."""
        self._stop.set()
        try:
            self._server.close()
        except OSError:
            pass
        with self._count_lock:
            socks, threads = list(self._socks), list(self._threads)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> "ChannelLinkRelay":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
