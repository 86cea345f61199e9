"""Tell the label holder that a feature holder's column was blank in every row scored (vertical scorecards).

A scorecard scores a blank cell as the feature's missing bin, so a batch in which a column has no value
at all is scored -- and is more likely a broken data feed (a field renamed or dropped upstream) than
chance (:func:`~fedrisk.runtime.predict.blank_columns_note`). The party holding the column logs it; but
the user who runs ``fedrisk predict`` sits at the label holder and never reads a feature holder's log
(on another host, or a spawned process's log file). This step brings the warning to the label
holder's predict output, as a horizontal ``fedrisk predict`` and the label holder's own columns show it.

Message flow (scoring only, on the PSI-aligned rows, after the points are combined)::

    F -> L  <tag>.blank  aggregate  {"rows": n, "count": k, "columns": [names] or None}

Every feature holder sends it exactly once per session (``count`` 0 when no column is blank, or when
the batch has a single row, where one applicant without a field is normal).

What each party learns
    L: for each feature holder, how many of its scorecard columns had no value in any of the ``n``
    aligned rows -- a fact about the whole batch, not about one applicant (never sent for one row).
    The column names only from a feature holder that opted in to name its own reasons
    (``task.name_reasons``): it shows its features by name per applicant already; the others'
    column names stay in their own log, with the note that names them.
    F: nothing.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from fedrisk.errors import ProtocolError
from fedrisk.transport.channel import Channel

__all__ = ["relay_blank_columns", "relayed_note"]


def _blank(frame: pd.DataFrame, features: Sequence[str]) -> list[str]:
    if len(frame) < 2:
        return []
    return [f for f in features if f in frame.columns and frame[f].isna().all()]


def relayed_note(party: str, rows: int, count: int, columns: list[str] | None) -> str:
    """The label holder's warning about feature holder ``party``'s blank columns (names when it gave them)."""
    from fedrisk.runtime.predict import blank_columns_note

    if columns:
        return blank_columns_note(pd.DataFrame({c: [None] * rows for c in columns}), columns, party)
    s, it = ("s", "them") if count > 1 else ("", "it")
    return (f"party {party!r}: {count} feature column{s} {'are' if count > 1 else 'is'} blank in all {rows} rows "
            f"scored; every row scores {it} as the missing bin -- ask {party} to check its data feed (its own log "
            f"names the column{s})")


def relay_blank_columns(channel: Channel, label_holder: str, feature_holders: Sequence[str], frame: pd.DataFrame,
                        features: Sequence[str], name_columns: bool, tag: str) -> list[str]:
    """Feature holders: send the count (and, when ``name_columns``, the names) of their ``features`` blank in
    every row of ``frame`` (their aligned rows). Label holder: receive them; return one warning per feature
    holder with a blank column (feature holders return ``[]``)."""
    if channel.me != label_holder:
        blank = _blank(frame, features)
        channel.send(label_holder, f"{tag}.blank", {"rows": int(len(frame)), "count": len(blank),
                                                    "columns": blank if name_columns and blank else None},
                     kind="aggregate")
        return []
    notes = []
    for h in feature_holders:
        msg = channel.recv(h, f"{tag}.blank")
        if not isinstance(msg, dict):
            raise ProtocolError(f"{channel.me}: {tag}.blank from {h!r} should be a dict")
        rows, count, columns = msg.get("rows"), msg.get("count"), msg.get("columns")
        if (not isinstance(rows, int) or not isinstance(count, int) or isinstance(rows, bool)
                or isinstance(count, bool) or rows < 0 or not 0 <= count <= 10_000):
            raise ProtocolError(f"{channel.me}: {tag}.blank from {h!r} should carry row and column counts")
        if columns is not None and (not isinstance(columns, list) or len(columns) != count
                                    or not all(isinstance(c, str) and 0 < len(c) <= 200 for c in columns)):
            raise ProtocolError(f"{channel.me}: {tag}.blank from {h!r} should name its {count} blank column(s)")
        if count and rows >= 2:
            notes.append(relayed_note(h, rows, count, columns))
    return notes
