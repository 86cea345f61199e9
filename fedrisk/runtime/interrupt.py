"""Stopping a job on Ctrl-C or ``kill``: one line naming the phase, and nothing left running.

A party process turns SIGINT and SIGTERM into :class:`~fedrisk.errors.Interrupted`, raised in its
main thread wherever it waits (a receive, a crypto batch, a send retry). The party runtime then
tells its partners (``ctl.abort``), logs ``interrupted by SIGINT during <phase>``, and stops its
worker pools without waiting for queued batches. The phase is whatever the runtime or the task
last declared with :func:`set_phase` (``"waiting for participants"``, ``"PSI alignment"``,
``"train 3/30"`` ...).

Only the first signal raises: a second Ctrl-C while the party is already stopping is ignored
rather than interrupting the clean-up with a traceback (``simulate`` kills what does not stop).
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

from fedrisk.errors import Interrupted

__all__ = ["set_phase", "current_phase", "stop_on_signals", "SIGNALS", "stop_with_parent", "PARENT_ENV"]

#: set by ``simulate`` to its pid: a participant it started stops when ``simulate`` dies (even ``kill -9``)
PARENT_ENV = "FEDRISK_STOP_WITH_PARENT"

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PHASE = "start-up"


def set_phase(name: str) -> None:
    """Declare what this process is doing now (named if it is interrupted)."""
    global _PHASE
    _PHASE = name


def current_phase() -> str:
    return _PHASE


@contextmanager
def stop_on_signals(who: str) -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM raise :class:`Interrupted` (once) in the main thread.

    Outside the main thread (parties run as threads in tests) this does nothing: signals are
    delivered to the main thread only, and the caller owns them there.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = []

    def handler(signum: int, frame) -> None:  # noqa: ANN001 - signal handler signature
        if fired:
            return
        fired.append(signum)
        raise Interrupted(f"{who} interrupted by {signal.Signals(signum).name} during {_PHASE}")

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            # keep ignoring repeats until the process has finished cleaning up
            signal.signal(s, signal.SIG_IGN if fired else h)


def stop_with_parent() -> None:
    """When started by ``simulate`` (``FEDRISK_STOP_WITH_PARENT=<pid>``), SIGTERM this process once
    that parent is gone, so a killed ``simulate`` leaves no participant behind."""
    import os
    import time

    want = os.environ.get(PARENT_ENV, "")
    if not want.isdigit():
        return
    parent = int(want)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="fedrisk-parent-watch", daemon=True).start()
