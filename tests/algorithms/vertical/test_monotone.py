"""Monotone constraints (XGBoost semantics) in the shared tree code, SecureBoost and horizontal GBDT.

Scores must be monotone in a constrained feature (varied with the others fixed, over many rows),
the federated trainers must grow the pooled reference's constrained trees, unconstrained jobs must
not change, and the constrained reference must be as good as XGBoost's ``monotone_constraints``.
"""
from __future__ import annotations

import numpy as np
import pytest

from fedrisk.algorithms.horizontal.federated_bins import binner_from_cuts
from fedrisk.algorithms.horizontal.gbdt import GbdtParams, run_bank, run_coordinator
from fedrisk.algorithms.vertical.binning import QuantileBinner
from fedrisk.algorithms.vertical.secureboost import (
    SecureBoostFeatureHolder,
    SecureBoostLabelHolder,
    SecureBoostParams,
    score_feature_holder,
    score_label_holder,
)
from fedrisk.algorithms.vertical.tree import TreeParams, check_monotone, fit_reference, predict_reference
from fedrisk.errors import ConfigError, FedriskError
from fedrisk.finance.metrics import auc
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork


def make_data(n=2000, seed=0):
    """x0 has a non-monotone (sine) effect, x2 a decreasing one with noise; x4 has missing values."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    z = np.sin(2.5 * X[:, 0]) + 0.6 * X[:, 0] + X[:, 1] - 0.8 * X[:, 2] + 0.3 * np.cos(3 * X[:, 2]) + 0.5 * X[:, 3] - 0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    X[rng.random(n) < 0.1, 4] = np.nan
    return X, y


def violations(predict, X, f, grid):
    """Pairs (row, consecutive grid values of feature f) where the score moves against +1."""
    rows = X[:300].copy()
    scores = []
    for v in grid:
        rows[:, f] = v
        scores.append(predict(rows))
    return int((np.diff(np.array(scores), axis=0) < -1e-12).sum())


def test_reference_is_monotone_and_unconstrained_unchanged():
    X, y = make_data()
    binner = QuantileBinner(32).fit(X)
    B, nb, miss = binner.transform(X), binner.n_bins_, binner.missing_bins()
    tp = TreeParams(max_depth=4)
    base0, free = fit_reference(B, nb, y, 15, tp, missing=miss)
    base1, zero = fit_reference(B, nb, y, 15, tp, missing=miss, monotone=np.zeros(6, dtype=int))
    assert free == zero  # all-zero directions: the very same trees
    mono = np.array([1, 0, -1, 0, 0, 0])
    base, trees = fit_reference(B, nb, y, 15, tp, missing=miss, monotone=mono)

    def by_bins(f, sign):
        def predict(rows):
            return sign * predict_reference(base, trees, rows, miss)
        rows = B.copy()
        return violations(predict, rows, f, range(nb[f]))

    assert by_bins(0, 1) == 0 and by_bins(2, -1) == 0
    # the sine in x0 makes the free model non-monotone there: the test can fail
    free_viol = violations(lambda r: predict_reference(base0, free, r, miss), B.copy(), 0, range(nb[0]))
    assert free_viol > 0


def test_reference_close_to_xgboost_monotone_constraints():
    xgb = pytest.importorskip("xgboost")
    X, y = make_data(4000, seed=1)
    Xt, yt = make_data(4000, seed=2)
    X, Xt = X[:, :4], Xt[:, :4]
    binner = QuantileBinner(32).fit(X)
    tp = TreeParams(max_depth=3, learning_rate=0.3)
    mono = np.array([1, 1, -1, 0])
    base, trees = fit_reference(binner.transform(X), binner.n_bins_, y, 20, tp, missing=binner.missing_bins(),
                                monotone=mono)
    ours = predict_reference(base, trees, binner.transform(Xt), binner.missing_bins())
    ref = xgb.XGBClassifier(n_estimators=20, max_depth=3, learning_rate=0.3, max_bin=32, tree_method="hist",
                            n_jobs=1, monotone_constraints="(1,1,-1,0)").fit(X, y)
    theirs = ref.predict_proba(Xt)[:, 1]
    assert abs(auc(yt, ours) - auc(yt, theirs)) < 0.01, (auc(yt, ours), auc(yt, theirs))
    grid = np.linspace(-3, 3, 41)
    for f, sign in ((0, 1), (1, 1), (2, -1)):
        assert violations(lambda r: sign * predict_reference(base, trees, binner.transform(r), binner.missing_bins()),
                          Xt, f, grid) == 0
        assert violations(lambda r: sign * ref.predict_proba(r)[:, 1], Xt, f, grid) == 0


def test_check_monotone_one_line_errors():
    names = ["income", "utilisation"]
    assert check_monotone({"utilisation": 1, "income": -1}, names, "party 'a'").tolist() == [-1, 1]
    with pytest.raises(ConfigError, match="'incme'.*did you mean 'income'"):
        check_monotone({"incme": 1}, names, "party 'a'")
    with pytest.raises(ConfigError, match="use 1 .* -1"):
        check_monotone({"income": 2}, names, "party 'a'")
    with pytest.raises(ConfigError):
        check_monotone({"income": True}, names, "party 'a'")


# -- SecureBoost ---------------------------------------------------------------------------------
FAST = dict(key_bits=1024, max_bin=16, n_trees=5, max_depth=3)


def secureboost(parts, y, params, monotone, capture=False):
    names = [[f"p{i}_x{j}" for j in range(x.shape[1])] for i, x in enumerate(parts)]
    hosts = [f"h{i}" for i in range(1, len(parts))]

    def lh(ch):
        est = SecureBoostLabelHolder(params).fit(ch, hosts, parts[0], y, names[0], monotone=monotone[0])
        return est

    def host(i):
        def role(ch):
            return SecureBoostFeatureHolder(params).fit(ch, "lh", parts[i], names[i], monotone=monotone[i])
        return role

    net = InMemoryNetwork(["lh", *hosts], capture=capture)
    return run_roles({"lh": lh, **{h: host(i + 1) for i, h in enumerate(hosts)}}, network=net), net


def score(models, parts_X):
    hosts = [h for h in models if h != "lh"]

    def lh(ch):
        return score_label_holder(ch, models["lh"].model_, parts_X[0], hosts, tag="m")

    def host(i, h):
        return lambda ch: score_feature_holder(ch, models[h].model_, parts_X[i], "lh", tag="m")

    return run_roles({"lh": lh, **{h: host(i + 1, h) for i, h in enumerate(hosts)}})["lh"]


def test_secureboost_monotone_at_owner_equals_reference_and_scores_monotone():
    X, y = make_data(1500)
    parts = [X[:, [1, 3]], X[:, [0, 2, 4, 5]]]  # the constrained x0 and x2 live at the feature holder
    params = SecureBoostParams(**FAST)
    mono = [{"p0_x0": 1}, {"p1_x0": 1, "p1_x1": -1}]
    res, net = secureboost(parts, y, params, mono, capture=True)
    est = res["lh"]
    # the owner's directions travel as anonymous per-feature integers in sb.bins, nothing more
    bins_msgs = [e for e in net["lh"].captured if e.tag == "sb.bins"]
    assert len(bins_msgs) == 1 and list(bins_msgs[0].body["monotone"]) == [1, -1, 0, 0]
    assert "p1_x" not in repr([e.body for e in net["lh"].captured])
    # the pooled reference with the same directions grows the same model
    binned = [QuantileBinner(params.max_bin).fit(x) for x in parts]
    B = np.column_stack([b.transform(x) for b, x in zip(binned, parts)])
    nb = np.concatenate([b.n_bins_ for b in binned])
    miss = np.concatenate([b.missing_bins() for b in binned])
    base, trees = fit_reference(B, nb, y, params.n_trees, params.tree, precision=params.precision, missing=miss,
                                monotone=np.array([1, 0, 1, -1, 0, 0]))
    ref = predict_reference(base, trees, B, miss)
    assert np.max(np.abs(1 / (1 + np.exp(-est.train_margin_)) - ref)) < 1e-6
    # federated scoring: monotone in the feature holder's x0 (+1) and x2 (-1), and the LH's x1 (+1)
    grid = np.linspace(-2.5, 2.5, 11)
    rows = [parts[0][:200].copy(), parts[1][:200].copy()]
    for part, col, sign in ((1, 0, 1), (1, 1, -1), (0, 0, 1)):
        series = []
        for v in grid:
            r = [rows[0].copy(), rows[1].copy()]
            r[part][:, col] = v
            series.append(sign * score(res, r))
        assert (np.diff(np.array(series), axis=0) >= -1e-12).all(), (part, col)
    # and the constraint binds: without it the same data gives a non-monotone x0
    free, free_net = secureboost(parts, y, params, [None, None], capture=True)
    series = []
    for v in grid:
        r = [rows[0].copy(), rows[1].copy()]
        r[1][:, 0] = v
        series.append(score(free, r))
    assert (np.diff(np.array(series), axis=0) < -1e-12).any()
    # with no constraint nothing new is sent
    assert all("monotone" not in e.body for e in free_net["lh"].captured if e.tag == "sb.bins")


def test_secureboost_unknown_monotone_feature_is_one_line():
    X, y = make_data(300)
    with pytest.raises(FedriskError, match="not one of this party's features"):
        secureboost([X[:, :2], X[:, 2:]], y, SecureBoostParams(**FAST), [None, {"nope": 1}])


# -- horizontal GBDT -----------------------------------------------------------------------------
def federate(banks, params, monotone):
    net = InMemoryNetwork([*banks, "coordinator"], recv_timeout=60.0)
    names = [f"x{j}" for j in range(next(iter(banks.values()))[0].shape[1])]

    def bank(b):
        return lambda ch: run_bank(ch, "coordinator", banks[b][0], banks[b][1], names, params,
                                   n_banks=len(banks), monotone=monotone[b])

    roles = {b: bank(b) for b in banks}
    roles["coordinator"] = lambda ch: run_coordinator(ch, list(banks), params)
    return run_roles(roles, network=net)


def test_horizontal_gbdt_monotone_equals_reference_and_is_monotone():
    X, y = make_data(2400)
    banks = {"a": (X[:1000], y[:1000]), "b": (X[1000:1700], y[1000:1700]), "c": (X[1700:], y[1700:])}
    params = GbdtParams(n_trees=8, max_depth=3, max_bin=16)
    mono = {"x0": 1, "x2": -1}
    model = federate(banks, params, {b: mono for b in banks})["coordinator"]
    binner = binner_from_cuts(params.max_bin, [np.asarray(c) for c in model.cuts], np.asarray(model.has_missing))
    B = binner.transform(X)
    base, trees = fit_reference(B, binner.n_bins_, y, params.n_trees, params.tree, missing=binner.missing_bins(),
                                monotone=np.array([1, 0, -1, 0, 0, 0]))
    np.testing.assert_allclose(model.predict_proba(X), predict_reference(base, trees, B, binner.missing_bins()),
                               atol=1e-6)
    grid = np.linspace(-3, 3, 61)
    assert violations(model.predict_proba, X, 0, grid) == 0
    assert violations(lambda r: -model.predict_proba(r), X, 2, grid) == 0
    free = federate(banks, params, {b: None for b in banks})["coordinator"]
    assert violations(free.predict_proba, X, 0, grid) > 0


def test_horizontal_gbdt_banks_must_agree_on_monotone():
    X, y = make_data(600)
    banks = {"a": (X[:300], y[:300]), "b": (X[300:], y[300:])}
    with pytest.raises(FedriskError, match="different monotone constraints"):
        federate(banks, GbdtParams(n_trees=1, max_depth=1, max_bin=8), {"a": {"x0": 1}, "b": None})
