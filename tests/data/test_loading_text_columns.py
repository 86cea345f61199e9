"""Text columns that are not categories: numbers with a few placeholder cells ("?", "unknown") and dates
written as text. Undeclared text columns become categories in vertical LR/SecureBoost and in WOE/scorecard
binning, so such a column used to be one category per amount: LR/SecureBoost refused it as "an id or free
text", and a scorecard's label holder merged its hundreds of levels by their WOE (train AUC 0.9995, test
0.69 on German credit), with no warning at all. Both are now refused at load, in one line naming the
column, what it holds and the fix."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedrisk.data.loading import load_party_frame, load_party_table
from fedrisk.errors import DataError


def _frame(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"id": [f"C-{i:04d}" for i in range(n)], "y": rng.integers(0, 2, n),
                         "amount": rng.integers(100, 9000, n).astype(object),
                         "purpose": rng.choice(["car", "tv", "repairs"], n)})


def _table_error(path, **kw) -> str:
    with pytest.raises(DataError) as info:
        load_party_table(path, party="lender", id_col="id", label_col="y", encoding="onehot", **kw)
    msg = str(info.value)
    assert "\n" not in msg and "'lender'" in msg and str(path) in msg, msg
    return msg


def _frame_error(path, **kw) -> str:
    with pytest.raises(DataError) as info:
        load_party_frame(path, party="lender", id_col="id", label_col="y", categorical=[], **kw)
    msg = str(info.value)
    assert "\n" not in msg and "'lender'" in msg and str(path) in msg, msg
    return msg


def test_numbers_with_placeholder_text_are_refused_naming_the_cells(tmp_path):
    df = _frame()
    df.loc[:2, "amount"] = "?"
    path = tmp_path / "lender.csv"
    df.to_csv(path, index=False)
    for msg in (_table_error(path), _frame_error(path)):
        assert "'amount'" in msg and "3 rows" in msg and "'?'" in msg, msg
        assert "empty" in msg and "categorical" in msg, msg
        assert "'purpose'" not in msg and "free text" not in msg, msg


def test_dates_written_as_text_are_named_as_dates(tmp_path):
    df = _frame()
    df["opened"] = pd.date_range("2019-01-01", periods=len(df), freq="7D").strftime("%d/%m/%Y")
    df.loc[5, "opened"] = np.nan
    path = tmp_path / "lender.csv"
    df.to_csv(path, index=False)
    for msg in (_table_error(path), _frame_error(path)):
        assert "'opened'" in msg and "dates" in msg and "exclude" in msg, msg
        assert "free text" not in msg, msg
    iso = _frame()
    iso["opened"] = pd.date_range("2019-01-01", periods=len(iso), freq="D").strftime("%Y-%m-%d")
    iso.to_csv(path, index=False)
    assert "dates" in _table_error(path)


def test_declared_categories_and_real_text_are_left_alone(tmp_path):
    df = _frame()
    df["dependents"] = np.where(np.arange(len(df)) % 10 == 0, "4+", (np.arange(len(df)) % 4).astype(str))
    df["branch"] = np.where(np.arange(len(df)) % 2 == 0, "1234-56", "6419-10")  # codes, not dates
    path = tmp_path / "lender.csv"
    df.to_csv(path, index=False)
    t = load_party_table(path, party="lender", id_col="id", label_col="y", encoding="codes",
                         categorical=["dependents"])
    assert {"dependents", "purpose", "branch"} <= set(t.categories)
    f = load_party_frame(path, party="lender", id_col="id", label_col="y", categorical=["dependents"])
    assert not pd.api.types.is_numeric_dtype(f.X["dependents"])
    # scoring (no declaration list): no check, the model's encoders decide
    load_party_frame(path, party="lender", id_col="id", label_col="y")


def test_code_lists_and_category_typed_columns_stay_categories(tmp_path):
    """Mostly-numeric CODES ("01".."19" and a few "A1"; a grade 1-7 with a few "X") are categories, as before
    this check; so is any column the file itself types as a category (Parquet/pandas), whatever it holds."""
    rng = np.random.default_rng(2)
    n = 400
    df = pd.DataFrame({"id": [f"C{i}" for i in range(n)], "y": rng.integers(0, 2, n), "x": rng.normal(size=n),
                       "branch": [f"{rng.integers(1, 20):02d}" for _ in range(n - 10)] + ["A1"] * 10,
                       "grade": [str(rng.integers(1, 8)) for _ in range(n - 20)] + ["X"] * 20})
    df.to_csv(tmp_path / "codes.csv", index=False)
    table = load_party_table(tmp_path / "codes.csv", party="lender", id_col="id", label_col="y", encoding="onehot")
    assert any(f.startswith("branch=") for f in table.feature_names)
    typed = df.assign(grade=pd.Categorical(df["grade"]),
                      amount=pd.Categorical([str(v) for v in rng.integers(100, 9000, n - 6)] + ["?"] * 6))
    typed.to_parquet(tmp_path / "typed.parquet")
    frame = load_party_frame(tmp_path / "typed.parquet", party="lender", id_col="id", label_col="y")
    assert {"grade", "amount"} <= set(frame.X.columns)


def test_codes_with_leading_zeros_in_parquet_stay_text(tmp_path):
    """Numbers kept as text load as numbers, but "01", "02", "10" in a Parquet string column are a region
    code: inferred as a category (with the usual note), as before numbers-in-text loading."""
    rng = np.random.default_rng(0)
    n = 200
    df = pd.DataFrame({"id": [str(i) for i in range(n)], "y": rng.integers(0, 2, n), "x": rng.normal(size=n),
                       "region": rng.choice(["01", "02", "03", "10", "12"], n),
                       "amount": [f"{v:.1f}" for v in rng.integers(100, 9000, n)]})
    df.to_parquet(tmp_path / "codes.parquet")
    t = load_party_table(tmp_path / "codes.parquet", party="bank1", id_col="id", label_col="y", encoding="codes")
    assert "region" in t.categories and "amount" not in t.categories
    assert any("'region'" in note for note in t.notes)


def _parquet_with(tmp_path, cells: list, name: str = "lender.parquet"):
    df = _frame(len(cells))
    df["amount"] = pd.Series(cells, dtype=object)
    df.to_parquet(tmp_path / name)
    return tmp_path / name


def test_inf_written_as_text_is_a_text_cell_not_an_amount(tmp_path):
    """A Parquet amount column with a few "inf" cells: one parse decides both "all numbers?" and "mostly
    numbers?", and "inf" is not a plain number in either (before, the second check took it for a number,
    found no text cells, and the amount silently became one category per value)."""
    rng = np.random.default_rng(1)
    path = _parquet_with(tmp_path, [str(v) for v in rng.integers(100, 9000, 195)] + ["inf"] * 5)
    for msg in (_table_error(path), _frame_error(path)):
        assert "'amount'" in msg and "5 rows" in msg and "'inf'" in msg, msg


def test_blank_text_cells_of_an_amount_are_missing_in_frames_too(tmp_path):
    """Blank strings in a Parquet amount column are missing values, as the table loader reads them: the
    frame keeps the column, and WOE binning bins it as numbers with a missing bin (pandas 3 reads Parquet
    text as "str", which the missing-value mask did not look at, so the amount became categories)."""
    from fedrisk.finance.binning import is_categorical, is_missing

    rng = np.random.default_rng(2)
    path = _parquet_with(tmp_path, [str(v) for v in rng.integers(100, 9000, 195)] + [""] * 5)
    frame = load_party_frame(path, party="lender", id_col="id", label_col="y", categorical=[])
    assert int(is_missing(frame.X["amount"]).sum()) == 5
    assert not is_categorical(frame.X["amount"])
    table = load_party_table(path, party="lender", id_col="id", label_col="y", encoding="onehot", missing="keep")
    assert int(np.isnan(table.X[:, table.feature_names.index("amount")]).sum()) == 5


def test_decimal_comma_amounts_with_placeholders_are_refused_in_frames(tmp_path):
    """``decimal = ','``: "1169,5" is a number to the placeholder check as it is to the CSV reader, so an
    amount with a few "?" is refused in WOE/scorecard loading as in a "." file (it was one category per
    amount)."""
    rng = np.random.default_rng(3)
    df = _frame(200)
    df["amount"] = [f"{v},5" for v in rng.integers(100, 9000, 200)]
    df.loc[:3, "amount"] = "?"
    path = tmp_path / "lender.csv"
    df.to_csv(path, index=False, sep=";")
    msg = _frame_error(path, sep=";", decimal=",")
    assert "'amount'" in msg and "4 rows" in msg and "'?'" in msg, msg


def test_digits_of_other_scripts_are_not_read_as_blank_numbers(tmp_path):
    """A column of Arabic-Indic digits matched the number pattern (``\\d`` is any script's digit) but the
    parser turned every cell into a missing value: the column loaded as all-NaN. It is text now."""
    from fedrisk.data.loading import numbers_in_text

    col = pd.Series(["\u0661\u0662\u0663", "\u0664\u0665"], dtype=object)
    assert numbers_in_text(col) is None
    assert numbers_in_text(pd.Series([" 12.5", "-3e2", None, ""], dtype=object)).tolist()[:2] == [12.5, -300.0]


def test_numbers_in_text_keeps_a_repeated_index():
    """``numbers_in_text`` is public: a column whose index repeats labels (a concatenation of two exports) reads
    by position instead of failing in a reindex."""
    from fedrisk.data.loading import numbers_in_text

    got = numbers_in_text(pd.Series(["1", "2", "", "4"], index=[0, 0, 1, 1], dtype=object))
    assert got is not None and list(got.index) == [0, 0, 1, 1]
    np.testing.assert_array_equal(got.to_numpy(), [1.0, 2.0, np.nan, 4.0])


def test_dates_are_named_as_dates_where_text_columns_are_not_allowed(tmp_path):
    """A horizontal LR / GBDT bank loads without an encoding (text columns need a [task] categories
    vocabulary): a date column there was called "non-numeric", with the advice to declare it as a
    category -- one category per day. It is named as a date, with the fix."""
    df = _frame().drop(columns=["purpose"])
    df["amount"] = df["amount"].astype(int)
    df["opened"] = pd.date_range("2019-01-01", periods=len(df), freq="D").strftime("%Y-%m-%d")
    path = tmp_path / "lender.csv"
    df.to_csv(path, index=False)
    with pytest.raises(DataError) as info:
        load_party_table(path, party="lender", id_col="id", label_col="y")
    msg = str(info.value)
    assert "'opened'" in msg and "dates" in msg and "'2019-01-01'" in msg and "exclude" in msg, msg
    assert "categor" not in msg, msg


def test_a_horizontal_bank_names_a_date_column_as_a_date(tmp_path):
    """With a [task] categories vocabulary for other columns, a bank's undeclared date column was "a text
    column with no vocabulary; list its categories"."""
    import fedrisk as fr

    rng = np.random.default_rng(1)
    banks = {}
    for b, n in (("bank1", 80), ("bank2", 60)):
        banks[b] = pd.DataFrame({"id": np.arange(n) + (0 if b == "bank1" else 1000), "y": rng.integers(0, 2, n),
                                 "x": rng.normal(size=n), "region": rng.choice(["n", "s"], n),
                                 "opened": pd.date_range("2020-03-01", periods=n, freq="D").strftime("%Y-%m-%d")})
    with pytest.raises(fr.DataError) as info:
        fr.LogisticRegression(categories={"region": ["n", "s"]}).fit(fr.Federation.horizontal(banks))
    msg = str(info.value)
    assert "'opened'" in msg and "dates" in msg and "exclude" in msg and "\n" not in msg, msg
    assert "vocabulary" not in msg and "list their categories" not in msg, msg


def test_a_year_month_column_may_be_a_category_and_versions_are_not_dates(tmp_path):
    """A vintage / cohort column ("2020-01") is a legitimate category: the date refusal of a horizontal LR /
    GBDT bank offers its ``[task] categories`` vocabulary (the column name quoted, so a partner's copy of the
    reason redacts it), as the WOE path does. Version strings ("3.10.12") were taken for dates (d.m.yy)."""
    import fedrisk as fr

    df = _frame().drop(columns=["purpose"])
    for vals, date in ((["2020-01", "2020-02", "2021-03"], True), (["3.10.12", "3.11.14", "2.7.18"], False)):
        df["c"] = [vals[i % 3] for i in range(len(df))]
        df.to_csv(tmp_path / "b.csv", index=False)
        with pytest.raises(DataError) as info:
            load_party_table(tmp_path / "b.csv", party="b", id_col="id", label_col="y")
        msg = str(info.value)
        assert ("are dates" in msg) == date, msg
        assert '[task] categories = { "c" = [...] }' in msg, msg
    rng = np.random.default_rng(2)
    banks = {b: pd.DataFrame({"id": np.arange(n), "y": rng.integers(0, 2, n), "x": rng.normal(size=n),
                              "region": rng.choice(["n", "s"], n), "cohort": rng.choice(["2020-01", "2020-02"], n)})
             for b, n in (("bank1", 60), ("bank2", 50))}
    with pytest.raises(fr.DataError) as info:  # (the category step of a job with a vocabulary for other columns)
        fr.LogisticRegression(categories={"region": ["n", "s"]}).fit(fr.Federation.horizontal(banks))
    msg = str(info.value)
    assert "are dates" in msg and "categories={'cohort': [...]}" in msg, msg


def test_a_horizontal_bank_with_a_vocabulary_names_amounts_written_for_display(tmp_path):
    """With a [task] categories vocabulary for another column, a bank exporting its utilisation as "51.7%" was told
    to list the column's categories (one per percentage); it is an amount written for display, as without one."""
    import fedrisk as fr

    rng = np.random.default_rng(2)
    banks = {}
    for b, n in (("bank1", 80), ("bank2", 60)):
        banks[b] = pd.DataFrame({"id": np.arange(n) + (0 if b == "bank1" else 1000), "y": rng.integers(0, 2, n),
                                 "util": rng.uniform(0, 1, n).round(3), "region": rng.choice(["n", "s"], n)})
    banks["bank2"]["util"] = banks["bank2"]["util"].map(lambda v: f"{100 * v:.1f}%")
    for est in (fr.LogisticRegression(categories={"region": ["n", "s"]}), fr.LogisticRegression()):
        fed = fr.Federation.horizontal({b: d if est.categories else d.drop(columns="region") for b, d in banks.items()})
        with pytest.raises(fr.DataError) as info:
            est.fit(fed)
        msg = str(info.value)
        assert "'bank2'" in msg and "'util'" in msg and "written for display" in msg and "\n" not in msg, msg
        assert "vocabulary" not in msg and "categor" not in msg, msg
