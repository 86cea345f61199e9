"""The one interface algorithms talk through: ``send(to, tag, obj, kind=...)`` and ``recv(frm, tag)``.

Algorithms never know whether they run in one process (tests, notebooks) or across institutions
over gRPC: they get a :class:`Channel` and nothing else. Every ``send`` goes through the codec
(so an in-memory run rejects exactly what the wire would) and is recorded in the ledger.

Messages are matched by ``(sender, tag)``; several messages under the same key are delivered in
order. Tags carry the protocol step and round (``"hlr.update.r3"``), so a late or duplicate
message can never be mistaken for another step's.

For privacy tests a channel can keep a *capture* of every envelope it received: the test then
inspects what a party actually got, not what the protocol meant to send.

An authenticated peer can still send frames nobody will read (issue 12: 100 x 4 MB under unread
tags stayed in memory for the whole job). The mailbox therefore bounds, per sender, the bytes and
the number of frames waiting to be read (:class:`MailboxLimits`): a frame that would exceed them
is refused with :class:`QueueFull` and the sender retries later (back-pressure: an honest sender
that is merely ahead waits for the reader; over gRPC the refusal is ``RESOURCE_EXHAUSTED`` and the
server thread is released at once). A frame left unread for ``unread_ttl`` seconds is dropped,
and a later ``recv`` of it fails at once, naming the tag. Protocols that send more than the queue
limit to one peer before reading anything from it would wait on each other: the defaults (1 GiB,
100,000 frames per peer) are far above what the protocols here park.

Dropouts (issue 14). By default any peer that cannot be reached, or that reports it aborted, fails
the whole job. A protocol that survives the loss of some peers (horizontal training over secure
aggregation) declares them with :meth:`Channel.tolerate_dropouts` once the all-party steps are
over. From then on a peer in that set that cannot be reached within ``send_timeout`` seconds, or
that aborts, is marked *down* (:attr:`Channel.down`, with the reason): sends to it are dropped at
once (the protocol sees it as silent), and a ``recv`` from it fails at once with a
:class:`~fedrisk.errors.TransportError` (the protocol's dropout path) instead of waiting out its
timeout. A peer is also marked down by the protocol itself (:meth:`Channel.mark_down`) when it left
a sum, and may be told so (:meth:`Channel.tell_dropped`, tag ``ctl.dropped``): it then stops with
one line saying the job goes on without it. Down is final for the job: a dropped peer does not
rejoin.
"""
from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict, defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from fedrisk.errors import CodecError, TransportError
from fedrisk.transport.codec import DEFAULT_MAX_BYTES, Envelope, decode, encode
from fedrisk.transport.ledger import Ledger

__all__ = ["Channel", "Mailbox", "MailboxLimits", "QueueFull", "RecvTimeout", "InMemoryNetwork", "InMemoryChannel",
           "DEFAULT_RECV_TIMEOUT", "DROPPED_TAG", "PING_TAG"]

DEFAULT_RECV_TIMEOUT = 600.0
#: control message: "the job goes on without you" (see :meth:`Channel.tell_dropped`)
DROPPED_TAG = "ctl.dropped"
#: control message: "are you still there?" (see :meth:`Channel.recv`); never queued
PING_TAG = "ctl.ping"
#: bytes charged per queued frame on top of its length (the envelope's Python objects)
FRAME_OVERHEAD = 1024


class RecvTimeout(TransportError):
    """Nothing arrived under the awaited tag within the timeout."""


class QueueFull(TransportError):
    """The receiver holds as much unread data from this sender as it allows; retry later."""


@dataclass(frozen=True)
class MailboxLimits:
    """What one sender may park in a receiver's mailbox before it is read.

    ``max_queued_bytes`` counts frame bytes plus :data:`FRAME_OVERHEAD` per frame and must leave
    room for one frame of the channel's ``max_bytes``; ``unread_ttl`` is how long (seconds) an
    unread frame is kept; ``None`` means ``max(3600, 4 x recv_timeout)``.
    """

    max_queued_bytes: int = 1 << 30
    max_queued_frames: int = 100_000
    unread_ttl: float | None = None


class _Queued:
    __slots__ = ("env", "cost", "at")

    def __init__(self, env: Envelope, cost: int, at: float) -> None:
        self.env, self.cost, self.at = env, cost, at


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
        limits: MailboxLimits | None = None,
        unread_ttl: float = 3600.0,
        inbound: Ledger | None = None,
    ) -> None:
        self.owner = owner
        self.job = job
        self.senders = frozenset(senders)
        self.tag_prefixes = tuple(tag_prefixes) if tag_prefixes is not None else None
        self.max_bytes = max_bytes
        self.limits = limits or MailboxLimits()
        self.unread_ttl = self.limits.unread_ttl if self.limits.unread_ttl is not None else unread_ttl
        self.inbound = inbound
        self.captured: list[Envelope] | None = [] if capture else None
        self._boxes: dict[tuple[str, str], deque[_Queued]] = defaultdict(deque)
        self._queued_bytes: dict[str, int] = defaultdict(int)
        self._queued_frames: dict[str, int] = defaultdict(int)
        #: (sender, tag) -> how many frames were dropped unread (bounded: oldest keys forgotten)
        self.expired: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._cv = threading.Condition()
        self._failure: str | None = None
        self._next_sweep = 0.0
        #: peers that dropped out of the job (see :meth:`Channel.tolerate_dropouts`), with why
        self.down: dict[str, str] = {}
        #: peers whose loss is their own dropout (set by :meth:`Channel.tolerate_dropouts`)
        self.tolerated: frozenset[str] = frozenset()

    def queued_bytes(self, sender: str) -> int:
        """Bytes (with per-frame overhead) from ``sender`` waiting to be read."""
        with self._cv:
            return self._queued_bytes.get(sender, 0)

    def put(self, frame: bytes, authenticated_sender: str | None = None, wait: float = 0.0) -> Envelope:
        """Decode, validate and file a frame. Raises :class:`CodecError` if it is refused.

        ``authenticated_sender`` is the identity proven by the transport (the certificate name);
        a frame claiming another sender is refused, so no party can speak for another. A frame
        that would take the sender over its queue limits waits up to ``wait`` seconds for the
        reader to make room, then raises :class:`QueueFull`.
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
        cost = len(frame) + FRAME_OVERHEAD
        deadline = time.monotonic() + wait
        with self._cv:
            while True:
                self._expire_locked(time.monotonic())
                q_bytes, q_frames = self._queued_bytes[env.sender], self._queued_frames[env.sender]
                if q_bytes + cost <= self.limits.max_queued_bytes and q_frames < self.limits.max_queued_frames:
                    break
                if q_frames == 0:  # a single frame above the byte limit can never fit: refuse for good
                    raise CodecError(f"message of {len(frame)} bytes is over the per-party queue limit "
                                     f"of {self.limits.max_queued_bytes} bytes")
                left = deadline - time.monotonic()
                if left <= 0 or self._failure is not None:
                    raise QueueFull(f"{self.owner}: {q_frames} unread messages ({q_bytes} bytes) from {env.sender!r} "
                                    f"already wait to be read; retry later")
                self._cv.wait(min(left, 1.0))
            if self.inbound is not None:
                self.inbound.record_inbound(env.sender, env.tag, env.kind, frame)
            if env.tag == PING_TAG:
                return env  # a liveness probe: its arrival is the answer, nothing to read
            if self.captured is not None:
                self.captured.append(env)
            self._boxes[(env.sender, env.tag)].append(_Queued(env, cost, time.monotonic()))
            self._queued_bytes[env.sender] += cost
            self._queued_frames[env.sender] += 1
            if env.tag == DROPPED_TAG and env.sender not in self.tolerated:
                # from the party that runs the job (a peer whose own dropout we tolerate cannot drop us)
                why = env.body.get("reason", "") if isinstance(env.body, dict) else ""
                self._failure = self._failure or (
                    f"{self.owner} was dropped from the job by {env.sender!r} ({str(why)[:300]}); "
                    f"the job goes on without it")
            self._cv.notify_all()
        return env

    def _release_locked(self, sender: str, item: _Queued) -> None:
        self._queued_bytes[sender] -= item.cost
        self._queued_frames[sender] -= 1
        self._cv.notify_all()  # a sender waiting for room

    def _expire_locked(self, now: float) -> None:
        """Drop every frame unread for longer than ``unread_ttl``; remember which (bounded).

        Sweeps at most once per second (a scan of the waiting keys), so a flood of frames does not
        make every ``put`` scan the whole mailbox.
        """
        if now < self._next_sweep:
            return
        self._next_sweep = now + min(1.0, self.unread_ttl / 4)
        cutoff = now - self.unread_ttl
        for key in [k for k, box in self._boxes.items() if box and box[0].at < cutoff]:
            box = self._boxes[key]
            while box and box[0].at < cutoff:
                self._release_locked(key[0], box.popleft())
                self.expired[key] = self.expired.pop(key, 0) + 1
                while len(self.expired) > 1000:
                    self.expired.popitem(last=False)
            if not box:
                del self._boxes[key]

    def fail(self, reason: str) -> None:
        """Wake every waiting ``take`` with an error (e.g. a peer reported it aborted)."""
        with self._cv:
            self._failure = reason
            self._cv.notify_all()

    def peer_down(self, peer: str, reason: str) -> None:
        """Make every ``take`` from ``peer`` with nothing queued fail at once: it dropped out."""
        with self._cv:
            self.down.setdefault(peer, reason)
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
                self._expire_locked(time.monotonic())
                box = self._boxes.get(key)
                if box:
                    item = box.popleft()
                    if not box:
                        del self._boxes[key]
                    self._release_locked(frm, item)
                    return item.env
                if self._failure is not None:
                    raise TransportError(self._failure)
                if frm in self.down:
                    raise TransportError(f"{self.owner}: party {frm!r} dropped out ({self.down[frm]}); "
                                         f"no {tag!r} will come from it")
                if key in self.expired:
                    raise TransportError(
                        f"{self.owner}: message {tag!r} from party {frm!r} arrived but stayed unread for more than "
                        f"{self.unread_ttl:.0f} s and was dropped; raise the unread-message lifetime if steps are this slow"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RecvTimeout(
                        f"{self.owner}: no message {tag!r} from party {frm!r} within {timeout:.0f} s; "
                        f"is {frm!r} running and on the same job?"
                    )
                self._cv.wait(min(left, 1.0))


class Channel(ABC):
    """A party's endpoint. Subclasses implement only :meth:`_deliver` (and their mailbox feed)."""

    def __init__(self, me: str, peers: Iterable[str], job: str, ledger: Ledger | None = None,
                 recv_timeout: float = DEFAULT_RECV_TIMEOUT, max_bytes: int = DEFAULT_MAX_BYTES,
                 capture: bool = False, tag_prefixes: Sequence[str] | None = None,
                 limits: MailboxLimits | None = None, inbound_ledger: Ledger | None = None) -> None:
        self.me = me
        self.peers = tuple(p for p in peers if p != me)
        self.job = job
        self.ledger = ledger if ledger is not None else Ledger(me)
        self.inbound_ledger = inbound_ledger
        self.recv_timeout = recv_timeout
        self.max_bytes = max_bytes
        self.mailbox = Mailbox(me, job, self.peers, tag_prefixes=tag_prefixes, max_bytes=max_bytes, capture=capture,
                               limits=limits, unread_ttl=max(3600.0, 4 * recv_timeout), inbound=inbound_ledger)
        #: peers whose failure is their own dropout, not the job's (empty: every failure is fatal)
        self.tolerated: frozenset[str] = frozenset()
        #: peers probed while this party waits for them (a dead one ends the wait; see :meth:`watch`)
        self.watched: frozenset[str] = frozenset()
        #: seconds a send to a tolerated peer may take before that peer counts as dropped out
        self.send_timeout = 10.0
        self._send_pool = None  # made by the first parallel send_many
        self._send_pool_lock = threading.Lock()

    # -- dropouts ------------------------------------------------------------------------------
    def tolerate_dropouts(self, peers: Iterable[str], send_timeout: float | None = None) -> None:
        """From now on, losing one of ``peers`` is that peer's dropout, not the job's failure.

        Called by a protocol once the steps that need every party are over. ``send_timeout``
        bounds how long one send to such a peer may try (connect retries and the RPC deadline)
        before the peer is marked down.
        """
        unknown = set(peers) - set(self.peers)
        if unknown:
            raise TransportError(f"{self.me}: cannot tolerate dropouts of unknown parties {sorted(unknown)}")
        self.tolerated = self.mailbox.tolerated = self.tolerated | frozenset(peers)
        if send_timeout is not None:
            self.send_timeout = float(send_timeout)

    def watch(self, peers: Iterable[str], send_timeout: float | None = None) -> None:
        """Probe ``peers`` while waiting for them: one that cannot be reached ends the wait with an error.

        For the steps that need every party (before :meth:`tolerate_dropouts`): a participant
        that was killed says nothing, and without a probe its partners would wait out their
        whole receive timeout. ``send_timeout`` bounds each probe (and each send to them).
        """
        unknown = set(peers) - set(self.peers)
        if unknown:
            raise TransportError(f"{self.me}: cannot watch unknown parties {sorted(unknown)}")
        self.watched = self.watched | frozenset(peers)
        if send_timeout is not None:
            self.send_timeout = float(send_timeout)

    @property
    def down(self) -> dict[str, str]:
        """Peers that dropped out of the job, with the reason (first one recorded)."""
        return dict(self.mailbox.down)

    def mark_down(self, peer: str, reason: str) -> None:
        """Record that ``peer`` dropped out: later sends to it are skipped, receives from it fail at once."""
        self.mailbox.peer_down(peer, reason)

    def mark_up(self, peer: str) -> None:
        """``peer`` came back and was re-admitted by the protocol (a horizontal bank's rejoin)."""
        with self.mailbox._cv:
            self.mailbox.down.pop(peer, None)

    def tell_dropped(self, peers: Iterable[str], reason: str, timeout: float = 2.0) -> list[str]:
        """Best effort: tell each of ``peers`` (``ctl.dropped``) that the job goes on without it.

        A dropped peer that is still alive (it was partitioned, or late) otherwise waits for
        messages that will never come until its own receive timeout. Returns who was told.
        """
        told = []
        for p in peers:
            try:
                frame = encode(self.job, self.me, p, DROPPED_TAG, "control", {"reason": reason[:1000]},
                               max_bytes=self.max_bytes)
                self.ledger.record(p, DROPPED_TAG, "control", len(frame), frame)
                self._deliver_once(p, frame, timeout)
                told.append(p)
            except Exception:  # noqa: BLE001 - best effort by design: the peer may be gone for good
                pass
        return told

    def _deliver_once(self, to: str, frame: bytes, timeout: float) -> None:
        """One delivery attempt bounded by ``timeout`` (subclasses with retries override)."""
        self._deliver(to, frame)

    # -- the interface algorithms use -------------------------------------------------------
    def send(self, to: str, tag: str, obj: Any, *, kind: str) -> int:
        """Send ``obj`` to party ``to`` under ``tag``; returns the bytes sent.

        ``kind`` is what the ledger calls this message (ciphertext, masked, aggregate,
        public-parameter, model, metric, plaintext-by-design, control): the sender must say.
        """
        if to not in self.peers:
            raise TransportError(f"{self.me}: cannot send {tag!r} to unknown party {to!r}; known: {list(self.peers)}")
        if to in self.mailbox.down:
            return 0  # it dropped out: the protocol sees it as silent (its receives from it fail at once)
        frame = encode(self.job, self.me, to, tag, kind, obj, max_bytes=self.max_bytes)
        # recorded before it is handed over: a frame that may have left (even if the call then
        # fails) is in the ledger; the ledger may over-report, never under-report
        self.ledger.record(to, tag, kind, len(frame), frame)
        try:
            self._deliver(to, frame)
        except TransportError as e:
            if to not in self.tolerated or self.mailbox.failure is not None:
                raise
            self.mark_down(to, f"unreachable: {e}")
            return 0
        return len(frame)

    def recv(self, frm: str, tag: str, timeout: float | None = None) -> Any:
        """Block until the message ``tag`` from ``frm`` arrives; return its payload.

        While waiting for a peer whose dropout is tolerated, the peer is probed (``ctl.ping``)
        every ``send_timeout`` seconds: a peer that was killed or cut off sends nothing to say
        so, and the probe's failure marks it down, ending the wait at once instead of after
        the whole timeout.
        """
        if frm not in self.peers:
            raise TransportError(f"{self.me}: cannot receive from unknown party {frm!r}; known: {list(self.peers)}")
        total = self.recv_timeout if timeout is None else timeout
        if frm not in self.tolerated and frm not in self.watched:
            return self.mailbox.take(frm, tag, total).body
        deadline = time.monotonic() + total
        while True:
            left = deadline - time.monotonic()
            try:
                return self.mailbox.take(frm, tag, max(0.0, min(left, self.send_timeout))).body
            except RecvTimeout:
                if time.monotonic() >= deadline:
                    raise RecvTimeout(f"{self.me}: no message {tag!r} from party {frm!r} within {total:.0f} s; "
                                      f"is {frm!r} running and on the same job?") from None
            self._probe(frm, tag)

    def _probe(self, peer: str, waiting_for: str = "") -> None:
        """Send one ``ctl.ping`` to ``peer`` (bounded by ``send_timeout``).

        If that fails, a tolerated peer is marked down; for a watched one the wait ends with a
        :class:`~fedrisk.errors.TransportError` naming it (the job cannot go on without it).
        """
        try:
            frame = encode(self.job, self.me, peer, PING_TAG, "control", {}, max_bytes=self.max_bytes)
            self.ledger.record(peer, PING_TAG, "control", len(frame), frame)
            self._deliver(peer, frame)
        except TransportError as e:
            if self.mailbox.failure is not None:
                return
            if peer in self.tolerated:
                self.mark_down(peer, f"unreachable: {e}")
            else:
                raise TransportError(f"{self.me}: party {peer!r} stopped answering while this party waited for "
                                     f"{waiting_for!r} ({e})") from None

    def broadcast(self, to: Iterable[str], tag: str, obj: Any, *, kind: str) -> int:
        """Send the same ``obj`` to every party in ``to`` (concurrently where the channel allows)."""
        return self.send_many([(p, obj) for p in to], tag, kind=kind)

    #: sends :meth:`send_many` keeps in flight at once (1: one after the other)
    parallel_sends = 1

    def send_many(self, messages: Mapping[str, Any] | Iterable[tuple[str, Any]], tag: str, *, kind: str) -> int:
        """Send one message per party under ``tag`` (``{to: obj}`` or ``(to, obj)`` pairs); returns the bytes sent.

        A coordinator's fan-out. One after the other, ``n`` sends cost ``n`` round trips and ``n``
        ledger syncs on the critical path; with :attr:`parallel_sends` > 1 (gRPC) up to that many
        are in flight at once, their ledger lines share a sync (the ledger's group commit: each
        line is still durable before its frame leaves) and their round trips overlap. Returns once
        every send has finished; each send behaves exactly as :meth:`send` (a tolerated peer that
        cannot be reached is marked down), and the first failure in ``messages`` order is raised
        after all of them were attempted.
        """
        items = list(messages.items()) if isinstance(messages, Mapping) else list(messages)
        if self.parallel_sends <= 1 or len(items) <= 1:
            return sum(self.send(to, tag, obj, kind=kind) for to, obj in items)
        with self._send_pool_lock:
            if self._send_pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._send_pool = ThreadPoolExecutor(max_workers=self.parallel_sends,
                                                     thread_name_prefix=f"{self.me}-fanout")
            pool = self._send_pool
        futs = [pool.submit(self.send, to, tag, obj, kind=kind) for to, obj in items]
        total, error = 0, None
        for f in futs:
            try:
                total += f.result()
            except BaseException as e:  # noqa: BLE001 - re-raised below, after every send finished
                error = error or e
        if error is not None:
            raise error
        return total

    def gather(self, frm: Iterable[str], tag: str, timeout: float | None = None) -> dict[str, Any]:
        return {p: self.recv(p, tag, timeout) for p in frm}

    @property
    def captured(self) -> list[Envelope]:
        """Every envelope this party received (only when created with ``capture=True``)."""
        if self.mailbox.captured is None:
            raise RuntimeError("this channel was created without capture=True")
        return self.mailbox.captured

    def close(self) -> None:
        if self._send_pool is not None:
            self._send_pool.shutdown(wait=True)
        self.ledger.close()
        if self.inbound_ledger is not None:
            self.inbound_ledger.close()

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
                 tag_prefixes: Sequence[str] | None = None, limits: MailboxLimits | None = None,
                 inbound_dir: str | None = None) -> None:
        self.parties = tuple(parties)
        self.job = job
        self.channels: dict[str, InMemoryChannel] = {}
        for p in self.parties:
            ledger = Ledger(p, None if ledger_dir is None else f"{ledger_dir}/{p}.jsonl")
            # an inbound ledger only when asked for: in-memory runs (tests, notebooks) can be long
            inbound = None if inbound_dir is None else Ledger(p, Path(inbound_dir) / f"{p}.jsonl", direction="in",
                                                              fsync=False)
            self.channels[p] = InMemoryChannel(self, p, ledger=ledger, capture=capture, inbound_ledger=inbound,
                                               recv_timeout=recv_timeout, tag_prefixes=tag_prefixes, limits=limits)

    def channel(self, name: str) -> "InMemoryChannel":
        return self.channels[name]

    def __getitem__(self, name: str) -> "InMemoryChannel":
        return self.channels[name]


class InMemoryChannel(Channel):
    def __init__(self, network: InMemoryNetwork, me: str, **kw: Any) -> None:
        super().__init__(me, network.parties, network.job, **kw)
        self.network = network

    def _deliver(self, to: str, frame: bytes) -> None:
        # back-pressure as over gRPC: wait for the reader to make room, as long as a recv would wait
        self.network.channels[to].mailbox.put(frame, authenticated_sender=self.me, wait=self.recv_timeout)
