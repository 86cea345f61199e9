"""A failing party tells its partners why — without a customer id, a value or a local path.

Attack (issue 12, item 3): a bank whose file holds a duplicated customer id fails; before the fix
its ``ctl.abort`` carried ``'CUST-…' appears 2 times`` and the local file path to every partner,
which logged both. These tests capture what the partners actually receive (in memory and over
gRPC + mTLS) and look for the id and the path.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedrisk.data.loading import load_party_table
from fedrisk.errors import DataError, FedriskError, TransportError
from fedrisk.runtime.abort_reason import redact, wire_reason
from fedrisk.runtime.threads import run_roles

SECRET_ID = "CUST-SECRET-0042"


def _dup_file(tmp: Path) -> Path:
    ids = [f"CUST-{i:04d}" for i in range(40)] + [SECRET_ID, SECRET_ID]
    rng = np.random.default_rng(0)
    path = tmp / "private_dir_bank2" / "bank2_customers.csv"
    path.parent.mkdir()
    pd.DataFrame({"cid": ids, "y": rng.integers(0, 2, len(ids)), "x0": rng.normal(size=len(ids))}).to_csv(path, index=False)
    return path


def test_local_error_names_the_id_but_the_partner_sees_only_the_check_and_counts(tmp_path):
    path = _dup_file(tmp_path)
    seen: dict[str, str] = {}

    def failing(ch):
        load_party_table(path, party="bank2", id_col="cid", label_col="y")

    def partner(ch):
        try:
            ch.recv("bank2", "never.sent", timeout=30)
        except TransportError as e:
            seen[ch.me] = str(e)

    with pytest.raises(DataError) as info:
        run_roles({"bank1": partner, "bank2": failing, "coordinator": partner})
    local = str(info.value)
    assert SECRET_ID in local and "bank2_customers.csv" in local  # the owner's own operator sees it all
    assert set(seen) == {"bank1", "coordinator"}
    for text in seen.values():
        assert "bank2" in text and "DataError" in text and "duplicated ids" in text
        assert "appears 2 times" in text  # counts stay
        assert SECRET_ID not in text and "CUST-" not in text
        assert "private_dir_bank2" not in text and "bank2_customers" not in text and str(tmp_path) not in text


@pytest.mark.parametrize("message, leaked", [
    ("id column 'cid' has 1 duplicated ids, e.g. 'CUST-1' appears 2 times", ["CUST-1"]),
    ("party 'bank2', file '/home/ops/data/b.csv': bad", ["/home", "b.csv"]),
    ("cannot read /srv/bank/x.parquet (permission denied)", ["/srv", "x.parquet"]),
    ("non-integer id (e.g. 12345.5)", ["12345.5"]),
    ("account 123456789012 is odd", ["123456789012"]),
    ("value np.float64(3.25) out of range", ["3.25"]),
    ("line one\nforged: line two", ["\n"]),
])
def test_redact_removes_ids_values_and_paths(message, leaked):
    out = redact(message, keep=["bank2"])
    for token in leaked:
        assert token not in out
    assert "'bank2'" in out or "bank2" not in message


def test_a_cell_text_named_in_na_values_advice_does_not_reach_partners(tmp_path):
    """A number column holding a few text cells is refused with advice naming them (na_values = [...] and
    `fedrisk predict --na-values ...`). The TOML list quoted them, but the shell form quoted a cell only when
    the shell needed it, so `--na-values unknown` (or a name typed into an amount column) reached every
    partner's log through the abort reason, which redacts quoted text only."""
    path = tmp_path / "bureau.csv"
    debt = [f"{1000 + 7.5 * v:.2f}" for v in range(200)] + ["JaneRoe", "n/a.x", "-"]
    pd.DataFrame({"id": range(len(debt)), "debt": debt}).to_csv(path, index=False)
    with pytest.raises(DataError) as info:
        load_party_table(path, party="bureau", id_col="id", encoding="onehot")  # as a vertical party loads
    local, sent = str(info.value), wire_reason("bureau", info.value)
    assert "JaneRoe" in local and "--na-values" in local
    for cell in ("JaneRoe", "n/a.x", " - "):
        assert cell not in sent, sent


@pytest.mark.parametrize("labels, positive, local_detail", [
    ([0, 1, None, 0, None, 1, 0, 0], None, "empty in 2 rows"),
    ([1, 2, 2, 1, 2, 2, 2, 2], None, "distinct values: 1, 2"),
    ([1, 2, 3, 1, 2, 2, 2, 2], 2, "more than two classes"),
], ids=["blank", "one-two", "three"])
def test_a_label_column_refused_at_load_reaches_partners_as_the_labels_summary(tmp_path, labels, positive, local_detail):
    """A lender with some blank labels: partners read "label column '…' is empty in 7 rows" (found with a
    7-blank lender over mTLS), and a 1/2 coding without positive sent "distinct values: 1, 2". The README
    promises that a partner never sees the label holder's label counts in an abort message: label errors at
    load now travel as the labels summary, the full line staying in the label holder's log."""
    from fedrisk.runtime.abort_reason import LABELS_SUMMARY

    path = tmp_path / "lender.csv"
    pd.DataFrame({"id": range(len(labels)), "y": pd.array(labels, dtype="Int64"), "a": range(len(labels))}).to_csv(
        path, index=False)
    with pytest.raises(DataError) as info:
        load_party_table(path, party="lender", id_col="id", label_col="y", positive=positive)
    assert local_detail in str(info.value)
    sent = wire_reason("lender", info.value)
    assert LABELS_SUMMARY in sent and local_detail not in sent and "label column" not in sent, sent


def test_non_fedrisk_errors_send_only_their_class():
    text = wire_reason("bank1", KeyError("CUST-9"))
    assert "KeyError" in text and "CUST-9" not in text


def test_wire_reason_keeps_public_names_and_counts():
    e = DataError("party 'bank2': only 3 of 'x0' rows are finite; 17 rows dropped")
    text = wire_reason("bank2", e, keep=["bank2", "x0"])
    assert text.startswith("bank2: DataError:") and "'x0'" in text and "17 rows" in text


@pytest.mark.e2e
def test_partner_logs_and_ledgers_over_mtls_hold_no_id_and_no_path(tmp_path):
    """A real `fedrisk simulate` run: bank2's duplicated id and path reach no other process's files."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tasks"))
    from test_horizontal_lr_e2e import small_federation

    def mutate(name, df):
        df["id"] = [f"CUST-{name}-{i:05d}" for i in range(len(df))]
        if name == "bank2":
            df.loc[5, "id"] = SECRET_ID
            df.loc[6, "id"] = SECRET_ID
        return df

    spec = small_federation(tmp_path, mutate=mutate, rounds=1)
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "fedrisk", "simulate", str(spec), "--out", str(run)],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 2, r.stdout + r.stderr
    assert SECRET_ID in r.stderr  # bank2's own error line, shown to bank2's operator
    # what the other participants' processes wrote (the simulate-only job.toml copy is no one's)
    others = [p for p in run.rglob("*") if p.is_file() and any(o in p.name for o in ("bank1", "bank3", "coordinator"))]
    assert any("aborted the job" in p.read_text(errors="replace") for p in others), [p.name for p in others]
    for p in others:
        text = p.read_text(errors="replace")
        assert SECRET_ID not in text, p
        assert "bank2.csv" not in text, p  # (a party may log its own path, never a partner's)


def _in_memory_vertical_job(tmp_path: Path, name: str, kind: str, y: np.ndarray, seed: int):
    """A lender (label ``y``, one feature) and a payco (one feature) on the same ids, test rows
    ``id % 5 == 0``; returns the in-memory network (capturing) and the roles running ``kind``."""
    import importlib
    import logging
    import textwrap

    from fedrisk.runtime.context import PartyContext, ProgressLog
    from fedrisk.runtime.spec import load_spec
    from fedrisk.transport.channel import InMemoryNetwork

    task = importlib.import_module("fedrisk.tasks." + kind.replace(".", "_"))
    rng = np.random.default_rng(seed)
    ids = np.arange(len(y))
    pd.DataFrame({"id": ids, "y": y, "a": rng.normal(size=len(y))}).to_csv(tmp_path / "lender.csv", index=False)
    pd.DataFrame({"id": ids, "b": rng.normal(size=len(y))}).to_csv(tmp_path / "payco.csv", index=False)
    (tmp_path / "job.toml").write_text(textwrap.dedent(f"""
        [federation]
        name = "{name}"
        [parties.lender]
        address = "127.0.0.1:1"
        data = "lender.csv"
        label = "y"
        [parties.payco]
        address = "127.0.0.1:2"
        data = "payco.csv"
        [task]
        kind = "{kind}"
        [evaluation]
        test_rule = "id % 5 == 0"
        """))
    spec = load_spec(tmp_path / "job.toml")
    net = InMemoryNetwork(list(spec.parties), job=spec.job_id, capture=True, tag_prefixes=task.TAG_PREFIXES)

    def role(party):
        def go(ch):
            log = logging.getLogger(f"t.{party}")
            task.run(PartyContext(name=party, spec=spec, channel=ch, out=tmp_path / "run", log=log,
                                  progress=ProgressLog(None, log)))
        return go

    return net, {p: role(p) for p in spec.parties}


def test_a_label_holder_error_about_its_labels_reaches_partners_as_a_summary(tmp_path):
    """Found with rare bads: "all 791 test rows ... are goods (0)" went to every feature holder in
    the abort, i.e. the label of every test row (the feature holder knows which rows they are).
    Run through the task glue in memory; inspect what the feature holder actually received."""
    rng = np.random.default_rng(2)
    ids = np.arange(300)
    y = (rng.random(len(ids)) < 0.3).astype(int)
    y[ids % 5 == 0] = 0  # no bad among the test rows
    net, roles = _in_memory_vertical_job(tmp_path, "labels-stay", "vertical.lr", y, seed=2)
    with pytest.raises(FedriskError) as err:
        run_roles(roles, network=net)
    local = str(err.value)
    assert "goods (0)" in local and "test_fraction" in local  # the label holder's own line has the detail
    received = net["payco"].mailbox.failure  # the abort reason the feature holder was given
    assert received and "lender" in received
    received += " " + " ".join(str(e.body) for e in net["payco"].captured)
    reason = wire_reason("lender", err.value, ["lender", "payco"])
    for text in (reason, received):
        assert "goods" not in text and "(0)" not in text and "60 test rows" not in text, text
    assert "do not suit the settings" in reason and "class" not in reason and "test rows" not in reason


@pytest.mark.parametrize("kind", ["vertical.lr", "vertical.secureboost", "vertical.scorecard", "vertical.woe"])
def test_training_rows_of_one_class_reach_partners_as_a_summary_in_every_vertical_task(tmp_path, kind):
    """Every aligned training row a good, the test rows mixed: each vertical task refuses through the
    one helper (``vertical_roles.refuse_one_class``); the feature holder reads no class and no row set."""
    from fedrisk.runtime.abort_reason import LABELS_SUMMARY

    ids = np.arange(200)
    y = np.where(ids % 5 == 0, ids % 2, 0)  # training rows all good; test rows both classes
    net, roles = _in_memory_vertical_job(tmp_path, "one-class", kind, y, seed=3)
    with pytest.raises(DataError) as err:
        run_roles(roles, network=net)
    assert "only label 0" in str(err.value) and "'lender'" in str(err.value)  # the label holder's own line
    reason = wire_reason("lender", err.value, ["lender", "payco"])
    received = (net["payco"].mailbox.failure or "") + " " + " ".join(str(e.body) for e in net["payco"].captured)
    assert LABELS_SUMMARY in reason
    for text in (reason, received):
        assert "label 0" not in text and "only label" not in text, text
