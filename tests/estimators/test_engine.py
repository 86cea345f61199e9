"""In-process federated scoring (``engine.score_vertical``) must score exactly as ``fedrisk predict``.

Found on data the other tests had not used: a feature holder trained with ``missing = "mean"``
scored new rows with the *scoring batch's* means, so the same applicant got another score in
another batch, and the Python API disagreed with the CLI (which fills with the training means).
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

import fedrisk as fr


def _frames(n: int = 800, seed: int = 3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ [1.0, -0.7, 0.8, 0.6] - 1)))).astype(int)
    lender = pd.DataFrame({"id": np.arange(n), "y": y, "a": X[:, 0], "b": X[:, 1]})
    payco = pd.DataFrame({"id": np.arange(n), "c": X[:, 2], "d": X[:, 3]}).sample(frac=1, random_state=1)
    payco.loc[payco.index[rng.random(n) < 0.1], "c"] = np.nan  # gaps in training: c only
    return lender, payco.reset_index(drop=True)


def _manual(model: dict, part: dict, lender: pd.DataFrame, payco: pd.DataFrame) -> np.ndarray:
    """Pooled arithmetic of the split model with the training fill values (what `fedrisk predict` does)."""
    p = payco.copy()
    for c, v in part["imputation"].items():
        p[c] = p[c].fillna(v)
    j = lender.merge(p, on="id")
    u = (j[model["features"]].to_numpy() - model["mean"]) / np.asarray(model["scale"]) @ np.asarray(model["coef"])
    v = (j[part["features"]].to_numpy() - part["mean"]) / np.asarray(part["scale"]) @ np.asarray(part["coef"])
    return 1 / (1 + np.exp(-(u + v + model["intercept"])))


def test_vertical_scoring_fills_with_the_training_means_not_the_batch_means(caplog):
    lender, payco = _frames()
    fed = fr.Federation.vertical({"lender": lender, "payco": payco}, id="id", label="y",
                                 missing={"lender": "reject", "payco": "mean"})
    train, test = fed.split("id % 5 == 0")
    lr = fr.LogisticRegression().fit(train)
    model, part = lr.files_["model.json"], lr.files_["model-payco.json"]
    # every column has a training fill value, also d, which had no gaps in training
    assert set(part["imputation"]) == {"c", "d"}
    tl, tp = test.parties["lender"], test.parties["payco"].copy()
    tp.loc[tp.index[:10], "d"] = np.nan  # new gaps in a column complete at training
    holes = tp[["c", "d"]].isna().any(axis=1)
    shifted = tp.copy()
    shifted.loc[~holes, ["c", "d"]] += 3.0  # another batch: the complete rows moved, so other batch means
    p1 = lr.predict_proba(test._with({"lender": tl, "payco": tp}))[:, 1]
    p2 = lr.predict_proba(test._with({"lender": tl, "payco": shifted}))[:, 1]
    gaps = np.isin(tl["id"].to_numpy(), tp["id"][holes].to_numpy())
    assert gaps.sum() >= 15
    # a row with empty cells scores the same in either batch, and as `fedrisk predict` scores it
    assert np.abs(p1[gaps] - p2[gaps]).max() < 1e-9
    assert np.abs(p1 - _manual(model, part, tl, tp)).max() < 1e-9


def test_vertical_scoring_reports_unseen_categories(caplog):
    rng = np.random.default_rng(4)
    lender, payco = _frames(seed=5)
    payco = payco.assign(c=payco["c"].fillna(0.0), seg=rng.choice(["retail", "sme", "corp"], len(payco)))
    fed = fr.Federation.vertical({"lender": lender, "payco": payco}, id="id", label="y",
                                 party_options={"payco": {"categorical": ["seg"]}})
    train, test = fed.split("id % 5 == 0")
    lr = fr.LogisticRegression().fit(train)
    tp = test.parties["payco"].copy()
    tp.loc[tp.index[:7], "seg"] = "gov"   # a category the model never saw
    with caplog.at_level(logging.WARNING):
        p = lr.predict_proba(test._with({"lender": test.parties["lender"], "payco": tp}))[:, 1]
    assert np.isfinite(p).all()
    lines = [r.getMessage() for r in caplog.records if "never seen in training" in r.getMessage()]
    assert lines and "'seg' (7 of" in lines[0] and "payco" in lines[0]
    assert "gov" not in lines[0]  # counts only, no values


def test_a_label_holder_with_labels_only_trains_and_scores_as_pooled():
    """A lender that brings only the default flag (every feature at the partners) was refused at
    load ("no feature columns left"); the protocols handle it: LR equals pooled scikit-learn and
    federated scoring (in-process here, `fedrisk predict` alike) gives the model's scores."""
    from sklearn.linear_model import LogisticRegression as SkLR

    lender, payco = _frames(seed=6)
    payco = payco.assign(c=payco["c"].fillna(0.0))
    fed = fr.Federation.vertical({"lender": lender[["id", "y"]], "payco": payco}, id="id", label="y")
    train, test = fed.split("id % 5 == 0")
    lr = fr.LogisticRegression().fit(train)
    model, part = lr.files_["model.json"], lr.files_["model-payco.json"]
    assert model["features"] == [] and part["features"] == ["c", "d"]
    j = train.parties["lender"].merge(train.parties["payco"], on="id")
    Z = (j[["c", "d"]].to_numpy() - part["mean"]) / np.asarray(part["scale"])
    ref = SkLR(C=1 / (1e-4 * len(j)), tol=1e-10, max_iter=10_000).fit(Z, j["y"])
    assert np.abs(ref.coef_[0] - np.asarray(part["coef"])).max() < 1e-4
    assert abs(ref.intercept_[0] - model["intercept"]) < 1e-4
    p = lr.predict_proba(test)[:, 1]
    tj = test.parties["lender"].merge(test.parties["payco"], on="id")
    want = 1 / (1 + np.exp(-((tj[["c", "d"]].to_numpy() - part["mean"]) / np.asarray(part["scale"])
                             @ np.asarray(part["coef"]) + model["intercept"])))
    assert np.abs(p - want).max() < 1e-9


def test_errors_name_the_partys_dataframe_not_the_engines_temporary_files():
    """A notebook user's error used to read "party 'payco', file '/tmp/fedrisk-predict-x1/data/payco.parquet':
    ..." and "/tmp/fedrisk-abc/job.toml: ...": files the user never wrote, gone once the call returns."""
    import re

    import pytest

    import fedrisk as fr
    from tests.tasks.test_woe_tasks import german_frame

    df = german_frame()
    lender, payco = df[["id", "y", "duration_in_month"]], df[["id", "credit_amount", "age_in_years"]]
    m = fr.LogisticRegression().fit(fr.Federation.vertical({"lender": lender, "payco": payco}, id="id", label="y"))
    new = fr.Federation.vertical({"lender": lender, "payco": payco.drop(columns="age_in_years")}, id="id", label="y")
    with pytest.raises(fr.FedriskError) as err:
        m.predict_proba(new)
    assert "party 'payco' (its DataFrame): feature columns not found: 'age_in_years'" in str(err.value)
    banks = {"b1": lender.iloc[:500], "b2": lender.iloc[500:].assign(duration_in_month=np.nan)}
    with pytest.raises(fr.FedriskError) as err:
        fr.LogisticRegression().fit(fr.Federation.horizontal(banks, id="id", label="y"))
    assert "party 'b2' (its DataFrame)" in str(err.value)
    for e in (err.value,):
        assert not re.search(r"fedrisk-\w+", str(e)), str(e)
