"""horizontal.scorecard and vertical.scorecard through the real task functions.

* horizontal: germancredit as 3 banks, in-process (secure aggregation): the scorecard every
  participant writes is the global one, test metrics and reason codes at the evaluation holder;
* vertical: one ``fedrisk simulate`` on the default-credit split (processes, mTLS): each party's
  file holds only its own rows of the points table, the scores are base + the parties' points,
  quality is clearly above the label holder alone, and federated ``predict`` gives the same scores;
* bad input: PDO <= 0 is one ConfigError line.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fedrisk.errors import ConfigError
from fedrisk.finance.binning import FeatureBins
from fedrisk.finance.metrics import auc
from fedrisk.runtime.spec import load_spec
from tests.tasks.test_woe_tasks import (categories_toml, horizontal_spec, run_in_process, simulate_vertical_default_credit,
                                        split_german, vertical_german)


def test_horizontal_scorecard_germancredit(tmp_path):
    parts = split_german(tmp_path, banks=3, test=True)
    spec = horizontal_spec(tmp_path, "horizontal.scorecard", test=True,
                           task_extra="rounds = 40\nlearning_rate = 0.2\nbase_score = 500\nbase_odds = 20\npdo = 40\n"
                           + categories_toml(parts))
    out = tmp_path / "run"
    m = run_in_process(spec, out)
    card = json.loads((out / "scorecard.json").read_text())
    assert card["format"] == "fedrisk.scorecard" and card["pdo"] == 40 and card["base_score"] == 500
    assert set(card["features"]) <= set(m["selection"]["selected"]) and card["features"]
    assert all(float(r["points"]).is_integer() for r in card["table"])
    # scores/test.csv holds the probability of the test file's points (base + per-bin points)
    test = parts["test"].reset_index(drop=True)
    bins = {f: FeatureBins.from_dict(card["bins"][f]["bins"]) for f in card["features"]}
    pts = {f: {r["bin"]: r["points"] for r in card["table"] if r["feature"] == f} for f in card["features"]}
    total = card["base_points"] + sum(np.array([pts[f][b] for b in bins[f].assign(test[f])]) for f in card["features"])
    factor = 40 / np.log(2)
    p = 1 / (1 + np.exp((total - (500 - factor * np.log(20))) / factor))
    scores = pd.read_csv(out / "scores" / "test.csv")
    assert np.allclose(scores["score"].to_numpy(), p, rtol=1e-6)
    assert m["test"]["auc"] == pytest.approx(auc(test["y"].to_numpy(), p), abs=1e-9)
    assert m["test"]["auc"] > 0.70, m["test"]
    reasons = pd.read_csv(out / "scores" / "test_reasons.csv")
    assert len(reasons) == len(test) and list(reasons.columns[:4]) == ["id", "points", "reason_1", "lost_1"]
    assert np.allclose(reasons["points"].to_numpy(), total)
    assert reasons["reason_1"].dropna().str.contains(" = ").all()
    assert {r["feature"] for r in m["iv"]["federation"]} == set(test.columns) - {"id", "y"}
    # the evaluation bank holds the final bins' pooled counts only (the prebin counts stay at the coordinator):
    # its IV noise figures are the chi-square ones of those bins, and say so
    assert {r["iv_null"] for r in m["iv"]["federation"]} == {"chi2"}
    assert (out / "woe" / "bank1.json").is_file()
    # new applicants are scored from the scorecard file alone, with the CLI's predict
    from fedrisk.runtime.predict import predict_file

    test.drop(columns="y").to_csv(tmp_path / "applicants.csv", index=False)
    assert predict_file(out / "scorecard.json", tmp_path / "applicants.csv", tmp_path / "pred.csv") == len(test)
    pred = pd.read_csv(tmp_path / "pred.csv")
    assert np.allclose(pred["points"].to_numpy(), total) and np.allclose(pred["probability"].to_numpy(), p, rtol=1e-6)


@pytest.mark.parametrize("kind", ["horizontal.scorecard", "vertical.scorecard"])
@pytest.mark.parametrize("bad", ["pdo = 0", "pdo = -20", "base_odds = 0"])
def test_bad_scaling_is_one_config_error(tmp_path, kind, bad):
    if kind.startswith("horizontal"):
        split_german(tmp_path, banks=2, test=True)
        spec = horizontal_spec(tmp_path, kind, banks=2, test=True, task_extra=bad)
    else:
        spec, _ = vertical_german(tmp_path, kind=kind, task_extra=bad)
    with pytest.raises(ConfigError) as e:
        load_spec(spec)
    msg = str(e.value)
    assert "\n" not in msg and f"task.{bad.split()[0]}" in msg and "greater than 0" in msg


@pytest.mark.extended(covered_by="tests/runtime/test_predict.py::test_vertical_scorecard_predict_raw_rows_with_reasons and tests/tasks/test_vertical_lr_e2e.py::test_vertical_scorecard_coefficients_are_the_pooled_woe_lr")
def test_vertical_scorecard_default_credit_e2e(tmp_path, shared_data):
    """The example spec's job through `fedrisk simulate`, then federated `predict` on the test rows."""
    out = simulate_vertical_default_credit(tmp_path, shared_data, "vertical.scorecard", timeout=600)
    m = json.loads((out / "metrics.json").read_text())
    fed, alone = m["comparison"]["federated"], m["comparison"]["local_only"]["lender"]
    # measured: federated 0.773 AUC / 0.422 KS, lender alone 0.696 / 0.294
    assert fed["auc"] > alone["auc"] + 0.05 and fed["ks"] > alone["ks"] + 0.05, m["comparison"]
    assert fed["auc"] > 0.76
    lender = json.loads((out / "scorecard-lender.json").read_text())
    payco = json.loads((out / "scorecard-payco.json").read_text())
    g_cols = set(pd.read_csv(shared_data / "default_credit_hetero_guest.csv", nrows=1).columns) - {"id", "y"}
    h_cols = set(pd.read_csv(shared_data / "default_credit_hetero_host.csv", nrows=1).columns) - {"id"}
    assert set(lender["features"]) <= g_cols and set(payco["features"]) <= h_cols and payco["features"]
    assert "base_points" in lender and "base_points" not in payco and "intercept" not in payco
    assert {r["feature"] for r in payco["table"]} == set(payco["features"])
    # the lender's score = base + its points + payco's points, recomputed from the two files
    g = pd.read_csv(shared_data / "default_credit_hetero_guest.csv").set_index("id")
    h = pd.read_csv(shared_data / "default_credit_hetero_host.csv").set_index("id")
    reasons = pd.read_csv(out / "scores" / "test_reasons.csv")
    ids = reasons["id"].to_numpy()

    def points(part, frame):
        return sum(np.asarray(part["points"][f])[FeatureBins.from_dict(part["bins"][f]).assign(frame.loc[ids, f])]
                   for f in part["features"])

    total = lender["base_points"] + points(lender, g) + points(payco, h)
    assert np.allclose(reasons["points"].to_numpy(), total)
    assert reasons["reason_1"].fillna("").str.contains(r"^$|partner features \(payco\)|^x\d+ = ").all()
    # federated inference: same scores on the test rows, only at the label holder
    from fedrisk.runtime.predict import predict_file

    new = g.loc[ids].drop(columns="y").reset_index()
    new.to_csv(tmp_path / "new.csv", index=False)
    n = predict_file(out / "scorecard-lender.json", tmp_path / "new.csv", tmp_path / "pred.csv")
    assert n == len(ids)
    pred = pd.read_csv(tmp_path / "pred.csv").set_index("id").loc[ids, "probability"].to_numpy()
    test_scores = pd.read_csv(out / "scores" / "test.csv").set_index("id").loc[ids, "score"].to_numpy()
    assert np.allclose(pred, test_scores, rtol=1e-6)
