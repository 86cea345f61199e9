"""SecureBoost partition splits on categorical level codes (XGBoost ``enable_categorical`` semantics).

The label holder finds the split on its decrypted per-bin sums, for its own and a partner's
categorical features alike, and tells the owner which of *its* bins go left.

* a stump isolates a non-adjacent set of a partner's levels in one split, as pooled XGBoost does;
* with categorical columns only, margins match pooled XGBoost ``enable_categorical`` (up to the
  fixed-point encoding of the gradients) and scoring through the path protocol reproduces them;
* the partner received a set of its own bins, never a level name.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fedrisk.algorithms.vertical.secureboost import (SecureBoostFeatureHolder, SecureBoostLabelHolder,
                                                     SecureBoostParams, score_feature_holder, score_label_holder)
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork

xgb = pytest.importorskip("xgboost")
RISKY = {1, 4, 7, 8}


def data(n=1500, seed=0):
    rng = np.random.default_rng(seed)
    c10 = rng.integers(0, 10, n)
    c3 = rng.integers(0, 3, n)
    z = -1.2 + 1.6 * np.isin(c10, list(RISKY)) + 0.8 * (c3 == 2)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    return c3.astype(float)[:, None], c10.astype(float)[:, None], y


def train(Xl, Xh, y, params):
    net = InMemoryNetwork(["lh", "payco"], capture=True)

    def lh(ch):
        est = SecureBoostLabelHolder(params).fit(ch, ["payco"], Xl, y, ["c3"], categorical=["c3"])
        return est.model_, score_label_holder(ch, est.model_, Xl, ["payco"], tag="t")

    def fh(ch):
        est = SecureBoostFeatureHolder(params).fit(ch, "lh", Xh, ["c10"], categorical=["c10"])
        score_feature_holder(ch, est.model_, Xh, "lh", tag="t")
        return est.model_

    out = run_roles({"lh": lh, "payco": fh}, network=net)
    return out["lh"], out["payco"], net


def pooled(Xl, Xh, y, n_trees, depth):
    df = pd.DataFrame({"c3": pd.Categorical(Xl[:, 0].astype(int), categories=range(3)),
                       "c10": pd.Categorical(Xh[:, 0].astype(int), categories=range(10))})
    dm = xgb.DMatrix(df, label=y, enable_categorical=True)
    bst = xgb.train({"objective": "binary:logistic", "tree_method": "hist", "max_depth": depth, "eta": 0.3,
                     "lambda": 1.0, "min_child_weight": 1.0, "max_cat_to_onehot": 4, "base_score": y.mean()},
                    dm, n_trees)
    return bst, dm


def test_partner_stump_isolates_non_adjacent_levels():
    Xl, Xh, y = data()
    params = SecureBoostParams(key_bits=1024, max_bin=16, n_trees=1, max_depth=1)
    (lm, p), hm, net = train(Xl, Xh, y, params)
    root = lm.trees[0]["nodes"][0]
    assert root["owner"] == "payco" and "threshold" not in root
    node = hm.trees[0]["nodes"][0]
    assert set(node["categories_left"]) in (RISKY, set(range(10)) - RISKY)
    bst, dm = pooled(Xl, Xh, y, 1, 1)
    xroot = json.loads(bst.get_dump(dump_format="json")[0])
    assert xroot["split"] == "c10" and set(xroot["split_condition"]) in (RISKY, set(range(10)) - RISKY)
    # what payco was told: its anonymous feature and a set of its own bins (integers), nothing else
    wins = [e.body for e in net["payco"].captured if e.tag.endswith(".win") and len(e.body["nodes"])]
    assert wins and all(set(w) == {"nodes", "features", "bins", "missing_left", "categories"} for w in wins)


def test_margins_match_pooled_xgboost_enable_categorical():
    Xl, Xh, y = data(seed=1)
    params = SecureBoostParams(key_bits=1024, max_bin=16, n_trees=5, max_depth=3)
    (lm, p), hm, _ = train(Xl, Xh, y, params)
    bst, dm = pooled(Xl, Xh, y, 5, 3)
    ref = bst.predict(dm)
    assert np.max(np.abs(p - ref)) < 1e-3, np.max(np.abs(p - ref))
    assert any("categories_left" in nd for t in lm.trees for nd in t["nodes"])  # the label holder's own c3 too
