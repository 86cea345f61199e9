"""Reference comparisons on German credit against optbinning, an independent implementation.

* WOE/IV: fedrisk's bins handed to optbinning as fixed user splits (numeric) or user groups
  (categorical); per-bin counts, WOE and each feature's IV must agree to 1e-9.
* Scorecard: fedrisk's :class:`Scorecard` from a scikit-learn logistic regression on its WOE
  against optbinning's ``Scorecard`` (its own binning process with the same bins, its own WOE
  transform, its own scikit-learn fit, ``pdo_odds`` scaling): the same total score per applicant
  to 1e-9, and the same points between any two bins of a feature (optbinning spreads the
  intercept evenly over the features, so its points per feature differ from ours by a constant).

fedrisk's numeric bins are right-closed, ``(e_{i-1}, e_i]``; optbinning's are ``[s_{i-1}, s_i)``,
so its splits are the next float above each of our edges.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from fedrisk.finance.scorecard import Scorecard
from fedrisk.finance.woe import WoeEncoder, select_features

optbinning = pytest.importorskip("optbinning")


def _split_params(fb) -> dict:
    if fb.kind == "numeric":
        splits = np.nextafter(fb.edges, np.inf)
        return {"user_splits": splits, "user_splits_fixed": [True] * len(splits),
                "min_prebin_size": 1e-6, "min_bin_size": 1e-6, "monotonic_trend": None}
    groups = [np.array(g, dtype=object) for g in fb.groups]
    return {"user_splits": groups, "user_splits_fixed": [True] * len(groups), "cat_cutoff": None,
            "min_prebin_size": 1e-6, "min_bin_size": 1e-6, "monotonic_trend": None}


def _as_objects(col: pd.Series, kind: str):
    return col.astype(object) if kind == "categorical" else col.to_numpy(dtype=float)


@pytest.fixture
def german_xy(german):
    y = (german["creditability"] == "bad").astype(int).to_numpy()
    return german.drop(columns="creditability"), y


@pytest.mark.parametrize("method, max_bins", [("monotonic", 6), ("quantile", 8)])
def test_woe_iv_equal_optbinning_with_the_same_bins(german_xy, method, max_bins):
    X, y = german_xy
    enc = WoeEncoder(method=method, max_bins=max_bins).fit(X, y)
    assert len(enc.woe_) == 20
    kinds = {w.bins.kind for w in enc.woe_.values()}
    assert kinds == {"numeric", "categorical"}  # both kinds are compared
    for f, w in enc.woe_.items():
        fb = w.bins
        if fb.n_bins == 1:  # one bin (foreign_worker): optbinning refuses it; its WOE and IV are 0 by definition
            assert w.iv == 0 and w.woe[0] == 0, f
            continue
        ob = optbinning.OptimalBinning(name=f, dtype="numerical" if fb.kind == "numeric" else "categorical",
                                       **_split_params(fb))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ob.fit(_as_objects(X[f], fb.kind), y)
        table = ob.binning_table.build()
        k = fb.n_bins
        # optbinning's first k rows are our bins (then Special and Missing, both empty): numeric
        # bins in our order; categorical groups in its own order (by event rate), matched by content
        if fb.kind == "numeric":
            order = np.arange(k)
        else:
            ours = [frozenset(g) for g in fb.groups]
            order = np.array([ours.index(frozenset(str(c) for c in b)) for b in table["Bin"].iloc[:k]])
        np.testing.assert_array_equal(table["Count"].iloc[:k].to_numpy(dtype=float), (w.goods + w.bads)[order], err_msg=f)
        np.testing.assert_array_equal(table["Event"].iloc[:k].to_numpy(dtype=float), w.bads[order], err_msg=f)
        np.testing.assert_allclose(table["WoE"].iloc[:k].to_numpy(dtype=float), w.woe[order], atol=1e-9, err_msg=f)
        assert w.goods[k] + w.bads[k] == 0  # German credit has no missing values
        assert abs(ob.binning_table.iv - w.iv) <= 1e-9, (f, ob.binning_table.iv, w.iv)


def test_scorecard_points_equal_optbinning_scorecard_on_the_same_bins(german_xy):
    X, y = german_xy
    enc = WoeEncoder().fit(X, y)
    W = enc.transform(X)
    feats = select_features(enc.iv_, W)["selected"]
    assert len(feats) >= 5
    # an (effectively) unpenalised fit: both sides then solve the same problem to solver precision
    def lr():
        return LogisticRegression(C=1e6, tol=1e-10, max_iter=5000)

    model = lr().fit(W[feats], y)
    card = Scorecard(base_score=600, base_odds=50, pdo=20, round_points=False).fit(
        enc, model.coef_.ravel(), model.intercept_[0], feats)
    cats = [f for f in feats if enc.woe_[f].bins.kind == "categorical"]
    assert cats
    bp = optbinning.BinningProcess(feats, categorical_variables=cats, min_prebin_size=1e-6,
                                   binning_fit_params={f: _split_params(enc.woe_[f].bins) for f in feats})
    ref = optbinning.Scorecard(binning_process=bp, estimator=lr(), scaling_method="pdo_odds",
                               scaling_method_params={"pdo": 20, "odds": 50, "scorecard_points": 600})
    Xo = X[feats].copy()
    for c in cats:
        Xo[c] = Xo[c].astype(object)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref.fit(Xo, y)
        theirs = ref.score(Xo)
        table = ref.table(style="summary")
    np.testing.assert_allclose(card.score(X), theirs, atol=1e-9)
    for f in feats:
        fb = enc.woe_[f].bins
        k = fb.n_bins
        rows = table.loc[table["Variable"] == f]
        pts = rows["Points"].to_numpy(dtype=float)[:k]
        if fb.kind == "numeric":
            order = np.arange(k)
        else:
            groups = [frozenset(g) for g in fb.groups]
            order = np.array([groups.index(frozenset(str(c) for c in b)) for b in rows["Bin"].iloc[:k]])
        ours = np.asarray(card.points_[f], dtype=float)[order]
        np.testing.assert_allclose(pts - pts[0], ours - ours[0], atol=1e-9, err_msg=f)
