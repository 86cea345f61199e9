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
