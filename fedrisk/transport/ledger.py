"""The message ledgers: a party's proof of what left its premises, and of what arrived.

Each party keeps two append-only JSON-lines files, written by the channel (never by algorithm
code, so no message can leave or be accepted without a line):

* outbound, ``ledger/NAME.jsonl``: one line per message sent, recorded and **fsync'd before the
  frame is handed to the transport** (the ledger may over-report a frame whose delivery then
  failed, never under-report one that left);
* inbound, ``ledger/inbound/NAME.jsonl``: one line per message accepted from a peer.

A file starts with a header line ``{"ledger": "fedrisk", "version": 2, "owner", "direction"}``;
every message line is ``{"seq", "time", "from", "to", "tag", "kind", "bytes", "sha256", "prev"}``,
where ``sha256`` is the digest of the whole frame and ``prev`` the SHA-256 of the previous line's
text (the header's for the first message), so editing, dropping or reordering a line breaks the
chain (:func:`verify_chain`). The chain alone cannot stop someone who rewrites the whole file;
that is what the peer's copy is for: :func:`reconcile` matches A's outbound lines to B with B's
inbound lines from A, frame digest by frame digest.

A new (non-resumed) run never deletes an earlier run's ledger: :func:`archive_previous` moves it
to ``ledger/previous/``. Files are created 0600.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

__all__ = ["Ledger", "read_ledger", "summarise", "archive_previous", "verify_chain", "reconcile", "ChainReport",
           "GENESIS", "inbound_path"]

VERSION = 2
GENESIS = "0" * 64
_MESSAGE_KEYS = ("seq", "time", "from", "to", "tag", "kind", "bytes", "sha256", "prev")


def _line_hash(line: str) -> str:
    return hashlib.sha256(line.encode("utf-8")).hexdigest()


def inbound_path(ledger_dir: str | Path, owner: str) -> Path:
    """Where ``owner``'s inbound ledger lives inside a run's ``ledger/`` folder."""
    return Path(ledger_dir) / "inbound" / f"{owner}.jsonl"


def _last_line(path: Path) -> str | None:
    """The last non-empty line of ``path`` (reads only its tail)."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        block = 1 << 16
        data = b""
        pos = size
        while pos > 0:
            step = min(block, pos)
            pos -= step
            fh.seek(pos)
            data = fh.read(step) + data
            lines = [ln for ln in data.split(b"\n") if ln.strip()]
            if len(lines) > 1 or (lines and pos == 0):
                return lines[-1].decode("utf-8", "replace")
    return None


class Ledger:
    """Append-only, hash-chained record of messages, in memory and optionally in ``path``.

    ``direction`` is ``"out"`` (messages this party sent) or ``"in"`` (messages it accepted).
    ``fsync`` makes every line durable before :meth:`record` returns; it is what lets a party
    prove a frame was recorded before it left.
    """

    def __init__(self, owner: str, path: str | Path | None = None, *, direction: str = "out", fsync: bool = True) -> None:
        if direction not in ("out", "in"):
            raise ValueError(f"ledger direction must be 'out' or 'in', not {direction!r}")
        self.owner = owner
        self.direction = direction
        self.path = Path(path) if path is not None else None
        self.fsync = fsync
        self.entries: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._fh = None
        self._prev = GENESIS
        self._seq = 0
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fresh = not self.path.exists() or self.path.stat().st_size == 0
            if not fresh:
                # a resumed run continues the chain where the file ends
                last = _last_line(self.path)
                if last is not None:
                    self._prev = _line_hash(last)
                    try:
                        self._seq = int(json.loads(last).get("seq", 0))
                    except (ValueError, AttributeError):
                        self._seq = 0
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._fh = os.fdopen(fd, "a", encoding="utf-8")
            if fresh:
                self._write({"ledger": "fedrisk", "version": VERSION, "owner": owner, "direction": direction,
                             "created": datetime.now(timezone.utc).isoformat(timespec="microseconds")})

    def _write(self, obj: dict[str, Any]) -> None:
        line = json.dumps(obj, separators=(",", ":"))
        self._prev = _line_hash(line)
        if self._fh is not None:
            self._fh.write(line + "\n")
            self._fh.flush()
            if self.fsync:
                os.fsync(self._fh.fileno())

    def _append(self, frm: str, to: str, tag: str, kind: str, nbytes: int, digest: str | None) -> dict[str, Any]:
        with self._lock:
            self._seq += 1
            entry = {
                "seq": self._seq,
                "time": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
                "from": frm, "to": to, "tag": tag, "kind": kind, "bytes": int(nbytes),
                "sha256": digest, "prev": self._prev,
            }
            self._write(entry)
            self.entries.append(entry)
            return entry

    def record(self, to: str, tag: str, kind: str, nbytes: int, frame: bytes | None = None) -> dict[str, Any]:
        """Record one outbound message (``frame`` gives its digest); durable when this returns."""
        return self._append(self.owner, to, tag, kind, nbytes, hashlib.sha256(frame).hexdigest() if frame is not None else None)

    def record_inbound(self, sender: str, tag: str, kind: str, frame: bytes) -> dict[str, Any]:
        """Record one message accepted from ``sender``."""
        return self._append(sender, self.owner, tag, kind, len(frame), hashlib.sha256(frame).hexdigest())

    @property
    def bytes_sent(self) -> int:
        return sum(e["bytes"] for e in self.entries)

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def archive_previous(path: str | Path) -> Path | None:
    """Move an existing ledger file to ``<its folder>/previous/`` (never delete); return where it went."""
    path = Path(path)
    if not path.is_file():
        return None
    if path.stat().st_size == 0:
        path.unlink()
        return None
    stamp = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    dest_dir = path.parent / "previous"
    dest_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    dest = dest_dir / f"{path.stem}-{stamp}{path.suffix}"
    n = 1
    while dest.exists():
        dest = dest_dir / f"{path.stem}-{stamp}-{n}{path.suffix}"
        n += 1
    os.replace(path, dest)
    return dest


def read_ledger(path: str | Path) -> list[dict[str, Any]]:
    """The message lines of a ledger file (header lines skipped; version-1 files read as they are)."""
    with open(path, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return [r for r in rows if not (isinstance(r, dict) and "ledger" in r)]


@dataclass
class ChainReport:
    """What :func:`verify_chain` found in one file."""

    path: Path
    owner: str | None = None
    direction: str | None = None
    entries: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(path: str | Path) -> ChainReport:
    """Check a ledger file's hash chain and sequence numbers; list every break with its line number."""
    path = Path(path)
    rep = ChainReport(path)
    prev, seq = None, 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = [ln.rstrip("\n") for ln in fh]
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            rep.problems.append(f"line {no}: not JSON")
            prev = _line_hash(line)
            continue
        if not isinstance(obj, dict):
            rep.problems.append(f"line {no}: not a JSON object")
        elif "ledger" in obj:
            if no != 1 and prev is not None:
                rep.problems.append(f"line {no}: a second header in the middle of the file")
            rep.owner, rep.direction = obj.get("owner"), obj.get("direction")
            if obj.get("version") != VERSION:
                rep.problems.append(f"line {no}: ledger version {obj.get('version')!r}, expected {VERSION}")
        else:
            if prev is None:
                rep.problems.append(f"line {no}: no header line (a version-1 ledger, or its start was cut)")
            elif obj.get("prev") != prev:
                rep.problems.append(f"line {no}: 'prev' does not match the hash of line {no - 1} "
                                    "(a line was edited, removed or inserted before it)")
            if obj.get("seq") != seq + 1:
                rep.problems.append(f"line {no}: sequence number {obj.get('seq')!r}, expected {seq + 1}")
            missing = [k for k in _MESSAGE_KEYS if k not in obj]
            if missing:
                rep.problems.append(f"line {no}: missing {missing}")
            seq = obj["seq"] if isinstance(obj.get("seq"), int) else seq + 1
            rep.entries.append(obj)
        prev = _line_hash(line)
    if not lines:
        rep.problems.append("empty file (no header)")
    return rep


def reconcile(sent: Iterable[dict[str, Any]], received: Iterable[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Match a sender's outbound lines with the receiver's inbound lines from it.

    Both iterables must already be restricted to one (sender, receiver) pair. Returns
    ``(errors, warnings)``: a message the receiver accepted that the sender's ledger does not show
    is an error (a ledger was altered, or a frame left unrecorded); a message the sender recorded
    that never arrived is a warning (a send that failed after it was recorded, or a receiver
    that crashed).
    """
    def key(e: dict[str, Any]) -> tuple:
        return (e.get("tag"), e.get("kind"), e.get("bytes"), e.get("sha256"))

    s, r = Counter(map(key, sent)), Counter(map(key, received))
    errors = [f"received but not in the sender's ledger: {k[0]} ({k[1]}, {k[2]} bytes) x{n}" for k, n in (r - s).items()]
    warnings = [f"in the sender's ledger but never received: {k[0]} ({k[1]}, {k[2]} bytes) x{n}"
                for k, n in (s - r).items()]
    return errors, warnings


def summarise(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals per (to, kind): what a compliance reviewer asks first."""
    out: dict[str, Any] = {"messages": len(entries), "bytes": 0, "by_peer": defaultdict(lambda: defaultdict(lambda: {"messages": 0, "bytes": 0}))}
    for e in entries:
        out["bytes"] += e["bytes"]
        cell = out["by_peer"][e["to"]][e["kind"]]
        cell["messages"] += 1
        cell["bytes"] += e["bytes"]
    out["by_peer"] = {k: dict(v) for k, v in out["by_peer"].items()}
    return out
