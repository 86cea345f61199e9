"""Reason codes in a notebook: ``explain`` gives the columns ``fedrisk predict`` writes.

A modeller explaining a decline needs the reasons the CLI writes (``fedrisk predict``: score, reason_1..k,
contribution_1..k), but the estimators gave probabilities only. ``LogisticRegression.explain``
and ``SecureBoost.explain`` (horizontal: a DataFrame; vertical: a Federation, federated)
now return them, equal to ``fedrisk predict`` on the saved model; ``WoeBinning.fit_transform`` is
``fit`` then ``transform``, as scikit-learn transformers have it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import fedrisk as fr
from fedrisk.runtime.predict import predict_file


@pytest.fixture(scope="module")
def banks(shared_data):
    b = {f"bank{i}": pd.read_csv(shared_data / f"default_credit_homo_{n}.csv", nrows=400)
         for i, n in enumerate(["guest", "host_1"], 1)}
    holdout = pd.read_csv(shared_data / "default_credit_homo_test.csv", nrows=60)
    return b, holdout.set_index(holdout["id"].map(lambda i: f"app-{i}"))


@pytest.mark.parametrize("estimator", [fr.LogisticRegression(), fr.SecureBoost(n_trees=4, max_depth=3)],
                         ids=["lr", "gbdt"])
def test_horizontal_explain_equals_fedrisk_predict(banks, estimator, tmp_path):
    b, holdout = banks
    m = estimator.fit(fr.Federation.horizontal(b, id="id", label="y"))
    table = m.explain(holdout)
    assert table.index.equals(holdout.index)
    assert list(table.columns[:4]) == ["score", "reason_1", "reason_2", "reason_3"]
    np.testing.assert_allclose(table["score"], m.predict_proba(holdout)[:, 1])
    contrib = table[[c for c in table.columns if c.startswith("contribution_")]].to_numpy(dtype=float)
    assert np.all(np.diff(contrib, axis=1)[~np.isnan(np.diff(contrib, axis=1))] <= 1e-12)  # largest push first
    m.save(tmp_path / "m")
    holdout.drop(columns="y").to_csv(tmp_path / "new.csv", index=False)
    predict_file(tmp_path / "m", tmp_path / "new.csv", tmp_path / "s.csv")
    cli = pd.read_csv(tmp_path / "s.csv")
    assert cli["reason_1"].fillna("").tolist() == table["reason_1"].fillna("").tolist()
    np.testing.assert_allclose(cli["contribution_1"], table["contribution_1"], rtol=1e-6)


def test_vertical_secureboost_explain_names_own_features_and_aggregates_the_partner(vertical_frames):
    lender, payco = vertical_frames
    train, test = fr.Federation.vertical({"lender": lender.head(900), "payco": payco}, id="id", label="y").split()
    sb = fr.SecureBoost(n_trees=3, max_depth=3).fit(train)
    table = sb.explain(test)
    np.testing.assert_allclose(table["score"], sb.predict_proba(test)[:, 1])
    reasons = pd.concat([table[c] for c in table.columns if c.startswith("reason_")]).dropna()
    own = set(lender.columns) - {"id", "y"}
    assert reasons.isin(own | {"partner features (payco)"}).all(), set(reasons) - own


def test_vertical_lr_explain_names_own_columns_and_sums_the_partner_with_no_new_message(vertical_frames):
    """Vertical LR gave no reasons ("scores without reason codes"). Now the lender's columns are named and
    payco's are one reason worth payco's partial score, the sum the lender already received to score;
    the scoring session's messages are exactly predict_proba's."""
    from fedrisk.estimators.engine import capturing

    lender, payco = vertical_frames
    train, test = fr.Federation.vertical({"lender": lender.head(600), "payco": payco}, id="id", label="y").split()
    lr = fr.LogisticRegression().fit(train)
    with capturing():
        table = lr.explain(test)
        received = [(e.sender, e.tag) for e in lr._last_scoring.captured["lender"]]
        p = lr.predict_proba(test)[:, 1]
        assert [(e.sender, e.tag) for e in lr._last_scoring.captured["lender"]] == received
    np.testing.assert_allclose(table["score"], p)
    # independently: each party's terms coef * (x - mean) / scale from its own part of the model
    parts = {d["party"]: d for d in lr._model_files().values()}
    ids = test.parties["lender"]["id"][test.parties["lender"]["id"].isin(test.parties["payco"]["id"])]
    terms = {}
    for name, doc in parts.items():  # (both parties name their columns x0, x1, ...)
        rows = test.parties[name].set_index("id").loc[ids]
        z = (rows[doc["features"]].to_numpy(dtype=float) - doc["mean"]) / np.asarray(doc["scale"]) * doc["coef"]
        if name == "lender":
            terms.update({f: z[:, j] for j, f in enumerate(doc["features"])})
        else:
            terms["partner features (payco)"] = z.sum(axis=1)
    full = pd.DataFrame(terms, index=ids.to_numpy())
    logit = np.log(p / (1 - p))
    by_id = pd.Series(logit, index=test.parties["lender"]["id"].to_numpy()).loc[full.index]
    np.testing.assert_allclose(full.sum(axis=1) + parts["lender"]["intercept"], by_id, atol=1e-8)
    table.index = test.parties["lender"]["id"].to_numpy()
    table = table.loc[full.index]
    for k in (1, 2, 3):
        want = full.apply(lambda r: r.sort_values(ascending=False, kind="stable").index[k - 1]
                          if (r > 1e-9).sum() >= k else None, axis=1)
        assert table[f"reason_{k}"].tolist() == want.tolist()
        top = np.sort(full.to_numpy(), axis=1)[:, ::-1][:, k - 1]
        np.testing.assert_allclose(table[f"contribution_{k}"].dropna(), top[top > 1e-9], atol=1e-9)
    assert (table["reason_1"] == "partner features (payco)").any() and table["reason_1"].isin(terms).all()


def test_woe_fit_transform_is_fit_then_transform(banks):
    b, _ = banks
    fed = fr.Federation.horizontal(b, id="id", label="y")
    out = fr.WoeBinning().fit_transform(fed)
    again = fr.WoeBinning().fit(fed).transform(fed)
    assert set(out) == set(b) and all(out[k].equals(again[k]) for k in out)
