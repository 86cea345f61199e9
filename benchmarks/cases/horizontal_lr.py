"""``horizontal-lr``: the three-bank mTLS FedAvg job vs pooled and single-bank scikit-learn.

Federated figures are for the whole job as a user runs it: ``fedrisk simulate`` on
``examples/horizontal_default_credit.toml`` — separate processes, mutual TLS, secure aggregation
— wall time including process start. CPU time and peak RSS include the party processes.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pandas as pd

from benchmarks.measure import bytes_by_party, measured, require_shared_data, simulate_measured

FILES = {"bank1": "default_credit_homo_guest.csv", "bank2": "default_credit_homo_host_1.csv",
         "bank3": "default_credit_homo_host_2.csv"}
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "horizontal_default_credit.toml"


def _sklearn(train: pd.DataFrame, test: pd.DataFrame, feats: list[str]) -> dict:
    from sklearn.linear_model import LogisticRegression

    from fedrisk.finance.metrics import auc, ks

    with measured() as m:
        model = LogisticRegression(max_iter=2000).fit(train[feats], train["y"])
        p = model.predict_proba(test[feats])[:, 1]
    return {"auc": auc(test["y"], p), "ks": ks(test["y"], p), **m, "bytes_sent": 0, "rows": len(train)}


def _startup_seconds(text: str) -> float | None:
    m = re.search(r"agree on the job \(([\d.]+) s\)", text)
    return float(m.group(1)) if m else None


def run(args: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="horizontal-lr")
    ap.add_argument("--spec", type=Path, default=EXAMPLE)
    opts = ap.parse_args(args)
    data = require_shared_data(*FILES.values(), "default_credit_homo_test.csv")
    frames = {b: pd.read_csv(data / f) for b, f in FILES.items()}
    test = pd.read_csv(data / "default_credit_homo_test.csv")
    feats = [c for c in test.columns if c not in ("id", "y")]
    run = simulate_measured(opts.spec)
    result = run["metrics"]
    startup = _startup_seconds(run["run_files"]["logs/coordinator.log"])
    progress = [json.loads(line) for line in run["run_files"]["progress/coordinator.jsonl"].splitlines()]
    federated = {"auc": result["test"]["auc"], "ks": result["test"]["ks"],
                 **{k: run[k] for k in ("wall_s", "cpu_s", "peak_rss_mb")},
                 "bytes_sent": sum(e["bytes"] for e in run["ledger"]), "bytes_by_party": bytes_by_party(run["ledger"]),
                 "rounds": len(progress)}
    centralized = _sklearn(pd.concat(frames.values()), test, feats)
    per_bank = {b: _sklearn(f, test, feats) for b, f in frames.items()}
    best = max(per_bank, key=lambda b: per_bank[b]["auc"])
    local_only = {**per_bank[best], "party": best, "per_party": per_bank}
    phases = {"process_start_and_handshake_s": startup,
              "training_s": round(progress[-1]["time"] - progress[0]["time"], 3) if len(progress) > 1 else None,
              "per_round_s": round((progress[-1]["time"] - progress[0]["time"]) / max(1, len(progress) - 1), 4)}
    return {
        "case": "horizontal-lr",
        "dataset": "UCI default of credit card clients, horizontal split (3 x 8000 train, 6000 test)",
        "setup": "3 banks + coordinator as separate processes, gRPC + mutual TLS on loopback, secure aggregation",
        "federated": federated,
        "centralized": centralized,
        "local_only": local_only,
        "phases": phases,
        "ratios": {
            "auc_federated_minus_centralized": federated["auc"] - centralized["auc"],
            "auc_federated_minus_best_local": federated["auc"] - local_only["auc"],
            "wall_federated_over_centralized": federated["wall_s"] / max(centralized["wall_s"], 1e-9),
        },
        "aim": {"wall_s": 10.0, "met": federated["wall_s"] < 10.0},
    }
