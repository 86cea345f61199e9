"""Text categorical columns encoded at their owner (fedrisk.data.categorical) and loaded by tasks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedrisk.data.categorical import MISSING, OTHER, CategoryEncoder, raw_columns, unseen_note
from fedrisk.data.loading import load_party_table
from fedrisk.errors import ConfigError, DataError

GERMAN = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "germancredit.csv"


def german() -> pd.DataFrame:
    if not GERMAN.is_file():
        pytest.skip(f"germancredit.csv not found at {GERMAN}; put the shared data sets in ../shared/data")
    df = pd.read_csv(GERMAN)
    df.insert(0, "id", np.arange(len(df)))
    return df


def test_levels_by_frequency_rare_pooled_unseen_to_other():
    s = pd.Series(["b"] * 50 + ["a"] * 30 + ["c"] * 19 + ["rare"] * 1 + [None] * 0)
    enc = CategoryEncoder.fit("x", s, min_share=0.05)
    assert enc.level_names == ["b", "a", "c", OTHER] and not enc.has_missing
    codes, unseen = enc.codes(pd.Series(["a", "rare", "never", "b", " c "]))
    assert codes.tolist() == [1, 3, 3, 0, 2] and unseen == 1
    # JSON round trip gives the same encoder
    again = CategoryEncoder.from_json(enc.to_json())
    assert again.codes(pd.Series(["a", "never"]))[0].tolist() == [1, 3]


def test_an_empty_cell_is_unseen_when_training_had_none():
    """Scoring a blank where training had no blanks lands on another level: counted, so predict says so."""
    enc = CategoryEncoder.fit("region", pd.Series(["north"] * 60 + ["south"] * 40), min_share=0.05)
    codes, unseen = enc.codes(pd.Series(["south", None, " ", "north"]))
    assert codes.tolist() == [1, 0, 0, 0] and unseen == 2
    note = unseen_note({"region": unseen}, 4, "payco")
    assert "'region' (2 of 4 rows)" in note and "payco" in note
    assert unseen_note({}, 4, "payco") is None


def test_missing_level_and_onehot():
    s = pd.Series(["x", "y", "", None, "x", "x"])
    enc = CategoryEncoder.fit("col", s, min_share=0.0)
    assert enc.all_levels() == ["x", "y", MISSING]
    assert enc.onehot_names() == ["col=y", f"col={MISSING}"]
    oh, unseen = enc.onehot(pd.Series(["x", "y", None, "z"]))
    # unseen "z" without a pooled level goes to the missing level
    assert oh.tolist() == [[0, 0], [1, 0], [0, 1], [0, 1]] and unseen == 1
    assert raw_columns(["age", "col=y", "col=(missing)"], {"col": {}}) == ["age", "col"]


def test_load_german_credit_codes_and_onehot(tmp_path):
    df = german()
    path = tmp_path / "g.csv"
    df.to_csv(path, index=False)
    t = load_party_table(path, party="lender", id_col="id", label_col="creditability", positive="bad",
                         categorical=["purpose", "credit_history"], encoding="codes")
    assert t.X.shape == (1000, 20) and np.isfinite(t.X).all()
    assert set(t.categories) >= {"purpose", "credit_history", "housing"}  # text columns inferred too
    assert t.notes and "treated as categorical" in t.notes[0] and "'housing'" in t.notes[0]
    j = t.feature_names.index("purpose")
    # most frequent purpose gets code 0
    top = df["purpose"].value_counts().index[0]
    assert (t.X[(df["purpose"] == top).to_numpy(), j] == 0).all()
    oh = load_party_table(path, party="lender", id_col="id", label_col="creditability", positive="bad",
                          features=["purpose", "age_in_years"], categorical=["purpose"], encoding="onehot")
    assert oh.feature_names[-1] == "age_in_years" and all(f.startswith("purpose=") for f in oh.feature_names[:-1])
    assert np.allclose(oh.X[:, :-1].sum(axis=1) <= 1, True)
    # scoring: the model's one-hot columns come back in the model's order, unseen values counted
    new = df.head(5).copy()
    new.loc[0, "purpose"] = "space travel"
    new.drop(columns=["creditability"]).to_csv(tmp_path / "new.csv", index=False)
    want = oh.feature_names[::-1]
    s = load_party_table(tmp_path / "new.csv", party="lender", id_col="id", features=want, categorical=["purpose"],
                         encoding="onehot", categories=oh.categories)
    assert s.feature_names == want and s.unseen == {"purpose": 1}
    assert np.allclose(s.X[1:], oh.X[1:5, ::-1])


def test_refusals_are_one_line(tmp_path):
    df = german()
    path = tmp_path / "g.csv"
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match="non-numeric feature columns"):
        load_party_table(path, party="p", id_col="id", label_col="creditability", positive="bad")
    with pytest.raises(ConfigError, match="takes numeric features only"):
        load_party_table(path, party="p", id_col="id", label_col="creditability", positive="bad", categorical=["purpose"])
    with pytest.raises(DataError, match="categorical names columns that are not features"):
        load_party_table(path, party="p", id_col="id", label_col="creditability", positive="bad",
                         categorical=["purpse"], encoding="codes")
    # scoring a text column the model had as numeric
    with pytest.raises(DataError, match="trained with it numeric"):
        load_party_table(path, party="p", id_col="id", features=["purpose"], encoding="codes", categories={})


def test_integer_codes_read_as_floats_keep_their_level():
    """A code column reads as floats once a cell is blank (4 -> 4.0): it used to become an unseen level."""
    enc = CategoryEncoder.fit("rate", pd.Series([1, 2, 3, 4] * 25), min_share=0.05)
    codes, unseen = enc.codes(pd.Series([1.0, 4.0, np.nan, 2.0]))
    assert codes[[0, 1, 3]].tolist() == enc.codes(pd.Series([1, 4, 2]))[0].tolist() and unseen == 1  # the blank only
    again = CategoryEncoder.fit("rate", pd.Series([1.0, 2.0, 3.0, 4.0, np.nan] * 20), min_share=0.05)
    assert again.level_names[:4] == ["1", "2", "3", "4"]
