"""The vertical scorecard's split points table: the parties' parts are the centralised scorecard.

Centralised reference: :class:`fedrisk.finance.scorecard.Scorecard` fitted on the pooled data with
the same bins and coefficients. The federated bins and WOE come from the real vertical WOE
protocol (reveal="woe"), the scores from the real scoring/inference messages, all in-process.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from fedrisk.finance.binning import BinningConfig
from fedrisk.finance.scorecard import Scorecard
from fedrisk.algorithms.vertical.woe import ReleaseRule, vertical_woe_feature_holder, vertical_woe_label_holder
from fedrisk.finance.woe import WoeEncoder
from fedrisk.runtime.threads import run_roles
from fedrisk.algorithms.vertical.scorecard import PointsPart, combine_points, reason_codes
from fedrisk.tasks.vertical_scorecard import RawRows, infer
from fedrisk.transport.channel import InMemoryNetwork

LENDER = ["income", "grade"]
PAYCO = ["late_payments", "channel"]


def data(n: int = 1500, seed: int = 7) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    income = rng.lognormal(10, 0.5, n)
    grade = rng.choice(list("ABCD"), n, p=[0.3, 0.3, 0.25, 0.15])
    late = rng.poisson(1.2, n).astype(float)
    late[rng.random(n) < 0.05] = np.nan  # missing values get their own bin
    channel = rng.choice(["web", "branch", "broker"], n)
    z = -1.5 - 0.6 * (np.log(income) - 10) + (pd.Series(grade).map({"A": -0.8, "B": 0, "C": 0.5, "D": 1.0}).to_numpy()
                                             + 0.5 * np.nan_to_num(late, nan=2.0) + (channel == "broker") * 0.4)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    X = pd.DataFrame({"income": income, "grade": grade, "late_payments": late, "channel": channel})
    return X, y


def federated_bins(X: pd.DataFrame, y: np.ndarray, cfg: BinningConfig, release: ReleaseRule | None = None):
    """Lender bins locally; payco's bins and WOE through the encrypted-label protocol."""
    net = InMemoryNetwork(["lender", "payco"], job="vsc-test", capture=True)
    res = run_roles({
        "lender": lambda ch: vertical_woe_label_holder(ch, ["payco"], y, config=cfg, reveal="woe", key_bits=2048,
                                                       release=release),
        "payco": lambda ch: vertical_woe_feature_holder(ch, "lender", X[PAYCO], config=cfg, max_corr=None,
                                                        release=release),
    }, network=net)
    own = WoeEncoder(cfg.method, cfg.max_bins, cfg.n_prebins, cfg.min_bin_frac).fit(X[LENDER], y)
    return own, res["payco"], net


def scored_parts(n: int, seed: int):
    """Data and both parties' points (4 bins, fixed coefficients) for the scoring tests."""
    X, y = data(n, seed=seed)
    # the release rule off (1 row, no class minimum): the pooled reference below knows no such rule,
    # and at 600 rows the ~30 missing values would get the neutral WOE (tests/algorithms/vertical/test_woe_release.py)
    own, payco, _ = federated_bins(X, y, BinningConfig(max_bins=4), ReleaseRule(min_rows=1, min_share=0.0, min_class=0))
    card = Scorecard()
    lender = PointsPart.build("lender", LENDER, {f: own.woe_[f].bins for f in LENDER},
                              {f: own.woe_[f].woe for f in LENDER}, [0.9, 0.8], card, -1.2)
    host = PointsPart.build("payco", PAYCO, payco.bins, payco.woe, [1.0, 0.5], card)
    return X, y, lender, host


def test_party_points_sum_to_centralised_scorecard():
    X, y = data()
    cfg = BinningConfig(max_bins=5)
    own, payco, _ = federated_bins(X, y, cfg)
    assert set(payco.bins) == set(PAYCO) and set(payco.woe) == set(PAYCO)
    # the centralised encoder with the same bins: payco's revealed WOE is the pooled WOE
    bins = {**{f: own.woe_[f].bins for f in LENDER}, **payco.bins}
    pooled = WoeEncoder().fit_bins(X, y, bins)
    for f in PAYCO:
        np.testing.assert_allclose(payco.woe[f], pooled.woe_[f].woe, atol=1e-9)
    coef = {"income": 0.83, "grade": 0.71, "late_payments": 0.92, "channel": 0.4}
    intercept = -1.37
    feats = LENDER + PAYCO
    for params in ({}, {"base_score": 500, "base_odds": 20, "pdo": 40}, {"round_points": False}):
        central = Scorecard(**params).fit(pooled, [coef[f] for f in feats], intercept, feats)
        card = Scorecard(**params)
        lender = PointsPart.build("lender", LENDER, {f: own.woe_[f].bins for f in LENDER},
                                  {f: own.woe_[f].woe for f in LENDER}, [coef[f] for f in LENDER], card, intercept)
        host = PointsPart.build("payco", PAYCO, payco.bins, payco.woe, [coef[f] for f in PAYCO], card)
        assert lender.base_points == central.base_points_ and host.base_points is None
        for part in (lender, host):
            for f in part.features:
                np.testing.assert_allclose(part.points[f], central.points_[f], atol=1e-9)
        total = lender.base_points + lender.partial(X) + host.partial(X)
        np.testing.assert_allclose(total, central.score(X), atol=1e-9)
        np.testing.assert_allclose(lender.probability(total), central.probability(central.score(X)), atol=1e-12)
        # a part survives its JSON form (what scorecard-<party>.json holds)
        again = PointsPart.from_dict(host.to_dict())
        np.testing.assert_allclose(again.partial(X), host.partial(X))
        assert "base_points" not in host.to_dict() and {r["feature"] for r in host.table()} == set(PAYCO)


def test_scoring_messages_and_reason_codes():
    X, _, lender, host = scored_parts(900, seed=3)
    net = InMemoryNetwork(["lender", "payco"], job="vsc-score", capture=True)
    out = run_roles({"lender": lambda ch: combine_points(ch, "lender", ["payco"], lender, X[LENDER]),
                     "payco": lambda ch: combine_points(ch, "lender", ["payco"], host, X[PAYCO])},
                    network=net)
    res = out["lender"]
    assert out["payco"] is None
    np.testing.assert_allclose(res.total, lender.base_points + lender.partial(X) + host.partial(X))
    np.testing.assert_allclose(res.partials["payco"], host.partial(X))
    assert res.best["payco"] == host.best()
    # what payco sent: its partial points (plaintext by design) and one number, nothing per feature
    sent = [e for e in net["payco"].ledger.entries]
    assert sorted((e["tag"], e["kind"]) for e in sent) == [("vsc.score.best", "model"), ("vsc.score.partial", "plaintext-by-design")]
    reasons = reason_codes(lender, X[LENDER], res, n=3)
    for r, rs in enumerate(reasons):
        lost = [x["points_lost"] for x in rs]
        assert lost == sorted(lost, reverse=True) and all(v > 0 for v in lost)
        for x in rs:
            if x["feature"].startswith("partner features"):
                assert x["feature"] == "partner features (payco)" and x["label"] is None
                assert x["points_lost"] == pytest.approx(host.best() - host.partial(X.iloc[[r]])[0])
            else:
                assert x["feature"] in LENDER and x["label"] in lender.bins[x["feature"]].labels()
    assert any(x["feature"] == "partner features (payco)" for rs in reasons for x in rs)


def test_inference_hook_aligns_and_scores_raw_rows():
    """``infer`` via the inference runtime's PSI + scoring, text columns at the feature holder."""
    from fedrisk.runtime.inference import run_inference

    X, y, lender, host = scored_parts(600, seed=11)
    meta = {"format": "fedrisk.vertical.scorecard", "label_holder": "lender",
            "parties": {"lender": "scorecard-lender.json", "payco": "scorecard-payco.json"}}
    lh_model = {**meta, **lender.to_dict()}
    fh_model = {**meta, **host.to_dict(), "format": "fedrisk.vertical.scorecard.part"}
    ids = np.array([str(i) for i in range(len(X))], dtype=object)
    rows_fh = np.random.default_rng(0).permutation(len(X))[:500]  # payco knows 500 of them, in its own order
    lh_table = RawRows(ids, X[LENDER].to_numpy(dtype=object), LENDER)
    fh_table = RawRows(ids[rows_fh], X[PAYCO].iloc[rows_fh].to_numpy(dtype=object), PAYCO)
    net = InMemoryNetwork(["lender", "payco"], job="vsc-predict")
    log = logging.getLogger("test")
    out = run_roles({
        "lender": lambda ch: run_inference(ch, "lender", lh_model, lh_table, "lender", ["payco"], "vsc-predict", log),
        "payco": lambda ch: run_inference(ch, "payco", fh_model, fh_table, "lender", ["payco"], "vsc-predict", log),
    }, network=net)
    idx, p = out["lender"]
    assert out["payco"][1] is None and sorted(idx) == sorted(rows_fh)
    central = Scorecard().fit(WoeEncoder().fit_bins(X, y, {**lender.bins, **host.bins}),
                              [0.9, 0.8, 1.0, 0.5], -1.2, LENDER + PAYCO)
    expect = central.probability(central.score(X.iloc[idx].reset_index(drop=True)))
    np.testing.assert_allclose(p, expect, rtol=1e-9)
    assert infer.__module__ == "fedrisk.tasks.vertical_scorecard"
