"""A column blank in every row of a scoring batch is part of ``fedrisk predict``'s output, in both federations.

Before: a horizontal ``fedrisk predict`` logged the warning through Python's last-resort handler (stderr
only, a line a scheduled job's log easily drops), and a vertical feature holder's warning went to its
own log only (a spawned process's log file, or another host) -- the user running ``predict`` at the
label holder never saw that a partner's field was missing from the whole batch. Now the command prints
every batch warning with its result, and a feature holder that names its reasons (``task.name_reasons``)
tells the label holder which of its columns were blank (:mod:`fedrisk.algorithms.vertical.blank_columns`;
the others share nothing of it: the label holder picks the batch, so even a count is about applicants).
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import fedrisk as fr
from fedrisk.algorithms.vertical.blank_columns import relay_blank_columns
from fedrisk.cli import app
from fedrisk.runtime.predict import batch_warnings
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork
from tests.runtime.test_predict_blank_columns import FEATURES, _card
from tests.tasks.test_woe_tasks import german_frame


def test_horizontal_predict_prints_the_blank_column_warning_in_its_output(tmp_path):
    german = _card(tmp_path)  # a horizontal scorecard's scorecard.json
    german[["id", *FEATURES]].head(500).assign(age_in_years=np.nan).to_csv(tmp_path / "b.csv", index=False)
    r = CliRunner().invoke(app, ["predict", str(tmp_path / "scorecard.json"), str(tmp_path / "b.csv"),
                                 "--out", str(tmp_path / "o.csv")])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("warning: party 'predict': feature column ['age_in_years'] is blank in all 500 rows "
                               "scored; every row scores it as the missing bin"), r.stdout
    assert r.stdout.count("warning:") == 1 and r.stdout.index("warning:") < r.stdout.index("scored 500 rows")
    assert "blank in all" not in r.stderr  # once, with the result
    german[["id", *FEATURES]].head(1).assign(age_in_years=np.nan).to_csv(tmp_path / "one.csv", index=False)
    r = CliRunner().invoke(app, ["predict", str(tmp_path / "scorecard.json"), str(tmp_path / "one.csv"),
                                 "--out", str(tmp_path / "o1.csv")])
    assert r.exit_code == 0 and "warning" not in r.output  # one applicant without a field: no alarm


def _relay(frames: dict[str, pd.DataFrame], named: set[str]):
    net = InMemoryNetwork(list(frames), capture=True, tag_prefixes=("vsc.",))
    hosts = [p for p in frames if p != "lender"]
    out = run_roles({p: (lambda p: lambda ch: relay_blank_columns(
        ch, "lender", hosts, frames[p], list(frames[p].columns), p in named, tag="vsc.predict"))(p)
        for p in frames}, network=net)
    return out["lender"], net


def test_the_label_holder_learns_blank_columns_only_from_a_partner_that_names_its_reasons():
    """The label holder picks the batch (a pair of applicants: whether both lack a field), so a count is a fact
    about applicants: only a partner that already names its reasons per applicant shares it."""
    rng = np.random.default_rng(0)
    n = 50
    frames = {"lender": pd.DataFrame({"income": rng.normal(size=n)}),
              "payco": pd.DataFrame({"card_limit": np.full(n, np.nan), "late_90d": np.full(n, np.nan),
                                     "tenure": rng.normal(size=n)}),
              "bureau": pd.DataFrame({"inquiries": np.full(n, np.nan), "score": rng.normal(size=n)}),
              "telco": pd.DataFrame({"arpu": rng.normal(size=n)})}
    notes, net = _relay(frames, named={"bureau", "telco"})
    assert notes == [
        "party 'bureau': feature column ['inquiries'] is blank in all 50 rows scored; every row scores it as the "
        "missing bin -- ask bureau to check its data feed if the batch should carry that field"]
    # what the label holder actually received: nothing from payco (it does not name its reasons)
    got = {env.sender: env.body for env in net["lender"].captured if env.tag == "vsc.predict.blank"}
    assert got == {"payco": {"rows": 50, "count": None, "columns": None},
                   "bureau": {"rows": 50, "count": 1, "columns": ["inquiries"]},
                   "telco": {"rows": 50, "count": 0, "columns": []}}
    assert {env.kind for env in net["lender"].captured} == {"aggregate"}
    assert not any(net[p].captured for p in ("payco", "bureau", "telco"))  # feature holders learn nothing
    # one aligned row: one applicant without a field is normal, nothing is said (nor sent by name)
    one, net = _relay({p: f.head(1) for p, f in frames.items()}, named={"bureau"})
    assert one == [] and all(env.body["count"] is None for env in net["lender"].captured)


def test_a_vertical_feature_holders_blank_column_reaches_the_label_holders_output():
    """The notebook's scoring collects the same warnings ``fedrisk predict`` prints (:func:`batch_warnings`):
    the bureau's column blank in every scored row is reported at the label holder, by name (it names its reasons)."""
    german = german_frame().head(500)
    train, test = fr.Federation.vertical({"lender": german[["id", "y", "duration_in_month", "housing"]],
                                          "bureau": german[["id", "age_in_years", "purpose"]]},
                                         id="id", label="y").split()
    card = fr.Scorecard(max_iter=5, iv_threshold=0.0, name_reasons=["bureau"]).fit(train)
    assert "purpose" in card.features_
    blank = test._with({"lender": test.parties["lender"], "bureau": test.parties["bureau"].assign(purpose=np.nan)})
    with batch_warnings() as notes:
        card.predict_proba(blank)
    n = len(test.parties["bureau"])
    relayed = [m for m in notes if "ask bureau to check its data feed" in m]
    assert relayed == [f"party 'bureau': feature column ['purpose'] is blank in all {n} rows scored; every row scores "
                       "it as the missing bin -- ask bureau to check its data feed if the batch should carry that field"], notes
    with batch_warnings() as quiet:
        card.predict_proba(test)
    assert not [m for m in quiet if "blank in all" in m]


@pytest.mark.extended(covered_by="tests/runtime/test_predict_batch_warnings.py::"
                                 "test_a_vertical_feature_holders_blank_column_reaches_the_label_holders_output")
def test_vertical_fedrisk_predict_prints_a_feature_holders_blank_column(tmp_path):
    """End to end over mTLS processes: the feature holder is a spawned process whose log the user never reads."""
    from tests.tasks.test_woe_tasks import vertical_german

    spec, _ = vertical_german(tmp_path, kind="vertical.scorecard",
                              task_extra='epochs = 3\niv_threshold = 0.01\nname_reasons = ["payco"]')
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "fedrisk", "simulate", str(spec), "--out", str(out)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    new = tmp_path / "new.csv"
    pd.read_csv(tmp_path / "lender.csv").drop(columns="y").head(120).to_csv(new, index=False)
    blanked = json.loads((out / "scorecard-payco.json").read_text())["features"][0]
    pd.read_csv(tmp_path / "payco.csv").assign(**{blanked: np.nan}).to_csv(tmp_path / "payco.csv", index=False)
    r = subprocess.run([sys.executable, "-m", "fedrisk", "predict", str(out / "scorecard-lender.json"), str(new),
                        "--out", str(tmp_path / "s.csv")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    warned = [line for line in r.stdout.splitlines() if line.startswith("warning: party 'payco'")]
    assert len(warned) == 1 and f"feature column [{blanked!r}] is blank in all" in warned[0], r.stdout


@pytest.mark.parametrize("body", [[1, 2], {"rows": 5, "count": -1, "columns": []}, {"rows": True, "count": 0},
                                  {"rows": 5, "count": 1, "columns": ["a", "b"]}, {"rows": 5, "count": 1, "columns": [""]},
                                  {"rows": 10**9, "count": 1, "columns": ["a"]}, {"rows": 5, "count": 1, "columns": None}])
def test_a_malformed_blank_column_message_is_one_protocol_error(body):
    from fedrisk.errors import FedriskError

    net = InMemoryNetwork(["lender", "payco"], tag_prefixes=("vsc.",))
    roles = {"lender": lambda ch: relay_blank_columns(ch, "lender", ["payco"], pd.DataFrame({"a": range(5)}), [], False,
                                                      "vsc.predict"),
             "payco": lambda ch: ch.send("lender", "vsc.predict.blank", body, kind="aggregate")}
    with pytest.raises(FedriskError, match=r"vsc.predict.blank from 'payco' should"):
        run_roles(roles, network=net)


def test_a_feature_holder_without_the_blank_column_message_is_refused_at_the_handshake():
    """A feature holder of the previous scoring layout would never send ``vsc.predict.blank``: the label holder
    refuses it at the start in one line instead of waiting out the receive timeout."""
    from fedrisk.errors import ConfigError
    from fedrisk.runtime.handshake import handshake
    from fedrisk.runtime.inference import _session_settings

    model = {"job": "j", "format": "fedrisk.vertical.scorecard", "parties": {"lender": "a", "payco": "b"}, "run_id": "r"}
    new = _session_settings(model, "s1")
    old = {k: v for k, v in new.items() if k != "inference_layout"}
    net = InMemoryNetwork(["lender", "payco"], tag_prefixes=("ctl.",))
    with pytest.raises(ConfigError, match=r"participant 'payco' runs a fedrisk release with other scoring messages "
                                          r"\(inference_layout: 2 here vs missing\): run the same fedrisk release"):
        run_roles({"lender": lambda ch: handshake(ch, "lender", ["lender", "payco"], new),
                   "payco": lambda ch: handshake(ch, "lender", ["lender", "payco"], old)}, network=net)
    # other formats' scoring messages did not change: a party of the previous release still scores them
    for fmt in ("fedrisk.vertical.lr", "fedrisk.vertical.secureboost"):
        assert "inference_layout" not in _session_settings({**model, "format": fmt}, "s1")
