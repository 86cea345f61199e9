"""A vertical scorecard's stability (PSI) section names the rule that chose its test rows.

With ``evaluation.test_column`` choosing a shifted population (young applicants with large loans),
``metrics.json``'s stability said the test rows came from ``evaluation.test_rule``: the scorecard
task did not pass its rule on (LR and SecureBoost did), so a validator read the wrong selection.
The PSI itself must flag the shift.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd

from fedrisk.runtime.demo import free_ports
from tests.tasks.test_woe_tasks import german_frame


def test_test_column_is_named_and_a_shifted_test_population_is_flagged(tmp_path):
    df = german_frame()
    shifted = (df.age_in_years < 30) & (df.credit_amount > 2500) & (np.arange(len(df)) % 5 != 0)
    df["in_test"] = shifted.astype(int)
    df[["id", "y", "in_test", "duration_in_month", "credit_amount", "purpose", "age_in_years"]].to_csv(
        tmp_path / "lender.csv", index=False)
    df[["id", "status_of_existing_checking_account", "credit_history"]].to_csv(tmp_path / "bureau.csv", index=False)
    lender_bureau_job(tmp_path, "vsc-shift", 20, 'test_column = "in_test"')
    r = subprocess.run([sys.executable, "-m", "fedrisk", "simulate", str(tmp_path / "job.toml"), "--out", str(tmp_path / "run")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    st = json.loads((tmp_path / "run" / "metrics.json").read_text())["stability"]
    assert "test_column" in st["actual"] and "test_rule" not in st["actual"], st["actual"]
    assert st["n_actual"] == int(shifted.sum()) and st["band"] == "shift" and st["psi"] > 0.25
    html = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert "test_column" in html and "band-shift" in html
    # the column chose the test rows at every party and is never a feature (nor named in a model file)
    run = tmp_path / "run"
    assert set(pd.read_csv(run / "scores" / "test.csv").id) == set(df.id[shifted])
    cards = sorted(run.glob("scorecard-*.json"))
    assert len(cards) == 2 and all("in_test" not in f.read_text() for f in cards)


def lender_bureau_job(tmp_path, name: str, max_iter: int, evaluation: str) -> None:
    """``tmp_path/job.toml``: a vertical scorecard of ``lender.csv`` (label ``y``) and ``bureau.csv`` with these
    ``[evaluation]`` lines (also used by ``tests/tasks/test_evaluation_weights.py``)."""
    a, b = free_ports(2)
    (tmp_path / "job.toml").write_text(f"""
[federation]
name = "{name}"
[parties.lender]
address = "127.0.0.1:{a}"
data = "lender.csv"
id = "id"
label = "y"
[parties.bureau]
address = "127.0.0.1:{b}"
data = "bureau.csv"
id = "id"
[task]
kind = "vertical.scorecard"
max_iter = {max_iter}
[evaluation]
{evaluation}
""")
