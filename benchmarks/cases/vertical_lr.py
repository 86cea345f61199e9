"""Vertical LR benchmark: ``python benchmarks/run.py vertical-lr [--spec FILE] --out FILE.json``.

Federated: ``fedrisk simulate`` on ``examples/vertical_lr_default_credit.toml`` (one OS process per
party, gRPC over mTLS on loopback). ``federated.wall_s`` is the training time measured inside the
label holder after PSI: key set-up + encrypted-matrix exchange + the epochs (process start, PSI and
scoring excluded); the whole simulate wall is under ``federated.simulate_wall_s`` and the phases
(PSI, encryption, gradient, network, decryption, validation) under ``phases``. ``cpu_s`` and
``peak_rss_mb`` cover every party process of the run. References in the same run: scikit-learn
LogisticRegression on the pooled 23 standardised features (``centralized``) and on the label
holder's 13 alone (``local_only``), same id % 5 == 0 split. ``federated.coef_max_abs_diff`` is the
largest difference between the federated coefficients (and intercept) and scikit-learn fitted with the
same penalty (``C = 1 / (l2 n)``) on the same standardised training rows; ``federated.solver`` and
``federated.iterations`` say which solver ran and how many iterations (exact) or epochs (surrogate).
``--solver exact|surrogate`` runs a copy of the spec with that solver.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.measure import measured, require_shared_data

REPO = Path(__file__).resolve().parents[2]


def _sklearn(X: np.ndarray, y: np.ndarray, test: np.ndarray) -> dict:
    from sklearn.linear_model import LogisticRegression

    from fedrisk.finance.metrics import auc, ks

    with measured() as m:
        mu, sd = X[~test].mean(0), X[~test].std(0)
        Z = (X - mu) / sd
        clf = LogisticRegression(max_iter=1000).fit(Z[~test], y[~test])
        p = clf.predict_proba(Z[test])[:, 1]
    return {"auc": round(auc(y[test], p), 4), "ks": round(ks(y[test], p), 4), **m, "bytes_sent": 0}


def _simulate_with_models(spec: str) -> dict:
    """``simulate_measured`` plus the model files of every party (read before the run dir goes)."""
    import json
    import tempfile

    from benchmarks.measure import measured
    from fedrisk.runtime.simulate import simulate

    with tempfile.TemporaryDirectory(prefix="fedrisk-bench-") as tmp:
        out = Path(tmp) / "run"
        with measured() as m:
            metrics = simulate(spec, out)
        ledger = [json.loads(line) for f in sorted((out / "ledger").glob("*.jsonl"))
                  for line in f.read_text().splitlines() if line.strip()]
        models = {p.name: json.loads(p.read_text()) for p in out.glob("model*.json")}
    return {"metrics": metrics, **m, "ledger": ledger, "models": models}


def _coef_diff(models: dict, pooled: pd.DataFrame, test: np.ndarray, y: np.ndarray, l2: float) -> float:
    """Max |federated - pooled| over all coefficients and the intercept, on the standardised scale,
    pooled = scikit-learn with the same penalty (C = 1 / (l2 n)) on the same training rows."""
    from sklearn.linear_model import LogisticRegression

    lh = models["model.json"]
    parts = [lh] + [models[f] for p, f in lh["parties"].items() if p != lh["party"]]
    def col(f: str, suffix: str) -> str:  # the merge suffixes only the names both files have
        return f + suffix if f + suffix in pooled.columns else f

    cols = [col(f, "_g") for f in lh["features"]] + [col(f, "_h") for m in parts[1:] for f in m["features"]]
    X = pooled[cols].to_numpy(dtype=np.float64)
    Z = (X - X[~test].mean(0)) / X[~test].std(0)
    n = int((~test).sum())
    sk = LogisticRegression(C=1.0 / (l2 * n), tol=1e-10, max_iter=10000).fit(Z[~test], y[~test])
    fed = np.r_[[c for m in parts for c in m["coef"]], lh["intercept"]]
    return float(np.max(np.abs(fed - np.r_[sk.coef_[0], sk.intercept_[0]])))


def run(args: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="benchmarks/run.py vertical-lr")
    ap.add_argument("--spec", default=str(REPO / "examples" / "vertical_lr_default_credit.toml"))
    ap.add_argument("--solver", choices=["spec", "exact", "surrogate"], default="spec",
                    help="override the spec's task.solver (a copy of the spec is run)")
    a = ap.parse_args(args)
    if a.solver != "spec":
        import re
        import tempfile

        text = Path(a.spec).read_text()
        text = re.sub(r'(?m)^solver\s*=.*$', "", text).replace('kind = "vertical.lr"', f'kind = "vertical.lr"\nsolver = "{a.solver}"')
        text = text.replace("../../shared", str((Path(a.spec).parent / "../../shared").resolve()))
        tmp = Path(tempfile.mkdtemp(prefix="fedrisk-bench-")) / "spec.toml"
        tmp.write_text(text)
        a.spec = str(tmp)
    data = require_shared_data("default_credit_hetero_guest.csv", "default_credit_hetero_host.csv")
    run = _simulate_with_models(a.spec)
    metrics, m, sim_wall = run["metrics"], run, run["wall_s"]
    sent = sum(e["bytes"] for e in run["ledger"])
    timing = metrics["timing"]
    federated = {
        "auc": round(metrics["test"]["auc"], 4), "ks": round(metrics["test"]["ks"], 4),
        "wall_s": round(timing["setup_wall"] + timing["training_wall"], 3),
        "cpu_s": m["cpu_s"], "peak_rss_mb": m["peak_rss_mb"], "bytes_sent": sent,
        "epochs": metrics["epochs_run"], "best_epoch": metrics["best_epoch"],
        "solver": metrics.get("solver"), "iterations": metrics.get("iterations", metrics["epochs_run"]),
        "simulate_wall_s": round(sim_wall, 2), "intersection": metrics["intersection"]["size"],
    }
    g = pd.read_csv(data / "default_credit_hetero_guest.csv")
    h = pd.read_csv(data / "default_credit_hetero_host.csv")
    pooled = g.merge(h, on="id", suffixes=("_g", "_h"))
    test = (pooled.id % 5 == 0).to_numpy()
    y = pooled.y.to_numpy()
    Xg = pooled[[c for c in pooled.columns if c.endswith("_g")]].to_numpy()
    Xall = pooled.drop(columns=["id", "y"]).to_numpy()
    centralized = _sklearn(Xall, y, test)
    import tomllib

    l2 = float(tomllib.loads(Path(a.spec).read_text())["task"].get("l2", 1e-4))
    federated["coef_max_abs_diff"] = round(_coef_diff(run["models"], pooled, test, y, l2), 6)
    local = _sklearn(Xg, y, test)
    phases = {"psi": metrics["intersection"]["seconds"], **{k: v for k, v in timing.items()}}
    return {
        "case": "vertical-lr",
        "dataset": "default_credit_hetero (30000 x (13 + 10), test: id % 5 == 0)",
        "federated": federated, "centralized": centralized, "local_only": local, "phases": phases,
        "ratios": {"auc_vs_centralized": federated["auc"] / centralized["auc"],
                   "auc_gain_vs_local": federated["auc"] - local["auc"]},
    }
