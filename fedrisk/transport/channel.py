"""The one interface algorithms talk through: ``send(to, tag, obj, kind=...)`` and ``recv(frm, tag)``.

Algorithms never know whether they run in one process (tests, notebooks) or across institutions
over gRPC: they get a :class:`Channel` and nothing else. Every ``send`` goes through the codec
(so an in-memory run rejects exactly what the wire would) and is recorded in the ledger.

Messages are matched by ``(sender, tag)``; several messages under the same key are delivered in
order. Tags carry the protocol step and round (``"hlr.update.r3"``), so a late or duplicate
message can never be mistaken for another step's.

For privacy tests a channel can keep a *capture* of every envelope it received: the test then
inspects what a party actually got, not what the protocol meant to send.
"""
from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import defaultdict, deque
from typing import Any, Iterable, Sequence

from fedrisk.errors import CodecError, TransportError
from fedrisk.transport.codec import DEFAULT_MAX_BYTES, Envelope, decode, encode
from fedrisk.transport.ledger import Ledger

__all__ = ["Channel", "Mailbox", "InMemoryNetwork", "InMemoryChannel", "DEFAULT_RECV_TIMEOUT"]

DEFAULT_RECV_TIMEOUT = 600.0


class Mailbox:
    """Thread-safe inbox of decoded envelopes keyed by (sender, tag)."""

    def __init__(
        self,
        owner: str,
        job: str,
        senders: Iterable[str],
        tag_prefixes: Sequence[str] | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        capture: bool = False,
    ) -> None:
        self.owner = owner
        self.job = job
        self.senders = frozenset(senders)
        self.tag_prefixes = tuple(tag_prefixes) if tag_prefixes is not None else None
        self.max_bytes = max_bytes
        self.captured: list[Envelope] | None = [] if capture else None
        self._boxes: dict[tuple[str, str], deque[Envelope]] = defaultdict(deque)
        self._cv = threading.Condition()
        self._failure: str | None = None

    def put(self, frame: bytes, authenticated_sender: str | None = None) -> Envelope:
        """Decode, validate and file a frame. Raises :class:`CodecError` if it is refused.

        ``authenticated_sender`` is the identity proven by the transport (the certificate name);
        a frame claiming another sender is refused, so no party can speak for another.
        """
        env = decode(
            frame,
            job=self.job,
            to=self.owner,
            senders=self.senders,
            tag_prefixes=self.tag_prefixes,
            max_bytes=self.max_bytes,
        )
        if authenticated_sender is not None and env.sender != authenticated_sender:
            raise CodecError(
                f"message claims to come from {env.sender!r} but the connection is authenticated as {authenticated_sender!r}"
            )
        with self._cv:
            if self.captured is not None:
                self.captured.append(env)
            self._boxes[(env.sender, env.tag)].append(env)
            self._cv.notify_all()
        return env

    def fail(self, reason: str) -> None:
        """Wake every waiting ``take`` with an error (e.g. a peer reported it aborted)."""
        with self._cv:
            self._failure = reason
            self._cv.notify_all()

    @property
    def failure(self) -> str | None:
        """Why the job was aborted (a peer's ``ctl.abort``), or None while it runs."""
        return self._failure

    def take(self, frm: str, tag: str, timeout: float) -> Envelope:
        deadline = time.monotonic() + timeout
        key = (frm, tag)
        with self._cv:
            while True:
                box = self._boxes.get(key)
                if box:
                    env = box.popleft()
                    if not box:
                        del self._boxes[key]
                    return env
                if self._failure is not None:
                    raise TransportError(self._failure)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TransportError(
                        f"{self.owner}: no message {tag!r} from party {frm!r} within {timeout:.0f} s; "
                        f"is {frm!r} running and on the same job?"
                    )
                self._cv.wait(min(left, 1.0))


class Channel(ABC):
    """A party's endpoint. Subclasses implement only :meth:`_deliver` (and their mailbox feed)."""

    def __init__(self, me: str, peers: Iterable[str], job: str, ledger: Ledger | None = None,
                 recv_timeout: float = DEFAULT_RECV_TIMEOUT, max_bytes: int = DEFAULT_MAX_BYTES,
                 capture: bool = False, tag_prefixes: Sequence[str] | None = None) -> None:
        self.me = me
        self.peers = tuple(p for p in peers if p != me)
        self.job = job
        self.ledger = ledger if ledger is not None else Ledger(me)
        self.recv_timeout = recv_timeout
        self.max_bytes = max_bytes
        self.mailbox = Mailbox(me, job, self.peers, tag_prefixes=tag_prefixes, max_bytes=max_bytes, capture=capture)

    # -- the interface algorithms use -------------------------------------------------------
    def send(self, to: str, tag: str, obj: Any, *, kind: str) -> int:
        """Send ``obj`` to party ``to`` under ``tag``; returns the bytes sent.

        ``kind`` is what the ledger calls this message (ciphertext, masked, aggregate,
        public-parameter, model, metric, plaintext-by-design, control): the sender must say.
        """
        if to not in self.peers:
            raise TransportError(f"{self.me}: cannot send {tag!r} to unknown party {to!r}; known: {list(self.peers)}")
        frame = encode(self.job, self.me, to, tag, kind, obj, max_bytes=self.max_bytes)
        # recorded before it is handed over: a frame that may have left (even if the call then
        # fails) is in the ledger; the ledger may over-report, never under-report
        self.ledger.record(to, tag, kind, len(frame))
        self._deliver(to, frame)
        return len(frame)

    def recv(self, frm: str, tag: str, timeout: float | None = None) -> Any:
        """Block until the message ``tag`` from ``frm`` arrives; return its payload."""
        if frm not in self.peers:
            raise TransportError(f"{self.me}: cannot receive from unknown party {frm!r}; known: {list(self.peers)}")
        return self.mailbox.take(frm, tag, self.recv_timeout if timeout is None else timeout).body

    def broadcast(self, to: Iterable[str], tag: str, obj: Any, *, kind: str) -> int:
        return sum(self.send(p, tag, obj, kind=kind) for p in to)

    def gather(self, frm: Iterable[str], tag: str, timeout: float | None = None) -> dict[str, Any]:
        return {p: self.recv(p, tag, timeout) for p in frm}

    @property
    def captured(self) -> list[Envelope]:
        """Every envelope this party received (only when created with ``capture=True``)."""
        if self.mailbox.captured is None:
            raise RuntimeError("this channel was created without capture=True")
        return self.mailbox.captured

    def close(self) -> None:
        self.ledger.close()

    def __enter__(self) -> "Channel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def _deliver(self, to: str, frame: bytes) -> None:
        """Hand one encoded frame to party ``to``; return once it is in that party's mailbox."""


class InMemoryNetwork:
    """All parties of a job in one process: for unit tests, notebooks and protocol suites."""

    def __init__(self, parties: Iterable[str], job: str = "test", capture: bool = False,
                 recv_timeout: float = 60.0, ledger_dir: str | None = None,
                 tag_prefixes: Sequence[str] | None = None) -> None:
        self.parties = tuple(parties)
        self.job = job
        self.channels: dict[str, InMemoryChannel] = {}
        for p in self.parties:
            ledger = Ledger(p, None if ledger_dir is None else f"{ledger_dir}/{p}.jsonl")
            self.channels[p] = InMemoryChannel(self, p, ledger=ledger, capture=capture,
                                               recv_timeout=recv_timeout, tag_prefixes=tag_prefixes)

    def channel(self, name: str) -> "InMemoryChannel":
        return self.channels[name]

    def __getitem__(self, name: str) -> "InMemoryChannel":
        return self.channels[name]


class InMemoryChannel(Channel):
    def __init__(self, network: InMemoryNetwork, me: str, **kw: Any) -> None:
        super().__init__(me, network.parties, network.job, **kw)
        self.network = network

    def _deliver(self, to: str, frame: bytes) -> None:
        self.network.channels[to].mailbox.put(frame, authenticated_sender=self.me)
