"""gRPC implementation of :class:`Channel`, with mutual TLS between separate processes.

Every participant runs one gRPC server (its ``address`` in the job spec) exposing a single
unary method, ``/fedrisk.v1.Party/Deliver``, that takes one codec frame. Sending is a call to
the peer's ``Deliver``; it returns once the frame is validated and in the peer's mailbox, so a
returned ``send`` means "delivered". Frames are raw bytes: there is no protobuf schema to keep in
step and nothing but the codec ever interprets a payload.

Trust, checked on every call:

* the TLS handshake requires both sides to present certificates signed by the job's CA;
* the client pins the server's expected name (``ssl_target_name_override`` = the peer's party
  name), so a party cannot impersonate another party's server;
* the server reads the client's certificate from the auth context, takes its identity under
  the same rule the client's name check follows (:func:`~fedrisk.transport.certs.certificate_identity`:
  one CN, SANs absent or equal to it), and refuses any frame whose envelope names a different
  sender (so a party cannot speak for another).

Peers that are not up yet are retried with exponential backoff until ``connect_timeout``; then a
:class:`TransportError` names the party and address.

Abuse by an authenticated peer (issue 12 item 7): frames beyond the mailbox's per-peer queue
limits are answered ``RESOURCE_EXHAUSTED`` at once (the server thread is not held) and an honest
sender retries with backoff for up to ``recv_timeout``; refusals are kept as a bounded list, logged
for the first :data:`LOGGED_REFUSALS` per peer and then only counted, and every peer-supplied
string in them (abort reasons included) is cut and escaped by
:func:`~fedrisk.transport.safe_text.safe_text`.
"""
from __future__ import annotations

import logging
import os
import socket
import ssl
import tempfile
import threading
import time
from collections import defaultdict, deque
from concurrent import futures
from typing import Any, Mapping

# gRPC's C core logs every failed handshake at INFO; a refused peer is reported by us instead
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc  # noqa: E402
from cryptography import x509  # noqa: E402

from fedrisk.errors import CodecError, TransportError
from fedrisk.transport.certs import TlsFiles, certificate_identity
from fedrisk.transport.channel import Channel, QueueFull
from fedrisk.transport.codec import DEFAULT_MAX_BYTES, encode
from fedrisk.transport.safe_text import safe_text

__all__ = ["GrpcChannel"]

_METHOD = "/fedrisk.v1.Party/Deliver"
_ABORT_TAG = "ctl.abort"
#: refusals logged per peer before the rest are only counted
LOGGED_REFUSALS = 20
#: refusal reasons kept in memory (most recent)
KEPT_REFUSALS = 100
#: distinct client certificates whose sender :meth:`GrpcChannel._sender` remembers (then it starts afresh)
_KEPT_SENDERS = 64
log = logging.getLogger("fedrisk.transport")


def _identity(x: bytes) -> bytes:
    return x


_BIND_ADVICE = {
    "in use": "another process is using that port (another fedrisk job, this party's `fedrisk serve`, or a "
              "process of an earlier run that is still running); stop it, or give {me} another port in the job spec",
    "not here": "no network interface of this host has the address {host}; bind to all interfaces with "
                "listen = \"0.0.0.0:{port}\" in this party's table and keep address = what the peers dial",
    "denied": "binding port {port} is not permitted for this account (ports below 1024 need privileges); "
              "use a port of 1024 or above",
}


def _bind_problem(addr: str) -> str:
    """Why the server could not bind ``addr``: "in use", "not here", "denied", or the system's words."""
    import errno

    host, _, port = addr.rpartition(":")
    try:
        infos = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
    except (socket.gaierror, ValueError) as e:
        return f"the host name cannot be resolved ({e}); check the address in the job spec"
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(sockaddr)
            except OSError as e:
                return {errno.EADDRINUSE: "in use", errno.EADDRNOTAVAIL: "not here",
                        errno.EACCES: "denied"}.get(e.errno, e.strerror or str(e))
    return "in use"  # gRPC failed, a plain bind works: another server came and went (a race); same advice


class GrpcChannel(Channel):
    """A participant's endpoint over gRPC + mTLS. Starts its server on construction of ``start()``."""

    #: a coordinator's fan-out keeps this many deliveries in flight (see Channel.send_many)
    parallel_sends = 16

    def __init__(self, me: str, addresses: Mapping[str, str], job: str, tls: TlsFiles, *,
                 connect_timeout: float = 60.0, peer_cas: Mapping[str, bytes] | None = None,
                 listen: str | None = None, bind_grace: float = 5.0, **kw: Any) -> None:
        super().__init__(me, list(addresses), job, **kw)
        #: how long ``start`` retries a port that is in use (a stale process of an earlier run may be exiting)
        self.bind_grace = bind_grace
        self.addresses = dict(addresses)
        #: where the server binds (default: this party's address, the one peers dial)
        self.listen = listen or self.addresses[me]
        self.tls = tls
        # per-institution CAs: a peer's certificate must come from its own CA, not just any CA
        # in the shared bundle (clients trust only that CA for that peer; servers check the issuer)
        self.peer_cas = {p: x509.load_pem_x509_certificate(pem) for p, pem in (peer_cas or {}).items()}
        self._peer_ca_pem = dict(peer_cas or {})
        self.connect_timeout = connect_timeout
        self._server: grpc.Server | None = None
        self._stubs: dict[str, Any] = {}
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()
        self.refused: deque[str] = deque(maxlen=KEPT_REFUSALS)
        self.refused_count: dict[str, int] = defaultdict(int)
        self._verified: set[str] = set()
        #: client certificate (PEM bytes) -> the sender it identifies (:meth:`_sender`)
        self._senders: dict[bytes, str | None] = {}

    # -- server --------------------------------------------------------------------------------
    def start(self) -> "GrpcChannel":
        # no SO_REUSEPORT (gRPC's default on Linux): a second process on this port (a stale run, this
        # party's `fedrisk serve`, another job) would otherwise bind too, and the kernel would hand each
        # peer's connection to either process. Bind exclusively and say who is in the way instead.
        opts = [("grpc.max_receive_message_length", self.max_bytes), ("grpc.max_send_message_length", self.max_bytes),
                ("grpc.so_reuseport", 0)]
        handler = grpc.method_handlers_generic_handler(
            "fedrisk.v1.Party",
            {"Deliver": grpc.unary_unary_rpc_method_handler(self._on_deliver, request_deserializer=_identity,
                                                            response_serializer=_identity)},
        )
        creds = grpc.ssl_server_credentials([(self.tls.key, self.tls.cert)], root_certificates=self.tls.ca,
                                            require_client_auth=True)
        addr = self.listen
        deadline = time.monotonic() + self.bind_grace
        while True:
            executor = futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix=f"grpc-{self.me}")
            server = grpc.server(executor, options=opts)
            server.add_generic_rpc_handlers((handler,))
            try:
                port = server.add_secure_port(addr, creds)
            except RuntimeError:
                port = 0
            if port != 0:
                break
            executor.shutdown(wait=False)
            why = _bind_problem(addr)
            if why == "in use" and time.monotonic() < deadline:
                time.sleep(0.25)  # a stale process of an earlier run may still be closing its server
                continue
            host, _, port_text = addr.rpartition(":")
            advice = _BIND_ADVICE[why].format(host=host.strip("[]"), port=port_text, me=self.me) \
                if why in _BIND_ADVICE else why
            raise TransportError(f"{self.me}: cannot listen on {addr}: {advice}")
        self._executor = executor
        server.start()
        self._server = server
        return self

    def _sender(self, auth: Mapping[str, Any]) -> str | None:
        """The party a frame comes from, by the client certificate TLS verified (see ``_on_deliver``).

        Worked out once per certificate: parsing it, applying the identity rule and checking a pinned
        CA's signature cost ~0.2 ms of every frame otherwise (the signature check alone; measured on
        the 2-core machine), on the critical path of every round trip. The cache is keyed by the
        certificate's exact bytes, so the answer is the one the checks would give again; it is bounded
        (a long-running service may meet many certificates).
        """
        pem = (auth.get("x509_pem_cert") or [b""])[0]
        try:
            return self._senders[pem]
        except KeyError:
            pass
        peer = self._client_identity(auth)
        if peer in self.peer_cas and not self._issued_by_pinned_ca(peer, auth):
            peer = f"{peer} (certificate not issued by {peer}'s own CA)"
        with self._lock:
            if len(self._senders) >= _KEPT_SENDERS:
                self._senders.clear()
            self._senders[pem] = peer
        return peer

    def _on_deliver(self, frame: bytes, context: grpc.ServicerContext) -> bytes:
        peer = self._sender(context.auth_context())
        if peer is None or peer not in self.peers:
            reason = (f"{self.me}: refused a connection from certificate name {safe_text(repr(peer), 300)}: "
                      f"not a party of job {self.job!r}")
            self._refuse(str(peer), reason)
            context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)
        try:
            env = self.mailbox.put(frame, authenticated_sender=peer)
        except QueueFull as e:
            # no log line per frame: a flood must not turn into a flood of log
            self.refused_count[f"{peer}:queue-full"] += 1
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        except CodecError as e:
            reason = f"{self.me}: refused a message from {peer!r}: {safe_text(e, 400)}"
            self._refuse(peer, reason)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, reason)
        if env.tag == _ABORT_TAG:
            why = env.body.get("reason", "") if isinstance(env.body, dict) else ""
            if peer in self.tolerated:
                # a peer whose dropout the protocol survives: its failure is its own, not the job's
                self.mark_down(peer, f"it stopped: {safe_text(why, 300)}")
            else:
                self.mailbox.fail(f"party {peer!r} aborted the job: {safe_text(why, 1000)}")
        return b""

    def _refuse(self, peer: str, reason: str) -> None:
        """Keep (bounded) and log (the first few per peer) why a frame or connection was refused."""
        n = self.refused_count[peer] = self.refused_count[peer] + 1
        self.refused.append(reason)
        if n <= LOGGED_REFUSALS:
            log.warning(reason)
        elif n == LOGGED_REFUSALS + 1 or n % 1000 == 0:
            log.warning("%s: %d refusals from %s so far; further ones are only counted", self.me, n, safe_text(peer, 80))

    @staticmethod
    def _client_identity(auth: Mapping[str, Any]) -> str | None:
        """The client's party name under :func:`~fedrisk.transport.certs.certificate_identity`, or why not."""
        pem = (auth.get("x509_pem_cert") or [b""])[0]
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            return None
        try:
            return certificate_identity(cert)
        except ValueError as e:
            return f"(certificate breaks the identity rule: {e})"

    def _issued_by_pinned_ca(self, peer: str, auth: Mapping[str, Any]) -> bool:
        pem = (auth.get("x509_pem_cert") or [b""])[0]
        try:
            x509.load_pem_x509_certificate(pem).verify_directly_issued_by(self.peer_cas[peer])
            return True
        except Exception:  # noqa: BLE001 - any parse or signature failure means "not issued by it"
            return False

    # -- client --------------------------------------------------------------------------------
    def _stub(self, to: str):
        with self._lock:
            stub = self._stubs.get(to)
            if stub is None:
                creds = grpc.ssl_channel_credentials(root_certificates=self._peer_ca_pem.get(to, self.tls.ca),
                                                     private_key=self.tls.key,
                                                     certificate_chain=self.tls.cert)
                opts = [
                    ("grpc.ssl_target_name_override", to),
                    ("grpc.max_receive_message_length", self.max_bytes),
                    ("grpc.max_send_message_length", self.max_bytes),
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 1000),
                ]
                ch = grpc.secure_channel(self.addresses[to], creds, options=opts)
                self._channels[to] = ch
                stub = ch.unary_unary(_METHOD, request_serializer=_identity, response_deserializer=_identity)
                self._stubs[to] = stub
            return stub

    def _deliver_once(self, to: str, frame: bytes, timeout: float) -> None:
        self._stub(to)(frame, timeout=timeout)

    def _deliver(self, to: str, frame: bytes) -> None:
        stub = self._stub(to)
        start = time.monotonic()
        # a peer whose dropout the job survives gets a short budget: one dead bank must cost
        # seconds, not the start-up connect timeout, and must not hold up the banks still in
        tolerant = to in self.tolerated or to in self.watched
        budget = min(self.send_timeout, self.connect_timeout) if tolerant else self.connect_timeout
        rpc_timeout = max(min(30.0, self.send_timeout) if tolerant else 30.0, len(frame) / 5e6)
        deadline = start + budget
        delay = 0.05
        while True:
            left = deadline - time.monotonic()
            try:
                self._check_server_identity(to)
                # the RPC deadline covers both transfer and the peer's decode; large frames get more time
                stub(frame, timeout=rpc_timeout)
                return
            except OSError as e:  # the identity check could not connect or the handshake failed
                if self.mailbox.failure is not None:
                    raise TransportError(self.mailbox.failure) from None
                if left <= 0:
                    raise TransportError(
                        f"{self.me}: party {to!r} at {self.addresses[to]} unreachable after {budget:.0f} s "
                        f"({type(e).__name__}: {safe_text(e, 300)}); is it running, and does it trust the same CA?"
                    ) from None
            except grpc.RpcError as e:
                code = e.code()
                # FAILED_PRECONDITION: the peer is up but will not take this (e.g. a scoring service
                # asked for a session it already served): its reason, not "unreachable"
                if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT,
                            grpc.StatusCode.FAILED_PRECONDITION):
                    raise TransportError(f"{self.me} -> {to}: refused: {safe_text(e.details(), 400)}") from None
                if self.mailbox.failure is not None:
                    # the job was aborted by a peer: stop knocking on doors that are closing
                    raise TransportError(self.mailbox.failure) from None
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    # back-pressure: the peer has not read what we sent yet; wait as long as a recv would
                    if time.monotonic() - start > self.recv_timeout:
                        raise TransportError(f"{self.me} -> {to}: the peer's queue stayed full for "
                                             f"{self.recv_timeout:.0f} s: {safe_text(e.details(), 300)}") from None
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    deadline = time.monotonic() + budget
                    continue
                if code != grpc.StatusCode.UNAVAILABLE or left <= 0:
                    raise TransportError(
                        f"{self.me}: party {to!r} at {self.addresses[to]} unreachable after {budget:.0f} s "
                        f"({code.name}: {safe_text(e.details(), 300)}); is it running, and does it trust the same CA?"
                    ) from None
            time.sleep(min(delay, max(left, 0.0)))
            delay = min(delay * 2, 1.0)

    def _check_server_identity(self, to: str) -> None:
        """Once per peer: the server at ``to``'s address holds a CA-signed certificate whose identity,
        under :func:`~fedrisk.transport.certs.certificate_identity`, is ``to``.

        gRPC's own check accepts a certificate if any DNS SAN equals the name, so a certificate naming
        two parties would pass for both; this applies the server's rule on the client side too. It is
        a separate TLS handshake before the first frame (gRPC does not expose the peer certificate of
        a client call), so it proves that ``to``'s key answered at that address, not that every later
        connection reaches the same server. Raises ``OSError`` while the peer is not reachable.
        """
        if to in self._verified:
            return
        host, port = self.addresses[to].rsplit(":", 1)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False  # the identity rule below is the name check
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=self._peer_ca_pem.get(to, self.tls.ca).decode("ascii"))
        ctx.set_alpn_protocols(["h2"])
        with tempfile.TemporaryDirectory(prefix="fedrisk-tls-") as d:  # ssl loads client keys from files only
            cert_f, key_f = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
            for path, data in ((cert_f, self.tls.cert), (key_f, self.tls.key)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
            ctx.load_cert_chain(cert_f, key_f)
        with socket.create_connection((host.strip("[]"), int(port)), timeout=10) as sock:
            with ctx.wrap_socket(sock) as tls:
                der = tls.getpeercert(binary_form=True)
        try:
            ident = certificate_identity(x509.load_der_x509_certificate(der))
        except ValueError as e:
            raise TransportError(f"{self.me} -> {to}: refused the server at {self.addresses[to]}: its certificate "
                                 f"breaks the identity rule: {e}") from None
        if ident != to:
            raise TransportError(f"{self.me} -> {to}: refused the server at {self.addresses[to]}: its certificate "
                                 f"identifies {ident!r}") from None
        self._verified.add(to)

    def abort(self, reason: str) -> None:
        """Best-effort: tell every peer this participant failed, so they stop waiting."""
        for p in self.peers:
            try:
                frame = encode(self.job, self.me, p, _ABORT_TAG, "control", {"reason": reason[:2000]}, max_bytes=DEFAULT_MAX_BYTES)
                self.ledger.record(p, _ABORT_TAG, "control", len(frame), frame)  # before it leaves
                self._stub(p)(frame, timeout=2.0)
            except Exception:  # noqa: BLE001 - the peer may be gone already; aborting must not raise
                pass

    def close(self, grace: float = 0.5) -> None:
        for ch in self._channels.values():
            ch.close()
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None
            self._executor.shutdown(wait=False)  # gRPC never shuts down the pool it was given
        super().close()
