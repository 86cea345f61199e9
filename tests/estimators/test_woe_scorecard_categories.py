"""The Python API of horizontal WOE and scorecards with text columns: ``categories={...}`` declares the
vocabulary (as for ``LogisticRegression``); without it a text column is one error naming the column
and the ``categories=`` setting, and nothing is fitted."""
from __future__ import annotations

import numpy as np
import pytest

import fedrisk as fr
from tests.estimators.levels import declared_levels
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
