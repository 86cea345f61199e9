"""Tell the label holder that a feature holder's column was blank in every row scored (vertical scorecards).

A scorecard scores a blank cell as the feature's missing bin, so a batch in which a column has no value
at all is scored -- and is more likely a broken data feed (a field renamed or dropped upstream) than
chance (:func:`~fedrisk.runtime.predict.blank_columns_note`). The party holding the column logs it; but
the user who runs ``fedrisk predict`` sits at the label holder and never reads a feature holder's log
(on another host, or a spawned process's log file). This step brings the warning to the label
holder's predict output, as a horizontal ``fedrisk predict`` and the label holder's own columns show it.

Message flow (scoring only, on the PSI-aligned rows, after the points are combined)::

    F -> L  <tag>.blank  aggregate  {"rows": n, "count": k or None, "columns": [names] or None}

Every feature holder sends it exactly once per session. Only a feature holder that opted in to name its
own reasons (``task.name_reasons``, its own copy of the spec) fills ``count`` and ``columns``; the others
send ``None`` for both. Nothing is said for a one-row batch.

What each party learns
    L: from a feature holder that names its reasons, which of its scorecard columns had no value in any
    of the ``n`` aligned rows. The label holder chooses the batch, so that can be a fact about one or two
    applicants (score a pair, learn whether both lack the field): a feature holder that names its
    reasons already shows, per applicant, which of its features cost points, and this is the same kind
    of disclosure. From any other feature holder: nothing (a column blank in its whole scoring file is
    noted in its own log when it loads the file, :func:`~fedrisk.runtime.predict.warn_blank_columns`).
    F: nothing.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from fedrisk.data.blank_batch import blank_columns, blank_columns_line
from fedrisk.errors import ProtocolError
from fedrisk.transport.channel import Channel

__all__ = ["relay_blank_columns", "relayed_note"]


def relayed_note(party: str, rows: int, columns: list[str]) -> str:
    """The label holder's warning about feature holder ``party``'s columns blank in all ``rows`` scored rows."""
    return blank_columns_line(party, rows, columns, relayed=True)


def relay_blank_columns(channel: Channel, label_holder: str, feature_holders: Sequence[str], frame: pd.DataFrame,
                        features: Sequence[str], name_columns: bool, tag: str) -> list[str]:
    """Feature holders: when ``name_columns`` (the partner names its reasons), send the names of their
    ``features`` blank in every row of ``frame`` (their aligned rows); else send nothing informative.
    Label holder: receive them; return one warning per feature holder that named a blank column (feature
    holders return ``[]``). ``frame`` at the label holder is its own aligned rows: a partner's row count
    must equal them."""
    if channel.me != label_holder:
        blank = blank_columns(frame, features)
        shared = name_columns and len(frame) >= 2
        channel.send(label_holder, f"{tag}.blank", {"rows": int(len(frame)), "count": len(blank) if shared else None,
                                                    "columns": blank if shared else None}, kind="aggregate")
        return []
    notes = []
    for h in feature_holders:
        msg = channel.recv(h, f"{tag}.blank")
        if not isinstance(msg, dict):
            raise ProtocolError(f"{channel.me}: {tag}.blank from {h!r} should be a dict")
        rows, count, columns = msg.get("rows"), msg.get("count"), msg.get("columns")
        if not isinstance(rows, int) or isinstance(rows, bool) or rows != len(frame):
            raise ProtocolError(f"{channel.me}: {tag}.blank from {h!r} should say the {len(frame)} aligned rows scored")
        if count is None and columns is None:
            continue  # a partner that does not name its reasons shares nothing here
        if (not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 10_000
                or not isinstance(columns, list) or len(columns) != count
                or not all(isinstance(c, str) and 0 < len(c) <= 200 for c in columns)
                or len(set(columns)) != len(columns)):
            raise ProtocolError(f"{channel.me}: {tag}.blank from {h!r} should name its blank column(s) with their count")
        if count and rows >= 2:
            notes.append(relayed_note(h, rows, columns))
    return notes
