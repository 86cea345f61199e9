"""Tests for fedrisk.finance.scorecard on German credit and small cases."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from fedrisk.errors import ConfigError, DataError
from fedrisk.finance.metrics import auc
from fedrisk.finance.scorecard import Scorecard
from fedrisk.finance.woe import WoeEncoder, select_features


@pytest.fixture
def german_card(german):
    y = (german["creditability"] == "bad").astype(int).to_numpy()
    X = german.drop(columns="creditability")
    enc = WoeEncoder().fit(X, y)
    W = enc.transform(X)
    feats = select_features(enc.iv_, W)["selected"]
    lr = LogisticRegression(max_iter=1000).fit(W[feats], y)
    card = Scorecard.from_logistic(enc, lr, feats, base_score=600, base_odds=50, pdo=20)
    return X, y, W[feats], lr, card


def test_scorecard_matches_logistic_regression(german_card):
    X, y, W, lr, card = german_card
    s = card.score(X)
    assert s.dtype.kind == "f" and np.all(s == np.round(s))
    # higher score = safer: AUC of -score equals the model's AUC up to rounding of points
    assert auc(y, -s) == pytest.approx(auc(y, lr.predict_proba(W)[:, 1]), abs=0.01)
    # implied probability close to the model's (rounding each bin to a point costs little)
    assert np.max(np.abs(card.probability(s) - lr.predict_proba(W)[:, 1])) < 0.05


def test_unrounded_scaling_exact(german_card):
    X, y, W, lr, _ = german_card
    card = Scorecard(base_score=600, base_odds=50, pdo=20, round_points=False).fit(
        german_card[4].encoder_, lr.coef_.ravel(), lr.intercept_[0], list(W.columns))
    p = lr.predict_proba(W)[:, 1]
    expected = 600 + 20 / math.log(2) * (np.log((1 - p) / p) - math.log(50))
    assert card.score(X) == pytest.approx(expected, abs=1e-8)
    assert card.probability(card.score(X)) == pytest.approx(p, abs=1e-10)


def test_points_table_and_json(german_card):
    card = german_card[4]
    tbl = card.table_
    assert {"feature", "bin", "label", "woe", "coef", "points"} <= tbl[0].keys()
    assert all(float(r["points"]).is_integer() for r in tbl)
    d = json.loads(json.dumps(card.to_dict()))
    assert d["pdo"] == 20 and d["features"] == card.features_
    assert "base points" in card.summary()


def test_reason_codes(german_card):
    X, *_, card = german_card
    reasons = card.reason_codes(X.head(20), n=3)
    assert len(reasons) == 20
    for r, (_, row) in zip(reasons, X.head(20).iterrows()):
        assert len(r) <= 3
        lost = [x["points_lost"] for x in r]
        assert lost == sorted(lost, reverse=True) and all(v > 0 for v in lost)
    # a reason is the applicant's actual bin of that feature
    first = reasons[0][0]
    fb = card.encoder_.woe_[first["feature"]].bins
    assert fb.labels()[fb.assign(X.head(1)[first["feature"]])[0]] == first["label"]


@pytest.mark.parametrize("pdo", [0, -20])
def test_pdo_must_be_positive(german_card, pdo):
    with pytest.raises(ConfigError, match="pdo"):
        Scorecard(pdo=pdo).fit(german_card[4].encoder_, [0.5], -1.0, [german_card[4].features_[0]])


def test_bad_base_odds_and_coef_length(german_card):
    enc = german_card[4].encoder_
    with pytest.raises(ConfigError, match="base_odds"):
        Scorecard(base_odds=0).fit(enc, [1.0], 0.0, [enc.features_[0]])
    with pytest.raises(ConfigError, match="coefficients"):
        Scorecard().fit(enc, [1.0, 2.0], 0.0, [enc.features_[0]])


def test_scoring_data_with_a_different_schema(german_card):
    X, *_, card = german_card
    with pytest.raises(DataError, match="not in the data"):
        card.score(X.drop(columns=[card.features_[0]]))
    num = next(f for f in card.features_ if card.encoder_.woe_[f].bins.kind == "numeric")
    with pytest.raises(DataError, match="non-numeric"):
        card.score(X.assign(**{num: "abc"}))
    with pytest.raises(DataError, match="DataFrame"):
        card.score(X.to_numpy())


def test_unseen_category_and_missing_score_neutral(german_card):
    X, *_, card = german_card
    cat = next(f for f in card.features_ if card.encoder_.woe_[f].bins.kind == "categorical")
    pts = card.points(X.head(2).assign(**{cat: ["never seen", None]}))
    assert (pts[cat] == 0).all()  # missing/unseen bin had no rows: WOE 0, points 0


def test_small_synthetic_card():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=2000)})
    y = (rng.random(2000) < 1 / (1 + np.exp(-2 * X["x"]))).astype(int)
    enc = WoeEncoder(max_bins=4).fit(X, y)
    lr = LogisticRegression().fit(enc.transform(X), y)
    card = Scorecard.from_logistic(enc, lr)
    pts = card.points_["x"][:-1]
    assert all(a >= b for a, b in zip(pts, pts[1:]))  # riskier (higher x) bins score fewer points
