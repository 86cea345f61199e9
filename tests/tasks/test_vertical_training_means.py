"""Vertical ``missing = "mean"`` fills blanks with the means of the party's aligned TRAINING rows.

The fill value shapes the model and goes into the model file for scoring, so it must not be taken from
the test rows (their feature values would reach training through it, as a scaler fitted on every row
would) nor from customers outside the intersection. Here the lender's test rows and its rows without a
partner carry values far from its training rows': the whole file's mean would be pulled towards them.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fedrisk as fr
from fedrisk.errors import FedriskError
from fedrisk.estimators.engine import run_task
from fedrisk.model_files import load_model
from tests.tasks.test_woe_tasks import run_in_process


def _frames(n: int = 400, seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n + 60, 4))
    y = (rng.random(n + 60) < 1 / (1 + np.exp(-(X @ [1.0, -0.7, 0.8, 0.6] - 1)))).astype(int)
    ids = np.arange(n + 60)
    lender = pd.DataFrame({"id": ids, "y": y, "a": X[:, 0], "b": X[:, 1]})
    test = ids % 5 == 0
    lender.loc[test, "a"] += 40.0  # test rows: far from the training rows
    lender.loc[ids >= n, "a"] += 90.0  # customers the payment company does not have
    lender.loc[ids % 7 == 3, "a"] = np.nan  # blanks, in training and test rows
    payco = pd.DataFrame({"id": ids[:n], "c": X[:n, 2], "d": X[:n, 3]})
    payco.loc[ids[:n] % 11 == 4, "d"] = np.nan
    return lender, payco


def _spec(tmp: Path, kind: str, task: str, lender_missing: str = "mean", payco_missing: str = "mean") -> Path:
    lender, payco = _frames()
    lender.to_csv(tmp / "lender.csv", index=False)
    payco.to_csv(tmp / "payco.csv", index=False)
    path = tmp / "job.toml"
    path.write_text(textwrap.dedent(f"""
        [federation]
        name = "means"
        seed = 7
        [parties.lender]
        address = "127.0.0.1:1"
        data = "lender.csv"
        id = "id"
        label = "y"
        missing = "{lender_missing}"
        [parties.payco]
        address = "127.0.0.1:2"
        data = "payco.csv"
        id = "id"
        missing = "{payco_missing}"
        [task]
        kind = "{kind}"
        {task}
        [evaluation]
        test_rule = "id % 5 == 0"
        """))
    return path


@pytest.mark.parametrize("kind, task", [
    ("vertical.lr", "max_iter = 3"),
    ("vertical.secureboost", "n_trees = 2\nmax_depth = 2\nmax_bin = 8"),
])
def test_blanks_are_filled_with_the_aligned_training_rows_means(tmp_path, kind, task):
    out = tmp_path / "run"
    out.mkdir()
    run_in_process(_spec(tmp_path, kind, task), out)
    lm, pm = load_model(out / "model.json"), load_model(out / "model-payco.json")
    lender, payco = _frames()
    train = (lender["id"] < 400) & (lender["id"] % 5 != 0)
    want_a = lender.loc[train, "a"].mean()  # pandas skips the blanks
    assert lm["imputation"]["a"] == pytest.approx(want_a, abs=1e-12)
    # the whole file's and the aligned rows' means are far away: the test tells them apart
    assert abs(lender["a"].mean() - want_a) > 5 and abs(lender.loc[lender["id"] < 400, "a"].mean() - want_a) > 5
    ptrain = payco["id"] % 5 != 0
    assert pm["imputation"]["d"] == pytest.approx(payco.loc[ptrain, "d"].mean(), abs=1e-12)
    assert pm["imputation"]["c"] == pytest.approx(payco.loc[ptrain, "c"].mean(), abs=1e-12)


def test_a_column_blank_in_every_aligned_training_row_is_one_line(tmp_path):
    lender, payco = _frames()
    # values only in test rows and rows without a partner: no training mean to fill with
    lender.loc[(lender["id"] < 400) & (lender["id"] % 5 != 0), "b"] = np.nan
    fed = fr.Federation.vertical({"lender": lender, "payco": payco}, id="id", label="y", seed=7,
                                 missing={"lender": "mean", "payco": "mean"})
    with pytest.raises(FedriskError) as e:
        run_task(fed.split(test_rule="id % 5 == 0")[0], "vertical.lr", {"max_iter": 2}, keep_dir=tmp_path / "run")
    msg = str(e.value)
    assert "'b'" in msg and "no value in any aligned training row" in msg and "exclude" in msg, msg
