"""The Python API on horizontal DataFrames a notebook user brings (found by bug hunting):

* text columns: ``categories={...}`` passes into the job spec (an inline table), and
  ``predict_proba`` encodes a raw holdout's text with the agreed levels (an unseen category
  included) for ``LogisticRegression`` and the horizontal trees, as ``fedrisk predict`` does;
* blank cells: a ``missing="mean"`` federation's LR scores a holdout with blanks using the
  federation's means (the model file's ``imputation``), as ``fedrisk predict`` does.
"""
from __future__ import annotations

import pathlib
import tempfile

import numpy as np
import pandas as pd
import pytest

import fedrisk as fr
from fedrisk.runtime.predict import predict_file
from tests.tasks.test_woe_tasks import german_frame

NUM = ["duration_in_month", "credit_amount", "age_in_years"]


@pytest.fixture(scope="module")
def german_banks():
    df = german_frame()[["id", "y", *NUM, "purpose"]]
    test, train = df[df.id % 5 == 0].reset_index(drop=True), df[df.id % 5 != 0]
    banks = {f"bank{k + 1}": train[train.id % 3 == k].reset_index(drop=True) for k in range(3)}
    return banks, test, {"purpose": sorted(df.purpose.unique().tolist())}


@pytest.mark.parametrize("estimator", [fr.LogisticRegression, fr.SecureBoost])
def test_text_columns_fit_with_categories_and_predict_raw_rows(german_banks, estimator):
    banks, test, vocab = german_banks
    extra = {"n_trees": 5, "max_depth": 2} if estimator is fr.SecureBoost else {}
    m = estimator(categories=vocab, min_category_count=10, **extra).fit(fr.Federation.horizontal(banks, id="id", label="y"))
    assert any(f.startswith("purpose") for f in m.feature_names_in_)
    holdout = test.copy()
    holdout.loc[0, "purpose"] = "a category never declared"
    p = m.predict_proba(holdout)[:, 1]
    assert p.shape == (len(holdout),) and np.isfinite(p).all()
    # `fedrisk predict` on the saved model scores the same raw rows alike
    with tempfile.TemporaryDirectory() as d:
        d = pathlib.Path(d)
        m.save(d)
        holdout.drop(columns="y").to_csv(d / "new.csv", index=False)
        predict_file(d / "model.json", d / "new.csv", d / "s.csv")
        np.testing.assert_allclose(pd.read_csv(d / "s.csv")["score"], p, atol=1e-7)


def test_lr_of_a_mean_imputing_federation_scores_blank_cells(german_banks):
    banks, test, _ = german_banks
    banks = {k: v.drop(columns="purpose") for k, v in banks.items()}
    banks["bank2"] = banks["bank2"].assign(credit_amount=lambda d: d.credit_amount.where(d.index % 9 != 0))
    m = fr.LogisticRegression().fit(fr.Federation.horizontal(banks, id="id", label="y", missing="mean"))
    holdout = test.drop(columns="purpose")
    blank = holdout.assign(credit_amount=lambda d: d.credit_amount.where(d.index % 4 != 0))
    fill = m._model_files()["model.json"]["imputation"]["credit_amount"]
    np.testing.assert_allclose(m.predict_proba(blank), m.predict_proba(blank.fillna({"credit_amount": fill})))
    # a federation that rejected blanks has no fill values: scoring a blank is refused with one line
    clean = {k: v.dropna() for k, v in banks.items()}
    m2 = fr.LogisticRegression().fit(fr.Federation.horizontal(clean, id="id", label="y"))
    with pytest.raises(fr.FedriskError, match="fill or drop them first"):
        m2.predict_proba(blank)
