"""Before the handshake: wait for the peers this participant must reach, and explain why one cannot be.

gRPC reports a peer that is not up yet and a peer whose certificate is wrong the same way
(``UNAVAILABLE``, retried until a timeout, then raw transport text). A party whose partner never
starts, or whose partner's certificate comes from another CA, deserves a quick answer that names
the partner, its address and the likely fix. So each participant first opens a plain TLS
connection (Python's :mod:`ssl`, the same CA, certificate and expected name as the gRPC channel)
to every peer it will send to at start-up, and classifies the outcome:

* nothing listening yet -> retry every half second, log every few seconds whom it waits for, and
  give up after ``security.connect_timeout`` with one line naming the peer and address;
* the peer's certificate is not signed by the CA we trust -> "bureau at host:port presented a
  certificate from another CA" at once;
* the certificate is for another name, or expired -> said so at once;
* the peer refuses *our* certificate (a TLS alert after the handshake) -> "refused this party's
  certificate", at once.

"At once" means after :data:`CERT_GRACE` seconds of the same answer: a stale process of an
earlier run that still holds the port while it shuts down must not fail a fresh job.

The probe sends the HTTP/2 connection preface and reads the server's first frame, so the server's
verdict on our certificate (sent after the handshake under TLS 1.3) is seen. It carries no job
data; the gRPC server sees one connection that ends after its settings frame.
"""
from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path
from typing import Any, Mapping

from fedrisk.errors import TransportError

__all__ = ["wait_for_peers", "probe"]

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
LOG_EVERY = 5.0
#: how long a certificate problem must persist before it is reported (a stale process may be exiting)
CERT_GRACE = 5.0


class _NotUp(Exception):
    """Nothing accepted the connection (yet)."""


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _context(ca_pem: bytes, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=ca_pem.decode("ascii"))
    ctx.load_cert_chain(str(cert), str(key))
    ctx.check_hostname = True
    ctx.set_alpn_protocols(["h2"])
    return ctx


def probe(me: str, peer: str, address: str, ctx: ssl.SSLContext, ca_file: str, timeout: float = 3.0) -> None:
    """One TLS connection to ``peer``; return if it accepts us, raise :class:`TransportError` if it never will.

    Raises ``_NotUp`` while nothing listens at ``address``.
    """
    host, port = _split(address)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except (ConnectionRefusedError, socket.timeout, TimeoutError) as e:
        raise _NotUp(str(e)) from None
    except OSError as e:  # no route, unknown host: may be transient (DNS, interface coming up)
        raise _NotUp(e.strerror or str(e)) from None
    who = f"{peer} at {address}"
    try:
        with ctx.wrap_socket(sock, server_hostname=peer) as tls:
            tls.settimeout(timeout)
            try:
                tls.sendall(_PREFACE)
                tls.recv(1)
            except socket.timeout:
                return  # the server said nothing yet but did not refuse us either
    except ssl.SSLCertVerificationError as e:
        code = getattr(e, "verify_code", None)
        if code == 62 or "hostname" in str(e).lower():
            raise TransportError(f"{me}: {who} presented a certificate that is not for the name {peer!r}; "
                                 f"give that host the certificate issued to {peer!r} (CN/SAN = {peer})") from None
        if code == 10 or "expired" in str(e).lower():
            raise TransportError(f"{me}: {who} presented an expired certificate; renew {peer}'s certificate") from None
        if code == 9 or "not yet valid" in str(e).lower():
            raise TransportError(f"{me}: {who} presented a certificate that is not valid yet; check that host's clock") from None
        raise TransportError(f"{me}: {who} presented a certificate from another CA (not signed by {ca_file}); "
                             "give every participant certificates from the same CA, or name that party's CA with "
                             f"parties.{peer}.ca in the job spec") from None
    except ssl.SSLError as e:
        reason = (e.reason or str(e)).lower()
        if any(k in reason for k in ("unknown_ca", "unknown ca", "bad_certificate", "bad certificate",
                                     "certificate_required", "certificate required", "decrypt_error",
                                     "certificate_unknown", "certificate unknown", "access_denied")):
            raise TransportError(f"{me}: {who} refused this party's certificate ({e.reason}); it trusts another "
                                 f"CA than the one that signed {me}'s certificate, or expects another name") from None
        if "wrong_version" in reason or "wrong version" in reason or "record layer" in reason:
            raise TransportError(f"{me}: {who} does not speak TLS; is that address a fedrisk party?") from None
        raise _NotUp(str(e)) from None
    except (ConnectionResetError, BrokenPipeError, socket.timeout, TimeoutError) as e:
        raise _NotUp(str(e)) from None


def wait_for_peers(me: str, peers: list[str], addresses: Mapping[str, str], ca_pem: bytes, certs_dir: Path,
                   ca_file: str, limit: float, log: Any = None, peer_cas: Mapping[str, bytes] | None = None) -> float:
    """Block until every peer accepts a TLS connection from us; return the seconds waited.

    Raises :class:`TransportError` naming the first peer that presents a wrong certificate or
    refuses ours (at once), or that is still not listening after ``limit`` seconds.
    """
    contexts = {p: _context((peer_cas or {}).get(p, ca_pem), certs_dir / f"{me}.pem", certs_dir / f"{me}-key.pem")
                for p in peers}
    t0 = time.monotonic()
    pending = list(peers)
    last_log = t0 - LOG_EVERY + 2.0  # the first note after 2 s, then every LOG_EVERY s
    wrong_since: dict[str, float] = {}
    while pending:
        for p in list(pending):
            try:
                probe(me, p, addresses[p], contexts[p], ca_file)
                pending.remove(p)
            except _NotUp:
                wrong_since.pop(p, None)
            except TransportError:
                first = wrong_since.setdefault(p, time.monotonic())
                if time.monotonic() - first >= min(CERT_GRACE, limit):
                    raise
        if not pending:
            break
        now = time.monotonic()
        if now - t0 >= limit:
            names = ", ".join(f"{p!r} at {addresses[p]}" for p in pending)
            raise TransportError(f"{me}: {names} not listening after {limit:.0f} s (security.connect_timeout); "
                                 f"start `fedrisk party ... --as {pending[0]}` on that host, or check the address "
                                 "and firewall")
        if log is not None and now - last_log >= LOG_EVERY:
            down = [p for p in pending if p not in wrong_since]
            if down:
                log.info("waiting for %s to start listening (%.0f s of %.0f s)",
                         ", ".join(f"{p} at {addresses[p]}" for p in down), now - t0, limit)
            for p in pending:
                if p in wrong_since:
                    log.info("%s at %s answers with a certificate this party does not accept; checking again",
                             p, addresses[p])
            last_log = now
        time.sleep(0.5)
    return time.monotonic() - t0
