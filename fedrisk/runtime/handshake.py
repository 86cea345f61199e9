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
"""
from __future__ import annotations

import secrets
from typing import Any

from fedrisk import __version__
from fedrisk.errors import ConfigError, ProtocolError
from fedrisk.transport.channel import Channel
from fedrisk.transport.safe_text import safe_text

__all__ = ["handshake", "first_difference"]


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """Dotted path and values of the first place where two JSON-like trees differ.

    ``b`` is a peer's: its keys and values are quoted cut and escaped (they reach logs and errors).
    """
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            sub = f"{path}.{safe_text(k, 60)}" if path else safe_text(k, 60)
            if k not in a or k not in b:
                return (f"{sub}: {'missing' if k not in a else safe_text(repr(a[k]))} here vs "
                        f"{'missing' if k not in b else safe_text(repr(b[k]))}")
            d = first_difference(a[k], b[k], sub)
            if d:
                return d
        return None
    return None if a == b else f"{path}: {safe_text(repr(a))} here vs {safe_text(repr(b))}"


def handshake(channel: Channel, driver: str, participants: list[str], settings: dict[str, Any]) -> str:
    """Run the handshake and return the run id; raise :class:`ConfigError` everywhere when specs differ."""
    others = [p for p in participants if p != channel.me]
    if channel.me == driver:
        problems = []
        for p in others:
            hello = channel.recv(p, "ctl.hello")
            if not isinstance(hello, dict):
                raise ProtocolError(f"participant {p!r} sent a malformed hello; is it running fedrisk {__version__}?")
            diff = first_difference(settings, hello.get("settings"))
            if diff:
                problems.append(f"participant {p!r} runs a different job spec: {diff} at {p!r}")
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
        start = channel.recv(driver, "ctl.start")
        if not isinstance(start, dict):
            raise ProtocolError(f"{driver!r} sent a malformed start message")
        if not start.get("ok"):
            raise ConfigError(f"job refused to start by {driver!r}: {safe_text(start.get('reason'), 2000)}")
        return str(start.get("run_id", ""))
