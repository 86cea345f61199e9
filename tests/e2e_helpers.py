"""Set-up that the end-to-end tests share: the two-party vertical job spec and a kill mid-job.

Most process-level tests run a ``lender`` (holds the label) and a ``payco`` (holds features) on
free loopback ports; :func:`lender_payco_spec` writes that spec once, with the test's own
``[task]`` body and further sections, so a new spec field or party key is changed in one place.
"""
from __future__ import annotations

import signal
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from fedrisk.runtime.demo import free_ports

FEDRISK = [sys.executable, "-m", "fedrisk"]


def lender_payco_spec(path: Path, name: str, task: str, sections: str = "", *, seed: int | None = None,
                      id_column: str = "id", ports: list[int] | None = None) -> Path:
    """Write a vertical job spec to ``path``: ``lender.csv`` (label ``y``) and ``payco.csv`` beside it.

    Parameters
    ----------
    name : str
        ``[federation] name``.
    task : str
        The ``[task]`` body, ``kind`` included (dedented here).
    sections : str
        TOML appended after the task (``[evaluation]``, ``[security]`` ...; dedented here).
    seed : int, optional
        ``[federation] seed`` (left out when None, so the spec's default applies).
    ports : list of int, optional
        The two parties' ports; free loopback ports by default.
    """
    ports = ports or free_ports(2)
    seed_line = f"seed = {seed}\n" if seed is not None else ""
    path.write_text(f'[federation]\nname = "{name}"\n{seed_line}'
                    f'[parties.lender]\naddress = "127.0.0.1:{ports[0]}"\ndata = "lender.csv"\nid = "{id_column}"\n'
                    f'label = "y"\n'
                    f'[parties.payco]\naddress = "127.0.0.1:{ports[1]}"\ndata = "payco.csv"\nid = "{id_column}"\n'
                    f'[task]\n{textwrap.dedent(task).strip()}\n{textwrap.dedent(sections).strip()}\n')
    return path


def sigkill_after_step(job: Any, victims: list[Any], step: int, delay: float) -> tuple[int, str, float]:
    """Wait for the job's ``step``, ``delay`` more seconds, SIGKILL ``victims``; return (rc, stderr, seconds to end).

    ``job`` is a :class:`tests.runtime.test_faults.Job`; the seconds run from the kill to the
    end of ``fedrisk simulate`` (how long the federation took to recover or to stop).
    """
    job.wait_step(step)
    time.sleep(delay)
    t_kill = time.monotonic()
    for proc in victims:
        proc.send_signal(signal.SIGKILL)
    rc, err, _ = job.finish()
    return rc, err, time.monotonic() - t_kill
