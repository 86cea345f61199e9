"""A partner's ids exported by a spreadsheet (``123.0`` for ``123``) align with integer ids.

The loader reads a column of such ids as the integers (as it reads integral floats in Parquet), so
the PSI of the job, the unbalanced PSI's pre-encoded set (read in chunks) and the scoring loads all
see the same ids, and nothing about them leaves the party beyond what the PSI always sends.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from fedrisk.algorithms.vertical.alignment import align_parties, alignment_salt
from fedrisk.data.loading import load_party_table
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork
from fedrisk.transport.codec import encode

#: customer keys of 13 digits (what a card or account number looks like; far from any other number in a message)
BASE = 4_400_000_000_000


def _files(tmp_path, lender_ids, payco_ids):
    rng = np.random.default_rng(3)
    lender = pd.DataFrame({"id": lender_ids, "y": rng.integers(0, 2, len(lender_ids)), "a": rng.normal(size=len(lender_ids))})
    payco = pd.DataFrame({"id": payco_ids, "b": rng.normal(size=len(payco_ids))})
    lender.to_csv(tmp_path / "lender.csv", index=False)
    payco.to_csv(tmp_path / "payco.csv", index=False)
    return tmp_path / "lender.csv", tmp_path / "payco.csv"


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _align(tables):
    net = InMemoryNetwork(["lender", "payco"], job="j", capture=True, tag_prefixes=("psi",))
    logs = {n: logging.getLogger(f"test.excel_ids.{n}") for n in tables}
    lines = {}
    for n, log in logs.items():
        lines[n] = _Lines()
        log.addHandler(lines[n])
        log.setLevel(logging.INFO)
        for note in tables[n].notes:  # as the tasks log a table's notes
            log.warning(note)
    try:
        res = run_roles({n: (lambda ch, n=n: align_parties(ch, "lender", ["payco"], tables[n].ids,
                                                              salt=alignment_salt("j"), log=logs[n]))
                         for n in tables}, network=net)
    finally:
        for n, log in logs.items():
            log.removeHandler(lines[n])
    return res, net, {n: h.lines for n, h in lines.items()}


def test_a_spreadsheets_decimal_ids_align_with_a_partners_integers_and_stay_private(tmp_path):
    common = BASE + np.arange(0, 300, 3)
    lender_ids = [f"{i}.0" for i in np.concatenate([common, BASE + 10_000 + np.arange(20)])]
    payco_ids = [str(i) for i in np.concatenate([common[::-1], BASE + 20_000 + np.arange(30)])]
    lpath, ppath = _files(tmp_path, lender_ids, payco_ids)
    tables = {"lender": load_party_table(lpath, party="lender", id_col="id", label_col="y"),
              "payco": load_party_table(ppath, party="payco", id_col="id")}
    res, net, lines = _align(tables)
    assert res["lender"].size == res["payco"].size == len(common)  # every shared customer, none lost to ".0"
    assert (tables["lender"].ids[res["lender"].indices] == tables["payco"].ids[res["payco"].indices]).all()
    assert any("100 ids" not in l and "120 ids written as integers" in l for l in lines["lender"])
    # what crossed: the PSI's blinded points and sizes, never an id (as written or as read) nor the note
    secrets = {s.encode() for s in [*lender_ids, *payco_ids, *map(str, tables["lender"].ids)]}
    for party in ("lender", "payco"):
        blob = b"".join(encode(e.job, e.sender, e.to, e.tag, e.kind, e.body) for e in net[party].captured)
        assert blob and not [s for s in secrets if s in blob]
        assert b"written as integers" not in blob
        # the log lines (each party's own, what an operator may forward) hold counts only
        assert not [l for l in lines[party] if any(s.decode() in l for s in secrets)]


def test_a_partly_decimal_column_is_left_as_written_and_the_small_intersection_warns(tmp_path):
    """Some ids '123.0', the others '123': which form the partner uses is unknowable, so nothing is rewritten and the
    PSI's warning (at the party, counts only) names the decimals, as before."""
    common = BASE + np.arange(100)
    lender_ids = [f"{i}.0" if k % 2 else str(i) for k, i in enumerate(common)]
    lpath, ppath = _files(tmp_path, lender_ids, [str(i) for i in common])
    tables = {"lender": load_party_table(lpath, party="lender", id_col="id", label_col="y"),
              "payco": load_party_table(ppath, party="payco", id_col="id")}
    assert tables["lender"].ids.tolist() == lender_ids and not tables["lender"].notes
    res, _, lines = _align(tables)
    assert res["lender"].size == 50
    warning = [l for l in lines["lender"] if "only 50 of this party's 100 rows" in l]
    assert len(warning) == 1 and "50 written as decimal numbers like 12.0" in warning[0]
    assert not any(str(i) in warning[0] for i in common)


@pytest.mark.parametrize("rows", [7, 1000])
def test_the_unbalanced_psis_encoded_set_holds_the_ids_the_job_loads(tmp_path, rows):
    """The key holder encodes its id file in chunks ahead of the job; the job compares that set's fingerprint with
    the ids its table load gives, so both reads must give the same ids (blank rows and '.0' ids included)."""
    from fedrisk.algorithms.vertical import ub_store
    from fedrisk.crypto import psi

    ids = [f"{BASE + k}.0" for k in range(40)]
    path, _ = _files(tmp_path, ids, ["1"])
    path.write_text(path.read_text() + ",,\n,,\n")
    key = ub_store.create_key(tmp_path / "store", "bureau")
    head = ub_store.encode_id_file(tmp_path / "store", "bureau", path, "id", rows=rows)
    encoded = ub_store.read_header(ub_store.epoch_dir(tmp_path / "store", key.epoch) / "index.bin")
    table = load_party_table(path, party="bureau", id_col="id", label_col="y")
    loaded = table.ids
    assert loaded.tolist() == [str(BASE + k) for k in range(40)]
    # the encoder says what reading changed, as the job's load does (it has no party log: `fedrisk psi encode`
    # prints them), counts only
    assert head["notes"] == table.notes and len(head["notes"]) == 2
    assert "2 rows with no value in any cell" in head["notes"][0] and "40 ids written as integers" in head["notes"][1]
    assert encoded["ids_sum"] == ub_store.ids_sum(ub_store.index_digests(psi.normalize_ids(loaded), key))


def test_scoring_reads_new_rows_ids_as_training_did(tmp_path, caplog):
    """`fedrisk predict` of a vertical model loads the new rows with the task's scoring load: a spreadsheet's '.0'
    ids are read as integers there too (the partner's rows are found), with the note in this party's log."""
    from fedrisk.runtime.inference import warn_unseen
    from fedrisk.runtime.spec import load_spec
    from fedrisk.tasks import vertical_roles, vertical_scorecard

    lpath, _ = _files(tmp_path, [str(BASE + k) for k in range(30)], [str(BASE + k) for k in range(30)])
    spec_path = tmp_path / "job.toml"
    spec_path.write_text('[federation]\nname = "v"\n[parties.lender]\naddress = "127.0.0.1:1"\ndata = "lender.csv"\n'
                         'label = "y"\n[parties.payco]\naddress = "127.0.0.1:2"\ndata = "payco.csv"\n'
                         '[task]\nkind = "vertical.lr"\n')
    spec = load_spec(spec_path)
    # a feature holder's rows (`fedrisk serve`), the label holder's of a model scoring raw rows (the label holder of
    # an LR or tree model reads its rows with load_party_table itself, whose ids the loader tests cover)
    for load, party, col in ((vertical_roles.load_table, "payco", "b"), (vertical_scorecard.load_scoring_rows, "lender", "a")):
        new = tmp_path / f"new-{party}.csv"
        new.write_text(f"id,{col}\n" + "".join(f"{BASE + k}.0,{k / 10}\n" for k in range(5)) + ",\n")
        table = load(spec, party, new, [col])
        assert list(table.ids) == [str(BASE + k) for k in range(5)]
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="test.scoring"):
            warn_unseen(table, party, logging.getLogger("test.scoring"))
        said = [r.getMessage() for r in caplog.records]
        assert [s for s in said if "5 ids written as integers" in s] and [s for s in said if "1 rows with no value" in s]
        assert not [s for s in said if str(BASE) in s]


def test_a_vertical_job_aligns_every_row_of_a_spreadsheet_export(tmp_path, caplog):
    """The lender's file as Excel writes it (ids '17.0', two empty rows at the end): the vertical WOE job aligns
    every shared customer, splits test rows by the integer rule, and says what it read in the lender's log only."""
    from tests.tasks.test_woe_tasks import run_in_process, vertical_german

    spec, pooled = vertical_german(tmp_path, task_extra='reveal = "bins"\nkey_bits = 2048')
    lender = pd.read_csv(tmp_path / "lender.csv")
    lender.assign(id=lender["id"].map(lambda i: f"{i}.0")).to_csv(tmp_path / "lender.csv", index=False)
    with open(tmp_path / "lender.csv", "a") as f:
        f.write("," * (lender.shape[1] - 1) + "\n" + "," * (lender.shape[1] - 1) + "\n")
    with caplog.at_level(logging.WARNING):
        m = run_in_process(spec, tmp_path / "run")
    assert m["intersection"]["size"] == len(pooled) and m["rows"] == int((pooled.id % 5 != 0).sum())
    said = {n: [r.getMessage() for r in caplog.records if r.name == f"test.{n}"] for n in ("lender", "payco", "bureau")}
    assert [s for s in said["lender"] if f"{len(lender)} ids written as integers" in s]
    assert [s for s in said["lender"] if "2 rows with no value in any cell" in s]
    assert not [s for n in ("payco", "bureau") for s in said[n] if "written as integers" in s or "no value" in s]
