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
from tests.estimators.levels import declared_levels
from tests.tasks.test_woe_tasks import german_frame

NUM = ["duration_in_month", "credit_amount", "age_in_years"]


@pytest.fixture(scope="module")
def german_banks():
    df = german_frame()[["id", "y", *NUM, "purpose"]]
    test, train = df[df.id % 5 == 0].reset_index(drop=True), df[df.id % 5 != 0]
    banks = {f"bank{k + 1}": train[train.id % 3 == k].reset_index(drop=True) for k in range(3)}
    return banks, test, declared_levels(df, ["purpose"])


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


def test_from_spec_reads_each_banks_dialect_label_coding_and_text_ids(tmp_path, german_banks):
    """A spec whose banks export differently ('good'/'bad' labels, one ';'-separated with decimal
    commas, zero-padded ids): from_spec used to read every file with pandas defaults and drop
    ``positive``, so the federation could not even be built."""
    banks, test, _ = german_banks
    lines = ['[federation]\nname = "dialects"\n[coordinator]\naddress = "127.0.0.1:1"\n']
    for i, (b, df) in enumerate(banks.items()):
        df = df.drop(columns="purpose").assign(y=np.where(df.y == 1, "bad", "good"), id=df.id.map("{:06d}".format),
                                                credit_amount=df.credit_amount / 7)
        dialect = 'sep = ";"\ndecimal = ","\n' if b == "bank2" else ""
        df.to_csv(tmp_path / f"{b}.csv", index=False, **({"sep": ";", "decimal": ","} if b == "bank2" else {}))
        lines.append(f'[parties.{b}]\naddress = "127.0.0.1:{i + 2}"\ndata = "{b}.csv"\nid = "id"\nlabel = "y"\n'
                     f'positive = "bad"\n{dialect}')
    (tmp_path / "job.toml").write_text("".join(lines) + '[task]\nkind = "horizontal.lr"\n')
    fed = fr.Federation.from_spec(tmp_path / "job.toml", processes=False)
    assert fed.parties["bank2"].shape == (len(banks["bank2"]), 5) and fed.parties["bank1"]["id"].iloc[0].startswith("0")
    assert fed.parties["bank2"]["credit_amount"].dtype.kind == "f"
    m = fr.LogisticRegression().fit(fed)
    pooled = pd.concat(banks.values())
    from sklearn.linear_model import LogisticRegression
    from fedrisk.algorithms.horizontal.logistic import sklearn_C

    X = pooled[NUM].to_numpy(float) * np.array([1, 1 / 7, 1])
    mu, sd = X.mean(0), X.std(0)
    ref = LogisticRegression(C=sklearn_C(1e-4, len(X)), tol=1e-10, max_iter=1000).fit((X - mu) / sd, pooled.y)
    np.testing.assert_allclose(m.coef_[0], ref.coef_[0] / sd, atol=1e-6)
