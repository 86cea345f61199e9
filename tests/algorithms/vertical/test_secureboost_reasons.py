"""SecureBoost reason codes: per-party contributions along each row's path, at the label holder.

* a hand-built tree (label holder's split, then a partner's) gives the contributions worked out
  by hand, through the real scoring messages over the in-memory network;
* on a trained model the contributions add up exactly to every row's log-odds, the partner is
  one aggregated column, and the feature holder sends nothing beyond scoring's path-only answers.
"""
from __future__ import annotations

import numpy as np
import pytest

from fedrisk.algorithms.vertical.secureboost import (FeatureHolderModel, LabelHolderModel, SecureBoostFeatureHolder,
                                                     SecureBoostLabelHolder, SecureBoostParams, score_feature_holder)
from fedrisk.algorithms.vertical.secureboost_reasons import (add_covers, contributions, has_covers, reason_codes,
                                                              score_with_paths)
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork
from tests.algorithms.vertical.test_secureboost import FAST, make_data


def test_hand_built_tree_contributions():
    lender = LabelHolderModel(0.5, ["a"], [{"nodes": [
        {"id": 0, "owner": "lender", "feature": "a", "threshold": 0.5, "left": 1, "right": 2, "cover": 100},
        {"id": 1, "owner": "payco", "left": 3, "right": 4, "cover": 60},
        {"id": 2, "leaf": 0.1, "cover": 40},
        {"id": 3, "leaf": -0.2, "cover": 20},
        {"id": 4, "leaf": 0.4, "cover": 40}]}])
    payco = FeatureHolderModel(["b"], [{"nodes": [{"id": 1, "feature": "b", "threshold": 0.0}]}])
    Xa = np.array([[0.2], [0.2], [0.9]])
    Xb = np.array([[-1.0], [1.0], [5.0]])
    net = InMemoryNetwork(["lender", "payco"])
    out = run_roles({"lender": lambda ch: score_with_paths(ch, lender, Xa, ["payco"], tag="t"),
                     "payco": lambda ch: score_feature_holder(ch, payco, Xb, "lender", tag="t")}, network=net)
    p, paths = out["lender"]
    names, bias, c = contributions(lender, paths, Xa)
    assert names == ["a", "partner features (payco)"]
    # node values: payco node (20 * -0.2 + 40 * 0.4) / 60 = 0.2; root (60 * 0.2 + 40 * 0.1) / 100 = 0.16
    np.testing.assert_allclose(bias, 0.5 + 0.16)
    np.testing.assert_allclose(c, [[0.04, -0.4], [0.04, 0.2], [-0.06, 0.0]], atol=1e-12)
    np.testing.assert_allclose(paths.margin, [0.3, 0.9, 0.6])
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-paths.margin)))
    r = reason_codes(names, c, n=2)
    assert [x["feature"] for x in r[0]] == ["a"]  # only positive contributions are reasons
    assert [x["feature"] for x in r[1]] == ["partner features (payco)", "a"]
    assert r[2] == []


def test_trained_model_contributions_add_up_and_partner_is_aggregated():
    X, y = make_data(n=900, seed=4)
    params = SecureBoostParams(**{**FAST, "n_trees": 4})
    names = [["inc", "age", "util"], [f"h{j}" for j in range(5)]]
    tr, te = np.arange(900) % 4 != 0, np.arange(900) % 4 == 0
    parts = [X[:, :3], X[:, 3:]]

    def lh(ch):
        est = SecureBoostLabelHolder(params).fit(ch, ["payco"], parts[0][tr], y[tr], names[0])
        model = est.model_
        _, paths = score_with_paths(ch, model, parts[0][tr], ["payco"], tag="train")
        add_covers(model, paths)
        p, paths_te = score_with_paths(ch, model, parts[0][te], ["payco"], tag="predict")
        return model, p, paths_te

    def host(ch):
        est = SecureBoostFeatureHolder(params).fit(ch, "lh", parts[1][tr], names[1])
        score_feature_holder(ch, est.model_, parts[1][tr], "lh", tag="train")
        score_feature_holder(ch, est.model_, parts[1][te], "lh", tag="predict")

    net = InMemoryNetwork(["lh", "payco"], capture=True)
    out = run_roles({"lh": lh, "payco": host}, network=net)
    model, p, paths = out["lh"]
    assert has_covers(model)
    # covers are XGBoost's: hessian sums of the training rows; the first tree's p is the base rate
    p0 = 1 / (1 + np.exp(-model.base_score))
    assert model.trees[0]["nodes"][0]["cover"] == pytest.approx(tr.sum() * p0 * (1 - p0))
    cols, bias, c = contributions(model, paths, parts[0][te])
    assert cols == ["inc", "age", "util", "partner features (payco)"]
    np.testing.assert_allclose(bias + c.sum(axis=1), np.log(p / (1 - p)), atol=1e-9)
    assert np.abs(c[:, 3]).max() > 0  # the partner's splits matter (its columns drive y)
    # payco sent scoring bits only: nothing about reasons, which the label holder works out alone
    predict_tags = {e["tag"] for e in net["payco"].ledger.entries if "predict" in e["tag"]}
    assert predict_tags and all(t.startswith("sbi.predict.a") for t in predict_tags)  # path-only answers
    reasons = reason_codes(cols, c, n=3)
    assert any(x["feature"] == "partner features (payco)" for rs in reasons for x in rs)
    for rs, row in zip(reasons, c):
        assert [x["points_lost"] for x in rs] == sorted([x["points_lost"] for x in rs], reverse=True)
        assert all(x["points_lost"] == pytest.approx(row[cols.index(x["feature"])]) for x in rs)


def _split_xgboost_model(bst, X, own: list[int]):
    """XGBoost's trees as SecureBoost parts: splits on ``own`` columns at the label holder, the rest at payco."""
    from tests.finance.test_tree_shap import xgb_trees

    lh_trees, fh_trees = [], []
    for nodes in xgb_trees(bst, X):
        lh_nodes, fh_nodes = [], []
        for nd in nodes:
            if "leaf" in nd:
                lh_nodes.append(nd)
                continue
            f = nd["feature_index"]
            rule = {"threshold": nd["threshold"], "missing_left": nd["missing_left"]}
            base = {"id": nd["id"], "left": nd["left"], "right": nd["right"], "cover": nd["cover"]}
            if f in own:
                lh_nodes.append({**base, "owner": "lh", "feature": f"x{f}", **rule})
            else:
                lh_nodes.append({**base, "owner": "payco"})
                fh_nodes.append({"id": nd["id"], "feature": f"x{f}", **rule})
        lh_trees.append({"nodes": lh_nodes})
        fh_trees.append({"nodes": fh_nodes})
    other = [j for j in range(X.shape[1]) if j not in own]
    return (LabelHolderModel(0.0, [f"x{j}" for j in own], lh_trees),
            FeatureHolderModel([f"x{j}" for j in other], fh_trees), other)


def _walk(lh_model, fh_model, X, own, other):
    net = InMemoryNetwork(["lh", "payco"])
    out = run_roles({"lh": lambda ch: score_with_paths(ch, lh_model, X[:, own], ["payco"], tag="t"),
                     "payco": lambda ch: score_feature_holder(ch, fh_model, X[:, other], "lh", tag="t")}, network=net)
    return out["lh"]


def test_label_holder_alone_equals_xgboost_pred_contribs():
    """With every split at the label holder the reasons are XGBoost's exact TreeSHAP values."""
    xgb = pytest.importorskip("xgboost")
    from tests.finance.test_tree_shap import xgb_data

    X, y = xgb_data(n=800, d=5, seed=1)
    dm = xgb.DMatrix(X, label=y)
    bst = xgb.train({"max_depth": 3, "eta": 0.3, "objective": "binary:logistic", "base_score": 0.5}, dm, 12)
    own = list(range(5))
    lh_model, fh_model, other = _split_xgboost_model(bst, X, own)
    p, paths = _walk(lh_model, fh_model, X, own, other)
    names, bias, c = contributions(lh_model, paths, X[:, own])
    ref = bst.predict(dm, pred_contribs=True)
    assert names == [f"x{j}" for j in own]
    assert np.abs(c - ref[:, :-1]).max() < 1e-5
    np.testing.assert_allclose(paths.margin, bst.predict(dm, output_margin=True), atol=1e-5)


def test_partner_splits_marginalised_and_partner_gets_the_rest():
    """With a partner's splits: the label holder's columns are the Shapley values of the game in
    which the partner's features are unknown (brute force on the pooled rows), the partner's column
    is the rest, and the contributions add up to the margin; on rows whose trees meet no partner
    split the values are XGBoost's."""
    xgb = pytest.importorskip("xgboost")
    from tests.finance.test_tree_shap import brute_force, xgb_data
    from fedrisk.finance.tree_reasons import shap_tree
    from fedrisk.finance.tree_shap import MARGINAL

    X, y = xgb_data(n=300, d=5, seed=2)
    dm = xgb.DMatrix(X, label=y)
    bst = xgb.train({"max_depth": 3, "eta": 0.3, "objective": "binary:logistic", "base_score": 0.5}, dm, 6)
    own = [0, 2, 4]
    lh_model, fh_model, other = _split_xgboost_model(bst, X, own)
    p, paths = _walk(lh_model, fh_model, X, own, other)
    names, bias, c = contributions(lh_model, paths, X[:, own])
    assert names == ["x0", "x2", "x4", "partner features (payco)"]
    np.testing.assert_allclose(bias + c.sum(axis=1), paths.margin, atol=1e-9)
    rows = np.arange(0, 300, 37)
    expect = np.zeros((len(rows), 3))
    for nodes in [t["nodes"] for t in lh_model.trees]:
        st, pos = shap_tree(nodes, lambda nd: own.index(int(nd["feature"][1:])) if "threshold" in nd else MARGINAL)
        gl = {}
        for nd in nodes:
            if "threshold" in nd:
                col = X[rows, int(nd["feature"][1:])]
                gl[pos[nd["id"]]] = (col < nd["threshold"]) | (np.isnan(col) & nd["missing_left"])
        expect += brute_force(st, gl, len(rows), [0, 1, 2])[:, :3]
    np.testing.assert_allclose(c[rows, :3], expect, atol=1e-9)
    assert np.abs(c[:, 3]).max() > 0.05  # the partner's features carry signal (x1, x3 drive y)
