"""What a failing party tells its partners: its name, the check that failed, and counts — no data.

When a participant fails, the runtime sends every peer a ``ctl.abort`` frame so they stop waiting;
the peers log the reason and show it to their operators. That reason crosses an institutional
boundary, so it must not carry what the failing party's own error line may legitimately show
its own operator: a customer id (``'CUST-0042' appears 2 times``), a cell value, a file path or a
column of its private file. :func:`wire_reason` builds the partner-facing text from the local
error by

* keeping the error class (``DataError``, ``ProtocolError``, ...) as the kind of check;
* replacing every quoted string (the codebase quotes ids, values, columns and paths with ``!r``)
  by ``'…'`` unless it is a name every participant already knows (participant names, names in
  the job's shared settings);
* replacing path-like tokens and file names by ``<path>``, decimals by ``<value>`` and digit runs
  of nine or more (account or phone numbers) by ``<number>``; small integers (counts, row
  numbers of the sender's own file) stay;
* sending only the exception class for anything that is not a :class:`~fedrisk.errors.FedriskError`
  (a bug's message may hold anything);
* sending only the summary an error was given with :func:`private` when its very content is data
  (e.g. "all 791 test rows are goods" at a label holder: counts, but the labels of rows the partner
  can name).

The full message stays in the failing party's own log and on its own stderr.
"""
from __future__ import annotations

import re
from typing import Any, Iterable

from fedrisk.errors import FedriskError

__all__ = ["wire_reason", "redact", "public_names", "private", "label_error", "refuse_one_class"]

MAX_CHARS = 600
_QUOTED = re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"")
_PATHISH = re.compile(r"[^\s'\"(),;:=]*[/\\][^\s'\"(),;:]*")
_FILE = re.compile(r"\b[\w.-]+\.(?:csv|parquet|pq|json|jsonl|toml|pem|key|crt|txt|log|xlsx|gz|zip)\b", re.I)
_DECIMAL = re.compile(r"(?<![\w.])-?\d+\.\d+(?:e[+-]?\d+)?(?![\w.])", re.I)
_LONG_DIGITS = re.compile(r"\d{9,}")
_NP_SCALAR = re.compile(r"np\.\w+\([^)]*\)")


def redact(text: str, keep: Iterable[str] = ()) -> str:
    """Remove ids, values and paths from an error message (see the module docstring for the rules)."""
    allowed = {k for k in keep if k}

    def quoted(m: re.Match) -> str:
        inner = m.group(0)[1:-1]
        return m.group(0) if inner in allowed else "'…'"

    out = _NP_SCALAR.sub("<value>", text)
    out = _QUOTED.sub(quoted, out)
    out = _PATHISH.sub(lambda m: "<path>" if re.search(r"[A-Za-z_.~]", m.group(0)) else m.group(0), out)
    out = _FILE.sub("<path>", out)
    out = _DECIMAL.sub("<value>", out)
    out = _LONG_DIGITS.sub("<number>", out)
    out = " ".join(out.split())  # one line: no forged log lines at the partner
    return out if len(out) <= MAX_CHARS else out[:MAX_CHARS - 1] + "…"


def public_names(spec: Any) -> set[str]:
    """Names every participant of the job already knows: participants and shared-setting strings."""
    names: set[str] = set()
    try:
        names.update(spec.participants())
    except Exception:  # noqa: BLE001 - a half-built spec must not stop an abort
        pass
    try:
        from fedrisk.runtime.spec import shared_settings

        stack: list[Any] = [shared_settings(spec)]
        while stack:
            v = stack.pop()
            if isinstance(v, dict):
                stack.extend(v.keys())
                stack.extend(v.values())
            elif isinstance(v, (list, tuple)):
                stack.extend(v)
            elif isinstance(v, str) and "/" not in v and "\\" not in v:
                names.add(v)
    except Exception:  # noqa: BLE001
        pass
    return names


def private(exc: FedriskError, summary: str) -> FedriskError:
    """Mark ``exc`` as one whose message must stay local; partners get ``summary`` only.

    For errors whose counts are themselves data -- a label holder saying that every test row is
    a good reveals the labels of those rows to partners who know which rows are test rows.
    """
    exc.partner_summary = summary  # type: ignore[attr-defined]
    return exc


#: what partners read when a label holder's error is about its labels (names no class, no row set:
#: "a class is missing among the test rows" would still tell a partner, with rare defaults, that
#: every test row is a good)
LABELS_SUMMARY = ("the labels at the label holder do not suit the settings of this job; its own log says what "
                  "to change")


def label_error(message: str) -> FedriskError:
    """A label holder's error about its labels: the full line stays local, partners get a summary.

    "All 791 test rows are goods" or "the training rows have only label 0" would tell a feature
    holder the label of every one of those rows (it knows which rows they are), through the abort
    message every partner receives.
    """
    from fedrisk.errors import DataError

    return private(DataError(message), LABELS_SUMMARY)


def refuse_one_class(who: str, y: Any, rows: str = "the aligned training rows", need: str = "need both classes") -> None:
    """Raise :func:`label_error` when ``y`` holds one class only (or no row).

    One check for every label holder that trains (vertical LR, SecureBoost, scorecard, WOE): a
    model needs goods and bads, and saying which class is there must not reach partners.

    Parameters
    ----------
    who : str
        The label holder's name (for its own log line).
    y : array-like
        The 0/1 labels of ``rows``.
    rows : str
        Which rows these are, in the label holder's own terms.
    need : str
        What the job needs, said to the label holder's operator.
    """
    import numpy as np

    y = np.asarray(y)
    if y.size == 0:
        raise label_error(f"party {who!r}: {rows} are empty; {need}")
    if y.min() == y.max():
        raise label_error(f"party {who!r}: {rows} have only label {int(y.flat[0])}; {need}")


def wire_reason(party: str, exc: BaseException, keep: Iterable[str] = ()) -> str:
    """The text of ``party``'s ``ctl.abort``: the kind of failure and a redacted summary.

    Parameters
    ----------
    party : str
        The failing participant (its name is public).
    exc : BaseException
        The local error; its full message stays local.
    keep : iterable of str
        Quoted names that may pass unredacted (participant names, shared settings).
    """
    summary = getattr(exc, "partner_summary", None)
    if isinstance(exc, FedriskError) and summary:
        return f"{party}: {type(exc).__name__}: {redact(summary, keep)} (details in {party}'s own log)"
    if isinstance(exc, FedriskError):
        return f"{party}: {type(exc).__name__}: {redact(str(exc), keep)} (details in {party}'s own log)"
    return f"{party}: internal error ({type(exc).__name__}); details in {party}'s own log"
