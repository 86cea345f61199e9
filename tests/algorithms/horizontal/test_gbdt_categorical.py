"""horizontal.gbdt with categorical columns: partition splits with XGBoost's ``enable_categorical`` semantics.

* a stump on a column whose risky levels are not adjacent in code order isolates exactly that set
  in one split, as XGBoost's pooled stump does; a threshold split on codes could not;
* with categorical columns only (so both sides bin identically: one bin per level) the federated
  model's margins equal pooled XGBoost ``enable_categorical`` margins (one-hot style splits for
  few levels, sorted-partition splits for many);
* TreeSHAP reasons of such a model add up to its margin.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedrisk.algorithms.horizontal.aggregation import PlainAggregation
from fedrisk.algorithms.horizontal.gbdt import GbdtParams, predict_margin, run_bank, run_coordinator
from fedrisk.finance.tree_reasons import gbdt_contributions
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork

xgb = pytest.importorskip("xgboost")
COORD = "coordinator"
RISKY = {1, 4, 7, 8}


def make_banks(seed: int = 0, n: int = 700):
    rng = np.random.default_rng(seed)
    banks = {}
    for i, b in enumerate(["b1", "b2", "b3"]):
        m = n + 150 * i
        c10 = rng.integers(0, 10, m)           # 10 levels: partition splits
        c3 = rng.integers(0, 3, m)             # 3 levels: one-hot style splits
        z = -1.2 + 1.6 * np.isin(c10, list(RISKY)) + 0.8 * (c3 == 2) + 0.3 * (c10 == 5) * (c3 == 0)
        y = (rng.random(m) < 1 / (1 + np.exp(-z))).astype(float)
        banks[b] = (np.column_stack([c10, c3]).astype(np.float64), y)
    return banks


def federate(banks, params):
    net = InMemoryNetwork([*banks, COORD], recv_timeout=60.0)
    names = ["c10", "c3"]
    cats = {"c10": 10, "c3": 3}
    roles = {b: (lambda b: lambda ch: run_bank(ch, COORD, banks[b][0], banks[b][1], names, params, PlainAggregation(),
                                               n_banks=len(banks), categorical=cats))(b) for b in banks}
    roles[COORD] = lambda ch: run_coordinator(ch, list(banks), params, PlainAggregation())
    return run_roles(roles, network=net)


def pooled_xgb(banks, params: GbdtParams):
    X = np.vstack([X for X, _ in banks.values()])
    y = np.concatenate([y for _, y in banks.values()])
    df = pd.DataFrame({"c10": pd.Categorical(X[:, 0].astype(int), categories=range(10)),
                       "c3": pd.Categorical(X[:, 1].astype(int), categories=range(3))})
    rate = y.mean()
    dm = xgb.DMatrix(df, label=y, enable_categorical=True)
    bst = xgb.train({"objective": "binary:logistic", "tree_method": "hist", "max_depth": params.max_depth,
                     "eta": params.learning_rate, "lambda": params.reg_lambda, "min_child_weight": params.min_child_weight,
                     "max_cat_to_onehot": 4, "base_score": rate, "max_bin": 32}, dm, params.n_trees)
    return X, y, bst, dm


def test_stump_isolates_non_adjacent_levels_like_xgboost():
    banks = make_banks()
    params = GbdtParams(n_trees=1, max_depth=1, learning_rate=0.3)
    model = federate(banks, params)[COORD]
    root = model.trees[0]["nodes"][0]
    assert root["feature"] == "c10" and "categories_left" in root
    left = set(root["categories_left"])
    assert left in (RISKY, set(range(10)) - RISKY)  # one split, a non-contiguous set of codes
    X, y, bst, dm = pooled_xgb(banks, params)
    js = bst.get_dump(dump_format="json")[0]
    import json

    xroot = json.loads(js)
    assert xroot["split"] == "c10" and set(xroot["split_condition"]) in (RISKY, set(range(10)) - RISKY)


def test_margins_equal_pooled_xgboost_enable_categorical():
    banks = make_banks(seed=1)
    params = GbdtParams(n_trees=8, max_depth=3, learning_rate=0.3, min_child_weight=1.0)
    res = federate(banks, params)
    model = res[COORD]
    X, y, bst, dm = pooled_xgb(banks, params)
    fed = predict_margin(model.base_score, model.trees, X)
    ref = bst.predict(dm, output_margin=True)
    assert np.max(np.abs(fed - ref)) < 1e-4, np.max(np.abs(fed - ref))
    # every bank holds the same model, and its reasons add up to the margin
    assert all(res[b].trees == model.trees for b in banks)
    names, bias, contrib = gbdt_contributions({"features": model.features, "base_score": model.base_score,
                                               "trees": model.trees}, X)
    np.testing.assert_allclose(bias + contrib.sum(axis=1), fed, atol=1e-9)
    xc = bst.predict(dm, pred_contribs=True)
    assert np.max(np.abs(contrib - xc[:, :-1])) < 1e-4  # and they are XGBoost's TreeSHAP values


def _banks_of_levels(seed: int, levels: tuple[int, ...], n: int = 260):
    """Small banks with skewed level frequencies: deep nodes hold levels with a few rows (hessian < 1)."""
    rng = np.random.default_rng(seed)
    banks = {}
    for i, b in enumerate(["b1", "b2", "b3"]):
        m = n + 40 * i
        cols = [rng.choice(k, m, p=np.arange(k, 0, -1) / (k * (k + 1) / 2)) for k in levels]
        z = -0.8 + sum(0.6 * ((c % 3) == j) for j, c in enumerate(cols)) + 0.9 * (cols[0] == levels[0] - 1)
        y = (rng.random(m) < 1 / (1 + np.exp(-z))).astype(float)
        banks[b] = (np.column_stack(cols).astype(np.float64), y)
    return banks


@pytest.mark.parametrize("levels", [(4, 5), (4, 6, 9)])
def test_four_levels_and_thin_nodes_match_pooled_xgboost(levels):
    """XGBoost splits a column one-hot style only with FEWER than ``max_cat_to_onehot`` (4) levels, so
    4 levels take partition splits; it sorts levels by the leaf weight it would give them, which is 0 for
    a level whose hessian at the node is below ``min_child_weight`` (and for levels absent there)."""
    banks = _banks_of_levels(3, levels)
    names = [f"c{k}" for k in levels]
    cats = dict(zip(names, levels))
    params = GbdtParams(n_trees=10, max_depth=4, learning_rate=0.3, min_child_weight=1.0)
    net = InMemoryNetwork([*banks, COORD], recv_timeout=60.0)
    roles = {b: (lambda b: lambda ch: run_bank(ch, COORD, banks[b][0], banks[b][1], names, params, PlainAggregation(),
                                               n_banks=len(banks), categorical=cats))(b) for b in banks}
    roles[COORD] = lambda ch: run_coordinator(ch, list(banks), params, PlainAggregation())
    model = run_roles(roles, network=net)[COORD]
    X = np.vstack([X for X, _ in banks.values()])
    y = np.concatenate([y for _, y in banks.values()])
    df = pd.DataFrame({n: pd.Categorical(X[:, j].astype(int), categories=range(k)) for j, (n, k) in enumerate(cats.items())})
    dm = xgb.DMatrix(df, label=y, enable_categorical=True)
    bst = xgb.train({"objective": "binary:logistic", "tree_method": "hist", "max_depth": params.max_depth,
                     "eta": params.learning_rate, "lambda": params.reg_lambda, "min_child_weight": params.min_child_weight,
                     "max_cat_to_onehot": 4, "base_score": y.mean(), "max_bin": 32}, dm, params.n_trees)
    fed = predict_margin(model.base_score, model.trees, X)
    ref = bst.predict(dm, output_margin=True)
    assert np.max(np.abs(fed - ref)) < 1e-4, np.max(np.abs(fed - ref))


def test_a_column_of_100_levels_gets_xgboosts_best_partition():
    """XGBoost scans the sorted levels from both ends (each at most max_cat_threshold = 64 levels), so with
    100 levels a left set of 90 is a candidate; a scan from one end only stopped at 63 (gain 292 vs 772)."""
    import xgboost as xgb

    from fedrisk.algorithms.vertical.tree import TreeParams, best_categorical_split

    rng = np.random.default_rng(0)
    lev = np.repeat(np.arange(100), 40)
    y = (rng.random(len(lev)) < np.where(lev < 90, 0.2, 0.9)).astype(float)
    g, h = 0.5 - y, np.full(len(y), 0.25)
    hist = np.zeros((100, 2))
    np.add.at(hist[:, 0], lev, g)
    np.add.at(hist[:, 1], lev, h)
    gain, left, _, _ = best_categorical_split(hist, 100, g.sum(), h.sum(),
                                              TreeParams(max_depth=1, min_child_weight=1.0, reg_lambda=1.0))
    X = pd.DataFrame({"c": pd.Categorical(lev, categories=range(100))})
    booster = xgb.train({"objective": "binary:logistic", "base_score": 0.5, "max_depth": 1, "eta": 1, "lambda": 1,
                         "min_child_weight": 1, "tree_method": "hist", "max_bin": 256},
                        xgb.DMatrix(X, y, enable_categorical=True), 1)
    root = booster.trees_to_dataframe().iloc[0]
    assert gain == pytest.approx(float(root.Gain), rel=1e-5)
    assert sorted(left) == sorted(int(c) for c in root.Category)
