"""A vertical scorecard on rows with very few defaults: the WOE release rule (``min_bin_class`` goods and bads
per released bin) keeps every partner feature one bin, IV 0. That failed at the feature holder with "none of
its features reaches IV >= 0.02", naming no rule and no fix. The label holder now refuses first, once the IVs
are known to be 0, in one line naming the rule, its setting, the counts and what to change; partners learn only
that the labels do not suit the settings (the counts are the labels' own). Few bads alone are not refused: a
partner's missing bin can hold enough of them to be released on its own."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import fedrisk as fr
from fedrisk.errors import DataError
from fedrisk.estimators.engine import run_task
from tests.security.tamper import tampering


def _federation(bads: int, n: int = 400, missing_bads: int = 0) -> fr.Federation:
    """``missing_bads``: that many of the bads (and 60 goods) have no value in the partner's column ``c``."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(n, 4))
    y = np.zeros(n, dtype=int)
    y[np.argsort(-X[:, 0])[:bads]] = 1
    c = X[:, 2].copy()
    if missing_bads:
        c[np.r_[np.flatnonzero(y == 1)[:missing_bads], np.flatnonzero(y == 0)[:60]]] = np.nan
    lender = pd.DataFrame({"id": np.arange(n), "y": y, "a": X[:, 0], "b": X[:, 1]})
    payco = pd.DataFrame({"id": np.arange(n), "c": c, "d": X[:, 3]})
    return fr.Federation.vertical({"lender": lender, "payco": payco}, id="id", label="y", seed=7)


def test_too_few_bads_for_the_release_rule_is_one_line_naming_the_rule():
    fed = _federation(4)
    with tampering("", "", (), None) as state:
        with pytest.raises(DataError) as info:
            run_task(fed, "vertical.scorecard", {})
    msg = str(info.value)
    assert "\n" not in msg and "'lender'" in msg, msg
    # (in a notebook the job's settings read as the estimator's keywords)
    assert "bads" in msg and "the estimator's min_bin_class=5" in msg and "the estimator's iv_threshold=" in msg, msg
    assert "lower the estimator's min_bin_class= to" in msg and "at least 10 of each class" in msg, msg
    at_payco = [str(e) for n, e in state["errors"] if n == "payco"]
    assert at_payco and all("bads" not in m and "min_bin_class" not in m for m in at_payco), at_payco
    # the advice works: the release rule lowered as it says, the scorecard is fitted
    n_bads = int(msg.split(" bads")[0].rsplit(" ", 1)[1])
    run = run_task(_federation(4), "vertical.scorecard", {"min_bin_class": n_bads // 2})
    assert "scorecard-lender.json" in run.files


def test_an_iv_threshold_of_zero_keeps_one_bin_features_and_is_not_refused():
    run = run_task(_federation(4), "vertical.scorecard", {"iv_threshold": 0.0})
    assert "scorecard-payco.json" in run.files


def test_a_feature_holder_whose_every_iv_is_zero_names_the_release_rule():
    """Enough defaults for two bins in principle (10 = 2 x 5), but no split of the partner's noise columns
    passes the rule: its refusal says the IVs are 0 because of the rule, and which setting changes it."""
    with pytest.raises(DataError) as info:
        run_task(_federation(10), "vertical.scorecard", {})
    msg = str(info.value)
    assert "'payco'" in msg and "every IV is 0" in msg and "the estimator's min_bin_class=5" in msg and "\n" not in msg, msg


def test_vertical_woe_with_too_few_bads_warns_the_label_holder_naming_the_rule(caplog):
    """``vertical.woe`` only reports IVs, so it runs on; every partner IV is 0 and the label holder's log says
    why (its own log only: the counts are its labels')."""
    import logging

    with caplog.at_level(logging.WARNING):
        run = run_task(_federation(4), "vertical.woe", {})
    warned = [r for r in caplog.records if "task.min_bin_class = 5" in r.getMessage()]
    assert warned and all("lender" in r.name for r in warned), [(r.name, r.getMessage()) for r in caplog.records]
    assert "bads" in warned[0].getMessage() and "woe/payco.json" in run.files


def test_few_bads_in_a_partner_missing_bin_are_released_and_the_card_is_fitted(caplog):
    """8 bads (fewer than 2 x min_bin_class), 6 of them where the partner's column ``c`` is blank: the missing bin
    passes the rule on its own, so ``c`` gets an IV above 0 and the scorecard is fitted (not refused on the counts);
    ``vertical.woe`` on the same rows does not warn that every partner IV is 0."""
    import logging

    run = run_task(_federation(8, missing_bads=6), "vertical.scorecard", {})
    assert "scorecard-payco.json" in run.files
    with caplog.at_level(logging.WARNING):
        run = run_task(_federation(8, missing_bads=6), "vertical.woe", {})
    assert not [r for r in caplog.records if "task.min_bin_class" in r.getMessage()]
