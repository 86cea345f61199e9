"""A vertical LR that uses up its iteration cap says so in the label holder's log. Both solvers used to end
silently there: on 460 German-credit rows the surrogate's 10 epochs (one batch each) stopped 0.84 from the
pooled coefficients, and the exact solver at ``max_iter`` returns whatever iterate it reached."""
from __future__ import annotations

import logging

import pytest

from tests.tasks.test_vertical_lr_e2e import run_threads, synthetic


@pytest.mark.parametrize("task, needle", [("solver = \"exact\"\nmax_iter = 2", "max_iter = 2"),
                                          ("solver = \"surrogate\"\nearly_stopping_rounds = 0", "epochs = 3")])
def test_hitting_the_cap_is_logged(tmp_path, caplog, task, needle):
    spec = synthetic(tmp_path, hosts=("payco",), task_extra=task)
    with caplog.at_level(logging.WARNING, logger="test.lender"):
        run_threads(spec, tmp_path / "out")
    notes = [r.getMessage() for r in caplog.records if r.name == "test.lender" and "converg" in r.getMessage()]
    assert len(notes) == 1 and needle in notes[0], notes


def test_a_converged_run_says_nothing(tmp_path, caplog):
    spec = synthetic(tmp_path, hosts=("payco",), task_extra='solver = "exact"')
    with caplog.at_level(logging.WARNING, logger="test.lender"):
        run_threads(spec, tmp_path / "out")
    assert not [r for r in caplog.records if "converg" in r.getMessage()]
