"""End to end on German credit's raw text columns, split between a lender and a bureau:
vertical.secureboost (level codes) and vertical.lr (one-hot) train and predict on the same raw
files, each party's levels stay in its own model file, and the result is close to pooled
references (XGBoost with ``enable_categorical``, scikit-learn one-hot LR) on the same rows."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedrisk.runtime.demo import free_ports

pytestmark = pytest.mark.e2e
GERMAN = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "germancredit.csv"
LENDER = ["status_of_existing_checking_account", "duration_in_month", "credit_history", "purpose", "credit_amount",
          "savings_account_and_bonds", "age_in_years"]


def cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "fedrisk", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def german_job(tmp: Path, kind: str, task: str) -> tuple[Path, pd.DataFrame]:
    if not GERMAN.is_file():
        pytest.skip(f"germancredit.csv not found at {GERMAN}")
    df = pd.read_csv(GERMAN)
    df.insert(0, "id", np.arange(len(df)))
    df[["id", *LENDER, "creditability"]].to_csv(tmp / "lender.csv", index=False)
    bureau = [c for c in df.columns if c not in LENDER and c not in ("id", "creditability")]
    df[["id", *bureau]].sample(frac=1, random_state=0).to_csv(tmp / "bureau.csv", index=False)
    ports = free_ports(2)
    spec = tmp / "job.toml"
    spec.write_text(textwrap.dedent(f"""
        [federation]
        name = "german-{kind.replace('.', '-')}"
        [parties.lender]
        address = "127.0.0.1:{ports[0]}"
        data = "lender.csv"
        label = "creditability"
        positive = "bad"
        categorical = ["status_of_existing_checking_account", "credit_history", "purpose", "savings_account_and_bonds"]
        [parties.bureau]
        address = "127.0.0.1:{ports[1]}"
        data = "bureau.csv"
        categorical = ["present_employment_since", "personal_status_and_sex", "other_debtors_or_guarantors",
                       "property", "other_installment_plans", "housing", "job", "telephone", "foreign_worker"]
        [task]
        kind = "{kind}"
        {task}
        [evaluation]
        test_rule = "id % 5 == 0"
        """))
    return spec, df


def _check_run(tmp: Path, out: Path, df: pd.DataFrame) -> pd.DataFrame:
    lender = json.loads((out / "model.json").read_text())
    bureau = json.loads((out / "model-bureau.json").read_text())
    assert set(lender["categories"]) == {"status_of_existing_checking_account", "credit_history", "purpose",
                                         "savings_account_and_bonds"}
    assert "housing" in bureau["categories"]
    # the bureau's levels (e.g. 'for free' housing) are in its file only
    assert "for free" not in (out / "model.json").read_text()
    # predict accepts the raw text file; an unseen purpose is scored (as the pooled "other"/reference level)
    new = pd.read_csv(tmp / "lender.csv").drop(columns=["creditability"]).iloc[:60]
    new.loc[0, "purpose"] = "space travel"
    new.to_csv(tmp / "new.csv", index=False)
    r = cli("predict", out / "model.json", tmp / "new.csv", "--out", tmp / "scores.csv")
    assert r.returncode == 0, r.stdout + r.stderr
    scores = pd.read_csv(tmp / "scores.csv").set_index("id")
    assert (scores.status == "scored").all()
    trained = pd.concat([pd.read_csv(out / "scores" / f) for f in ("train.csv", "test.csv")]).set_index("id")
    same = scores.index[1:]
    assert np.allclose(scores.loc[same, "score"], trained.loc[same, "score"], atol=1e-6)
    return trained


def test_secureboost_on_raw_categories_close_to_xgboost(tmp_path):
    xgb = pytest.importorskip("xgboost")
    from fedrisk.finance.metrics import auc

    spec, df = german_job(tmp_path, "vertical.secureboost", "n_trees = 20\nmax_depth = 3\nmax_bin = 32")
    out = tmp_path / "run"
    r = cli("simulate", spec, "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "treated as categorical" not in r.stdout + r.stderr  # every text column was declared
    m = json.loads((out / "metrics.json").read_text())
    _check_run(tmp_path, out, df)
    # pooled XGBoost with native categorical splits on the same train/test rows
    X = df.drop(columns=["id", "creditability"])
    for c in X.columns:
        if X[c].dtype == object or str(X[c].dtype) in ("str", "string"):
            X[c] = X[c].astype("category")
    y = (df.creditability == "bad").astype(int).to_numpy()
    test = (df.id % 5 == 0).to_numpy()
    ref = xgb.XGBClassifier(n_estimators=20, max_depth=3, learning_rate=0.3, max_bin=32, tree_method="hist",
                            enable_categorical=True, n_jobs=1).fit(X[~test], y[~test])
    a_ref = auc(y[test], ref.predict_proba(X[test])[:, 1])
    print(f"german credit test AUC: vertical.secureboost {m['test']['auc']:.4f}, pooled XGBoost enable_categorical {a_ref:.4f}")
    assert m["test"]["auc"] > a_ref - 0.04, (m["test"]["auc"], a_ref)


def test_vertical_lr_on_raw_categories_close_to_pooled_onehot_lr(tmp_path):
    from sklearn.linear_model import LogisticRegression

    from fedrisk.finance.metrics import auc

    spec, df = german_job(tmp_path, "vertical.lr", "")
    out = tmp_path / "run"
    r = cli("simulate", spec, "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    m = json.loads((out / "metrics.json").read_text())
    _check_run(tmp_path, out, df)
    bureau = json.loads((out / "model-bureau.json").read_text())
    assert any(f.startswith("housing=") for f in bureau["features"])
    X = pd.get_dummies(df.drop(columns=["id", "creditability"]), drop_first=True).astype(float)
    X = (X - X.mean()) / X.std().replace(0, 1)
    y = (df.creditability == "bad").astype(int).to_numpy()
    test = (df.id % 5 == 0).to_numpy()
    ref = LogisticRegression(max_iter=2000).fit(X[~test], y[~test])
    a_ref = auc(y[test], ref.predict_proba(X[test])[:, 1])
    print(f"german credit test AUC: vertical.lr {m['test']['auc']:.4f}, pooled one-hot LR {a_ref:.4f}")
    assert abs(m["test"]["auc"] - a_ref) < 0.03, (m["test"]["auc"], a_ref)
