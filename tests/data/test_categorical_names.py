"""Category columns whose own name holds '=' ("housing=type"): one-hot columns are "housing=type=rent", and
the file column behind them was found by splitting at the first '=', so a vertical LR trained on such a
column could not score (`fedrisk predict`: "feature columns not found: 'housing=type=rent'")."""
from __future__ import annotations

import numpy as np
import pandas as pd

from fedrisk.data.categorical import raw_columns
from fedrisk.data.loading import load_party_table


def test_raw_columns_finds_a_category_column_with_an_equals_sign_in_its_name():
    cats = {"housing=type": {}, "purpose": {}}
    feats = ["housing=type=rent", "housing=type=for free", "x=1", "purpose=car=new", "age"]
    assert raw_columns(feats, cats) == ["housing=type", "x=1", "purpose", "age"]


def test_a_model_trained_on_such_a_column_scores_its_file(tmp_path):
    rng = np.random.default_rng(0)
    n = 80
    df = pd.DataFrame({"id": range(n), "housing=type": rng.choice(["own", "rent", "for free"], n),
                       "age": rng.integers(20, 70, n)})
    path = tmp_path / "bureau.csv"
    df.to_csv(path, index=False)
    t = load_party_table(path, party="bureau", id_col="id", encoding="onehot")
    again = load_party_table(path, party="bureau", id_col="id", encoding="onehot", features=t.feature_names,
                             categories=t.categories)
    assert again.feature_names == t.feature_names
    assert np.array_equal(again.X, t.X)
