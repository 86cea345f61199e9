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

In the same run, as references (``--quick`` skips both): ``surrogate`` is the same spec with
``solver = "surrogate"`` (the old fast, approximate path: its AUC, time and coefficient gap), and
``stress`` is the ``heavy_tailed`` case of tests/stress_data/vertical.py (6,000 rows, ``l2 = 1e-3``:
the feature holder's partial score spans ~[-2.6, 24]) run end to end with the spec's solver, with
its own pooled scikit-learn reference. ``ratios`` gives federated/centralised AUC, the training
time and CPU ratios to the surrogate, and the stress case's AUC gap and coefficient difference.
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

    from benchmarks.measure import simulate_measured

    return simulate_measured(spec, keep=lambda out: {"models": {p.name: json.loads(p.read_text())
                                                                for p in out.glob("model*.json")}})


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


def _with_solver(spec: str, solver: str) -> str:
    """A temporary copy of ``spec`` with ``task.solver`` set (data paths made absolute)."""
    import re
    import tempfile

    text = Path(spec).read_text()
    text = re.sub(r'(?m)^solver\s*=.*$', "", text).replace('kind = "vertical.lr"', f'kind = "vertical.lr"\nsolver = "{solver}"')
    text = text.replace("../../shared", str((Path(spec).parent / "../../shared").resolve()))
    tmp = Path(tempfile.mkdtemp(prefix="fedrisk-bench-")) / "spec.toml"
    tmp.write_text(text)
    return str(tmp)


def _federated(run: dict) -> dict:
    metrics = run["metrics"]
    timing = metrics["timing"]
    return {
        "auc": round(metrics["test"]["auc"], 4), "ks": round(metrics["test"]["ks"], 4),
        "wall_s": round(timing["setup_wall"] + timing["training_wall"], 3),
        "cpu_s": run["cpu_s"], "peak_rss_mb": run["peak_rss_mb"], "bytes_sent": sum(e["bytes"] for e in run["ledger"]),
        "epochs": metrics["epochs_run"], "best_epoch": metrics["best_epoch"],
        "solver": metrics.get("solver"), "iterations": metrics.get("iterations", metrics["epochs_run"]),
        "simulate_wall_s": round(run["wall_s"], 2), "intersection": metrics["intersection"]["size"],
    }


def _stress(data: Path, solver: str) -> dict:
    """The heavy_tailed vertical stress case end to end (processes, mTLS), against pooled scikit-learn."""
    import shutil
    import tempfile

    from sklearn.linear_model import LogisticRegression

    from fedrisk.finance.metrics import auc
    from fedrisk.runtime.demo import free_ports
    from tests.stress_data import vertical as sv

    rows, l2 = 6000, 1e-3
    tmp = Path(tempfile.mkdtemp(prefix="fedrisk-bench-stress-"))
    sv.write_csvs("heavy_tailed", data, tmp, rows=rows)
    ports = free_ports(2)
    spec = tmp / "job.toml"
    spec.write_text(
        f'[federation]\nname = "stress-heavy-tailed"\nseed = 0\n'
        f'[parties.lender]\naddress = "127.0.0.1:{ports[0]}"\ndata = "lender.csv"\nid = "id"\nlabel = "y"\n'
        f'[parties.payco]\naddress = "127.0.0.1:{ports[1]}"\ndata = "payco.csv"\nid = "id"\n'
        f'[task]\nkind = "vertical.lr"\nsolver = "{solver}"\nl2 = {l2}\n[evaluation]\ntest_rule = "id % 5 == 0"\n')
    run = _simulate_with_models(str(spec))
    fed = _federated(run)
    c = sv.load("heavy_tailed", data, rows=rows)
    A = np.hstack([c.XG, c.XH])
    sk = LogisticRegression(C=1.0 / (l2 * c.train.sum()), tol=1e-12, max_iter=20000).fit(A[c.train], c.y[c.train])
    lh, part = run["models"]["model.json"], run["models"]["model-payco.json"]
    coef = np.r_[lh["coef"], part["coef"], lh["intercept"]]
    fed["coef_max_abs_diff"] = round(float(np.max(np.abs(coef - np.r_[sk.coef_[0], sk.intercept_[0]]))), 6)
    fed["pooled_auc"] = round(auc(c.y[c.test], sk.predict_proba(A[c.test])[:, 1]), 4)
    fed["dataset"] = f"heavy_tailed ({rows} rows, l2 = {l2})"
    shutil.rmtree(tmp, ignore_errors=True)
    return fed


def run(args: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="benchmarks/run.py vertical-lr")
    ap.add_argument("--spec", default=str(REPO / "examples" / "vertical_lr_default_credit.toml"))
    ap.add_argument("--solver", choices=["spec", "exact", "surrogate"], default="spec",
                    help="override the spec's task.solver (a copy of the spec is run)")
    ap.add_argument("--quick", action="store_true", help="skip the surrogate reference and the stress case")
    a = ap.parse_args(args)
    base_spec = a.spec
    if a.solver != "spec":
        a.spec = _with_solver(a.spec, a.solver)
    data = require_shared_data("default_credit_hetero_guest.csv", "default_credit_hetero_host.csv")
    run = _simulate_with_models(a.spec)
    federated = _federated(run)
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
    metrics, timing = run["metrics"], run["metrics"]["timing"]
    phases = {"psi": metrics["intersection"]["seconds"], **{k: v for k, v in timing.items()}}
    out = {
        "case": "vertical-lr",
        "dataset": "default_credit_hetero (30000 x (13 + 10), test: id % 5 == 0)",
        "federated": federated, "centralized": centralized, "local_only": local, "phases": phases,
        "ratios": {"auc_vs_centralized": federated["auc"] / centralized["auc"],
                   "auc_gain_vs_local": federated["auc"] - local["auc"]},
    }
    if not a.quick:
        sur = _simulate_with_models(_with_solver(base_spec, "surrogate"))
        surrogate = _federated(sur)
        surrogate["coef_max_abs_diff"] = round(_coef_diff(sur["models"], pooled, test, y, l2), 6)
        out["surrogate"] = surrogate
        out["ratios"].update({"wall_vs_surrogate": federated["wall_s"] / surrogate["wall_s"],
                              "cpu_vs_surrogate": federated["cpu_s"] / surrogate["cpu_s"],
                              "auc_minus_surrogate": federated["auc"] - surrogate["auc"]})
        stress = _stress(data, federated["solver"] or "auto")
        out["stress"] = stress
        out["ratios"].update({"stress_auc_vs_pooled": stress["auc"] / stress["pooled_auc"],
                              "stress_coef_max_abs_diff": stress["coef_max_abs_diff"]})
    return out
