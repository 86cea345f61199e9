"""This process's resident memory, now and at its peak, as the kernel counts it.

Why not ``resource.getrusage(...).ru_maxrss``: Linux keeps the larger of the new and the old
address space's peak across ``exec``, so a party process started by a 1.3 GB test runner or
notebook reports the runner's size as its own peak. ``VmHWM`` in ``/proc/self/status`` belongs to
the current address space only, and can be reset (``reset_peak``) to measure one phase.
"""
from __future__ import annotations

import resource
from pathlib import Path

_STATUS = Path("/proc/self/status")


def _status_mb(field: str) -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:  # pragma: no cover - not Linux
        pass
    return None


def rss_mb() -> float | None:
    """Resident set now, in MiB (``None`` where ``/proc`` is missing)."""
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """Peak resident set of this process (threads included, pool workers not) since exec or the
    last ``reset_peak``, in MiB; ``ru_maxrss`` where ``/proc`` is missing."""
    peak = _status_mb("VmHWM")
    if peak is None:  # pragma: no cover - not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return peak


def reset_peak() -> bool:
    """Start the peak over from the current size (Linux 4.0+: ``/proc/self/clear_refs``), so a
    measurement covers one phase, not the warm-up before it. Returns whether it was reset."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:  # pragma: no cover - not Linux, or a locked-down /proc
        return False
