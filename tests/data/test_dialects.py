"""CSV dialects (separator, decimal mark) and label codings that are not 0/1."""
from __future__ import annotations

import numpy as np
import pytest

from fedrisk.data.loading import load_party_frame, load_party_table
from fedrisk.errors import ConfigError, DataError


def _write(tmp_path, text, name="bank.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_semicolon_file_read_with_the_default_says_which_separator(tmp_path):
    path = _write(tmp_path, "id;y;a\n1;0;0,5\n2;1;1,5\n")
    with pytest.raises(DataError) as info:
        load_party_table(path, party="bank1", id_col="id", label_col="y")
    msg = str(info.value)
    assert "looks ';'-separated: set sep = ';'" in msg and "'bank1'" in msg and "\n" not in msg


def test_semicolon_and_decimal_comma_load(tmp_path):
    path = _write(tmp_path, "id;y;a;b\n1;0;0,5;10\n2;1;1,5;20\n")
    t = load_party_table(path, party="bank1", id_col="id", label_col="y", sep=";", decimal=",")
    np.testing.assert_array_equal(t.X, [[0.5, 10], [1.5, 20]])
    f = load_party_frame(path, party="bank1", id_col="id", label_col="y", sep=";", decimal=",")
    assert f.X["a"].tolist() == [0.5, 1.5]


def test_decimal_commas_without_the_setting_are_named(tmp_path):
    path = _write(tmp_path, "id;y;a\n1;0;0,5\n2;1;1,5\n")
    with pytest.raises(DataError, match="decimal commas: set decimal = ','"):
        load_party_table(path, party="bank1", id_col="id", label_col="y", sep=";")


def test_tab_separated_hint(tmp_path):
    path = _write(tmp_path, "id\ty\n1\t0\n")
    with pytest.raises(DataError, match=r"looks '\\t'-separated"):
        load_party_table(path, party="bank1", id_col="id")


def test_text_labels_with_positive(tmp_path):
    path = _write(tmp_path, "id,y,a\n1,good,1\n2,bad,2\n3, bad ,3\n")
    with pytest.raises(DataError, match="positive = "):
        load_party_table(path, party="bank1", id_col="id", label_col="y")
    t = load_party_table(path, party="bank1", id_col="id", label_col="y", positive="bad")
    assert t.y.tolist() == [0, 1, 1] and t.y.dtype == np.int8
    t = load_party_table(path, party="bank1", id_col="id", label_col="y", positive={"bad": 1, "good": 0})
    assert t.y.tolist() == [0, 1, 1]
    with pytest.raises(DataError, match="never holds positive = 'default'"):
        load_party_table(path, party="bank1", id_col="id", label_col="y", positive="default")
    with pytest.raises(DataError, match="does not cover"):
        load_party_table(path, party="bank1", id_col="id", label_col="y", positive={"bad": 1})
    with pytest.raises(ConfigError):
        load_party_table(path, party="bank1", id_col="id", label_col="y", positive={"bad": 2, "good": 0})


def test_one_two_coding(tmp_path):
    path = _write(tmp_path, "id,y,a\n1,1,1\n2,2,2\n3,2,3\n")
    with pytest.raises(DataError, match="positive = 2 for a 1/2 coding"):
        load_party_table(path, party="bank1", id_col="id", label_col="y")
    assert load_party_table(path, party="bank1", id_col="id", label_col="y", positive=2).y.tolist() == [0, 1, 1]
    three = _write(tmp_path, "id,y,a\n1,1,1\n2,2,2\n3,3,3\n", "three.csv")
    with pytest.raises(DataError, match="more than two classes"):
        load_party_table(three, party="bank1", id_col="id", label_col="y", positive=2)


def test_keep_columns_are_read_but_not_features(tmp_path):
    path = _write(tmp_path, "id,y,a,is_test\n1,0,1,0\n2,1,2,1\n")
    t = load_party_table(path, party="bank1", id_col="id", label_col="y", keep=["is_test"])
    assert t.feature_names == ["a"] and t.extra["is_test"].tolist() == [0, 1]
    with pytest.raises(DataError, match="test_column"):
        load_party_table(path, party="bank1", id_col="id", label_col="y", keep=["split"])


def test_semicolon_file_whose_decimal_commas_break_the_rows_says_which_separator(tmp_path):
    """Read with ',', a ';' file with decimal commas does not even parse (rows of different widths):
    the parse error says which separator the header uses, and the flag of fedrisk predict."""
    path = _write(tmp_path, "id;y;a;b\n1;0;0,5;10\n2;1;1,5;2,5\n")
    for load in (load_party_table, load_party_frame):
        with pytest.raises(DataError) as info:
            load(path, party="bank1", id_col="id", label_col="y")
        msg = str(info.value)
        assert "\n" not in msg and "looks ';'-separated: set sep = ';'" in msg and "--sep ';'" in msg


def test_a_party_without_defaults_is_told_how_to_say_so(tmp_path):
    # a bank whose rows are all goods this period cannot be told apart from a typo in positive; the
    # line says how to declare both values, and that declaration loads the bank
    path = _write(tmp_path, "id,y,a\n1,good,1\n2,good,2\n")
    with pytest.raises(DataError, match=r'no defaults.*positive = \{ "bad" = 1, "good" = 0 \}') as info:
        load_party_table(path, party="bank1", id_col="id", label_col="y", positive="bad")
    assert "\n" not in str(info.value)
    from fedrisk.runtime.abort_reason import redact

    assert "good" not in redact(str(info.value), keep=["bank1", "bad"])  # a partner's copy names no value
    t = load_party_table(path, party="bank1", id_col="id", label_col="y", positive={"bad": 1, "good": 0})
    assert t.y.tolist() == [0, 0] and t.label_coding == ["good", "bad"]


# --- bank exports: trailing separators, display-formatted numbers, spreadsheet errors ----------------------------

def _bank_rows(n=40, seed=3):
    """A small bank export as rows of text cells: id, an amount above 1000, a ratio, and a 0/1 label."""
    rng = np.random.default_rng(seed)
    return [(f"{1000 + i}", float(np.round(rng.uniform(1000, 90000), 2)), float(np.round(rng.uniform(0, 1), 4)),
             int(rng.random() < 0.3)) for i in range(n)]


def test_a_separator_at_the_end_of_every_data_row_does_not_shift_the_columns(tmp_path):
    """Mainframe and SAS exports often end every data row with the separator but not the header; pandas then takes
    the first column for the index and every column shifts one to the left (the id gets the amounts)."""
    rows = _bank_rows()
    path = _write(tmp_path, "id,amount,ratio,y\n" + "".join(f"{i},{a},{r},{y},\n" for i, a, r, y in rows))
    t = load_party_table(path, party="bank1", id_col="id", label_col="y")
    assert t.ids.tolist() == [r[0] for r in rows] and t.feature_names == ["amount", "ratio"]
    np.testing.assert_array_equal(t.X, [[a, r] for _, a, r, _ in rows])
    assert t.y.tolist() == [r[3] for r in rows]
    semi = _write(tmp_path, "id;amount;ratio;y;\n" + "".join(f"{i};{a};{r};{y};\n" for i, a, r, y in rows), "semi.csv")
    for loaded in (load_party_table(semi, party="bank1", id_col="id", label_col="y", sep=";"),
                   load_party_frame(semi, party="bank1", id_col="id", label_col="y", sep=";")):
        assert loaded.feature_names == ["amount", "ratio"]  # a trailing separator in the header too: no blank column
    extra = _write(tmp_path, "id,amount,ratio,y\n1,5.0,0.5,0,7\n2,6.0,0.2,1,\n", "extra.csv")
    with pytest.raises(DataError, match=r"more fields than the header") as info:
        load_party_table(extra, party="bank1", id_col="id", label_col="y")
    assert "'bank1'" in str(info.value) and "\n" not in str(info.value)


def test_a_column_without_a_header_name_is_dropped_when_blank_and_named_by_position_otherwise(tmp_path):
    path = _write(tmp_path, "id,amount,,y,,\n1,5.0,,0,,\n2,6.0,,1,,\n")
    t = load_party_table(path, party="bank1", id_col="id", label_col="y")
    assert t.feature_names == ["amount"] and t.X[:, 0].tolist() == [5.0, 6.0]
    named = _write(tmp_path, "id,amount,,y\n1,5.0,x,0\n2,6.0,,1\n", "named.csv")
    with pytest.raises(DataError, match=r"column 3 has no name in the header but holds values"):
        load_party_table(named, party="bank1", id_col="id", label_col="y")


@pytest.mark.parametrize("shown", [
    lambda a: f'"{a:,.0f}"',            # thousands separators without decimals: not decimal commas
    lambda a: f"{a:.2f} EUR",           # a currency code after the amount
    lambda a: f"USD {a:.2f}",
    lambda a: f"{a / 1000:.1f}%",       # a percentage
    lambda a: f"({a:.2f})",             # an accounting negative
    lambda a: f"{a:.2f}-",              # a trailing minus, as SAP writes negatives
    lambda a: f"{a:,.0f}".replace(",", "\u202f"),  # no-break spaces between thousands (French spreadsheets)
])
def test_numbers_written_for_display_are_refused_as_such_in_tables_and_frames(tmp_path, shown):
    """A column of '12,629' / '12.5%' / '(120.50)' is an amount a spreadsheet formatted for reading: taken for a
    category it is garbage, and '12,629' is not a decimal comma (following that advice in a ';' file reads 12.629)."""
    rows = _bank_rows()
    path = _write(tmp_path, "id,amount,ratio,y\n" + "".join(f"{i},{shown(a)},{r},{y}\n" for i, a, r, y in rows))
    for load in (lambda: load_party_table(path, party="bank1", id_col="id", label_col="y"),
                 lambda: load_party_table(path, party="bank1", id_col="id", label_col="y", encoding="onehot"),
                 lambda: load_party_frame(path, party="bank1", id_col="id", label_col="y", categorical=[])):
        with pytest.raises(DataError) as info:
            load()
        msg = str(info.value)
        assert "'amount'" in msg and "written for display" in msg and "export them as plain numbers" in msg, msg
        assert "set decimal" not in msg and "categor" not in msg, msg


def test_thousands_without_decimals_in_a_semicolon_file_name_both_readings(tmp_path):
    """'12,629' in a ';' file is thousands separators or a three-decimal comma: only the bank knows which."""
    path = _write(tmp_path, "id;amount;y\n1;12,629;0\n2;800;1\n3;1,250;0\n")
    with pytest.raises(DataError) as info:
        load_party_table(path, party="bank1", id_col="id", label_col="y", sep=";")
    msg = str(info.value)
    assert "written for display" in msg and "if the comma is the decimal mark, set decimal = ','" in msg


@pytest.mark.parametrize("marker", ["#DIV/0!", "#VALUE!", "#NUM!", "#REF!"])
def test_spreadsheet_error_cells_among_numbers_are_placeholders_to_declare(tmp_path, marker):
    rows = _bank_rows()
    path = _write(tmp_path, "id,amount,ratio,y\n" + "".join(
        f"{i},{a},{marker if k % 9 == 0 else r},{y}\n" for k, (i, a, r, y) in enumerate(rows)))
    with pytest.raises(DataError) as info:
        load_party_table(path, party="bank1", id_col="id", label_col="y", missing="mean")
    assert f"na_values = [\"{marker}\"]" in str(info.value) and "categor" not in str(info.value)
    t = load_party_table(path, party="bank1", id_col="id", label_col="y", missing="mean", na_values=[marker])
    assert np.isfinite(t.X).all() and "ratio" in t.imputed


def test_a_zero_one_label_kept_as_text_is_read_as_numbers(tmp_path):
    """A frame read with dtype=str (to keep ids' leading zeros) or a Parquet export writing every column as text
    holds the label as "0"/"1": numbers as text, read as the features are; a 1/2 coding as text still asks for
    positive = 2 instead of being called 'not numeric'."""
    import pandas as pd

    frame = pd.DataFrame({"id": ["007", "008", "009"], "y": ["0", " 1", "1.0"], "a": ["1.5", "2", "3"]})
    frame.to_parquet(tmp_path / "text.parquet")
    t = load_party_table(tmp_path / "text.parquet", party="bank1", id_col="id", label_col="y")
    assert t.y.tolist() == [0, 1, 1] and t.ids.tolist() == ["007", "008", "009"] and t.label_coding is None
    assert load_party_frame(tmp_path / "text.parquet", party="bank1", id_col="id", label_col="y").y.tolist() == [0, 1, 1]
    frame.assign(y=["1", "2", "2"]).to_parquet(tmp_path / "twelve.parquet")
    with pytest.raises(DataError, match="positive = 2 for a 1/2 coding"):
        load_party_table(tmp_path / "twelve.parquet", party="bank1", id_col="id", label_col="y")
    t = load_party_table(tmp_path / "twelve.parquet", party="bank1", id_col="id", label_col="y", positive=2)
    assert t.y.tolist() == [0, 1, 1]


def test_dot_thousands_in_a_decimal_comma_file_are_not_read_as_decimals(tmp_path):
    """A German export (sep ';', decimal ',') writes 12629 as '12.629': it loaded as 12.629 next to '800' as 800,
    a silently mixed scale. It is refused as a number written for display, naming the other reading."""
    path = _write(tmp_path, "id;amount;ratio;y\n1;12.629;0,5;0\n2;800;0,25;1\n3;1.250;0,75;0\n")
    for load in (lambda: load_party_table(path, party="bank1", id_col="id", label_col="y", sep=";", decimal=","),
                 lambda: load_party_frame(path, party="bank1", id_col="id", label_col="y", sep=";", decimal=",",
                                          categorical=[])):
        with pytest.raises(DataError) as info:
            load()
        msg = str(info.value)
        assert "'amount'" in msg and "written for display (e.g. '12.629'" in msg, msg
        assert "if '.' is the decimal mark, remove decimal = ','" in msg, msg
    # '.' decimals with more or fewer than three digits are not thousands: read as before
    other = _write(tmp_path, "id;amount;ratio;y\n1;12628.66;0,5;0\n2;800.5;0,25;1\n", "other.csv")
    t = load_party_table(other, party="bank1", id_col="id", label_col="y", sep=";", decimal=",")
    np.testing.assert_array_equal(t.X, [[12628.66, 0.5], [800.5, 0.25]])


def test_scoring_frames_refuse_display_numbers_in_the_models_numeric_columns(tmp_path):
    """`fedrisk predict --sep ';' --decimal ','` of a scorecard on a German file: the frame kept '12.629' as text and
    the bins read it as 12.629. With the model's numeric columns named, the load refuses it as at training."""
    path = _write(tmp_path, "id;amount;grade\n1;12.629;A\n2;800;B\n3;1.250;A\n")
    kw = dict(party="predict", id_col="id", require_label=False, allow_empty=True, sep=";", decimal=",")
    with pytest.raises(DataError, match=r"'amount' look like numbers written for display \(e.g. '12.629'"):
        load_party_frame(path, numeric=["amount"], **kw)
    ok = _write(tmp_path, "id;amount;grade\n1;12629;A\n2;800,5;B\n", "ok.csv")
    assert load_party_frame(ok, numeric=["amount"], **kw).X["amount"].tolist() == [12629.0, 800.5]


def test_a_spreadsheet_separator_hint_line_is_skipped_or_named(tmp_path):
    """Excel writes (and reads) a first line "sep=;" in CSVs meant for it: it is neither the header nor a row."""
    path = _write(tmp_path, "sep=;\r\nid;amount;y\r\n1;5,5;0\r\n2;6,5;1\r\n")
    t = load_party_table(path, party="bank1", id_col="id", label_col="y", sep=";", decimal=",")
    assert t.feature_names == ["amount"] and t.X[:, 0].tolist() == [5.5, 6.5] and t.y.tolist() == [0, 1]
    assert load_party_frame(path, party="bank1", id_col="id", label_col="y", sep=";", decimal=",").n_rows == 2
    with pytest.raises(DataError) as info:
        load_party_table(path, party="bank1", id_col="id", label_col="y")
    msg = str(info.value)
    assert "first line 'sep=;'" in msg and "set sep = ';'" in msg and "\n" not in msg, msg
    from fedrisk.data.loading import iter_id_chunks

    ids = np.concatenate(list(iter_id_chunks(path, "id", party="bank1", rows=1, sep=";")))
    assert ids.tolist() == ["1", "2"]
    trailing = _write(tmp_path, "id;amount;y\n7;5,5;0;\n8;6,5;1;\n", "trailing.csv")
    assert np.concatenate(list(iter_id_chunks(trailing, "id", party="bank1", sep=";"))).tolist() == ["7", "8"]


_ADVICE_CASES = [
    ("sep=;\nid;y;a\n1;0;0.5\n2;1;1.5\n", {}, "set sep = ';'"),  # a spreadsheet's separator line
    ("id;y;a\n1;0;0.5\n2;1;1.5\n", {}, "set sep = ';'"),  # another separator in the header
    ("id;y;a\n1;0;12,629\n2;1;13,100\n", {"sep": ";"}, "set decimal = ','"),  # a thousands group or three decimals
    ("id,y,a\n" + "".join(f"{i},{i % 2},{i}.5\n" for i in range(20)) + "20,0,?\n", {}, "na_values = [\"?\"]"),
]


@pytest.mark.parametrize("loader, text, opts, setting", [
    *[(load_party_table, *case) for case in _ADVICE_CASES],
    (load_party_table, "id;y;a\n1;0;0,5\n2;1;1,5\n", {"sep": ";"}, "set decimal = ','"),  # decimal commas (a frame
    *[(load_party_frame, *case) for case in _ADVICE_CASES],  # keeps such text for binning: only display numbers)
])
def test_the_advice_names_where_this_files_dialect_is_set(tmp_path, loader, text, opts, setting):
    """The evaluation.test file's sep / decimal / na_values are set in the [evaluation] table; its refusals say
    so instead of sending the user to the holder's own table (where the fix would break the holder's file)."""
    from fedrisk.data.loading import EVALUATION_SETTINGS, PARTY_SETTINGS

    path = _write(tmp_path, text)
    extra = {"categorical": []} if loader is load_party_frame else {}
    for place in (PARTY_SETTINGS, EVALUATION_SETTINGS):
        with pytest.raises(DataError) as e:
            loader(path, party="bank2", id_col="id", label_col="y", settings_at=place, **opts, **extra)
        msg = str(e.value)
        assert setting in msg and place in msg and "\n" not in msg, msg
        assert (PARTY_SETTINGS in msg) == (place == PARTY_SETTINGS)
