"""Rows to score that a modeller brings: the outcome column need not be two-class, a batch may be empty.

* A vertical model scored the test half of a split through the label holder's label column: a test batch
  holding only goods (a small or recent sample) was refused ("label column never holds positive = 'bad'"),
  though scoring reads no label (``fedrisk predict`` scored the same rows).
* ``explain`` on an empty batch raised numpy's "cannot reshape array of size 0"; it returns no rows with
  the same columns, as ``predict_proba`` returns shape (0, 2).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

import fedrisk as fr
from tests.tasks.test_woe_tasks import german_frame


def test_a_test_batch_of_goods_only_is_scored_like_any_other():
    df = german_frame().assign(y=lambda d: np.where(d.y == 1, "bad", "good"))
    lender, bureau = df[["id", "y", "duration_in_month", "purpose"]], df[["id", "age_in_years", "credit_history"]]
    train, test = fr.Federation.vertical({"lender": lender, "bureau": bureau}, id="id", label="y",
                                         positive="bad").split()
    lr = fr.LogisticRegression().fit(train)
    every = lr.predict_proba(test)[:, 1]
    goods = test.parties["lender"].y == "good"
    batch = test._with({"lender": test.parties["lender"][goods].reset_index(drop=True), "bureau": test.parties["bureau"]})
    np.testing.assert_allclose(lr.predict_proba(batch)[:, 1], every[goods.to_numpy()], atol=1e-4)


def test_explain_of_an_empty_batch_has_the_columns_and_no_rows(shared_data):
    banks = {f"bank{i}": pd.read_csv(shared_data / f"default_credit_homo_{n}.csv", nrows=300)
             for i, n in enumerate(["guest", "host_1"], 1)}
    fed = fr.Federation.horizontal(banks, id="id", label="y")
    for est in (fr.LogisticRegression(), fr.SecureBoost(n_trees=2)):
        table = est.fit(fed).explain(banks["bank1"].head(0))
        assert len(table) == 0 and list(table.columns[:2]) == ["score", "reason_1"]
