"""Tests for fedrisk.finance.woe: WOE/IV formulas, smoothing, encoder, selection."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedrisk.errors import ConfigError, DataError
from fedrisk.finance.woe import WoeEncoder, iv_strength, select_by_correlation, select_features, woe_iv


def test_woe_iv_hand_computed():
    goods, bads = np.array([60, 40, 0]), np.array([10, 30, 0])  # empty missing bin
    woe, ivb, iv = woe_iv(goods, bads)
    dg, db = np.array([0.6, 0.4]), np.array([0.25, 0.75])
    assert woe[:2] == pytest.approx(np.log(dg / db))
    assert woe[2] == 0.0 and ivb[2] == 0.0
    assert iv == pytest.approx(np.sum((dg - db) * np.log(dg / db)))


def test_zero_goods_or_bads_smoothed():
    woe, _, iv = woe_iv([10, 0, 5], [0, 10, 5])
    assert np.isfinite(woe).all() and np.isfinite(iv)
    # stated rule: +0.5 to both counts of a bin lacking a class, totals from smoothed counts
    g, b = np.array([10.5, 0.5, 5]), np.array([0.5, 10.5, 5])
    assert woe == pytest.approx(np.log((g / g.sum()) / (b / b.sum())))
    with pytest.raises(ConfigError):
        woe_iv([1], [1], smoothing=-1)


def test_one_class_gives_zero_iv():
    assert woe_iv([10, 20], [0, 0])[2] == 0.0


def test_iv_strength_bands():
    assert [iv_strength(v) for v in (0.01, 0.05, 0.2, 0.4, 0.6)] == [
        "not predictive", "weak", "medium", "strong", "suspicious (check for leakage)"]


def test_encoder_transform_and_schema_errors():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"num": rng.normal(size=500), "cat": rng.choice(list("abc"), 500)})
    y = (rng.random(500) < 1 / (1 + np.exp(-X["num"]))).astype(int)
    enc = WoeEncoder().fit(X, y)
    W = enc.transform(X)
    assert list(W.columns) == ["num", "cat"] and np.isfinite(W.to_numpy()).all()
    assert enc.iv_table()[0]["feature"] == "num"
    with pytest.raises(DataError, match="not in the data"):
        enc.transform(X[["num"]])
    with pytest.raises(DataError, match="non-numeric"):
        enc.transform(X.assign(num=["x"] * 500))
    with pytest.raises(DataError, match="rows"):
        WoeEncoder().fit(X, y[:10])
    with pytest.raises(ConfigError, match="not fitted"):
        WoeEncoder().transform(X)


def test_selection_iv_and_correlation():
    rng = np.random.default_rng(1)
    a = rng.normal(size=1000)
    W = pd.DataFrame({"a": a, "a2": a + 0.01 * rng.normal(size=1000), "b": rng.normal(size=1000), "c": rng.normal(size=1000)})
    iv = {"a": 0.3, "a2": 0.25, "b": 0.1, "c": 0.001}
    kept, dropped = select_by_correlation(W, {k: iv[k] for k in ("a", "a2", "b")}, 0.7)
    assert kept == ["a", "b"] and "a2" in dropped and "with a" in dropped["a2"]
    rep = select_features(iv, W, iv_threshold=0.02, max_corr=0.7, party="bank_a")
    assert rep["selected"] == ["a", "b"] and set(rep["dropped"]) == {"a2", "c"} and rep["party"] == "bank_a"


def test_german_iv_table(german):
    y = (german["creditability"] == "bad").astype(int)
    enc = WoeEncoder().fit(german.drop(columns="creditability"), y)
    top = enc.iv_table()[0]
    assert top["feature"] == "status_of_existing_checking_account" and top["iv"] > 0.5
    assert enc.iv_["duration_in_month"] > 0.2
