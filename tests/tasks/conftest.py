"""Runs shared by several task test modules (CI budget: one ``fedrisk simulate`` instead of two)."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def vsmall_ecdh_run(tmp_path_factory) -> tuple[Path, Path]:
    """The three-party synthetic ``vertical.lr`` job (:func:`tests.tasks.test_vertical_lr_e2e.synthetic`:
    lender, payco, bureau) simulated once over mTLS processes with the default PSI (ECDH).

    Returns ``(folder, run)``: the folder holding the parties' files and the spec, and the run
    directory. Read-only for its users: test_vertical_lr_e2e's federated predict writes its own
    files elsewhere, and test_psi_protocol_choice_e2e compares its RR22 run with this one.
    """
    from tests.tasks.test_vertical_lr_e2e import cli, synthetic

    folder = tmp_path_factory.mktemp("vsmall-ecdh")
    spec = synthetic(folder)
    out = folder / "run"
    r = cli("simulate", spec, "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    return folder, out
