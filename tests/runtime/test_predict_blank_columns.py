"""Scoring a batch in which a scorecard feature is blank in every row: one applicant with one blank field.

A scorecard has a missing bin for every feature, so a blank cell scores as that bin (the training
convention). But a batch whose column had no value at all -- typically a single applicant
(a scoring request of one row), or a day's file from a channel that does not collect the field --
was refused ("feature columns 'housing' have no values at all; drop them (exclude)"), by
``fedrisk predict`` on a horizontal scorecard and by the label holder of a vertical one (the CLI
and the notebook's ``predict_proba``), advice a scorer cannot follow: the model needs the column.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import fedrisk as fr
from fedrisk.finance.scorecard import Scorecard
from fedrisk.finance.woe import WoeEncoder
from fedrisk.runtime.predict import predict_file
from tests.tasks.test_woe_tasks import german_frame

FEATURES = ["duration_in_month", "age_in_years", "housing", "purpose"]


def test_one_applicant_with_a_blank_field_is_scored_in_the_missing_bin(tmp_path):
    german = german_frame()
    X = german[FEATURES]
    enc = WoeEncoder().fit(X, german["y"])
    lr = LogisticRegression(max_iter=1000).fit(enc.transform(X), german["y"])
    card = Scorecard.from_logistic(enc, lr, FEATURES)
    (tmp_path / "scorecard.json").write_text(json.dumps({"format": "fedrisk.scorecard", "version": 1, **card.to_dict()}))
    one = german[["id", *FEATURES]].iloc[[7]].assign(housing=np.nan)  # one request, housing not given
    one.to_csv(tmp_path / "one.csv", index=False)
    assert predict_file(tmp_path / "scorecard.json", tmp_path / "one.csv", tmp_path / "s.csv") == 1
    out = pd.read_csv(tmp_path / "s.csv")
    assert out["status"].tolist() == ["scored"]
    assert out["points"].iloc[0] == pytest.approx(card.score(one[FEATURES].reset_index(drop=True))[0])
    # the same row scored inside a batch (where housing has values elsewhere) gets the same points
    batch = german[["id", *FEATURES]].head(20).copy()
    batch.loc[7, "housing"] = np.nan
    batch.to_csv(tmp_path / "batch.csv", index=False)
    predict_file(tmp_path / "scorecard.json", tmp_path / "batch.csv", tmp_path / "b.csv")
    assert pd.read_csv(tmp_path / "b.csv")["points"].iloc[7] == out["points"].iloc[0]


def test_vertical_scorecard_scores_rows_whose_label_holder_column_is_all_blank():
    german = german_frame()
    lender = german[["id", "y", "duration_in_month", "housing"]]
    bureau = german[["id", "age_in_years", "purpose"]]
    train, test = fr.Federation.vertical({"lender": lender, "bureau": bureau}, id="id", label="y").split()
    card = fr.Scorecard(max_iter=5, iv_threshold=0.0).fit(train)
    assert "housing" in card.features_
    blank = test._with({"lender": test.parties["lender"].assign(housing=np.nan), "bureau": test.parties["bureau"]})
    p = card.predict_proba(blank)[:, 1]
    assert p.shape == (len(test.parties["lender"]),) and np.isfinite(p).all()
    assert not np.allclose(p, card.predict_proba(test)[:, 1])  # housing now scores as its missing bin



def _card(tmp_path):
    german = german_frame()
    enc = WoeEncoder().fit(german[FEATURES], german["y"])
    lr = LogisticRegression(max_iter=1000).fit(enc.transform(german[FEATURES]), german["y"])
    card = Scorecard.from_logistic(enc, lr, FEATURES)
    (tmp_path / "scorecard.json").write_text(json.dumps({"format": "fedrisk.scorecard", "version": 1, **card.to_dict()}))
    return german


def test_a_batch_without_a_column_is_scored_with_a_warning_naming_it(tmp_path, caplog):
    """One applicant without a field is normal; 500 rows without it is a broken feed: say so."""
    german = _card(tmp_path)
    german[["id", *FEATURES]].head(500).assign(age_in_years=np.nan).to_csv(tmp_path / "b.csv", index=False)
    with caplog.at_level("WARNING"):
        assert predict_file(tmp_path / "scorecard.json", tmp_path / "b.csv", tmp_path / "o.csv") == 500
    assert (pd.read_csv(tmp_path / "o.csv")["status"] == "scored").all()
    hits = [r.getMessage() for r in caplog.records if "blank in all" in r.getMessage()]
    assert len(hits) == 1 and "'age_in_years'" in hits[0] and "500 rows" in hits[0] and "'housing'" not in hits[0]
    caplog.clear()
    german[["id", *FEATURES]].iloc[[3]].assign(age_in_years=np.nan).to_csv(tmp_path / "one.csv", index=False)
    with caplog.at_level("WARNING"):
        predict_file(tmp_path / "scorecard.json", tmp_path / "one.csv", tmp_path / "o1.csv")
    assert not [r for r in caplog.records if "blank in all" in r.getMessage()]  # one applicant: no alarm


def test_vertical_batch_without_a_column_is_logged_at_the_party_holding_it(caplog):
    german = german_frame()
    lender = german[["id", "y", "duration_in_month", "housing"]]
    bureau = german[["id", "age_in_years", "purpose"]]
    train, test = fr.Federation.vertical({"lender": lender, "bureau": bureau}, id="id", label="y").split()
    card = fr.Scorecard(max_iter=5, iv_threshold=0.0).fit(train)
    assert {"purpose", "housing"} <= set(card.features_)
    n = len(test.parties["bureau"])
    blank = test._with({"lender": test.parties["lender"], "bureau": test.parties["bureau"].assign(purpose=np.nan)})
    with caplog.at_level("WARNING"):
        p = card.predict_proba(blank)[:, 1]
    assert np.isfinite(p).all()
    hits = [r.getMessage() for r in caplog.records if "blank in all" in r.getMessage()]
    # the bureau's own log names the column; the label holder is told nothing (the bureau does not name its
    # reasons: tests/runtime/test_predict_batch_warnings.py)
    assert len(hits) == 1 and hits[0].startswith("party 'bureau'") and "'purpose'" in hits[0] and f"{n} rows" in hits[0]
    # the same horizontal notebook path: points of a DataFrame (numeric columns: no categories to declare)
    caplog.clear()
    num = ["duration_in_month", "age_in_years", "credit_amount"]
    hcard = fr.Scorecard().fit(fr.Federation.horizontal(
        {"a": german.iloc[::2][["id", "y", *num]], "b": german.iloc[1::2][["id", "y", *num]]}, id="id", label="y"))
    with caplog.at_level("WARNING"):
        hcard.points(german[num].head(30).assign(age_in_years=np.nan))
        hcard.points(german[num].head(1).assign(age_in_years=np.nan))
    hits = [r.getMessage() for r in caplog.records if "blank in all" in r.getMessage()]
    assert len(hits) == 1 and "'age_in_years'" in hits[0] and "30 rows" in hits[0]
