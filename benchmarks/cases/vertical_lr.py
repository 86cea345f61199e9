"""Vertical LR benchmark: ``python benchmarks/run.py vertical-lr [--spec FILE] --out FILE.json``.

Federated: ``fedrisk simulate`` on ``examples/vertical_lr_default_credit.toml`` (one OS process per
party, gRPC over mTLS on loopback). ``federated.wall_s`` is the training time measured inside the
label holder after PSI: key set-up + encrypted-matrix exchange + the epochs (process start, PSI and
scoring excluded); the whole simulate wall is under ``federated.simulate_wall_s`` and the phases
(PSI, encryption, gradient, network, decryption, validation) under ``phases``. ``cpu_s`` and
``peak_rss_mb`` cover every party process of the run. References in the same run: scikit-learn
LogisticRegression on the pooled 23 standardised features (``centralized``) and on the label
holder's 13 alone (``local_only``), same id % 5 == 0 split.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.measure import measured, require_shared_data, simulate_measured

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


def run(args: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="benchmarks/run.py vertical-lr")
    ap.add_argument("--spec", default=str(REPO / "examples" / "vertical_lr_default_credit.toml"))
    a = ap.parse_args(args)
    data = require_shared_data("default_credit_hetero_guest.csv", "default_credit_hetero_host.csv")
    run = simulate_measured(a.spec)
    metrics, m, sim_wall = run["metrics"], run, run["wall_s"]
    sent = sum(e["bytes"] for e in run["ledger"])
    timing = metrics["timing"]
    federated = {
        "auc": round(metrics["test"]["auc"], 4), "ks": round(metrics["test"]["ks"], 4),
        "wall_s": round(timing["setup_wall"] + timing["training_wall"], 3),
        "cpu_s": m["cpu_s"], "peak_rss_mb": m["peak_rss_mb"], "bytes_sent": sent,
        "epochs": metrics["epochs_run"], "best_epoch": metrics["best_epoch"],
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
    local = _sklearn(Xg, y, test)
    phases = {"psi": metrics["intersection"]["seconds"], **{k: v for k, v in timing.items()}}
    return {
        "case": "vertical-lr",
        "dataset": "default_credit_hetero (30000 x (13 + 10), test: id % 5 == 0)",
        "federated": federated, "centralized": centralized, "local_only": local, "phases": phases,
        "ratios": {"auc_vs_centralized": federated["auc"] / centralized["auc"],
                   "auc_gain_vs_local": federated["auc"] - local["auc"]},
    }
