"""``[evaluation] weight = "COLUMN"``: weighted metrics.json at the evaluating party, the column never a feature
and never sent, and bad weight columns refused with one line naming the party, file and column."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from fedrisk.errors import FedriskError
from fedrisk.finance import metrics as fm
from fedrisk.runtime.spec import load_spec
from tests.tasks.test_horizontal_categorical import run_captured
from tests.tasks.test_vertical_lr_e2e import synthetic
from tests.tasks.test_woe_tasks import horizontal_spec

#: a column name no partner could guess, so a search of what partners received means something
WCOL = "sampling_wt_7f3a"


def _values(obj) -> list[np.ndarray]:
    """Every number and text inside a message body, as arrays (bytes, e.g. ciphertexts, carry no plain values)."""
    if isinstance(obj, np.ndarray):
        return [obj.ravel()] if obj.dtype.kind in "fiub" else [np.asarray([str(v) for v in obj.ravel()])]
    if isinstance(obj, (int, float, np.number)) and not isinstance(obj, bool):
        return [np.asarray([float(obj)])]
    if isinstance(obj, str):
        return [np.asarray([obj])]
    if isinstance(obj, dict):
        return [a for k, v in obj.items() for a in _values(k) + _values(v)]
    if isinstance(obj, (list, tuple)):
        return [a for v in obj for a in _values(v)]
    return []


def _weights(y: np.ndarray, seed: int) -> np.ndarray:
    """Down-sampled goods (weight about 10) and kept defaults (about 1), each weight a distinct odd decimal."""
    rng = np.random.default_rng(seed)
    return np.round(np.where(y == 1, 1.0, 10.0) * rng.uniform(0.6, 1.4, y.size), 6) + 0.0001234


# -- vertical: the label holder's own column ------------------------------------------------------
@pytest.fixture(scope="module")
def vertical_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vweights")

    def add_weight(name, df):
        return df.assign(**{WCOL: _weights(df["y"].to_numpy(), 1)}) if name == "lender" else df

    spec = synthetic(tmp, n=600, hosts=("payco",), mutate=add_weight, task_extra='solver = "surrogate"')
    spec.write_text(spec.read_text().replace('test_rule = "id % 5 == 0"', f'test_rule = "id % 5 == 0"\nweight = "{WCOL}"'))
    net = run_captured(spec, tmp / "run")
    return tmp, net


def test_vertical_metrics_are_weighted_by_the_label_holders_column(vertical_run):
    tmp, _ = vertical_run
    m = json.loads((tmp / "run" / "metrics.json").read_text())
    lender = pd.read_csv(tmp / "lender.csv").set_index("id")
    for split in ("test", "train"):
        scores = pd.read_csv(tmp / "run" / "scores" / f"{split}.csv")
        w = lender.loc[scores["id"], WCOL].to_numpy()  # the weights from the file itself, joined by id
        np.testing.assert_allclose(scores["weight"], w, rtol=0, atol=0)
        block = m[split]
        assert block["auc"] == pytest.approx(roc_auc_score(scores["y"], scores["score"], sample_weight=w), abs=1e-6)
        assert block["brier"] == pytest.approx(brier_score_loss(scores["y"], scores["score"], sample_weight=w), abs=1e-6)
        assert block["n"] == pytest.approx(w.sum()) and block["weighted"]["rows"] == len(scores)
        assert block["weighted"]["column"] == WCOL and block["weighted"]["party"] == "lender"
        # the weights matter: the unweighted AUC of the same rows is another number
        assert abs(block["auc"] - fm.auc(scores["y"], scores["score"])) > 1e-4
    assert m["stability"]["weighted"]["column"] == WCOL
    assert m["comparison"]["weighted"] is True


def test_vertical_weight_column_is_no_feature_and_never_sent(vertical_run):
    tmp, net = vertical_run
    model = json.loads((tmp / "run" / "model.json").read_text())
    assert WCOL not in json.dumps(model)
    w = pd.read_csv(tmp / "lender.csv")[WCOL].to_numpy()
    received = [a for e in net["payco"].captured for a in _values(e.body)]
    assert received, "the feature holder received nothing: the capture is not working"
    texts = [a for a in received if a.dtype.kind == "U"]
    numbers = [a.astype(float) for a in received if a.dtype.kind != "U"]
    assert not any(WCOL in t for a in texts for t in a)
    assert not any(np.isin(a, w).any() for a in numbers)


def test_vertical_weight_column_missing_is_one_line(tmp_path):
    spec = synthetic(tmp_path, hosts=("payco",))
    spec.write_text(spec.read_text().replace('test_rule = "id % 5 == 0"', 'test_rule = "id % 5 == 0"\nweight = "wt"'))
    with pytest.raises(FedriskError, match=r"party 'lender'.*column 'wt' \(evaluation.test_column or "
                                           r"evaluation.weight\) not found") as e:
        run_captured(spec, tmp_path / "run")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("bad, message", [
    (lambda w: np.where(np.arange(w.size) == 3, -1.0, w), "is negative in 1 of"),
    (lambda w: np.where(np.arange(w.size) % 7 == 0, np.nan, w), "is blank in"),
    (lambda w: np.where(np.arange(w.size) == 0, "ten", w.astype(str)), r"holds 1 of \d+ values that are not numbers"),
])
def test_vertical_bad_weights_are_one_line_naming_party_file_column(tmp_path, bad, message):
    def add_weight(name, df):
        return df.assign(wt=bad(_weights(df["y"].to_numpy(), 2))) if name == "lender" else df

    spec = synthetic(tmp_path, n=400, hosts=("payco",), mutate=add_weight)
    spec.write_text(spec.read_text().replace('test_rule = "id % 5 == 0"', 'test_rule = "id % 5 == 0"\nweight = "wt"'))
    with pytest.raises(FedriskError, match=rf"party 'lender', file '.*lender.csv': evaluation.weight column 'wt' "
                                           rf"{message}") as e:
        run_captured(spec, tmp_path / "run")
    assert "\n" not in str(e.value)


# -- horizontal: the evaluation.test file's column ------------------------------------------------
def _banks(tmp: Path, test_mutate=None) -> Path:
    rng = np.random.default_rng(4)
    frames = {}
    for name, n in (("bank1", 500), ("bank2", 400), ("test", 500)):
        X = rng.normal(size=(n, 3))
        y = (rng.random(n) < 1 / (1 + np.exp(-(X @ [1.0, -0.7, 0.5] - 1.2)))).astype(int)
        frames[name] = pd.DataFrame({"id": np.arange(n) + 10_000 * len(frames), "y": y, "x0": X[:, 0], "x1": X[:, 1],
                                     "x2": X[:, 2]})
    t = frames["test"]
    frames["test"] = t.assign(**{WCOL: _weights(t["y"].to_numpy(), 3)})
    if test_mutate is not None:
        frames["test"] = test_mutate(frames["test"])
    for name, df in frames.items():
        df.to_csv(tmp / f"{name}.csv", index=False)
    spec = horizontal_spec(tmp, "horizontal.lr", banks=2, test=True, task_extra="rounds = 8")
    spec.write_text(spec.read_text().replace('test = "test.csv"\n', f'test = "test.csv"\nweight = "{WCOL}"\n'))
    return spec


def test_horizontal_test_block_is_weighted_train_block_says_it_is_not(tmp_path):
    spec = _banks(tmp_path)
    net = run_captured(spec, tmp_path / "run")
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    test = pd.read_csv(tmp_path / "test.csv").set_index("id")
    scores = pd.read_csv(tmp_path / "run" / "scores" / "test.csv")
    w = test.loc[scores["id"], WCOL].to_numpy()
    assert m["test"]["auc"] == pytest.approx(roc_auc_score(scores["y"], scores["score"], sample_weight=w), abs=1e-6)
    assert m["test"]["weighted"]["column"] == WCOL and m["test"]["weighted"]["source"].endswith("test.csv")
    assert "weighted" not in m["train"] and "evaluated unweighted" in m["train"]["unweighted"]
    assert "weight" not in pd.read_csv(tmp_path / "run" / "scores" / "train.csv").columns
    # PSI: the holder's own rows (unweighted) against the weighted test rows
    assert m["stability"]["n_actual"] == pytest.approx(w.sum())
    # per-round test AUC weighted like the headline (the last round's model is the final one)
    assert m["rounds"][-1]["test_auc"] == pytest.approx(m["test"]["auc"], abs=1e-9)
    assert WCOL not in json.dumps(json.loads((tmp_path / "run" / "model.json").read_text()))
    # nothing of the column reached the coordinator or the other bank
    wv = test[WCOL].to_numpy()
    for who in ("coordinator", "bank2"):
        got = [a for e in net[who].captured for a in _values(e.body)]
        assert got and not any(WCOL in t for a in got if a.dtype.kind == "U" for t in a)
        assert not any(np.isin(a.astype(float), wv).any() for a in got if a.dtype.kind != "U")


def test_horizontal_all_zero_weight_for_a_class_is_refused_before_training(tmp_path):
    spec = _banks(tmp_path, test_mutate=lambda t: t.assign(**{WCOL: np.where(t["y"] == 1, 0.0, t[WCOL])}))
    with pytest.raises(FedriskError, match=rf"party 'bank1', file '.*test.csv': every default row has weight 0 in "
                                           rf"evaluation.weight '{WCOL}'") as e:
        run_captured(spec, tmp_path / "run")
    assert "\n" not in str(e.value)


# -- the spec ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace('test = "test.csv"\n', ""), "names a column of the evaluation.test file, and this job has none"),
    (lambda s: s.replace(f'weight = "{WCOL}"', 'weight = "y"'), "is the label column of party 'bank1'"),
    (lambda s: s.replace(f'weight = "{WCOL}"', 'weight = "id"'), "is the id column of party 'bank1'"),
    (lambda s: s.replace('label = "y"\n', 'label = "y"\nfeatures = ["x0", "%s"]\n' % WCOL, 1),
     "is listed in features of \\[parties.bank1\\]"),
])
def test_spec_refuses_a_weight_that_cannot_be_one(tmp_path, edit, message):
    spec = _banks(tmp_path)
    spec.write_text(edit(spec.read_text()))
    with pytest.raises(FedriskError, match=message) as e:
        load_spec(spec)
    assert "\n" not in str(e.value)


# -- the report -------------------------------------------------------------------------------------
def test_report_says_the_figures_are_weighted_and_by_which_column(vertical_run, tmp_path):
    import shutil

    from fedrisk.finance.report import load_run, write_report

    tmp, _ = vertical_run
    run = tmp_path / "run"
    shutil.copytree(tmp / "run", run)
    m = json.loads((run / "metrics.json").read_text())
    html = write_report(run).read_text()
    assert "Weighted evaluation" in html and f"weighted by column &#x27;{WCOL}&#x27; of lender" in html
    assert "Accounts (weighted)" in html
    assert f"AUC {m['test']['auc']:.3f}" in html  # the ROC legend: the weighted curve, as in metrics.json
    # a run directory whose metrics.json lost its blocks: the report recomputes them weighted, from scores/*.csv
    (run / "metrics.json").write_text(json.dumps({k: v for k, v in m.items() if k not in ("test", "train", "stability")}))
    again = load_run(run)["metrics"]
    assert again["test"]["auc"] == pytest.approx(m["test"]["auc"], abs=1e-6)
    assert again["stability"]["psi"] == pytest.approx(m["stability"]["psi"], abs=1e-6)


def test_unweighted_report_has_no_weight_banner(tmp_path):
    from fedrisk.finance.report import write_report

    spec = _banks(tmp_path)
    spec.write_text(spec.read_text().replace(f'weight = "{WCOL}"\n', ""))
    run_captured(spec, tmp_path / "run")
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "weighted" not in m["test"] and "unweighted" not in m["train"]
    assert "weight" not in pd.read_csv(tmp_path / "run" / "scores" / "test.csv").columns
    html = write_report(tmp_path / "run").read_text()
    assert "Weighted evaluation" not in html and "Accounts (weighted)" not in html


def test_a_checkpoint_does_not_resume_across_a_change_of_weight_column(tmp_path):
    # vertical: the label holder's weight column leaves its features, so its training state depends on the setting
    from fedrisk.runtime.checkpoint import fingerprint

    spec = synthetic(tmp_path, n=200, hosts=("payco",))
    plain = fingerprint(load_spec(spec), "lender")
    spec.write_text(spec.read_text().replace('test_rule = "id % 5 == 0"', 'test_rule = "id % 5 == 0"\nweight = "f2"'))
    weighted = fingerprint(load_spec(spec), "lender")
    assert weighted["spec"] != plain["spec"] and weighted["data"] == plain["data"]


def test_a_partners_job_toml_copy_does_not_name_the_weight_column(tmp_path):
    import tomllib

    from fedrisk.runtime.spec_copy import party_view

    spec = synthetic(tmp_path, n=200, hosts=("payco",))
    spec.write_text(spec.read_text().replace('test_rule = "id % 5 == 0"', f'test_rule = "id % 5 == 0"\nweight = "{WCOL}"'))
    raw = tomllib.loads(spec.read_text())
    assert party_view(raw, tmp_path, "lender", "lender")["evaluation"]["weight"] == WCOL
    assert "weight" not in party_view(raw, tmp_path, "payco", "lender")["evaluation"]


@pytest.mark.extended(covered_by="tests/tasks/test_evaluation_weights.py::test_vertical_metrics_are_weighted_by_the_label_holders_column "
                               "(the same registration and evaluation over vertical.lr's loader)")
def test_vertical_scorecard_with_a_test_column_and_a_weight_column(tmp_path):
    # the scorecard's loader (raw frames, shared with vertical.woe) keeps both [evaluation] columns out of the features
    from tests.tasks.test_vertical_scorecard_split_named import lender_bureau_job
    from tests.tasks.test_woe_tasks import german_frame

    df = german_frame()
    df["in_test"] = (np.arange(len(df)) % 4 == 0).astype(int)
    df[WCOL] = _weights(df["y"].to_numpy(), 6)
    df[["id", "y", "in_test", WCOL, "duration_in_month", "credit_amount", "age_in_years"]].to_csv(
        tmp_path / "lender.csv", index=False)
    df[["id", "status_of_existing_checking_account", "credit_history"]].to_csv(tmp_path / "bureau.csv", index=False)
    lender_bureau_job(tmp_path, "vsc-weights", 10, f'test_column = "in_test"\nweight = "{WCOL}"')
    run_captured(tmp_path / "job.toml", tmp_path / "run")
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    scores = pd.read_csv(tmp_path / "run" / "scores" / "test.csv")
    assert set(scores["id"]) == set(df.id[df.in_test == 1])
    w = df.set_index("id").loc[scores["id"], WCOL].to_numpy()
    assert m["test"]["auc"] == pytest.approx(roc_auc_score(scores["y"], scores["score"], sample_weight=w), abs=1e-6)
    assert m["test"]["weighted"]["column"] == WCOL
    assert all(WCOL not in f.read_text() and "in_test" not in f.read_text()
               for f in (tmp_path / "run").glob("scorecard-*.json"))
