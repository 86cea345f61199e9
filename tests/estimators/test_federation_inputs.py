"""Vertical federations from DataFrames shaped as notebook users have them.

* The customer id as the DataFrame's (named) index, as after ``df.set_index("cid")``: refused with
  "no id column" although the ids were there.
* A label coded "good"/"bad" without ``positive``: the error said to set it "for this party in the job
  spec", which a notebook has no copy of; it now also says how in Python (``party_options``)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import fedrisk as fr
from fedrisk.errors import DataError


def _frames(n=300, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"C-{i:05d}" for i in range(n)]
    x = rng.normal(size=(n, 3))
    y = np.where(x[:, 0] + x[:, 2] + rng.normal(size=n) > 0.8, "bad", "good")
    lender = pd.DataFrame({"cid": ids, "status": y, "a": x[:, 0], "b": x[:, 1]})
    bureau = pd.DataFrame({"cid": ids, "c": x[:, 2]}).sample(frac=1, random_state=1)
    return lender, bureau


def test_the_id_as_a_named_index_is_the_id_column():
    lender, bureau = _frames()
    opts = {"lender": {"positive": "bad"}}
    by_col = fr.Federation.vertical({"lender": lender, "bureau": bureau}, id="cid", label="status", party_options=opts)
    by_idx = fr.Federation.vertical({"lender": lender.set_index("cid"), "bureau": bureau.set_index("cid")}, id="cid",
                                    label="status", party_options=opts)
    a = fr.LogisticRegression(l2=0.01, solver="exact").fit(by_col)
    b = fr.LogisticRegression(l2=0.01, solver="exact").fit(by_idx)
    assert np.allclose(a.coef_, b.coef_, atol=1e-6)


def test_an_unnamed_or_other_index_still_needs_the_id_column():
    lender, bureau = _frames()
    with pytest.raises(DataError, match="no id column 'cid'"):
        fr.Federation.vertical({"lender": lender.drop(columns="cid"), "bureau": bureau}, id="cid", label="status")


def test_label_coding_advice_names_the_python_setting():
    lender, bureau = _frames()
    fed = fr.Federation.vertical({"lender": lender, "bureau": bureau}, id="cid", label="status")
    with pytest.raises(DataError) as info:
        fr.LogisticRegression().fit(fed)
    msg = str(info.value)
    assert "\n" not in msg and "positive" in msg and "party_options={'lender': {'positive':" in msg, msg


def _from_spec(folder, spec_text: str):
    """The in-process Federation of a job spec written into ``folder`` beside its data files."""
    (folder / "job.toml").write_text(spec_text, encoding="utf-8")
    return fr.Federation.from_spec(folder / "job.toml", processes=False)


def test_from_spec_takes_parties_that_name_their_id_column_differently(tmp_path):
    """Partners rarely name the customer key alike (``cid`` at the lender, ``customer`` at the bureau):
    the job spec says each party's ``id``, and ``fedrisk simulate`` runs it, but ``Federation.from_spec``
    refused the same spec ("the parties name different id columns"). Each party's id column is now the
    federation's id (the label holder's name), so the notebook trains and scores what the CLI does."""
    lender, bureau = _frames()
    bureau = bureau.rename(columns={"cid": "customer"})
    bureau["customer"] = " " + bureau["customer"] + " "  # the PSI's normalisation trims, as the CLI's does
    lender.to_csv(tmp_path / "lender.csv", index=False)
    bureau.to_csv(tmp_path / "bureau.csv", index=False)
    fed = _from_spec(tmp_path, '[federation]\nname = "ids-named-apart"\nseed = 0\n'
                     '[parties.lender]\naddress = "127.0.0.1:1"\ndata = "lender.csv"\nid = "cid"\nlabel = "status"\n'
                     'positive = "bad"\n[parties.bureau]\naddress = "127.0.0.1:2"\ndata = "bureau.csv"\nid = "customer"\n'
                     '[task]\nkind = "vertical.lr"\n[evaluation]\ntest_fraction = 0.2\n')
    assert fed.id == "cid" and all("cid" in df.columns for df in fed.parties.values())
    train, test = fed.split()
    # the federation a notebook user builds from the same tables with the key renamed: the same rows split alike
    same = fr.Federation.vertical({"lender": lender, "bureau": bureau.rename(columns={"customer": "cid"})}, id="cid",
                                  label="status", name="ids-named-apart", party_options={"lender": {"positive": "bad"}})
    for mine, theirs in zip(fed.split(), same.split()):
        for n in ("lender", "bureau"):
            assert mine.parties[n]["cid"].str.strip().tolist() == theirs.parties[n]["cid"].str.strip().tolist()
    a = fr.LogisticRegression(l2=0.01, solver="exact").fit(train)
    p = a.predict_proba(test)[:, 1]
    assert len(p) == len(test.parties["lender"]) and np.isfinite(p).all()
    # a party whose table already holds a column of that name cannot take it as its id: one line says so
    bureau.assign(cid=1.0).to_csv(tmp_path / "bureau.csv", index=False)
    with pytest.raises(fr.ConfigError) as info:
        fr.Federation.from_spec(tmp_path / "job.toml", processes=False)
    assert "'bureau'" in str(info.value) and "'cid'" in str(info.value) and "\n" not in str(info.value)


def test_a_table_mixing_numbers_and_placeholder_text_is_read_as_the_cli_reads_the_file():
    """A bank's amount column holding floats and "?" cells (an object column, as after
    ``df.loc[m, "income"] = "?"``) crashed the fit with pyarrow's ArrowInvalid (the in-process job
    writes each table to Parquet). It is written as text, so the loader says what ``fedrisk
    simulate`` says of such a CSV: name ``na_values``; with ``na_values=["?"]`` the cells are missing
    values and the model is the one trained on blanks."""
    rng = np.random.default_rng(2)
    banks = {}
    for b, n in (("bank1", 120), ("bank2", 90)):
        x = rng.normal(size=(n, 2))
        y = (x[:, 0] + rng.normal(size=n) > 0.5).astype(int)
        banks[b] = pd.DataFrame({"id": np.arange(n), "y": y, "income": np.round(np.exp(x[:, 0]) * 1e4, 2),
                                 "age": rng.integers(20, 70, n)})
    blank = banks["bank2"].index[:5]
    banks["bank2"].loc[blank, "income"] = np.nan
    marked = dict(banks)
    marked["bank2"] = banks["bank2"].assign(income=banks["bank2"]["income"].astype(object))
    marked["bank2"].loc[blank, "income"] = "?"
    plain = dict(missing="mean", secure_aggregation=False)
    with pytest.raises(DataError) as info:
        fr.LogisticRegression().fit(fr.Federation.horizontal(marked, **plain))
    msg = str(info.value)
    assert "'bank2'" in msg and "'income'" in msg and "na_values" in msg and "\n" not in msg, msg
    a = fr.LogisticRegression().fit(fr.Federation.horizontal(marked, na_values=["?"], **plain))
    b = fr.LogisticRegression().fit(fr.Federation.horizontal(banks, **plain))
    assert np.allclose(a.coef_, b.coef_, rtol=0, atol=1e-12)


def _two_banks(seed: int) -> dict[str, pd.DataFrame]:
    """Two small banks (150 and 100 rows, ids apart) with a 0/1 label driven by column ``a``."""
    rng = np.random.default_rng(seed)
    frames = {}
    for b, n in (("bank1", 150), ("bank2", 100)):
        x = rng.normal(size=(n, 2))
        frames[b] = pd.DataFrame({"id": np.arange(n) + (0 if b == "bank1" else 1000),
                                  "y": (x[:, 0] + rng.normal(size=n) > 0.3).astype(int), "a": x[:, 0], "b": x[:, 1]})
    return frames


def _fits_as_in_memory(folder, frames: dict[str, pd.DataFrame], name: str, bank2_lines: str) -> None:
    """``from_spec`` of a two-bank spec (bank2's table: ``bank2_lines``) fits the model of the same frames in memory."""
    fed = _from_spec(folder, f'[federation]\nname = "{name}"\nseed = 0\n[coordinator]\naddress = "127.0.0.1:1"\n'
                     '[parties.bank1]\naddress = "127.0.0.1:2"\ndata = "bank1.csv"\nid = "id"\nlabel = "y"\n'
                     f'[parties.bank2]\naddress = "127.0.0.1:3"\ndata = "bank2.csv"\n{bank2_lines}\n'
                     '[task]\nkind = "horizontal.lr"\n[security]\nsecure_aggregation = false\n')
    a = fr.LogisticRegression().fit(fed)
    b = fr.LogisticRegression().fit(fr.Federation.horizontal(frames, name=name, secure_aggregation=False))
    assert np.allclose(a.coef_, b.coef_, rtol=0, atol=1e-12)


def test_from_spec_takes_banks_that_name_their_id_and_label_columns_differently(tmp_path):
    """A horizontal spec whose bank2 calls its columns ``acct`` / ``default`` (``fedrisk simulate`` runs it)
    made ``from_spec`` fail with "every bank needs the label column 'y'; missing at ['bank2']"."""
    frames = _two_banks(3)
    frames["bank1"].to_csv(tmp_path / "bank1.csv", index=False)
    frames["bank2"].rename(columns={"id": "acct", "y": "default"}).to_csv(tmp_path / "bank2.csv", index=False)
    _fits_as_in_memory(tmp_path, frames, "named-apart", 'id = "acct"\nlabel = "default"')


def test_from_spec_reads_each_file_as_the_party_processes_do(tmp_path):
    """``from_spec`` read the files with its own pandas call: a ';' export closing every line with the separator
    gave an 'Unnamed: 4' column (the job refused it) where ``fedrisk simulate`` loads the file, and one with a
    spreadsheet's 'sep=;' first line took that line for the header. It now reads them with the loader's reader."""
    frames = _two_banks(5)
    frames["bank1"].to_csv(tmp_path / "bank1.csv", index=False)
    text = frames["bank2"].to_csv(index=False, sep=";", decimal=",").replace("\n", ";\r\n")
    (tmp_path / "bank2.csv").write_text("sep=;\r\n" + text)
    _fits_as_in_memory(tmp_path, frames, "dialects", 'id = "id"\nlabel = "y"\nsep = ";"\ndecimal = ","')
