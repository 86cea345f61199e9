"""Loading a party's file: good files load exactly, every bad file gives a one-line DataError."""
from __future__ import annotations

import os
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrisk.data.loading import PartyTable, check_same_features, id_test_mask, load_party_table
from fedrisk.errors import ConfigError, DataError


def _write(tmp_path, text: str, name: str = "bank.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = "id,y,a,b\n1,0,0.5,10\n2,1,1.5,20\n3,0,2.5,30\n"


def _error(path, **kw) -> str:
    kw.setdefault("party", "bank1")
    kw.setdefault("id_col", "id")
    with pytest.raises(DataError) as info:
        load_party_table(path, **kw)
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert "'bank1'" in msg and str(path) in msg, msg
    return msg


# --- good files -------------------------------------------------------------------------------

def test_loads_csv(tmp_path) -> None:
    t = load_party_table(_write(tmp_path, GOOD), party="bank1", id_col="id", label_col="y")
    assert isinstance(t, PartyTable) and t.party == "bank1"
    assert t.feature_names == ["a", "b"]
    assert t.X.dtype == np.float64 and t.X.shape == (3, 2) and t.X.flags.c_contiguous
    np.testing.assert_array_equal(t.X[:, 1], [10, 20, 30])
    assert t.y.dtype == np.int8 and list(t.y) == [0, 1, 0]
    assert t.ids.dtype == object and list(t.ids) == ["1", "2", "3"]
    assert t.imputed == {} and t.n_rows == 3 and t.n_features == 2


def test_loads_parquet_with_same_result(tmp_path) -> None:
    csv = _write(tmp_path, GOOD)
    pq = tmp_path / "bank.parquet"
    pd.read_csv(csv).to_parquet(pq)
    a = load_party_table(csv, party="p", id_col="id", label_col="y")
    b = load_party_table(pq, party="p", id_col="id", label_col="y")
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert list(a.ids) == list(b.ids) and a.feature_names == b.feature_names


def test_ids_are_kept_as_text(tmp_path) -> None:
    path = _write(tmp_path, "id,a\n007,1\n 12 ,2\nC-9,3\n")
    t = load_party_table(path, party="p", id_col="id")
    assert list(t.ids) == ["007", "12", "C-9"] and t.y is None


def test_integral_float_ids_in_parquet_become_integers(tmp_path) -> None:
    path = tmp_path / "p.parquet"
    pd.DataFrame({"id": [1.0, 2.0, 30.0], "a": [1.0, 2.0, 3.0]}).to_parquet(path)
    assert list(load_party_table(path, party="p", id_col="id").ids) == ["1", "2", "30"]


def test_bool_label_and_float_label(tmp_path) -> None:
    path = tmp_path / "p.parquet"
    pd.DataFrame({"id": [1, 2], "y": [True, False], "a": [1.0, 2.0]}).to_parquet(path)
    assert list(load_party_table(path, party="p", id_col="id", label_col="y").y) == [1, 0]
    path2 = _write(tmp_path, "id,y,a\n1,1.0,3\n2,0.0,4\n")
    assert list(load_party_table(path2, party="p", id_col="id", label_col="y").y) == [1, 0]


def test_bool_features_become_0_1(tmp_path) -> None:
    path = tmp_path / "p.parquet"
    pd.DataFrame({"id": [1, 2], "flag": [True, False]}).to_parquet(path)
    np.testing.assert_array_equal(load_party_table(path, party="p", id_col="id").X[:, 0], [1.0, 0.0])


def test_explicit_features_fix_order_and_exclude_drops(tmp_path) -> None:
    path = _write(tmp_path, "id,y,a,b,c\n1,0,1,2,3\n2,1,4,5,6\n")
    t = load_party_table(path, party="p", id_col="id", label_col="y", features=["c", "a"])
    assert t.feature_names == ["c", "a"]
    np.testing.assert_array_equal(t.X[0], [3, 1])
    t = load_party_table(path, party="p", id_col="id", label_col="y", exclude=["b"])
    assert t.feature_names == ["a", "c"]


def test_label_optional_when_not_required(tmp_path) -> None:
    path = _write(tmp_path, "id,a\n1,1\n2,2\n")
    t = load_party_table(path, party="p", id_col="id", label_col="y", require_label=False)
    assert t.y is None and t.feature_names == ["a"]


def test_missing_mean_imputes_local_column_means(tmp_path) -> None:
    path = _write(tmp_path, "id,a,b\n1,1,\n2,,5\n3,3,7\n4,inf,9\n")
    t = load_party_table(path, party="p", id_col="id", missing="mean")
    np.testing.assert_allclose(t.X[:, 0], [1, 2, 3, 2])
    np.testing.assert_allclose(t.X[:, 1], [7, 5, 7, 9])
    assert t.imputed == {"a": 2.0, "b": 7.0}
    assert np.isfinite(t.X).all()


def test_missing_mean_names_the_infinite_cells_it_fills(tmp_path) -> None:
    """An infinity is not a blank: it is usually a ratio over zero (utilisation on a zero limit), a
    "very large" value that filling with the mean turns into an average one. missing='mean' still fills it
    (documented), but the party's log must say how many cells of which column were infinite, or the user
    never learns the export had them; blank cells alone give no such note."""
    path = _write(tmp_path, "id,a,b,region\n1,1,,n\n2,inf,5,s\n3,3,7,n\n4,-inf,inf,s\n")
    for kw in ({"exclude": ["region"]}, {"encoding": "onehot", "categorical": ["region"]},
               {"exclude": ["region"], "fill_later": True}):
        t = load_party_table(path, party="p", id_col="id", missing="mean", **kw)
        inf_notes = [n for n in t.notes if "infinite" in n]
        assert len(inf_notes) == 1, (kw, t.notes)
        assert "'a' (2)" in inf_notes[0] and "'b' (1)" in inf_notes[0] and "cap" in inf_notes[0], inf_notes
        assert not np.isinf(t.X).any()
    blank_only = load_party_table(_write(tmp_path, "id,a\n1,1\n2,\n", "blank.csv"), party="p", id_col="id",
                                  missing="mean")
    assert not [n for n in blank_only.notes if "infinite" in n]


def test_missing_mean_counts_the_blank_cells_it_fills_at_training(tmp_path) -> None:
    """A validator asks how much of each column was imputed, and a bank that does not collect a field fills
    nearly all of it: missing='mean' says so in the party's own log (counts per column, never a value), with
    whose means (the file's own, or the federation's pooled ones); scoring with the stored means adds no such
    note (its own warnings count scored blanks), and a file without blanks gets none."""
    path = _write(tmp_path, "id,a,b,c\n1,1.5,,3\n2,,5,4\n3,3,7,\n4,,9,1\n")
    for fill_later, whose in ((False, "this file's column means"), (True, "the federation's pooled column means")):
        t = load_party_table(path, party="p", id_col="id", missing="mean", fill_later=fill_later)
        blank = [n for n in t.notes if "blank cells" in n]
        assert len(blank) == 1 and whose in blank[0], (fill_later, t.notes)
        assert "'a' (2), 'b' (1), 'c' (1) (of 4 rows)" in blank[0] and "1.5" not in blank[0], blank
    scored = load_party_table(path, party="p", id_col="id", missing="mean", fill={"a": 2.0, "b": 7.0, "c": 3.0})
    assert not [n for n in scored.notes if "blank cells" in n]
    full = load_party_table(_write(tmp_path, "id,a\n1,1\n2,3\n", "full.csv"), party="p", id_col="id", missing="mean")
    assert full.notes == []


def test_scoring_fills_infinities_with_the_training_mean_not_this_batch_mean(tmp_path) -> None:
    """Training under missing='mean' fills an infinite cell like a blank; scoring (the training means in
    ``fill``) must too, else the row gets this batch's mean and scores differently in another batch."""
    path = _write(tmp_path, "id,a\n1,inf\n2,1\n3,3\n4,\n")
    for missing in ("mean", "keep"):  # keep: what `fedrisk predict` loads a horizontal LR's rows with
        t = load_party_table(path, party="p", id_col="id", missing=missing, fill={"a": 10.0})
        assert t.X[:, 0].tolist() == [10.0, 1.0, 3.0, 10.0], missing


def test_missing_keep_leaves_nan_and_refuses_infinities(tmp_path) -> None:
    t = load_party_table(_write(tmp_path, "id,a,b\n1,1,\n2,,5\n3,3,7\n"), party="p", id_col="id", missing="keep")
    assert np.isnan(t.X[1, 0]) and np.isnan(t.X[0, 1]) and t.imputed == {}
    msg = _error(_write(tmp_path, "id,a,b\n1,1,\n2,-inf,5\n"), missing="keep")
    assert "1 rows have infinite" in msg and "'a' (1)" in msg and "'b'" not in msg


def test_compressed_csv(tmp_path) -> None:
    path = tmp_path / "p.csv.gz"
    pd.read_csv(_write(tmp_path, GOOD)).to_csv(path, index=False)
    assert load_party_table(path, party="p", id_col="id", label_col="y").n_rows == 3


# --- bad files: one line, names party + file + column + what to do ------------------------------

def test_missing_file(tmp_path) -> None:
    assert "not found" in _error(tmp_path / "nope.csv")


def test_directory(tmp_path) -> None:
    (tmp_path / "d.csv").mkdir()
    assert "directory" in _error(tmp_path / "d.csv")


def test_unsupported_extension(tmp_path) -> None:
    msg = _error(_write(tmp_path, GOOD, "bank.xlsx"))
    assert ".xlsx" in msg and ".parquet" in msg


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file(tmp_path) -> None:
    path = _write(tmp_path, GOOD)
    path.chmod(0)
    try:
        assert "permission" in _error(path).lower()
    finally:
        path.chmod(0o600)


def test_empty_file(tmp_path) -> None:
    assert "empty" in _error(_write(tmp_path, ""))


def test_header_only(tmp_path) -> None:
    assert "no data rows" in _error(_write(tmp_path, "id,y,a\n"))


def test_corrupt_parquet(tmp_path) -> None:
    msg = _error(_write(tmp_path, "this is not parquet", "p.parquet"))
    assert "PARQUET" in msg


def test_ragged_csv(tmp_path) -> None:
    msg = _error(_write(tmp_path, "id,a\n1,2\n2,3,4,5\n"))
    assert "cannot read CSV" in msg


def test_not_utf8(tmp_path) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes("id,a\n1,caf\xe9\n".encode("latin-1"))
    assert "UTF-8" in _error(path)


def test_missing_id_column_lists_available(tmp_path) -> None:
    msg = _error(_write(tmp_path, GOOD), id_col="customer_id")
    assert "'customer_id'" in msg and "'a'" in msg and "available columns" in msg


def test_missing_label_column_lists_available(tmp_path) -> None:
    msg = _error(_write(tmp_path, GOOD), label_col="default")
    assert "'default'" in msg and "available columns" in msg and "'y'" in msg


@pytest.mark.parametrize("values, shown", [("0,1,2", "2"), ("1,-1,1", "-1"), ("0.5,1,0", "0.5")])
def test_label_not_binary_shows_values(tmp_path, values, shown) -> None:
    rows = "".join(f"{i},{v},{i}\n" for i, v in enumerate(values.split(",")))
    msg = _error(_write(tmp_path, "id,y,a\n" + rows), label_col="y")
    assert "not binary" in msg and shown in msg and "'y'" in msg


def test_string_label_says_to_map(tmp_path) -> None:
    msg = _error(_write(tmp_path, "id,y,a\n1,good,1\n2,bad,2\n"), label_col="y")
    assert "'bad'" in msg and "'good'" in msg and "map" in msg


def test_empty_label(tmp_path) -> None:
    msg = _error(_write(tmp_path, "id,y,a\n1,,1\n2,1,2\n"), label_col="y")
    assert "1 rows" in msg and "'y'" in msg


def test_nan_rejected_with_counts_and_columns(tmp_path) -> None:
    path = _write(tmp_path, "id,a,b,c\n1,,1,1\n2,1,inf,1\n3,,2,1\n4,1,1,1\n")
    msg = _error(path)
    assert "3 rows" in msg and "'a' (2)" in msg and "'b' (1)" in msg and "'c'" not in msg
    assert "missing='mean'" in msg
    # a horizontal job fills with the federation's pooled means, not this file's (the advice says which)
    assert "this file's column means" not in msg and "pooled" in msg


def test_all_missing_column_cannot_be_imputed(tmp_path) -> None:
    msg = _error(_write(tmp_path, "id,a,b\n1,,1\n2,,2\n"), missing="mean")
    assert "'a'" in msg and "no finite values" in msg


def test_non_numeric_features_named(tmp_path) -> None:
    msg = _error(_write(tmp_path, "id,a,city,b,when\n1,1,Oslo,2,2024-01-01\n2,2,Rome,3,2024-02-01\n"))
    assert "'city'" in msg and "'when'" in msg and "'a'" not in msg and "exclude" in msg


def test_duplicate_ids_count_and_example(tmp_path) -> None:
    msg = _error(_write(tmp_path, "id,a\n1,1\n2,2\n2,3\n5,4\n5,5\n5,6\n"))
    assert "2 duplicated ids" in msg and "3 extra rows" in msg and "'2'" in msg


def test_empty_ids(tmp_path) -> None:
    msg = _error(_write(tmp_path, "id,a\n1,1\n,2\n"))
    assert "empty in 1 rows" in msg


def test_forbidden_label_on_feature_holder(tmp_path) -> None:
    msg = _error(_write(tmp_path, GOOD), forbid_label="y")
    assert "'y'" in msg and "must not hold the label" in msg


def test_duplicate_header(tmp_path) -> None:
    assert "duplicate column names" in _error(_write(tmp_path, "id,a,a\n1,1,2\n"))


def test_feature_list_problems(tmp_path) -> None:
    path = _write(tmp_path, GOOD)
    assert "not found: 'zzz'" in _error(path, features=["a", "zzz"])
    assert "leaks" in _error(path, label_col="y", features=["a", "y"])
    assert "more than once" in _error(path, features=["a", "a"])
    assert "exclude names columns" in _error(path, exclude=["nope"])
    assert "no feature columns" in _error(path, label_col="y", exclude=["a", "b"])


def test_config_errors(tmp_path) -> None:
    path = _write(tmp_path, GOOD)
    with pytest.raises(ConfigError, match="missing='median'"):
        load_party_table(path, party="p", id_col="id", missing="median")
    with pytest.raises(ConfigError, match="no label column"):
        load_party_table(path, party="p", id_col="id", require_label=True)


# --- check_same_features ----------------------------------------------------------------------

def test_same_features_pass() -> None:
    check_same_features({"a": ["x", "y"], "b": ["x", "y"], "c": ["x", "y"]})
    check_same_features({"only": ["x"]})


def test_same_features_accepts_tables(tmp_path) -> None:
    t1 = load_party_table(_write(tmp_path, GOOD, "1.csv"), party="b1", id_col="id", label_col="y")
    t2 = load_party_table(_write(tmp_path, "id,y,b,a\n1,0,1,2\n", "2.csv"), party="b2", id_col="id",
                          label_col="y")
    with pytest.raises(DataError, match="same columns, different order"):
        check_same_features({"b1": t1, "b2": t2})


@pytest.mark.parametrize("other, expected", [
    (["x", "z"], "position 1: 'y' at 'bank1' vs 'z' at 'bank2'"),
    (["x"], "2 features at 'bank1' vs 1 at 'bank2'"),
    (["x", "y", "w"], "position 2: (nothing) at 'bank1' vs 'w' at 'bank2'"),
    (["y", "x"], "different order"),
])
def test_same_features_first_difference(other, expected) -> None:
    with pytest.raises(DataError) as info:
        check_same_features({"bank1": ["x", "y"], "bank2": other})
    assert expected in str(info.value) and "\n" not in str(info.value)


# --- id_test_mask -----------------------------------------------------------------------------

def test_id_mask_basic() -> None:
    np.testing.assert_array_equal(id_test_mask(np.arange(11)), np.arange(11) % 5 == 0)
    np.testing.assert_array_equal(id_test_mask(["10", " 007", "0015", "-5", "3"]),
                                  [True, False, True, True, False])
    assert id_test_mask(np.array([], dtype=object)).shape == (0,)
    np.testing.assert_array_equal(id_test_mask([1, 2, 3, 4], modulus=2, remainder=1),
                                  [True, False, True, False])


def test_id_mask_big_ids_exact() -> None:
    big = 10**30 + 5
    np.testing.assert_array_equal(id_test_mask([str(big), str(big + 1)]), [True, False])


@pytest.mark.parametrize("ids", [["1", "C-17"], ["1", "2.5"], np.array([1.0, 2.5]), [True, False],
                                 np.array([1, 2.5], dtype=object), ["1", ""]])
def test_id_mask_rejects_non_integers(ids) -> None:
    with pytest.raises(DataError, match="not an integer|booleans"):
        id_test_mask(ids)


def test_id_mask_on_text_ids_names_the_rule_that_works() -> None:
    # the fix for text keys is the hashed split (any id type), which the spec and Federation.split offer
    with pytest.raises(DataError, match=r"'C0001'.*evaluation.test_fraction"):
        id_test_mask(["C0001", "C0002"], party="lender")


def test_id_mask_bad_rule() -> None:
    with pytest.raises(ConfigError):
        id_test_mask([1, 2], modulus=0)
    with pytest.raises(ConfigError):
        id_test_mask([1, 2], modulus=5, remainder=5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=-(10**20), max_value=10**20), max_size=40),
       st.integers(min_value=1, max_value=12), st.data())
def test_id_mask_matches_python_modulo(values, modulus, data) -> None:
    remainder = data.draw(st.integers(min_value=0, max_value=modulus - 1))
    expected = [v % modulus == remainder for v in values]
    as_text = np.array([str(v) for v in values], dtype=object)
    assert list(id_test_mask(as_text, modulus, remainder)) == expected
    small = [v for v in values if abs(v) < 2**62]
    assert list(id_test_mask(np.array(small, dtype=np.int64), modulus, remainder)) == \
        [v % modulus == remainder for v in small]


def test_id_mask_agrees_with_loaded_ids(tmp_path) -> None:
    path = _write(tmp_path, "id,a\n" + "".join(f"{i},{i}\n" for i in range(20)))
    t = load_party_table(path, party="p", id_col="id")
    assert id_test_mask(t.ids).sum() == 4


def test_id_mask_error_names_the_party() -> None:
    with pytest.raises(DataError, match="party 'payco': id 'C-17'"):
        id_test_mask(["1", "C-17"], party="payco")


# --- shapes found by bug hunting (horizontal federation) -----------------------------------------

DISPLAY = 'id,y,amount,region\n1,0,"1,234.50",north\n2,1,"12,000.00",south\n3,0,"987.10",north\n4,1,"2,500.75",south\n'


@pytest.mark.parametrize("kw", [{}, {"encoding": "onehot", "categorical": ["region"]}, {"encoding": "codes"}])
def test_amounts_written_for_display_are_named_not_taken_for_categories(tmp_path, kw) -> None:
    """'1,234.50' is an amount exported for reading; as a category it would be garbage, and the
    decimal-comma advice would be wrong: the message names the column and an example value."""
    msg = _error(_write(tmp_path, DISPLAY), label_col="y", **kw)
    assert "'amount'" in msg and "'1,234.50'" in msg and "export them as plain numbers" in msg
    assert "decimal" not in msg and "categor" not in msg


def test_decimal_commas_under_category_encoding_say_set_decimal(tmp_path) -> None:
    path = _write(tmp_path, 'id;y;amount;region\n1;0;1,5;north\n2;1;2,25;south\n3;0;3;north\n', "semi.csv")
    msg = _error(path, label_col="y", sep=";", encoding="onehot", categorical=["region"])
    assert "'amount'" in msg and "set decimal = ','" in msg and "--decimal ','" in msg
    t = load_party_table(path, party="bank1", id_col="id", label_col="y", sep=";", decimal=",", encoding="onehot",
                         categorical=["region"])
    assert t.X[:, t.feature_names.index("amount")].tolist() == [1.5, 2.25, 3.0]


def test_missing_advice_replaces_the_job_spec_advice(tmp_path) -> None:
    path = _write(tmp_path, "id,a\n1,0.5\n2,\n")
    msg = _error(path, missing_advice="fill them before scoring")
    assert msg.endswith("fill them before scoring") and "missing='mean'" not in msg


def test_a_blank_column_is_refused_by_default_and_kept_when_allowed(tmp_path) -> None:
    from fedrisk.data.loading import load_party_frame

    path = _write(tmp_path, "id,y,a,b\n1,0,0.5,\n2,1,1.5,\n")
    with pytest.raises(DataError, match="'b' have no values at all"):
        load_party_frame(path, party="bank1", id_col="id", label_col="y")
    f = load_party_frame(path, party="bank1", id_col="id", label_col="y", allow_empty=True)
    assert f.feature_names == ["a", "b"] and f.X["b"].isna().all()


def test_parquet_dates_are_named_as_dates(tmp_path) -> None:
    path = tmp_path / "bank.parquet"
    pd.DataFrame({"id": [1, 2], "y": [0, 1], "a": [0.5, 1.5],
                  "opened": pd.to_datetime(["2020-01-31", "2021-06-30"])}).to_parquet(path, index=False)
    for kw in ({}, {"encoding": "codes"}):
        msg = _error(path, label_col="y", **kw)
        assert "'opened'" in msg and "are dates" in msg and "categor" not in msg


def test_label_coding_does_not_depend_on_which_classes_a_file_holds():
    """A bank without defaults sends the same coding as the others (else the coordinator learns its count)."""
    from fedrisk.data.loading import label_coding

    mapping = {"good": 0, "bad": 1}
    assert label_coding(["good", "bad", "good"], mapping) == ["good", "bad"]
    assert label_coding(["good", "good"], mapping) == ["good", "bad"]
    assert label_coding(["good", "bad"], {"good": 0, "fair": 0, "bad": 1}) is None  # two non-default values
    assert label_coding(["good", "bad", "good"], "bad") == ["good", "bad"]


def test_numbers_stored_as_text_load_as_numbers(tmp_path) -> None:
    # one bank's Parquet export keeps an amount as text ("1169.0", blanks, padding): the same numbers
    # its partners store as floats, not a text column to refuse or to split into categories
    df = pd.DataFrame({"id": [1, 2, 3, 4], "y": [0, 1, 0, 1], "amount": ["1169.0", " 5951 ", "", "-2.5e3"],
                       "code": ["a", "b", "a", "b"]})
    path = tmp_path / "bank.parquet"
    df.to_parquet(path)
    t = load_party_table(path, party="bank1", id_col="id", label_col="y", features=["amount"], missing="keep")
    np.testing.assert_array_equal(t.X[:, 0], [1169.0, 5951.0, np.nan, -2500.0])
    # a declared categorical column of digits stays categorical (codes are not amounts)
    df["grade"] = ["1", "2", "1", "3"]
    df.to_parquet(path)
    t = load_party_table(path, party="bank1", id_col="id", label_col="y", features=["amount", "grade"],
                         missing="keep", categorical=["grade"], encoding="codes")
    assert t.categories and "grade" in t.categories
    # real text is still refused with the advice
    msg = _error(path, label_col="y", features=["code"])
    assert "non-numeric feature columns: 'code'" in msg


def test_raw_feature_list_with_agreed_categories_fixes_the_column_order(tmp_path) -> None:
    # a horizontal bank whose file has another column order lists its raw columns (features = [...]),
    # as the schema error advises; with one-hot categories that list was read as the model's encoded
    # names and refused ("cannot be made from this file's categories")
    housing = {"name": "housing", "groups": [["own"], ["rent"]], "levels": ["own", "rent"], "has_missing": False,
               "other": -1}
    path = _write(tmp_path, "id,housing,y,amount\n1,own,0,10\n2,rent,1,20\n3,rent,0,30\n")
    t = load_party_table(path, party="bank1", id_col="id", label_col="y", features=["amount", "housing"],
                         categories={"housing": housing}, encoding="onehot")
    assert t.feature_names == ["amount", "housing=rent"]
    np.testing.assert_array_equal(t.X, [[10, 0], [20, 1], [30, 1]])
    # scoring still takes the model's encoded names, in the model's order
    t = load_party_table(path, party="predict", id_col="id", label_col=None, features=["housing=rent", "amount"],
                         categories={"housing": housing}, encoding="onehot")
    assert t.feature_names == ["housing=rent", "amount"]


@pytest.mark.parametrize("how", ["mean", "fill"])
def test_one_feature_column_with_missing_cells_is_filled_not_read_only(tmp_path, how):
    """A file with exactly one float feature and some empty cells: the one-column matrix pandas hands back can be
    a read-only view, and filling it (missing='mean', or the training means at scoring) raised numpy's
    "assignment destination is read-only"."""
    n = 40
    text = "id,y,s\n" + "".join(f"{i},{i % 2},{'' if i % 7 == 0 else i * 1.5}\n" for i in range(n))
    path = tmp_path / "one.csv"
    path.write_text(text)
    kw = {"missing": "mean"} if how == "mean" else {"missing": "reject", "fill": {"s": 2.5}}
    table = load_party_table(path, party="a", id_col="id", label_col="y", **kw)
    X = np.asarray(table.X)
    assert X.shape == (n, 1) and np.isfinite(X).all()
    if how == "fill":
        assert (X[::7, 0] == 2.5).all()
