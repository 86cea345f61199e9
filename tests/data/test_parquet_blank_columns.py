"""A feature column with no value in any row, exported to Parquet.

A CSV reader makes an empty column floats (all missing), and the missing policy decides: refused under
``missing = "reject"``, kept under ``"keep"``, filled with the federation's means in a horizontal job with
``missing = "mean"`` (a bank that does not collect a field) or with a model's training means at scoring.
Parquet keeps the column's type when every row is null -- a string column, a dictionary-encoded one (pandas
reads it as a category column without categories) or a null column -- and the numeric loading path refused
it as "non-numeric feature columns ... encode them as numbers", advice that does not apply to an empty column.
Now it loads as the CSV column does, in every case and with the same messages.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedrisk.data.loading import load_party_table
from fedrisk.errors import DataError

N = 40


def _columns(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"id": np.arange(N), "y": rng.integers(0, 2, N), "x0": rng.normal(size=N), "x1": rng.normal(size=N)}


def _blank_arrow(kind: str) -> pa.Array:
    if kind == "string":
        return pa.array([None] * N, type=pa.string())
    if kind == "dictionary":
        return pa.array([None] * N, type=pa.string()).dictionary_encode()
    if kind == "null":
        return pa.nulls(N)
    return pa.array([""] * (N - 3) + ["  "] * 3, type=pa.string())  # "blank": empty text, not null


def _write(tmp_path, kind: str, name: str = "bank.parquet"):
    cols = _columns()
    table = pa.table({**{k: pa.array(v) for k, v in cols.items()}, "note": _blank_arrow(kind)})
    pq.write_table(table, tmp_path / name)
    assert pa.types.is_dictionary(pq.read_table(tmp_path / name).schema.field("note").type) == (kind == "dictionary")
    csv = tmp_path / "bank.csv"
    pd.DataFrame({**cols, "note": [""] * N}).to_csv(csv, index=False)
    return tmp_path / name, csv


def _load(path, **kw):
    return load_party_table(path, party="bank3", id_col="id", **{"label_col": "y", **kw})


def _error(path, **kw) -> str:
    with pytest.raises(DataError) as e:
        _load(path, **kw)
    return str(e.value).replace(str(path), "FILE")


KINDS = ["string", "dictionary", "null", "blank"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("encoding", [None, "onehot"])
def test_an_all_blank_parquet_text_column_loads_as_the_csv_column_does(tmp_path, kind, encoding):
    parquet, csv = _write(tmp_path, kind)
    # refused, or filled with this file's means: the CSV messages, word for word (no mean exists here)
    for missing in ("reject", "mean"):
        msg = _error(parquet, missing=missing, encoding=encoding)
        assert msg == _error(csv, missing=missing, encoding=encoding)
        assert "'note'" in msg and "non-numeric" not in msg and "\n" not in msg
    kept = _load(parquet, missing="keep", encoding=encoding)
    assert kept.feature_names == ["x0", "x1", "note"] == _load(csv, missing="keep", encoding=encoding).feature_names
    # said in the party's notes (its own log), not loaded silently: a whole file without a field is more
    # likely a broken export
    assert [n for n in kept.notes if "'note'" in n and "no value in any row" in n], kept.notes
    assert np.isnan(kept.X[:, 2]).all() and np.array_equal(kept.X[:, :2], _load(csv, missing="keep").X[:, :2])
    # a horizontal bank that does not collect the field: kept blank, to be filled with the federation's means
    later = _load(parquet, missing="mean", fill_later=True, encoding=encoding)
    assert np.isnan(later.X[:, 2]).all()
    # scoring with a model trained under missing = "mean": the training means fill it, as for a CSV batch
    scored = _load(parquet, label_col=None, features=["x0", "x1", "note"], fill={"x0": 0.0, "x1": 0.0, "note": 2.5})
    assert (scored.X[:, 2] == 2.5).all() and scored.imputed == {"note": 2.5}


def test_a_text_column_with_a_value_is_still_refused_on_the_numeric_path(tmp_path):
    """Only a column without any value changes: one filled cell keeps the text-column refusal."""
    cols = _columns()
    note = pa.array(["late payer"] + [None] * (N - 1), type=pa.string())
    pq.write_table(pa.table({**{k: pa.array(v) for k, v in cols.items()}, "note": note}), tmp_path / "b.parquet")
    assert "non-numeric feature columns: 'note'" in _error(tmp_path / "b.parquet")


def test_predict_fills_an_all_blank_parquet_column_with_the_models_means(tmp_path):
    """``fedrisk predict`` of a horizontal LR model trained with missing = "mean" on a Parquet batch whose
    string column came out all null (dictionary-encoded, as pandas/pyarrow writers often store text)."""
    from fedrisk.algorithms.horizontal.logistic import LogisticModel
    from fedrisk.model_files import save_lr_model
    from fedrisk.runtime.predict import predict_file

    model = LogisticModel(["x0", "x1"], np.array([0.1, 0.4]), np.array([1.0, 2.0]), np.array([0.5, -0.25]), -0.1)
    save_lr_model(tmp_path / "run" / "model.json", model, "horizontal.lr", "j", imputation={"x0": 0.1, "x1": 0.4})
    cols = _columns()
    pq.write_table(pa.table({"id": pa.array(cols["id"]), "x0": pa.array(cols["x0"]),
                             "x1": pa.array([None] * N, type=pa.string()).dictionary_encode()}), tmp_path / "new.parquet")
    assert predict_file(tmp_path / "run" / "model.json", tmp_path / "new.parquet", tmp_path / "s.csv") == N
    z = (cols["x0"] - 0.1) * 0.5 - 0.1  # x1 at its training mean: no push
    np.testing.assert_allclose(pd.read_csv(tmp_path / "s.csv")["score"], 1 / (1 + np.exp(-z)), atol=1e-7)


def test_a_bank_whose_parquet_column_is_all_null_trains_with_the_federations_mean(tmp_path, caplog):
    """horizontal.lr with missing = "mean": bank3 does not collect x2 (its Parquet export keeps x2 as an
    all-null dictionary column); its rows are filled with the mean of the other banks' x2, as for a blank CSV
    column."""
    import json

    from tests.tasks.test_horizontal_inputs import numeric_banks, spec_for
    from tests.tasks.test_woe_tasks import run_in_process

    parts = numeric_banks(tmp_path)
    b3 = parts["bank3"]
    pq.write_table(pa.table({**{c: pa.array(b3[c].to_numpy()) for c in ("id", "y", "x0", "x1")},
                             "x2": pa.array([None] * len(b3), type=pa.string()).dictionary_encode()}),
                   tmp_path / "bank3.parquet")
    spec = spec_for(tmp_path, "horizontal.lr", {b: 'missing = "mean"' for b in ("bank1", "bank2", "bank3")})
    spec.write_text(spec.read_text().replace('data = "bank3.csv"', 'data = "bank3.parquet"'))
    with caplog.at_level("WARNING", logger="test.bank3"):
        m = run_in_process(spec, tmp_path / "run")
    # the bank's own log says it has no x2 (the others' logs do not)
    said = {r.name for r in caplog.records if "'x2'] have no value in any row" in r.getMessage()
            or "'x2' have no value in any row" in r.getMessage()}
    assert said == {"test.bank3"}, [r.getMessage() for r in caplog.records]
    model = json.loads((tmp_path / "run" / "model.json").read_text())
    pooled = pd.concat([parts["bank1"].x2, parts["bank2"].x2]).mean()
    assert model["imputation"]["x2"] == pytest.approx(pooled, abs=1e-6) and model["version"] == 2
    assert m["test"]["auc"] > 0.6
