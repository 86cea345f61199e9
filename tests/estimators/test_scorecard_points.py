"""A notebook's scorecard gives points and reason codes, horizontal and vertical alike.

A credit-risk modeller scores applicants in points. ``Scorecard.points`` refused a vertical scorecard
("use predict_proba(federation)"), which gives probabilities only, so a notebook could not show the
points or the reason codes the label holder receives (``fedrisk predict`` writes them). ``points`` now
scores a vertical Federation too, and ``explain`` returns the ``fedrisk predict`` columns (points,
probability, reason_1..k, points_lost_1..k) for either kind.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import fedrisk as fr
from fedrisk.finance.binning import FeatureBins
from fedrisk.runtime.predict import scorecard_predictions
from tests.estimators.levels import declared_levels
from tests.tasks.test_woe_tasks import german_frame


@pytest.fixture(scope="module")
def vertical_card():
    df = german_frame()
    lender = df[["id", "y", "duration_in_month", "purpose", "housing"]]
    bureau = df[["id", "age_in_years", "credit_history", "savings_account_and_bonds"]]
    train, test = fr.Federation.vertical({"lender": lender, "bureau": bureau}, id="id", label="y").split()
    return fr.Scorecard(max_iter=30, n_reasons=2, pdo=40, base_score=500, base_odds=20).fit(train), test


def test_vertical_points_add_up_every_partys_bins_and_match_predict_proba(vertical_card):
    card, test = vertical_card
    # one applicant the bureau does not know: kept, without points
    lender = pd.concat([test.parties["lender"], test.parties["lender"].head(1).assign(id=10**7)], ignore_index=True)
    rows = test._with({"lender": lender, "bureau": test.parties["bureau"]})
    points, p = card.points(rows)
    assert points.shape == (len(lender),) and np.isnan(points[-1]) and np.isnan(p[-1])
    np.testing.assert_allclose(p, card.predict_proba(rows)[:, 1])
    # the totals: base points + each party's points of the applicant's bin, from the parts' files
    full = german_frame().set_index("id")
    ids = lender["id"].to_numpy()[:-1]
    total = np.full(len(ids), card.base_points_)
    for part in card.files_.values():
        for f in part["features"]:
            total += np.asarray(part["points"][f])[FeatureBins.from_dict(part["bins"][f]).assign(full.loc[ids, f])]
    np.testing.assert_allclose(points[:-1], total)
    # the odds the points stand for (pdo 40 points double the good:bad odds of 20 at 500 points)
    odds = (1 - p[:-1]) / p[:-1]
    np.testing.assert_allclose(points[:-1], 500 + 40 / math.log(2) * np.log(odds / 20), atol=1e-6)


def test_vertical_explain_has_the_predict_columns(vertical_card):
    card, test = vertical_card
    table = card.explain(test)
    assert list(table.columns) == ["points", "probability", "reason_1", "reason_2", "points_lost_1", "points_lost_2"]
    assert len(table) == len(test.parties["lender"]) and table["points"].notna().all()
    reasons = pd.concat([table.reason_1, table.reason_2]).dropna()
    assert reasons.str.startswith("partner features (bureau)").any()  # the bureau did not opt in to name its own
    assert not reasons.str.contains("credit_history|savings_account").any()


def test_horizontal_explain_equals_fedrisk_predict():
    df = german_frame()
    banks = {"bank1": df[df.id % 2 == 0].drop(columns="telephone"), "bank2": df[df.id % 2 == 1].drop(columns="telephone")}
    card = fr.Scorecard(categories=declared_levels(banks["bank1"])).fit(
        fr.Federation.horizontal(banks, id="id", label="y"))  # (horizontal banks declare their text columns' levels)
    rows = df.head(30).set_index("id")
    table = card.explain(rows)
    assert table.index.equals(rows.index)
    expect = scorecard_predictions(card.files_["scorecard.json"], rows)
    pd.testing.assert_frame_equal(table.reset_index(drop=True), expect)
    np.testing.assert_allclose(card.points(rows)[0], table["points"])


def test_a_batch_whose_rows_moved_between_bins_names_those_features_at_each_party(vertical_card, caplog):
    """Monitoring feature by feature: scoring a batch whose ``duration_in_month`` (lender) and ``age_in_years``
    (bureau) moved logs each one's CSI at its own party only; an unchanged batch logs nothing."""
    import logging

    card, test = vertical_card
    with caplog.at_level(logging.WARNING):
        card.explain(test)
    assert "characteristic stability" not in caplog.text
    caplog.clear()
    moved = test._with({"lender": test.parties["lender"].assign(duration_in_month=72),
                        "bureau": test.parties["bureau"].assign(age_in_years=19)})
    with caplog.at_level(logging.WARNING):
        card.explain(moved)
    lines = [r.getMessage() for r in caplog.records if "characteristic stability" in r.getMessage()]
    assert any(l.startswith("lender:") and "'duration_in_month' CSI" in l and "(shift)" in l for l in lines), lines
    assert any(l.startswith("bureau:") and "'age_in_years' CSI" in l for l in lines), lines
    assert not any(l.startswith("lender:") and "age_in_years" in l for l in lines)  # the bureau's names stay with it


def test_a_horizontal_batch_that_moved_is_named_in_fedrisk_predicts_warnings():
    from fedrisk.runtime.predict import batch_warnings

    df = german_frame()[["id", "y", "duration_in_month", "age_in_years", "credit_amount"]]
    card = fr.Scorecard().fit(fr.Federation.horizontal({"bank1": df[df.id % 2 == 0], "bank2": df[df.id % 2 == 1]},
                                                       id="id", label="y"))
    rows = df.drop(columns="y").head(300)
    with batch_warnings() as same:
        scorecard_predictions(card.files_["scorecard.json"], rows)
    with batch_warnings() as moved:
        scorecard_predictions(card.files_["scorecard.json"], rows.assign(credit_amount=rows["credit_amount"] * 10))
    assert not any("characteristic stability" in n for n in same), same
    assert any(n.startswith("predict: characteristic stability of this batch (300 rows)") and "'credit_amount' CSI" in n
               and "duration_in_month" not in n for n in moved), moved
