"""The message ledgers: a party's proof of what left its premises, and of what arrived.

Each party keeps two append-only JSON-lines files, written by the channel (never by algorithm
code, so no message can leave or be accepted without a line):

* outbound, ``ledger/NAME.jsonl``: one line per message sent, recorded and **fsync'd before the
  frame is handed to the transport** (the ledger may over-report a frame whose delivery then
  failed, never under-report one that left);
* inbound, ``ledger-inbound/NAME.jsonl``: one line per message accepted from a peer, flushed but
  not fsync'd (a crash can lose its last lines, which :func:`reconcile` reports as warnings); a
  folder of its own, so readers of ``ledger/*.jsonl`` such as the report see outbound lines only.

Every line is ``{"seq", "dir", "time", "from", "to", "tag", "kind", "bytes", "sha256", "prev"}``
(a superset of the version-1 line), where ``dir`` is ``"out"`` or ``"in"``, ``sha256`` the digest
of the whole frame and ``prev`` the SHA-256 of the previous line's text (64 zeros for the first),
so editing, dropping, inserting or reordering a line breaks the chain (:func:`verify_chain`). The chain alone cannot stop someone who rewrites the whole file;
that is what the peer's copy is for: :func:`reconcile` matches A's outbound lines to B with B's
inbound lines from A, frame digest by frame digest.

A new (non-resumed) run never deletes an earlier run's ledger: :func:`archive_previous` moves it
to ``previous/`` next to it. Files are created 0600, folders 0700.
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
           "verify_ledgers", "VerifyResult",
           "GENESIS", "inbound_path", "INBOUND_DIR"]

GENESIS = "0" * 64
INBOUND_DIR = "ledger-inbound"
_MESSAGE_KEYS = ("seq", "dir", "time", "from", "to", "tag", "kind", "bytes", "sha256", "prev")


def _line_hash(line: str) -> str:
    return hashlib.sha256(line.encode("utf-8")).hexdigest()


def inbound_path(run_dir: str | Path, owner: str) -> Path:
    """Where ``owner``'s inbound ledger lives in a run directory."""
    return Path(run_dir) / INBOUND_DIR / f"{owner}.jsonl"


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
        self._sync_lock = threading.Lock()
        self._synced = 0  # every line up to this seq is on disk
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

    def _write(self, obj: dict[str, Any]) -> None:
        line = json.dumps(obj, separators=(",", ":"))
        self._prev = _line_hash(line)
        if self._fh is not None:
            self._fh.write(line + "\n")
            self._fh.flush()

    def _sync_through(self, seq: int) -> None:
        """Return once every line up to ``seq`` is on disk (group commit).

        Why: parties send to several peers from several threads; one fsync per frame serialised
        them all behind the disk (~6 ms each). A writer that finds a sync running waits for it and
        then syncs whatever was appended meanwhile in one call, so a frame still never leaves
        before its line is durable, at a fraction of the syncs.
        """
        if not self.fsync or self._fh is None or self._synced >= seq:
            return
        with self._sync_lock:
            if self._synced >= seq:
                return
            with self._lock:
                upto = self._seq
                fd = self._fh.fileno() if self._fh is not None else None
            if fd is not None:
                os.fsync(fd)
            self._synced = upto

    def _append(self, frm: str, to: str, tag: str, kind: str, nbytes: int, digest: str | None) -> dict[str, Any]:
        with self._lock:
            self._seq += 1
            entry = {
                "seq": self._seq, "dir": self.direction,
                "time": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
                "from": frm, "to": to, "tag": tag, "kind": kind, "bytes": int(nbytes),
                "sha256": digest, "prev": self._prev,
            }
            self._write(entry)
            self.entries.append(entry)
        self._sync_through(entry["seq"])
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
    """Read a ledger file written by :class:`Ledger` (either version)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


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
    """Check a ledger file's hash chain and sequence numbers; list every break with its line number.

    The owner and direction come from the lines (``dir``; ``from`` of outbound, ``to`` of inbound
    lines), else from the file name and folder.
    """
    path = Path(path)
    rep = ChainReport(path)
    prev, seq = GENESIS, 0
    owners: set[str] = set()
    dirs: set[str] = set()
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = [ln.rstrip("\n") for ln in fh]
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            rep.problems.append(f"line {no}: not a JSON object")
        else:
            missing = [k for k in _MESSAGE_KEYS if k not in obj]
            if missing:
                rep.problems.append(f"line {no}: missing {missing} (not a hash-chained ledger line)")
            elif obj["prev"] != prev:
                rep.problems.append(f"line {no}: 'prev' does not match the hash of the line before "
                                    "(a line was edited, removed, inserted or reordered)")
            if obj.get("seq") != seq + 1:
                rep.problems.append(f"line {no}: sequence number {obj.get('seq')!r}, expected {seq + 1}")
            seq = obj["seq"] if isinstance(obj.get("seq"), int) and not isinstance(obj.get("seq"), bool) else seq + 1
            d = obj.get("dir")
            if d in ("out", "in"):
                dirs.add(d)
                owners.add(str(obj.get("from" if d == "out" else "to")))
            rep.entries.append(obj)
        prev = _line_hash(line)
    if len(dirs) > 1 or len(owners) > 1:
        rep.problems.append(f"lines of several owners or directions in one file: {sorted(owners)} {sorted(dirs)}")
    rep.direction = next(iter(dirs)) if len(dirs) == 1 else ("in" if path.parent.name == INBOUND_DIR else "out")
    rep.owner = next(iter(owners)) if len(owners) == 1 else path.stem
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


@dataclass
class VerifyResult:
    """What ``fedrisk ledger verify`` found: one line per check, and whether anything failed."""

    lines: list[str] = field(default_factory=list)
    errors: int = 0
    warnings: int = 0

    def add(self, level: str, text: str) -> None:
        self.lines.append(f"{level}: {text}")
        if level == "error":
            self.errors += 1
        elif level == "warning":
            self.warnings += 1


def _ledger_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if (path / "ledger").is_dir() or (path / INBOUND_DIR).is_dir():  # a run directory
        return sorted((path / "ledger").glob("*.jsonl")) + sorted((path / INBOUND_DIR).glob("*.jsonl"))
    return sorted(path.glob("*.jsonl"))


def verify_ledgers(paths: Iterable[str | Path]) -> VerifyResult:
    """Check every ledger file under ``paths`` (run dirs, ledger dirs or files), then reconcile.

    Each file's chain is verified; then for every pair of parties for which both the sender's
    outbound file and the receiver's inbound file are present (from one run directory, or from
    each side's own), the two must list the same frames (:func:`reconcile`).
    """
    res = VerifyResult()
    out: dict[str, ChainReport] = {}
    inn: dict[str, ChainReport] = {}
    files = [f for p in paths for f in _ledger_files(Path(p))]
    if not files:
        res.add("error", f"no ledger files under {', '.join(map(str, paths))}")
        return res
    for f in files:
        rep = verify_chain(f)
        for p in rep.problems:
            res.add("error", f"{f}: {p}")
        if rep.ok:
            res.add("ok", f"{f}: {rep.direction or '?'}bound ledger of {rep.owner!r}, {len(rep.entries)} messages, chain intact")
        table = out if rep.direction == "out" else inn
        if rep.owner in table:
            res.add("warning", f"{f}: a second {rep.direction}bound ledger of {rep.owner!r}; using {table[rep.owner].path}")
            continue
        table[rep.owner] = rep
    pairs = 0
    for sender, srep in sorted(out.items()):
        for receiver, rrep in sorted(inn.items()):
            if receiver == sender:
                continue
            sent = [e for e in srep.entries if e.get("to") == receiver]
            got = [e for e in rrep.entries if e.get("from") == sender]
            if not sent and not got:
                continue
            pairs += 1
            errors, warnings = reconcile(sent, got)
            for e in errors:
                res.add("error", f"{sender} -> {receiver}: {e}")
            for w in warnings:
                res.add("warning", f"{sender} -> {receiver}: {w}")
            if not errors:
                res.add("ok", f"{sender} -> {receiver}: {len(got)} messages received, all in {sender}'s ledger"
                        + (f" ({len(sent) - len(got)} recorded but not received)" if len(sent) > len(got) else ""))
    if not pairs:
        res.add("warning", "no sender/receiver pair to reconcile: give both sides' run directories or ledger files")
    return res
