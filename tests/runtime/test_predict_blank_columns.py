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

