"""Ids as spreadsheets export them, and rows a spreadsheet leaves blank.

* A CSV whose every id is an integer written with a ``.0`` decimal part (Excel's ``123.0``) reads
  as the integers, as the same floats in Parquet always did; a column where only some ids are
  written so stays as written (which of the two a partner uses is unknowable), and so do codes
  with leading zeros. The chunked id reader of streaming and unbalanced PSI gives the same ids.
* Rows with no value in any cell (``;;;``, empty spreadsheet rows) are dropped with one count
  note; a row with values but an empty id is still refused.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedrisk.data.loading import iter_id_chunks, load_party_frame, load_party_table
from fedrisk.errors import DataError


def _csv(tmp_path, ids, name="bank.csv", blank_rows=0, sep=","):
    rows = [f"{i}{sep}{k % 2}{sep}{k * 0.5}" for k, i in enumerate(ids)]
    path = tmp_path / name
    path.write_text(f"id{sep}y{sep}a\n" + "\n".join(rows) + "\n" + f"{sep}{sep}\n" * blank_rows)
    return path


def test_every_id_an_integral_decimal_reads_as_the_integers_as_in_parquet(tmp_path):
    ints = [1000 + 7 * k for k in range(30)] + [-5, 0]
    csv = _csv(tmp_path, [f"{i}.0" if k % 2 else f"{i}.00" for k, i in enumerate(ints)])
    table = load_party_table(csv, party="bank1", id_col="id", label_col="y")
    assert table.ids.tolist() == [str(i) for i in ints]
    # the same ids as floats in Parquet: the loader has always read them as these integers
    parquet = tmp_path / "bank.parquet"
    pd.DataFrame({"id": np.array(ints, dtype=float), "y": [k % 2 for k in range(32)],
                  "a": np.arange(32) * 0.5}).to_parquet(parquet)
    assert load_party_table(parquet, party="bank1", id_col="id", label_col="y").ids.tolist() == table.ids.tolist()
    # one note in the party's own log: a count, never an id
    notes = [n for n in table.notes if "id" in n]
    assert len(notes) == 1 and "32 ids" in notes[0] and "'id'" in notes[0], table.notes
    assert not any(str(i) in notes[0] for i in ints if abs(i) > 9)
    frame = load_party_frame(csv, party="bank1", id_col="id", label_col="y")
    assert frame.ids.tolist() == table.ids.tolist() and frame.notes == notes


@pytest.mark.parametrize("ids", [
    ["1.0", "2", "3.0"],  # some written as decimals: which form a partner uses is unknowable
    ["00123.0", "00124.0"],  # codes with their leading zeros
    ["00123", "00124"],
    ["1.5", "2.0"],  # not integers
    ["1.", "2."],
    ["1e3", "2e3"],
    ["C1.0", "C2.0"],
])
def test_ids_not_all_integral_decimals_stay_as_written(tmp_path, ids):
    table = load_party_table(_csv(tmp_path, ids), party="bank1", id_col="id", label_col="y")
    assert table.ids.tolist() == ids
    assert not [n for n in table.notes if "ids" in n]


def test_a_mixed_id_column_still_gets_the_small_intersection_warning(caplog):
    """A partial export (some ids '12.0') is left as written and the PSI's diagnostic still names it."""
    from fedrisk.algorithms.vertical.alignment import describe_id_formats

    assert "2 written as decimal numbers like 12.0" in describe_id_formats(np.array(["1.0", "2", "3.0"], dtype=object))


@pytest.mark.parametrize("ids", [
    [f"{1000 + k}.0" for k in range(23)],  # all integral decimals: read as integers
    [f"{1000 + k}.0" for k in range(20)] + ["1020", "1021", "1022"],  # the first chunks all decimals, not the rest
    ["1000"] + [f"{1001 + k}.0" for k in range(22)],  # the first chunk mixed
    [f"{1000 + k}" for k in range(23)],
])
@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_the_chunked_id_reader_gives_the_loaded_tables_ids(tmp_path, ids, kind):
    """Streaming and unbalanced PSI read the ids in chunks; a chunk cannot tell whether every id of the file is an
    integral decimal, so the reader must still give exactly the ids the table load gives (else the intersection
    differs between the two paths)."""
    path = _csv(tmp_path, ids, blank_rows=2)
    if kind == "parquet":
        df = pd.read_csv(path, dtype={"id": str})
        path = tmp_path / "bank.parquet"
        df.to_parquet(path)
    loaded = load_party_table(path, party="bank1", id_col="id", label_col="y").ids.tolist()
    for rows in (4, 1000):
        assert np.concatenate(list(iter_id_chunks(path, "id", party="bank1", rows=rows))).tolist() == loaded


def test_rows_of_only_separators_are_dropped_with_a_count_note(tmp_path):
    path = tmp_path / "bank.csv"
    path.write_text("id;y;a;b\n1;0;0,5;x\n;;;\n2;1;1,5;y\n3;0;2,5;x\n;;;\n ; ;;\n")
    for load in (load_party_table, load_party_frame):
        kw = {"categorical": ["b"], "encoding": "codes"} if load is load_party_table else {}
        t = load(path, party="bank1", id_col="id", label_col="y", sep=";", decimal=",", **kw)
        assert t.ids.tolist() == ["1", "2", "3"] and t.y.tolist() == [0, 1, 0]
        notes = [n for n in t.notes if "blank" in n or "no value" in n]
        assert len(notes) == 1 and "3 rows" in notes[0], t.notes
    assert np.concatenate(list(iter_id_chunks(path, "id", party="bank1", rows=2, sep=";"))).tolist() == ["1", "2", "3"]
    parquet = tmp_path / "bank.parquet"
    pd.DataFrame({"id": ["1", None, "2"], "y": [0, None, 1], "a": [0.5, None, 1.5]}).to_parquet(parquet)
    t = load_party_table(parquet, party="bank1", id_col="id", label_col="y")
    assert t.ids.tolist() == ["1", "2"] and len([n for n in t.notes if "1 rows" in n]) == 1


@pytest.mark.parametrize("row", [";1;0,5", ";;0,5", ";1;"])
def test_a_row_with_values_but_no_id_is_still_refused(tmp_path, row):
    path = tmp_path / "bank.csv"
    path.write_text(f"id;y;a\n1;0;0,5\n{row}\n2;1;1,5\n;;\n")
    with pytest.raises(DataError, match=r"id column 'id' is empty in 1 rows \(first at data row 2\)"):
        load_party_table(path, party="bank1", id_col="id", label_col="y", sep=";", decimal=",")
    with pytest.raises(DataError, match=r"id column 'id' is empty at data row 2"):
        list(iter_id_chunks(path, "id", party="bank1", rows=1, sep=";"))


def test_a_file_of_blank_rows_only_says_it_has_no_data_rows(tmp_path):
    path = tmp_path / "bank.csv"
    path.write_text("id;y;a\n;;\n;;\n")
    with pytest.raises(DataError, match="no data rows"):
        load_party_table(path, party="bank1", id_col="id", label_col="y", sep=";")


def test_placeholder_only_rows_are_blank_in_both_readers(tmp_path):
    """With na_values = ["?"], a row of placeholders only has no value either; the chunked reader agrees."""
    path = tmp_path / "bank.csv"
    path.write_text("id;y;a\n1;0;0,5\n ? ;?;?\n2;1;?\n")
    t = load_party_table(path, party="bank1", id_col="id", label_col="y", sep=";", decimal=",", na_values=["?"],
                         missing="mean")
    assert t.ids.tolist() == ["1", "2"] and [n for n in t.notes if "1 rows with no value" in n]
    chunks = iter_id_chunks(path, "id", party="bank1", rows=1, sep=";", na_values=["?"])
    assert np.concatenate(list(chunks)).tolist() == ["1", "2"]
