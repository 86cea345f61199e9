"""Peer-supplied text made safe to log or keep: bounded in length, control characters escaped.

An authenticated peer chooses the bytes of every string it sends: names, tags, an abort reason.
Echoed verbatim into an error message or a log line, a 10 MB string costs 10 MB per refused
frame (issue 12: 20 frames -> 200 MB of log), and a ``"\\n2026-01-01 ... bank-a INFO done"``
inside it forges a log line. :func:`safe_text` bounds and escapes such text where it is quoted;
:class:`EscapingFormatter` escapes every log message once more at the last step, so a string that
reached a message by another path still cannot start a new line.
"""
from __future__ import annotations

import logging
from typing import Any

__all__ = ["safe_text", "safe_repr", "EscapingFormatter", "DEFAULT_LIMIT"]

DEFAULT_LIMIT = 200

# C0 controls, DEL, C1 controls and the Unicode line/paragraph separators: each can end or
# rewrite a line in a log viewer or terminal
_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]}
_ESCAPES.update({0x2028: "\\u2028", 0x2029: "\\u2029", ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})


def safe_text(value: Any, limit: int = DEFAULT_LIMIT) -> str:
    """``str(value)`` cut to ``limit`` characters (saying how much was cut), control characters escaped.

    Cutting happens before escaping, so the result is at most about ``4 * limit + 30`` characters
    whatever the peer sent; a huge non-str value is never fully converted if it is bytes or str.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value[: limit + 1]).decode("utf-8", "replace")
        total = len(value)
    else:
        raw = value if isinstance(value, str) else _printable(str, value)
        total = len(raw)
    cut = raw[:limit].translate(_ESCAPES)
    return cut if total <= limit else f"{cut}...(+{total - limit} more)"


def safe_repr(value: Any, limit: int = DEFAULT_LIMIT) -> str:
    """``repr(value)`` made safe as :func:`safe_text` makes text, for a peer's value of any type."""
    return safe_text(_printable(repr, value), limit)


def _printable(convert: Any, value: Any) -> str:
    """``convert(value)``, or a description when Python refuses: an int of more than 4,300 digits
    (a peer's ``10**5000`` in a setting) raises ``ValueError`` on ``str``/``repr``, which turned a
    refusal message into a traceback."""
    try:
        return convert(value)
    except ValueError:
        return f"<{type(value).__name__} too large to print>"


class EscapingFormatter(logging.Formatter):
    """A formatter whose message part is always one line: control characters are escaped.

    Tracebacks (``exc_info``) are the program's own and keep their lines; only the message, which
    may quote a peer's text, is escaped. Messages are not cut (our own may be long); text from a
    peer is cut where it is quoted, with :func:`safe_text`.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = record.message.translate(_ESCAPES)
        return super().formatMessage(record)
