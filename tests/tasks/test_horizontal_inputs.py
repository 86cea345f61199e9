"""Horizontal tasks on data shapes a real federation brings (found by bug hunting; in-process runs
of the real ``run(ctx)`` over the in-memory network):

* ``horizontal.gbdt`` reads each bank's CSV dialect and label coding (``sep``, ``decimal``,
  ``positive``) as ``horizontal.lr`` does: German credit with its raw ``good``/``bad`` labels;
* the evaluation holder's "this bank alone" comparison never stops a finished federation: a bank
  without a single default, or with a column that is blank in all its rows;
* ``horizontal.lr``, ``horizontal.scorecard`` and ``horizontal.woe`` refuse a federation whose pooled
  labels hold one class with one line, instead of writing a model with an intercept of minus
  infinity (LR) or saying that no feature reaches the IV threshold (WOE).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedrisk.errors import DataError
from fedrisk.finance.metrics import auc
from tests.tasks.test_woe_tasks import GERMAN, run_in_process
from fedrisk.runtime.demo import free_ports


def spec_for(tmp: Path, kind: str, banks: dict[str, str], task_extra: str = "", test: bool = True) -> Path:
    """A job spec over ``bank*.csv`` in ``tmp``; ``banks`` maps each bank to extra lines of its table."""
    ports = free_ports(len(banks) + 1)
    parts = "".join(f'[parties.{b}]\naddress = "127.0.0.1:{ports[i + 1]}"\ndata = "{b}.csv"\nid = "id"\nlabel = "y"\n{extra}\n'
                    for i, (b, extra) in enumerate(banks.items()))
    path = tmp / "job.toml"
    path.write_text(f'[federation]\nname = "inputs"\n[coordinator]\naddress = "127.0.0.1:{ports[0]}"\n' + parts
                    + f'[task]\nkind = "{kind}"\n{task_extra}\n' + ('[evaluation]\ntest = "test.csv"\n' if test else ""))
    return path


def numeric_banks(tmp: Path, sizes=(300, 250, 200), seed: int = 0) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, n in [*((f"bank{k + 1}", s) for k, s in enumerate(sizes)), ("test", 400)]:
        X = rng.normal(size=(n, 3))
        y = (rng.random(n) < 1 / (1 + np.exp(-(X @ [1.0, -0.5, 0.3] - 1)))).astype(int)
        out[name] = pd.DataFrame({"id": np.arange(n) + 1000 * len(out), "y": y, "x0": X[:, 0], "x1": X[:, 1], "x2": X[:, 2]})
    for name, df in out.items():
        df.to_csv(tmp / f"{name}.csv", index=False)
    return out


def test_gbdt_reads_each_banks_dialect_and_label_coding(tmp_path):
    """German credit as exported: raw 'good'/'bad' labels; one bank ';'-separated with decimal commas."""
    if not GERMAN.is_file():
        pytest.skip("germancredit.csv not in ../shared/data")
    df = pd.read_csv(GERMAN)
    df.insert(0, "id", np.arange(len(df)))
    df = df.rename(columns={"creditability": "y"})[["id", "y", "duration_in_month", "credit_amount", "age_in_years"]]
    df["credit_amount"] = df["credit_amount"] / 7.0  # decimals, for the decimal-comma bank
    df[df.id % 5 == 0].to_csv(tmp_path / "test.csv", index=False)
    train = df[df.id % 5 != 0]
    train[train.id % 2 == 0].to_csv(tmp_path / "bank1.csv", index=False)
    train[train.id % 2 == 1].to_csv(tmp_path / "bank2.csv", index=False, sep=";", decimal=",")
    spec = spec_for(tmp_path, "horizontal.gbdt", {"bank1": 'positive = "bad"', "bank2": 'positive = "bad"\nsep = ";"\ndecimal = ","'},
                    "n_trees = 5\nmax_depth = 2")
    m = run_in_process(spec, tmp_path / "run")
    test = df[df.id % 5 == 0]
    assert m["test"]["n"] == 200 and m["test"]["positives"] == int((test.y == "bad").sum())
    # 800 pooled rows: XGBoost's cuts are exact there and the federated ones equal them, so the model is
    # pooled XGBoost's (both 0.598 on these three columns; the bar used to be a flat 0.6)
    xgb = pytest.importorskip("xgboost")
    feats = ["duration_in_month", "credit_amount", "age_in_years"]
    ref = xgb.XGBClassifier(n_estimators=5, max_depth=2, learning_rate=0.3, max_bin=32, tree_method="hist",
                            n_jobs=1).fit(train[feats].to_numpy(float), (train.y == "bad").to_numpy(int))
    a_xgb = auc((test.y == "bad").to_numpy(int), ref.predict_proba(test[feats].to_numpy(float))[:, 1])
    assert m["test"]["auc"] == pytest.approx(a_xgb, abs=1e-6) and m["test"]["auc"] > 0.55


@pytest.mark.parametrize("kind", ["horizontal.lr", "horizontal.gbdt"])
def test_evaluation_holder_without_a_default_still_writes_the_evaluation(tmp_path, kind):
    parts = numeric_banks(tmp_path)
    parts["bank1"].assign(y=0).to_csv(tmp_path / "bank1.csv", index=False)  # the evaluation holder
    extra = "n_trees = 5\nmax_depth = 2" if kind == "horizontal.gbdt" else ""
    m = run_in_process(spec_for(tmp_path, kind, {b: "" for b in ("bank1", "bank2", "bank3")}, extra), tmp_path / "run")
    assert m["test"]["auc"] > 0.6
    assert "local_only" not in m["comparison"]  # no model of its own to compare with, and it says nothing
    assert "auc" not in m["train"] and "only non-defaults" in m["train"]["note"]
    from fedrisk.finance.report import write_report

    assert "test (AUC" in write_report(tmp_path / "run").read_text()  # the report draws the test ROC, skips the one-class train


def test_gbdt_evaluation_holder_with_a_blank_column_still_writes_the_evaluation(tmp_path):
    parts = numeric_banks(tmp_path)
    parts["bank1"].assign(x2=np.nan).to_csv(tmp_path / "bank1.csv", index=False)
    m = run_in_process(spec_for(tmp_path, "horizontal.gbdt", {b: 'missing = "keep"' for b in ("bank1", "bank2", "bank3")},
                                "n_trees = 5\nmax_depth = 2"), tmp_path / "run")
    assert m["test"]["auc"] > 0.6 and m["comparison"]["local_only"]["bank1"]["auc"] > 0.5


@pytest.mark.parametrize("kind", ["horizontal.lr", "horizontal.scorecard", "horizontal.woe"])
def test_pooled_labels_of_one_class_are_one_error_line(tmp_path, kind):
    parts = numeric_banks(tmp_path)
    for b in ("bank1", "bank2", "bank3"):
        parts[b].assign(y=0).to_csv(tmp_path / f"{b}.csv", index=False)
    with pytest.raises(DataError) as e:
        run_in_process(spec_for(tmp_path, kind, {b: "" for b in ("bank1", "bank2", "bank3")}, test=False), tmp_path / "run")
    msg = str(e.value)
    assert "\n" not in msg and "only one class" in msg and "no row is a default" in msg
    assert not (tmp_path / "run" / "model.json").exists() and not (tmp_path / "run" / "scorecard.json").exists()


@pytest.mark.parametrize("kind", ["horizontal.lr", "horizontal.woe", "horizontal.scorecard"])
def test_text_column_without_categories_says_how_to_declare_them(tmp_path, kind):
    parts = numeric_banks(tmp_path)
    for b in ("bank1", "bank2", "bank3"):
        parts[b].assign(region=np.where(parts[b].x0 > 0, "north", "south")).to_csv(tmp_path / f"{b}.csv", index=False)
    with pytest.raises(DataError) as e:
        run_in_process(spec_for(tmp_path, kind, {b: "" for b in ("bank1", "bank2", "bank3")}), tmp_path / "run")
    msg = str(e.value)
    # (the column quoted as a TOML key: the abort reason partners receive redacts quoted names)
    assert "\n" not in msg and "'region'" in msg and '[task] categories = { "region" = [...] }' in msg


@pytest.mark.parametrize("kind", ["horizontal.woe", "horizontal.scorecard"])
def test_a_bank_without_a_column_keeps_it_blank_and_iv_equals_pooled(tmp_path, kind):
    """bank3 does not collect ``duration_in_month`` (numeric) nor ``purpose`` (text): blank in all its rows.
    Its rows take the missing bins, and the federated IV equals the pooled IV on the same bins."""
    from fedrisk.finance.binning import FeatureBins
    from fedrisk.finance.woe import FeatureWoe
    from tests.tasks.test_woe_tasks import split_german

    parts = split_german(tmp_path, test=kind == "horizontal.scorecard")
    cols = ["id", "y", "duration_in_month", "credit_amount", "age_in_years", "purpose", "credit_history"]
    parts = {k: v[cols] for k, v in parts.items()}
    parts["bank3"] = parts["bank3"].assign(duration_in_month=np.nan, purpose=np.nan)
    for k, v in parts.items():
        v.to_csv(tmp_path / f"{k}.csv", index=False)
    from tests.tasks.test_woe_tasks import categories_toml

    m = run_in_process(spec_for(tmp_path, kind, {b: "" for b in ("bank1", "bank2", "bank3")},
                                "iv_threshold = 0.0\n" + categories_toml(parts), test=kind == "horizontal.scorecard"),
                       tmp_path / "run")
    pooled = pd.concat([parts[b] for b in ("bank1", "bank2", "bank3")]).reset_index(drop=True)
    doc = json.loads((tmp_path / "run" / "woe" / "bank1.json").read_text())
    iv = {r["feature"]: r["iv"] for r in (m["iv"]["federation"] if "federation" in m.get("iv", {}) else [])}
    y = pooled["y"].to_numpy()
    for f in ("duration_in_month", "purpose"):
        fb = FeatureBins.from_dict(doc["features"][f]["bins"])
        idx = fb.assign(pooled[f])
        k = fb.n_bins + 1
        ref = FeatureWoe.from_counts(fb, np.bincount(idx[y == 0], minlength=k), np.bincount(idx[y == 1], minlength=k))
        assert doc["features"][f]["iv"] == pytest.approx(ref.iv, abs=1e-12)
        if iv:
            assert iv[f] == pytest.approx(ref.iv, abs=1e-12)
    if kind == "horizontal.scorecard":
        assert m["test"]["auc"] > 0.6


@pytest.mark.parametrize("kind", ["horizontal.lr", "horizontal.gbdt", "horizontal.scorecard"])
@pytest.mark.parametrize("flaw", ["blank label", "one class", "missing column"])
def test_a_bad_test_file_stops_the_job_before_training(tmp_path, kind, flaw):
    """The evaluation holder reads evaluation.test before training (GBDT and the scorecard read it only
    after the model was trained, and a run in process lost the error as that bank's dropout)."""
    parts = numeric_banks(tmp_path)
    test = parts["test"].copy()
    if flaw == "blank label":
        test["y"] = test["y"].astype(float).where(test.index != 3)
    elif flaw == "one class":
        test["y"] = 0
    else:
        test = test.drop(columns="x2")
    test.to_csv(tmp_path / "test.csv", index=False)
    extra = "n_trees = 3\nmax_depth = 2" if kind == "horizontal.gbdt" else ""
    with pytest.raises(DataError) as e:
        run_in_process(spec_for(tmp_path, kind, {b: "" for b in ("bank1", "bank2", "bank3")}, extra), tmp_path / "run")
    msg = str(e.value)
    assert "\n" not in msg and "test.csv" in msg and "'bank1'" in msg
    assert {"blank label": "is empty in 1 rows", "one class": "only non-defaults", "missing column": "'x2'"}[flaw] in msg
    assert not (tmp_path / "run" / "model.json").exists() and not (tmp_path / "run" / "scorecard.json").exists()


def test_mean_imputing_lr_scores_its_test_file_as_predict_does(tmp_path):
    """missing = "mean": the evaluation holder fills its test file's blanks with the federation's means
    (as ``fedrisk predict`` does), not with the test file's own means, so metrics.json describes the
    scores production would give."""
    from fedrisk.runtime.predict import predict_file

    parts = numeric_banks(tmp_path)
    parts["bank2"].assign(x1=lambda d: d.x1.where(d.index % 5 != 0)).to_csv(tmp_path / "bank2.csv", index=False)
    test = parts["test"].assign(x0=lambda d: d.x0.where(d.index % 3 != 0) + 0.0)
    test.loc[test.index % 3 != 0, "x0"] += 1.0  # the test file's own mean of x0 is far from the federation's
    test.to_csv(tmp_path / "test.csv", index=False)
    run_in_process(spec_for(tmp_path, "horizontal.lr", {b: 'missing = "mean"' for b in ("bank1", "bank2", "bank3")}),
                   tmp_path / "run")
    test.drop(columns="y").to_csv(tmp_path / "new.csv", index=False)
    predict_file(tmp_path / "run" / "model.json", tmp_path / "new.csv", tmp_path / "s.csv")
    np.testing.assert_allclose(pd.read_csv(tmp_path / "run" / "scores" / "test.csv")["score"],
                               pd.read_csv(tmp_path / "s.csv")["score"], atol=1e-7)


def test_mean_imputing_lr_fills_every_bank_with_the_pooled_mean(tmp_path):
    """missing = "mean" at non-IID banks (x0 blank in 0 %, 50 % and 80 % of rows, bank means apart):
    model.json is scikit-learn's LR on the pooled rows filled with the POOLED observed mean, not each
    bank's own mean, and its ``imputation`` (what ``fedrisk predict`` fills with) is that pooled mean."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from fedrisk.algorithms.horizontal.logistic import sklearn_C

    parts = numeric_banks(tmp_path, sizes=(600, 400, 300), seed=3)
    rng = np.random.default_rng(3)
    for k, rate in zip((1, 2, 3), (0.0, 0.5, 0.8)):
        df = parts[f"bank{k}"]
        df["x0"] = df.x0 + 1.5 * k  # banks' means differ
        df.loc[rng.random(len(df)) < rate, "x0"] = np.nan
        df.loc[rng.random(len(df)) < 0.2 * (k - 1), "x2"] = np.nan
        df.to_csv(tmp_path / f"bank{k}.csv", index=False)
    run_in_process(spec_for(tmp_path, "horizontal.lr", {b: 'missing = "mean"' for b in ("bank1", "bank2", "bank3")}),
                   tmp_path / "run")
    model = json.loads((tmp_path / "run" / "model.json").read_text())
    pooled = pd.concat([parts[f"bank{k}"] for k in (1, 2, 3)])
    X, y = pooled[["x0", "x1", "x2"]].to_numpy(float), pooled.y.to_numpy(float)
    filled = SimpleImputer(strategy="mean").fit_transform(X)
    sc = StandardScaler().fit(filled)
    ref = LogisticRegression(C=sklearn_C(1e-4, len(y)), solver="newton-cholesky", tol=1e-12).fit(sc.transform(filled), y)
    np.testing.assert_allclose(model["mean"], np.nanmean(X, axis=0), rtol=1e-6)
    assert model["imputation"] == dict(zip(model["features"], model["mean"]))
    np.testing.assert_allclose(model["scale"], sc.scale_, rtol=1e-5)
    np.testing.assert_allclose(model["coef"], ref.coef_[0], atol=1e-4)
    assert abs(model["intercept"] - ref.intercept_[0]) <= 1e-4


def test_mean_imputing_gbdt_stores_the_pooled_means_and_predict_fills_with_them(tmp_path):
    """horizontal.gbdt with missing = "mean": blanks are filled with the POOLED observed means (stored as the
    model's ``imputation``), the test file's blanks too, and ``fedrisk predict`` fills new rows the same way."""
    from fedrisk.runtime.predict import predict_file

    parts = numeric_banks(tmp_path, sizes=(600, 400, 300), seed=4)
    rng = np.random.default_rng(4)
    for k, rate in zip((1, 2, 3), (0.0, 0.5, 0.8)):
        df = parts[f"bank{k}"]
        df["x0"] = df.x0 + 1.5 * k
        df.loc[rng.random(len(df)) < rate, "x0"] = np.nan
        df.to_csv(tmp_path / f"bank{k}.csv", index=False)
    test = parts["test"]
    test.loc[test.index % 4 == 0, "x0"] = np.nan
    test.to_csv(tmp_path / "test.csv", index=False)
    run_in_process(spec_for(tmp_path, "horizontal.gbdt", {b: 'missing = "mean"' for b in ("bank1", "bank2", "bank3")},
                            "n_trees = 4\nmax_depth = 2\n"), tmp_path / "run")
    model = json.loads((tmp_path / "run" / "model.json").read_text())
    pooled = pd.concat([parts[f"bank{k}"] for k in (1, 2, 3)])
    np.testing.assert_allclose([model["imputation"][f] for f in ("x0", "x1", "x2")],
                               pooled[["x0", "x1", "x2"]].mean().to_numpy(), rtol=1e-6)
    test.drop(columns="y").to_csv(tmp_path / "new.csv", index=False)
    predict_file(tmp_path / "run" / "model.json", tmp_path / "new.csv", tmp_path / "s.csv")
    np.testing.assert_allclose(pd.read_csv(tmp_path / "run" / "scores" / "test.csv")["score"],
                               pd.read_csv(tmp_path / "s.csv")["score"], atol=1e-7)


def test_private_gbdt_with_mean_imputation_plans_the_two_mean_sums(tmp_path):
    """The pooled means are two more noisy sums: the job spec is accepted and its privacy plan counts them
    (it was refused while they were not accounted)."""
    from fedrisk.algorithms.horizontal.gbdt import planned_aggregations
    from fedrisk.runtime.spec import load_spec
    from fedrisk.tasks.horizontal_gbdt import Params, privacy_plan

    numeric_banks(tmp_path)
    spec = spec_for(tmp_path, "horizontal.gbdt", {"bank1": 'missing = "mean"', "bank2": "", "bank3": ""}, "n_trees = 2\n")
    spec.write_text(spec.read_text() + "\n[privacy]\nepsilon = 4.0\n")
    job = load_spec(spec)
    params = Params(n_trees=2)
    plan = privacy_plan(job, params)
    assert plan.mechanisms == planned_aggregations(params.config(0), private=True) + 2
    assert plan.epsilon <= 4.0 + 1e-9


@pytest.mark.parametrize("kind", ["horizontal.lr", "horizontal.gbdt"])
def test_a_bank_listing_the_columns_in_another_order_trains_the_same_model(tmp_path, kind):
    """bank2's export lists x2, x0, x1: the banks agree the first bank's order (no refusal) and the model,
    its feature order and the test scores are those of the run where every file has one order."""
    from tests.tasks.test_woe_tasks import run_in_process

    parts = numeric_banks(tmp_path)
    banks = {b: "" for b in ("bank1", "bank2", "bank3")}
    extra = "n_trees = 3\n" if kind == "horizontal.gbdt" else ""
    run_in_process(spec_for(tmp_path, kind, banks, extra), tmp_path / "same")
    parts["bank2"][["id", "x2", "y", "x0", "x1"]].to_csv(tmp_path / "bank2.csv", index=False)
    run_in_process(spec_for(tmp_path, kind, banks, extra), tmp_path / "shuffled")
    same, shuffled = (json.loads((tmp_path / r / "model.json").read_text()) for r in ("same", "shuffled"))
    assert shuffled["features"] == same["features"] == ["x0", "x1", "x2"]
    key = "coef" if kind == "horizontal.lr" else "trees"
    if key == "coef":
        np.testing.assert_allclose(shuffled["coef"], same["coef"], atol=1e-9)
    else:
        assert shuffled["trees"] == same["trees"]
    a, b = (pd.read_csv(tmp_path / r / "scores" / "test.csv") for r in ("same", "shuffled"))
    np.testing.assert_allclose(a["score"], b["score"], atol=1e-9)


def test_gbdt_banks_mixing_keep_and_mean_are_one_line_before_the_job(tmp_path):
    """With one bank on missing = "keep" and another on "mean", the trees learned where blanks go from the first
    bank's rows, but the model file's imputation made `fedrisk predict` (and the evaluation) fill every blank with
    the pooled mean first: the learned side was never used. The spec is refused naming both groups."""
    from fedrisk.errors import ConfigError
    from fedrisk.runtime.spec import load_spec

    numeric_banks(tmp_path)
    spec = spec_for(tmp_path, "horizontal.gbdt", {"bank1": 'missing = "keep"', "bank2": 'missing = "mean"', "bank3": ""})
    with pytest.raises(ConfigError) as info:
        load_spec(spec)
    msg = str(info.value)
    assert "['bank1']" in msg and "['bank2']" in msg and "missing" in msg and "\n" not in msg, msg
    for pair in (('missing = "keep"', ""), ('missing = "mean"', "")):
        load_spec(spec_for(tmp_path, "horizontal.gbdt", {"bank1": pair[0], "bank2": pair[1], "bank3": ""}))


@pytest.mark.parametrize("kind", ["horizontal.lr", "horizontal.gbdt", "horizontal.scorecard"])
def test_the_evaluation_file_is_read_in_the_dialect_of_the_evaluation_table(tmp_path, kind):
    """The evaluation holder bank2 exports ';' with decimal commas; the held-out file is a plain ','-separated
    export. It used to be read in bank2's dialect and refused with "set sep = ',' for this party", which would
    break bank2's own file; ``[evaluation] sep = ','`` reads it, and the refusal names that table."""
    parts = numeric_banks(tmp_path)
    parts["bank2"].to_csv(tmp_path / "bank2.csv", index=False, sep=";", decimal=",")
    extra = "n_trees = 3\nmax_depth = 2" if kind == "horizontal.gbdt" else ""
    banks = {"bank1": "", "bank2": 'sep = ";"\ndecimal = ","', "bank3": ""}
    spec = spec_for(tmp_path, kind, banks, extra)
    spec.write_text(spec.read_text() + 'holder = "bank2"\n')
    with pytest.raises(DataError) as e:
        run_in_process(spec, tmp_path / "refused")
    msg = str(e.value)
    assert "'bank2'" in msg and "test.csv" in msg and "\n" not in msg
    assert "set sep = ',' in the [evaluation] table of the job spec" in msg and "for this party" not in msg
    spec.write_text(spec.read_text() + 'sep = ","\n')
    m = run_in_process(spec, tmp_path / "run")
    assert m["test"]["n"] == 400 and m["test"]["positives"] == int(parts["test"].y.sum())
    scores = pd.read_csv(tmp_path / "run" / "scores" / "test.csv")
    # every value was read as written: the holder's decimal comma would have made the test rows' x0 text
    assert scores["id"].tolist() == parts["test"]["id"].tolist()
    assert m["test"]["auc"] == pytest.approx(auc(parts["test"].y.to_numpy(), scores["score"].to_numpy()), abs=1e-9)
    if kind == "horizontal.lr":  # the metrics are the model's scores of the file as pandas reads it
        from fedrisk.runtime.predict import predict_file

        parts["test"].drop(columns="y").to_csv(tmp_path / "new.csv", index=False)
        predict_file(tmp_path / "run" / "model.json", tmp_path / "new.csv", tmp_path / "s.csv")
        np.testing.assert_allclose(scores["score"], pd.read_csv(tmp_path / "s.csv")["score"], atol=1e-7)
