"""``na_values``: the placeholders a party's exports write for "no value" ("?", ".", "NA", "unknown"), declared
once per party (``[parties.NAME] na_values = ["?"]``, ``Federation.vertical/horizontal(..., na_values=[...])``).
Without it a number column with such cells is refused at load; the refusal names this setting with the cells'
own text, and with it the column loads as numbers with missing values, from CSV and Parquet alike."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedrisk.data.loading import load_party_frame, load_party_table
from fedrisk.errors import DataError


def _write(tmp_path, fmt: str, cells: list) -> object:
    rng = np.random.default_rng(0)
    n = len(cells)
    df = pd.DataFrame({"id": [f"C-{i:04d}" for i in range(n)], "y": rng.integers(0, 2, n),
                       "amount": pd.Series(cells, dtype=object), "x": rng.normal(size=n)})
    path = tmp_path / f"lender.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return path


def _cells(placeholders: list[str]) -> list[str]:
    rng = np.random.default_rng(1)
    cells = [str(v) for v in rng.integers(100, 9000, 200)]
    for i, p in enumerate(placeholders):
        cells[3 + 7 * i] = p
    return cells


LOADERS = {
    "table-onehot": lambda path, **kw: load_party_table(path, party="lender", id_col="id", label_col="y",
                                                        encoding="onehot", missing="keep", **kw),
    "table-numeric": lambda path, **kw: load_party_table(path, party="lender", id_col="id", label_col="y",
                                                         missing="keep", **kw),
    "frame": lambda path, **kw: load_party_frame(path, party="lender", id_col="id", label_col="y", categorical=[],
                                                 **kw),
}


def _amount(loaded) -> np.ndarray:
    if hasattr(loaded, "feature_names") and isinstance(loaded.X, np.ndarray):
        return loaded.X[:, loaded.feature_names.index("amount")]
    return pd.to_numeric(loaded.X["amount"], errors="raise").to_numpy(dtype=float)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("loader", list(LOADERS))
def test_placeholders_are_refused_naming_na_values_then_load_as_missing_once_declared(tmp_path, fmt, loader):
    path = _write(tmp_path, fmt, _cells(["?", "?", " . ", "unknown"]))
    with pytest.raises(DataError) as info:
        LOADERS[loader](path)
    msg = str(info.value)
    assert "\n" not in msg and "'amount'" in msg and "na_values = [" in msg and "for this party in the job spec" in msg, msg
    assert '"?"' in msg, msg
    loaded = LOADERS[loader](path, na_values=["?", ".", "unknown"])
    amount = _amount(loaded)
    assert int(np.isnan(amount).sum()) == 4 and np.isfinite(amount).sum() == 196
    assert "amount" not in getattr(loaded, "categories", {})


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_an_undeclared_placeholder_is_still_refused(tmp_path, fmt):
    path = _write(tmp_path, fmt, _cells(["?", "unknown"]))
    with pytest.raises(DataError) as info:
        LOADERS["table-onehot"](path, na_values=["?"])
    assert "'unknown'" in str(info.value) and 'na_values = ["unknown"]' in str(info.value)


def test_na_values_in_the_spec_reach_every_loader(tmp_path):
    from fedrisk.runtime.spec import PartySpec

    p = PartySpec(address="localhost:1", data=tmp_path / "x.csv", na_values=["?", "."])
    assert p.read_options()["na_values"] == ["?", "."]
    assert "na_values" not in PartySpec(address="localhost:1").read_options()
    with pytest.raises(ValueError, match="na_values lists an empty text"):
        PartySpec(address="localhost:1", na_values=[" "])


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_number_sentinel_is_missing_in_csv_and_parquet_alike(tmp_path, fmt):
    """``na_values = ["-999"]``: the CSV reader makes -999 missing in number columns; a Parquet number
    column holds -999 as a number, which is missing just the same (it scored as an amount of -999)."""
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"id": range(100), "y": rng.integers(0, 2, 100), "income": rng.integers(1, 90, 100)})
    df.loc[[4, 9], "income"] = -999
    path = tmp_path / f"bank.{fmt}"
    df.to_csv(path, index=False) if fmt == "csv" else df.to_parquet(path, index=False)
    t = load_party_table(path, party="bank", id_col="id", label_col="y", missing="keep", na_values=["-999"])
    assert np.flatnonzero(np.isnan(t.X[:, 0])).tolist() == [4, 9]
    plain = load_party_table(path, party="bank", id_col="id", label_col="y")
    assert plain.X[4, 0] == -999


def test_a_placeholder_category_of_a_parquet_dictionary_column_is_missing(tmp_path):
    """A Parquet dictionary (pandas category) column with a "?" category loads as the CSV copy does: "?" is a
    missing value, not a level (the category dtype skipped the match)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 40
    cats = ["a", "b", "?", "c"] * (n // 4)
    ids = [str(i) for i in range(n)]
    y = [i % 2 for i in range(n)]
    pq.write_table(pa.table({"id": ids, "y": y, "c": pa.array(cats).dictionary_encode(), "z": np.arange(n) * 1.0}),
                   tmp_path / "dict.parquet")
    pd.DataFrame({"id": ids, "y": y, "c": cats, "z": np.arange(n) * 1.0}).to_csv(tmp_path / "dict.csv", index=False)
    names = {}
    for f in ("dict.csv", "dict.parquet"):
        frame = load_party_frame(tmp_path / f, party="a", id_col="id", label_col="y", categorical=["c"], na_values=["?"])
        assert sorted(map(str, frame.X["c"].dropna().unique())) == ["a", "b", "c"], f
        assert int(frame.X["c"].isna().sum()) == n // 4, f
        table = load_party_table(tmp_path / f, party="a", id_col="id", label_col="y", categorical=["c"],
                                 encoding="onehot", missing="mean", fill_later=True, na_values=["?"])
        names[f] = table.feature_names
    assert names["dict.parquet"] == names["dict.csv"] and not any("?" in c for c in names["dict.csv"])


def test_a_number_sentinel_written_as_decimal_text_in_parquet_is_missing_as_in_csv(tmp_path):
    """na_values = ["-999"]: a CSV reader matches the cell "-999.0" by number; a Parquet text column must too."""
    n = 40
    df = pd.DataFrame({"id": [str(i) for i in range(n)], "y": [i % 2 for i in range(n)], "w": np.arange(n) * 2.0,
                       "s": [("-999.0" if i % 7 == 0 else str(float(i))) for i in range(n)]})
    df.to_csv(tmp_path / "s.csv", index=False)
    df.astype({"s": "string"}).to_parquet(tmp_path / "s.parquet", index=False)
    for f in ("s.csv", "s.parquet"):
        X = np.asarray(load_party_table(tmp_path / f, party="a", id_col="id", label_col="y", missing="mean",
                                        fill_later=True, na_values=["-999"]).X)
        assert int(np.isnan(X).sum()) == 6 and not (X == -999).any(), f
