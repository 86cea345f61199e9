"""Where a participant's log lines go: its own log file, and stderr as well when asked.

``fedrisk party`` and ``fedrisk serve`` both keep a logger out of the root logger's handlers
(a library user's logging set-up must not receive partners' text) and write it to one file with
an :class:`~fedrisk.transport.safe_text.EscapingFormatter`, so every message stays one line.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

__all__ = ["log_to_file"]


def log_to_file(logger: logging.Logger, path: Path, fmt: logging.Formatter, console: bool) -> None:
    """Send ``logger``'s INFO and above to ``path`` only (and to stderr with ``console``).

    Handlers the logger had are dropped and it no longer propagates to its parents, so a second
    call (a resumed party, a restarted service in one process) does not write every line twice.
    """
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    logger.propagate = False
    fh = logging.FileHandler(path, encoding="utf-8")
    fh.setFormatter(fmt)
    logger.addHandler(fh)
    if console:
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(fmt)
        logger.addHandler(sh)
