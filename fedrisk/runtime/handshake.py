"""Start-of-job handshake: everyone is up, and everyone runs the same job.

Message flow::

    participant_i -> driver : ctl.hello   {settings, version}    (control)
    driver        -> all    : ctl.start   {ok, reason, run_id}   (control)

The driver also hands out a random run id, which every participant writes into its part of the
model: parts of different training runs can then never be combined by mistake at scoring time.

The driver compares every participant's shared settings (all of the spec but local file paths)
with its own and refuses to start, naming the participant and the first differing setting, when
they disagree. Because ``send`` retries until a peer is up, the handshake is also the point where
the whole federation is known to be reachable: timings after it exclude process start-up.

Waiting has a deadline from the spec (``security.connect_timeout``, passed as ``wait``): the
driver gives every participant that long to say hello, and a participant gives the driver twice
that long to answer (the driver may itself be waiting for the last one). While waiting, each
logs every few seconds whom it waits for, and a participant that never comes is named with its
address, instead of a silent ten-minute receive timeout.
"""
from __future__ import annotations

import re
import secrets
import time
from typing import Any, Mapping

from fedrisk import __version__
from fedrisk.errors import ConfigError, ProtocolError, TransportError
from fedrisk.transport.channel import Channel
from fedrisk.transport.safe_text import safe_repr, safe_text
from fedrisk.transport import expect

#: how often a waiting participant says whom it waits for
LOG_EVERY = 5.0
#: what a run id from the driver may look like (it makes them with ``secrets.token_hex(8)``)
_RUN_ID = re.compile(r"[0-9a-f]{8,64}")


def _await(channel: Channel, frm: str, tag: str, deadline: float | None, log: Any, what: str,
           addresses: Mapping[str, str] | None, limit: float | None) -> Any:
    """``recv`` that logs every :data:`LOG_EVERY` s and names the missing participant at ``deadline``."""
    if deadline is None:
        return channel.recv(frm, tag)
    t0 = time.monotonic()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            where = f" at {addresses[frm]}" if addresses and frm in addresses else ""
            raise TransportError(
                f"{channel.me}: no {what} from {frm!r}{where} within {limit:.0f} s (security.connect_timeout); "
                f"is `fedrisk party ... --as {frm}` running there with the same job spec, and can it reach this host?")
        try:
            return channel.recv(frm, tag, timeout=min(LOG_EVERY, left))
        except TransportError:
            if channel.mailbox.failure is not None:  # a peer aborted: not a timeout
                raise
            if log is not None and time.monotonic() < deadline:
                log.info("waiting for %s from %r%s (%.0f s of %.0f s)", what, frm,
                         f" at {addresses[frm]}" if addresses and frm in addresses else "",
                         time.monotonic() - t0, limit)

__all__ = ["handshake", "first_difference", "answer_late_hello"]


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """Dotted path and values of the first place where two JSON-like trees differ.

    ``b`` is a peer's: its keys and values are quoted cut and escaped (they reach logs and errors).
    """
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            sub = f"{path}.{safe_text(k, 60)}" if path else safe_text(k, 60)
            if k not in a or k not in b:
                return (f"{sub}: {'missing' if k not in a else safe_repr(a[k])} here vs "
                        f"{'missing' if k not in b else safe_repr(b[k])}")
            d = first_difference(a[k], b[k], sub)
            if d:
                return d
        return None
    return None if a == b else f"{path}: {safe_repr(a)} here vs {safe_repr(b)}"


#: settings that say which fedrisk release a party runs rather than what job it runs
_RELEASE_SETTINGS = ("inference_layout",)


def _spec_difference(peer: str, diff: str) -> str:
    if diff.split(":", 1)[0] in _RELEASE_SETTINGS:
        return (f"participant {peer!r} runs a fedrisk release with other scoring messages ({diff}): run the same "
                f"fedrisk release at every party (upgrade it, or restart its fedrisk serve)")
    return f"participant {peer!r} runs a different job spec: {diff}"


def handshake(channel: Channel, driver: str, participants: list[str], settings: dict[str, Any], *,
              wait: float | None = None, log: Any = None, addresses: Mapping[str, str] | None = None,
              started: dict[str, Any] | None = None) -> str:
    """Run the handshake and return the run id; raise :class:`ConfigError` everywhere when specs differ.

    ``wait`` (seconds, from ``security.connect_timeout``) bounds the wait for the other
    participants; ``None`` waits the channel's receive timeout, silently (in-memory tests).
    """
    others = [p for p in participants if p != channel.me]
    if channel.me == driver:
        problems = []
        deadline = None if wait is None else time.monotonic() + wait
        for p in others:
            hello = _await(channel, p, "ctl.hello", deadline, log, "hello", addresses, wait)
            if not isinstance(hello, dict):
                raise ProtocolError(f"participant {p!r} sent a malformed hello; is it running fedrisk {__version__}?")
            diff = first_difference(settings, hello.get("settings"))
            if diff:
                problems.append(f"{_spec_difference(p, diff)} at {p!r}")
            elif hello.get("version") != __version__:
                problems.append(f"participant {p!r} runs fedrisk {safe_text(hello.get('version'), 40)}, this is {__version__}")
        reason = "; ".join(problems)
        run_id = secrets.token_hex(8)
        channel.broadcast(others, "ctl.start", {"ok": not problems, "reason": reason, "run_id": run_id}, kind="control")
        if problems:
            raise ConfigError(f"job refused to start: {reason}")
        return run_id
    else:
        channel.send(driver, "ctl.hello", {"settings": settings, "version": __version__}, kind="control")
        limit = None if wait is None else 2 * wait + 10
        start = _await(channel, driver, "ctl.start", None if limit is None else time.monotonic() + limit, log,
                       "the start signal (it waits for every participant's hello)", addresses, limit)
        start = _checked_start(driver, start)
        if not start["ok"]:
            raise ConfigError(f"job refused to start by {driver!r}: {safe_text(start['reason'], 2000)}")
        if started is not None:  # e.g. {"rejoin": round} when the driver took this party back mid-job
            started.update(start)
        return start["run_id"]


def _checked_start(driver: str, start: Any) -> dict[str, Any]:
    """The driver's ``ctl.start`` with every field this party uses checked.

    The run id is written into this party's model files and report and the rejoin round sets
    where a rejoining bank resumes: a malformed or crafted value (a path, a megabyte of text, a
    negative round) is refused with one line naming the driver instead of reaching those places.
    """
    if not isinstance(start, dict) or not isinstance(start.get("ok"), bool):
        raise ProtocolError(f"{driver!r} sent a malformed start message (ctl.start); is it running fedrisk {__version__}?")
    reason = start.get("reason", "")
    if not isinstance(reason, str):
        raise ProtocolError(f"{driver!r} sent a start message (ctl.start) whose reason is not text")
    run_id = start.get("run_id")
    if start["ok"] and not (isinstance(run_id, str) and _RUN_ID.fullmatch(run_id)):
        raise ProtocolError(f"{driver!r} sent a start message (ctl.start) with a malformed run id "
                            f"{safe_repr(run_id, 40)}; a run id is 8 to 64 hex digits")
    out = {"ok": start["ok"], "reason": reason, "run_id": run_id if isinstance(run_id, str) else ""}
    if "rejoin" in start and start["rejoin"] is not None:
        at = start["rejoin"]
        if not expect.whole(at, 0):
            raise ProtocolError(f"{driver!r} sent a start message (ctl.start) with a malformed rejoin round "
                                f"{safe_repr(at, 40)}; it must be a round number (0 or more)")
        out["rejoin"] = at
    return out


def answer_late_hello(channel: Channel, peer: str, settings: dict[str, Any], run_id: str, at: int,
                      refuse: str | None = None) -> bool:
    """The driver's side of a participant's handshake mid-job (a horizontal bank rejoining at round ``at``).

    Looks, without waiting, for a ``ctl.hello`` from ``peer``; answers ``ctl.start`` with
    ``{"ok", "reason", "run_id", "rejoin": at}`` and returns whether it was accepted. The hello's
    settings must equal this job's, except ``runtime`` (the rejoining party runs ``--resume``).
    ``refuse`` refuses it with that reason (e.g. the aggregation cannot take it back).
    """
    try:
        hello = channel.mailbox.take(peer, "ctl.hello", 0.0).body
    except TransportError:
        return False
    if not isinstance(hello, dict):
        reason = "malformed hello"
    else:
        theirs = {k: v for k, v in (hello.get("settings") or {}).items() if k != "runtime"}
        diff = first_difference({k: v for k, v in settings.items() if k != "runtime"}, theirs)
        reason = (_spec_difference(peer, diff) if diff else
                  f"participant {peer!r} runs fedrisk {safe_text(hello.get('version'), 40)}, this is {__version__}"
                  if hello.get("version") != __version__ else refuse or "")
    channel.mark_up(peer)  # the answer must reach it even when it is refused
    channel.send(peer, "ctl.start", {"ok": not reason, "reason": reason, "run_id": run_id, "rejoin": at},
                 kind="control")
    if reason:
        channel.mark_down(peer, f"refused to rejoin: {reason}")
    return not reason
