"""The outbound-message ledger: a party's proof of what left its premises.

One JSON line per message a party sent: ``{"time", "from", "to", "tag", "kind", "bytes"}``.
The ledger is written by the channel, never by algorithm code, so no message can leave without a
line. Lines are flushed as they are written: a crashed job still shows what had left.
"""
from __future__ import annotations

import json
import threading
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["Ledger", "read_ledger", "summarise"]


class Ledger:
    """Append-only record of outbound messages, in memory and optionally in ``path``."""

    def __init__(self, owner: str, path: str | Path | None = None) -> None:
        self.owner = owner
        self.path = Path(path) if path is not None else None
        self.entries: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._fh = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")

    def record(self, to: str, tag: str, kind: str, nbytes: int) -> None:
        entry = {
            "time": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
            "from": self.owner,
            "to": to,
            "tag": tag,
            "kind": kind,
            "bytes": int(nbytes),
        }
        with self._lock:
            self.entries.append(entry)
            if self._fh is not None:
                self._fh.write(json.dumps(entry) + "\n")
                self._fh.flush()

    @property
    def bytes_sent(self) -> int:
        return sum(e["bytes"] for e in self.entries)

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def read_ledger(path: str | Path) -> list[dict[str, Any]]:
    """Read a ledger file written by :class:`Ledger`."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


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
