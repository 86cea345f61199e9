"""``fedrisk predict`` for scorecards: points, probability, reasons and a status for every input row.

* horizontal: a German-credit scorecard (text categories) saved as ``scorecard.json`` and scored
  from the file alone — points, probability and reasons equal the fitted Scorecard's;
* vertical: ``fedrisk simulate`` of a three-party German-credit scorecard (lender with text
  columns, payco aggregated, bureau opting in to name its reasons), then federated predict on the
  lender's raw rows — totals recomputed from the three files, reasons in the right terms, an
  unknown id kept with a "not scored" status.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from fedrisk.finance.binning import FeatureBins
from fedrisk.finance.scorecard import Scorecard
from fedrisk.finance.woe import WoeEncoder, select_features
from fedrisk.runtime.predict import predict_file, write_predictions


def test_write_predictions_keeps_every_row_in_order(tmp_path):
    table = pd.DataFrame({"points": [510.0, 480.0], "probability": [0.1, 0.3], "reason_1": ["a = 1", None]})
    write_predictions(tmp_path / "o.csv", np.array(["x", "y", "z"]), table, np.array([2, 0]), unscored="not scored: gone")
    out = pd.read_csv(tmp_path / "o.csv", dtype={"id": str})
    assert list(out.columns) == ["id", "points", "probability", "reason_1", "status"]
    assert out["id"].tolist() == ["x", "y", "z"]
    assert out["points"].tolist()[0] == 480.0 and np.isnan(out["points"][1]) and out["points"][2] == 510.0
    assert out["status"].tolist() == ["scored", "not scored: gone", "scored"]
    assert out["reason_1"].isna().tolist() == [True, True, False]


def test_horizontal_scorecard_predict_points_probability_reasons(tmp_path):
    from tests.tasks.test_woe_tasks import german_frame

    german = german_frame()
    y = german["y"].to_numpy()
    X = german.drop(columns=["id", "y"])
    enc = WoeEncoder().fit(X, y)
    W = enc.transform(X)
    feats = select_features(enc.iv_, W)["selected"]
    lr = LogisticRegression(max_iter=1000).fit(W[feats], y)
    card = Scorecard.from_logistic(enc, lr, feats)
    doc = {"format": "fedrisk.scorecard", "version": 1, **card.to_dict(), "n_reasons": 4}
    (tmp_path / "scorecard.json").write_text(json.dumps(doc))
    new = X.head(200).copy()
    new.insert(0, "id", [f"app{i}" for i in range(len(new))])
    text_col = next(f for f in feats if enc.woe_[f].bins.kind == "categorical")
    new.loc[5, text_col] = "a category never seen in training"  # scored in the missing bin, not an error
    new.to_csv(tmp_path / "new.csv", index=False)
    assert predict_file(tmp_path / "scorecard.json", tmp_path / "new.csv", tmp_path / "s.csv") == 200
    out = pd.read_csv(tmp_path / "s.csv")
    assert list(out.columns) == (["id", "points", "probability"] + [f"reason_{k}" for k in range(1, 5)]
                                 + [f"points_lost_{k}" for k in range(1, 5)] + ["status"])
    Xn = new.drop(columns="id").reset_index(drop=True)
    np.testing.assert_allclose(out["points"], card.score(Xn))
    np.testing.assert_allclose(out["probability"], card.probability(card.score(Xn)), rtol=1e-7)
    assert (out["status"] == "scored").all()
    expect = card.reason_codes(Xn, n=4)
    for r in range(len(out)):
        for k in range(4):
            got = out.at[r, f"reason_{k + 1}"]
            if k < len(expect[r]):
                e = expect[r][k]
                assert got == f"{e['feature']} = {e['label']}"
                assert out.at[r, f"points_lost_{k + 1}"] == pytest.approx(e["points_lost"])
            else:
                assert pd.isna(got)
    # the unseen category lands in the missing bin of that feature
    b = card.bins_[text_col].assign(Xn[text_col])[5]
    assert b == card.bins_[text_col].n_bins


def test_vertical_scorecard_predict_raw_rows_with_reasons(tmp_path, caplog):
    from tests.tasks.test_woe_tasks import german_frame, vertical_german

    spec, _ = vertical_german(tmp_path, kind="vertical.scorecard",
                              task_extra='name_reasons = ["bureau"]\nn_reasons = 4\nepochs = 6\nlearning_rate = 0.3\n'
                                         'iv_threshold = 0.01')
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "fedrisk", "simulate", str(spec), "--out", str(out)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    parts = {p: json.loads((out / f"scorecard-{p}.json").read_text()) for p in ("lender", "payco", "bureau")}
    assert parts["bureau"]["name_reasons"] is True and parts["payco"]["name_reasons"] is False
    lender_rows = pd.read_csv(tmp_path / "lender.csv")
    text_cols = [c for c in parts["lender"]["features"] if not pd.api.types.is_numeric_dtype(lender_rows[c])]
    assert text_cols, "the lender's scorecard should use at least one text (categorical) column"
    new = lender_rows.drop(columns="y").head(120).copy()
    new = pd.concat([new, new.head(1).assign(id=10_000_001)], ignore_index=True)  # an id nobody else has
    new.loc[[3, 4], text_cols[0]] = "a category nobody trained on"  # scored as the missing bin, and said so
    new.to_csv(tmp_path / "new.csv", index=False)
    with caplog.at_level("WARNING", logger="fedrisk.inference"):
        n = predict_file(out / "scorecard-lender.json", tmp_path / "new.csv", tmp_path / "s.csv")
    warned = [r.getMessage() for r in caplog.records if "never seen in training" in r.getMessage()]
    assert len(warned) == 1 and f"{text_cols[0]!r} (2 of " in warned[0] and "missing bin" in warned[0], warned
    assert "nobody trained" not in warned[0]
    s = pd.read_csv(tmp_path / "s.csv")
    assert s.columns[:3].tolist() == ["id", "points", "probability"] and "reason_4" in s.columns
    assert len(s) == len(new) and s["id"].tolist() == new["id"].tolist()
    unscored = s["id"] == 10_000_001
    assert s.loc[unscored, "status"].str.startswith("not scored").all() and s.loc[unscored, "points"].isna().all()
    scored = s["status"] == "scored"
    assert scored.sum() == n and n >= 100
    # the totals: base points + each party's points for the row, recomputed from the three files
    full = german_frame().set_index("id")
    full.loc[new.loc[[3, 4], "id"], text_cols[0]] = "a category nobody trained on"
    ids = s.loc[scored, "id"].to_numpy()
    total = np.full(len(ids), parts["lender"]["base_points"])
    for p in parts.values():
        for f in p["features"]:
            total += np.asarray(p["points"][f])[FeatureBins.from_dict(p["bins"][f]).assign(full.loc[ids, f])]
    np.testing.assert_allclose(s.loc[scored, "points"].to_numpy(), total)
    # reasons: lender's features by bin, payco aggregated, bureau's by name (it opted in)
    reasons = pd.concat([s.loc[scored, f"reason_{k}"] for k in range(1, 5)]).dropna()
    names = reasons.str.split(" = ").str[0]
    allowed = set(parts["lender"]["features"]) | set(parts["bureau"]["features"]) | {"partner features (payco)"}
    assert set(names) <= allowed, set(names) - allowed
    assert not set(names) & set(parts["payco"]["features"]) - set(parts["lender"]["features"]) - set(parts["bureau"]["features"])
    assert (names == "partner features (payco)").any() and names.isin(parts["bureau"]["features"]).any()
    lost = s.loc[scored, [f"points_lost_{k}" for k in range(1, 5)]].to_numpy(dtype=float)
    for row in lost:
        v = row[~np.isnan(row)]
        assert np.all(np.diff(v) <= 1e-9) and np.all(v > 0), "reasons are ordered by points lost, all positive"
        assert np.isnan(row[len(v):]).all(), "no gap between reasons"


def test_horizontal_lr_predict_blank_cells_and_dialects(tmp_path):
    """A horizontal LR model scores blank cells with the federation's means when its bank trained with
    missing = "mean", refuses them with advice a scorer can follow otherwise, and reads ';' files
    (`--sep`), which the error for a ';' file names."""
    from fedrisk.errors import DataError
    from tests.tasks.test_horizontal_inputs import numeric_banks, spec_for
    from tests.tasks.test_woe_tasks import run_in_process

    parts = numeric_banks(tmp_path)
    banks = ("bank1", "bank2", "bank3")
    run_in_process(spec_for(tmp_path, "horizontal.lr", {b: "" for b in banks}), tmp_path / "reject")
    parts["bank2"].assign(x1=lambda d: d.x1.where(d.index % 7 != 0)).to_csv(tmp_path / "bank2.csv", index=False)
    run_in_process(spec_for(tmp_path, "horizontal.lr", {b: 'missing = "mean"' for b in banks}),
                   tmp_path / "mean")
    model = json.loads((tmp_path / "mean" / "model.json").read_text())
    assert model["imputation"] == dict(zip(model["features"], model["mean"]))
    assert model["version"] == 2  # a reader that ignored the fill values would score these rows differently
    new = parts["test"].drop(columns="y").head(20).copy()
    new.loc[3, "x1"] = np.nan
    new.to_csv(tmp_path / "new.csv", index=False)
    assert predict_file(tmp_path / "mean" / "model.json", tmp_path / "new.csv", tmp_path / "s.csv") == 20
    filled = new.fillna({"x1": model["imputation"]["x1"]})
    z = ((filled[model["features"]].to_numpy() - model["mean"]) / model["scale"]) @ model["coef"] + model["intercept"]
    np.testing.assert_allclose(pd.read_csv(tmp_path / "s.csv")["score"], 1 / (1 + np.exp(-z)), atol=1e-7)
    # trained with the default missing = "reject": the model has no fill values
    rejecting = json.loads((tmp_path / "reject" / "model.json").read_text())
    assert "imputation" not in rejecting and rejecting["version"] == 1
    with pytest.raises(DataError) as e:
        predict_file(tmp_path / "reject" / "model.json", tmp_path / "new.csv", tmp_path / "s2.csv")
    assert "fill them or drop those rows before scoring" in str(e.value) and "missing='mean'" not in str(e.value)
    new.dropna().to_csv(tmp_path / "semi.csv", index=False, sep=";")
    r = subprocess.run([sys.executable, "-m", "fedrisk", "predict", tmp_path / "mean" / "model.json", tmp_path / "semi.csv",
                        "--out", tmp_path / "s3.csv"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--sep ';'" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "fedrisk", "predict", tmp_path / "mean" / "model.json", tmp_path / "semi.csv",
                        "--out", tmp_path / "s3.csv", "--sep", ";"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(pd.read_csv(tmp_path / "s3.csv")) == 19


def test_horizontal_model_predict_defaults_to_the_runs_id_column(tmp_path):
    """Horizontal model files do not name the id column; `predict` in a run directory takes it from
    the run's job.toml (every bank's ``id``), as for vertical models, and keeps text ids as written."""
    from tests.tasks.test_woe_tasks import german_frame

    german = german_frame().head(300)
    y = german["y"].to_numpy()
    X = german[["duration_in_month", "credit_amount", "purpose"]]
    enc = WoeEncoder().fit(X, y)
    lr = LogisticRegression(max_iter=1000).fit(enc.transform(X), y)
    card = Scorecard.from_logistic(enc, lr, list(X.columns))
    (tmp_path / "scorecard.json").write_text(json.dumps({"format": "fedrisk.scorecard", "version": 1, **card.to_dict()}))
    (tmp_path / "job.toml").write_text("".join(f'[parties.bank{k}]\nid = "cust"\nlabel = "y"\n' for k in (1, 2))
                                       + '[task]\nkind = "horizontal.scorecard"\n')
    new = X.head(20).copy()
    new.insert(1, "cust", [f"{i:07d}" for i in range(20)])
    new.to_csv(tmp_path / "new.csv", index=False)
    assert predict_file(tmp_path / "scorecard.json", tmp_path / "new.csv", tmp_path / "s.csv") == 20
    out = pd.read_csv(tmp_path / "s.csv", dtype={"id": str})
    assert out["id"].tolist() == new["cust"].tolist()
    np.testing.assert_allclose(out["points"], card.score(new.drop(columns="cust").reset_index(drop=True)))


def test_horizontal_scorecard_predict_logs_unseen_categories(tmp_path, caplog):
    """A category the bins never saw scores as the missing bin (reason "purpose = missing"): vertical
    scorecards log it at their owner, horizontal ones said nothing. Counts only, no values."""
    import logging

    from tests.tasks.test_woe_tasks import german_frame

    german = german_frame().head(300)
    X = german[["duration_in_month", "purpose"]]
    # level by level (no "(other)" bin, no category test): an unseen category scores as the missing bin
    enc = WoeEncoder(min_category_count=1, category_pvalue=1.0).fit(X, german["y"])
    lr = LogisticRegression(max_iter=1000).fit(enc.transform(X), german["y"])
    card = Scorecard.from_logistic(enc, lr, list(X.columns))
    (tmp_path / "scorecard.json").write_text(json.dumps({"format": "fedrisk.scorecard", "version": 1, **card.to_dict()}))
    new = X.head(10).copy()
    new.insert(0, "id", range(10))
    new.loc[[2, 7], "purpose"] = "crypto mining rig"
    new.loc[4, "purpose"] = None  # a blank is the missing bin by definition: not counted
    new.to_csv(tmp_path / "new.csv", index=False)
    with caplog.at_level(logging.WARNING):
        predict_file(tmp_path / "scorecard.json", tmp_path / "new.csv", tmp_path / "s.csv")
    notes = [r.getMessage() for r in caplog.records if "never seen" in r.getMessage()]
    assert len(notes) == 1 and "'purpose' (2 of 10 rows)" in notes[0] and "missing bin" in notes[0]
    assert "crypto" not in notes[0]


def test_horizontal_lr_predict_gives_reason_codes_per_column(tmp_path):
    """A horizontal LR model scores with reason codes, like trees and scorecards: each column's push on the
    default log-odds from the federation's average applicant, coef * (x - mean) / scale, a one-hot column's
    dummies summed into the column (reasons name columns, never a dummy). They add up to the log-odds."""
    enc = {"name": "housing", "groups": [["own"], ["rent"], ["free"]], "levels": ["own", "rent", "free"],
           "has_missing": False, "other": -1}
    model = {"format": "fedrisk.lr", "version": 1, "task": "horizontal.lr", "job": "j",
             "features": ["amount", "housing=rent", "housing=free", "age"],
             "mean": [1000.0, 0.3, 0.1, 40.0], "scale": [500.0, 0.46, 0.3, 10.0], "coef": [0.8, 0.5, -0.2, -0.6],
             "intercept": -1.0, "categories": {"housing": enc}, "category_encoding": "onehot"}
    (tmp_path / "model.json").write_text(json.dumps(model))
    rows = pd.DataFrame({"id": [1, 2, 3], "amount": [3000.0, 500.0, 1000.0], "housing": ["rent", "own", "free"],
                         "age": [22.0, 60.0, 40.0]})
    rows.to_csv(tmp_path / "new.csv", index=False)
    assert predict_file(tmp_path / "model.json", tmp_path / "new.csv", tmp_path / "s.csv") == 3
    out = pd.read_csv(tmp_path / "s.csv")
    assert {"reason_1", "contribution_1", "status"} <= set(out.columns)
    # row 1: amount 3000 pushes (0.8 * 4 = 3.2), housing rent (0.5 * (1-0.3)/0.46 - 0.2 * (0-0.1)/0.3), age 22 (+1.08)
    assert out.loc[0, "reason_1"] == "amount" and abs(out.loc[0, "contribution_1"] - 3.2) < 1e-6
    assert set(out.loc[0, ["reason_2", "reason_3"]]) == {"housing", "age"}
    rent = 0.5 * 0.7 / 0.46 + (-0.2) * (-0.1 / 0.3)
    got = dict(zip(out.loc[0, ["reason_1", "reason_2", "reason_3"]], out.loc[0, ["contribution_1", "contribution_2",
                                                                                 "contribution_3"]]))
    assert abs(got["housing"] - rent) < 1e-6 and abs(got["age"] - 1.08) < 1e-6
    z0 = -1.0 + 3.2 + rent + 1.08
    assert abs(out.loc[0, "score"] - 1 / (1 + np.exp(-z0))) < 1e-7
    assert not any(str(r).startswith("housing=") for r in out[["reason_1", "reason_2", "reason_3"]].to_numpy().ravel())


def test_predict_takes_a_run_directory_and_finds_its_model(tmp_path):
    """``fedrisk predict RUN_DIR NEW.csv``, as ``fr.load(RUN_DIR)``: the run's model.json, or its scorecard.json
    (a scorecard run has no model.json, and ``predict RUN/model.json`` says which file to use)."""
    from fedrisk.errors import ConfigError

    model = {"format": "fedrisk.lr", "version": 1, "task": "horizontal.lr", "job": "j", "features": ["a"],
             "mean": [0.0], "scale": [1.0], "coef": [1.0], "intercept": 0.0}
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.json").write_text(json.dumps(model))
    pd.DataFrame({"id": [1, 2], "a": [0.0, 1.0]}).to_csv(tmp_path / "new.csv", index=False)
    assert predict_file(run, tmp_path / "new.csv", tmp_path / "s.csv") == 2
    card = tmp_path / "card"
    card.mkdir()
    (card / "scorecard.json").write_text("{}")
    with pytest.raises(ConfigError, match="scorecard.json"):
        predict_file(card / "model.json", tmp_path / "new.csv", tmp_path / "s.csv")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no model file"):
        predict_file(empty, tmp_path / "new.csv", tmp_path / "s.csv")


def test_horizontal_predict_takes_na_values_on_the_command_line(tmp_path):
    """`fedrisk predict --na-values ?`: "?" cells of the scoring file are missing (filled with the model's means as
    blank cells are); without it the refusal names that flag, not a job-spec setting the scorer cannot change."""
    from tests.tasks.test_horizontal_inputs import numeric_banks, spec_for
    from tests.tasks.test_woe_tasks import run_in_process

    parts = numeric_banks(tmp_path)
    run_in_process(spec_for(tmp_path, "horizontal.lr", {b: 'missing = "mean"' for b in ("bank1", "bank2", "bank3")}),
                   tmp_path / "mean")
    new = parts["test"].drop(columns="y").head(20).copy()
    new.loc[3, "x1"] = np.nan
    new.to_csv(tmp_path / "blank.csv", index=False)
    new.astype({"x1": object}).fillna({"x1": "?"}).to_csv(tmp_path / "q.csv", index=False)
    model = tmp_path / "mean" / "model.json"
    assert predict_file(model, tmp_path / "blank.csv", tmp_path / "want.csv") == 20
    cmd = [sys.executable, "-m", "fedrisk", "predict", model, tmp_path / "q.csv", "--out", tmp_path / "got.csv"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--na-values '?'" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = subprocess.run(cmd + ["--na-values", "?"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(pd.read_csv(tmp_path / "got.csv")["score"], pd.read_csv(tmp_path / "want.csv")["score"])
