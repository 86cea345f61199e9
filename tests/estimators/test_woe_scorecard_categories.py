"""The Python API of horizontal WOE and scorecards with text columns: ``categories={...}`` declares the
vocabulary (as for ``LogisticRegression``); without it a text column is one error naming the column
and the ``categories=`` setting, and nothing is fitted."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import fedrisk as fr
from tests.estimators.levels import banks_with_a_text_column, declared_levels
from tests.tasks.test_woe_tasks import german_frame

NUM = ["duration_in_month", "credit_amount", "age_in_years"]


@pytest.fixture(scope="module")
def german_banks():
    df = german_frame()[["id", "y", *NUM, "purpose", "status_of_existing_checking_account"]]
    test, train = df[df.id % 5 == 0].reset_index(drop=True), df[df.id % 5 != 0]
    banks = {f"bank{k + 1}": train[train.id % 3 == k].reset_index(drop=True) for k in range(3)}
    vocab = declared_levels(df, ("purpose", "status_of_existing_checking_account"))
    return banks, test, vocab


def test_woe_binning_with_categories(german_banks):
    banks, test, vocab = german_banks
    fed = fr.Federation.horizontal(banks, id="id", label="y")
    m = fr.WoeBinning(categories=vocab, min_category_count=10).fit(fed)
    iv = dict(zip(m.iv_["feature"], m.iv_["iv"]))
    assert iv["status_of_existing_checking_account"] > 0.3
    W = m.transform(test.assign(purpose=["never declared"] + test.purpose.tolist()[1:]))
    assert np.isfinite(W.to_numpy()).all() and W.shape == (len(test), len(iv))


def test_scorecard_with_categories_scores_raw_rows(german_banks):
    banks, test, vocab = german_banks
    fed = fr.Federation.horizontal(banks, id="id", label="y")
    m = fr.Scorecard(categories=vocab).fit(fed)
    p = m.predict_proba(test)[:, 1]
    assert p.shape == (len(test),) and fr.metrics.auc(test.y, p) > 0.7


@pytest.mark.parametrize("estimator", [fr.WoeBinning, fr.Scorecard])
def test_a_text_column_without_categories_is_one_line_naming_the_setting(german_banks, estimator):
    banks, _, vocab = german_banks
    vocab = {"purpose": vocab["purpose"]}
    with pytest.raises(fr.FedriskError) as e:
        estimator(categories=vocab).fit(fr.Federation.horizontal(banks, id="id", label="y"))
    msg = str(e.value)
    assert "\n" not in msg and "status_of_existing_checking_account" in msg and "categories=" in msg


def test_a_horizontal_cohort_column_written_like_a_date_takes_its_vocabulary():
    """A cohort column ("2020-01", "2020-02") looks like dates. In a horizontal WOE job its vocabulary
    ``categories={'cohort': [...]}`` was not taken as a declaration: the bank refused it as dates and
    said to declare it in ``categorical=[...]``, which then asked for ``categories`` -- a loop. The
    vocabulary declares it; an undeclared one is told about ``categories`` (a horizontal job's setting)."""
    banks = banks_with_a_text_column(6, {"bank1": 160, "bank2": 120}, "cohort", ["2020-01", "2020-02", "2020-03"],
                                     "2020-03", -1.0)
    fed = fr.Federation.horizontal(banks, secure_aggregation=False)
    vocab = {"cohort": ["2020-01", "2020-02", "2020-03"]}
    w = fr.WoeBinning(categories=vocab, iv_threshold=0.0).fit(fed)
    iv = w.iv_.set_index("feature")
    assert iv.loc["cohort", "kind"] == "categorical" and iv.loc["cohort", "iv"] > 0
    with pytest.raises(fr.DataError) as info:
        fr.WoeBinning().fit(fed)
    msg = str(info.value)
    assert "'cohort'" in msg and "dates" in msg and "categories={'cohort': [...]}" in msg, msg
