"""``horizontal-lr``: the three-bank mTLS job vs pooled and single-bank scikit-learn, and a stress case.

Federated figures are for the whole job as a user runs it: ``fedrisk simulate`` on
``examples/horizontal_default_credit.toml`` — separate processes, mutual TLS, secure aggregation
— wall time including process start. CPU time and peak RSS include the party processes.

Exactness: ``coef_max_abs_diff`` is the largest difference (coefficients and intercept, on the
standardised scale) between the federated model file and scikit-learn's ``LogisticRegression``
with the same penalty (``C = 1 / (l2 * n_pooled)``, ``newton-cholesky``, ``tol = 1e-12``) on the
pooled standardised rows; ``rounds`` is the coordinator's aggregation rounds to convergence.
``stress`` repeats the job on the ``heavy_noniid`` case of ``tests/stress_data/horizontal.py``
(heavy-tailed amounts, banks of 8000/2400/480 rows cut by ``x0`` tercile) with a spec that sets
only ``kind = "horizontal.lr"``; ``--no-stress`` skips it.
"""
from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path

import numpy as np
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


def _simulate(spec: Path) -> dict:
    """``fedrisk simulate`` measured, keeping the model file (``measure.simulate_measured`` plus ``model.json``)."""
    return simulate_measured(spec, keep=lambda out: {"model": json.loads((out / "model.json").read_text())})


def _coef_max_abs_diff(model: dict, X: np.ndarray, y: np.ndarray, l2: float) -> float:
    """Federated vs pooled scikit-learn with the same penalty, standardised scale, intercept included."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from fedrisk.algorithms.horizontal.logistic import sklearn_C

    ref = LogisticRegression(C=sklearn_C(l2, len(y)), solver="newton-cholesky", tol=1e-12, max_iter=1000)
    ref.fit(StandardScaler().fit_transform(X), y)
    return max(float(np.max(np.abs(np.asarray(model["coef"]) - ref.coef_[0]))),
               abs(float(model["intercept"]) - float(ref.intercept_[0])))


def _federated(run: dict, X: np.ndarray, y: np.ndarray, l2: float) -> dict:
    result = run["metrics"]
    progress = [json.loads(line) for line in run["run_files"]["progress/coordinator.jsonl"].splitlines()]
    return {"auc": result["test"]["auc"], "ks": result["test"]["ks"], "solver": result.get("solver"),
            **{k: run[k] for k in ("wall_s", "cpu_s", "peak_rss_mb")},
            "bytes_sent": sum(e["bytes"] for e in run["ledger"]), "bytes_by_party": bytes_by_party(run["ledger"]),
            "rounds": len(progress), "coef_max_abs_diff": _coef_max_abs_diff(run["model"], X, y, l2)}


def _stress(data: Path) -> dict:
    """The heavy-tailed, non-IID stress case with a defaults-only spec, vs pooled scikit-learn."""
    from fedrisk.runtime.demo import free_ports
    from tests.stress_data.horizontal import make_case, write_case

    case = make_case("heavy_noniid", data)
    with tempfile.TemporaryDirectory(prefix="fedrisk-bench-stress-") as tmp:
        paths = write_case(case, Path(tmp))
        ports = free_ports(len(case.banks) + 1)
        lines = ["[federation]", 'name = "stress-heavy-noniid"', "[coordinator]", f'address = "127.0.0.1:{ports[0]}"']
        for (b, port) in zip(case.banks, ports[1:]):
            lines += [f"[parties.{b}]", f'address = "127.0.0.1:{port}"', f'data = "{paths[b]}"', 'id = "id"', 'label = "y"']
        lines += ["[task]", 'kind = "horizontal.lr"', "[evaluation]", f'test = "{paths["test"]}"', 'holder = "bank1"']
        spec = Path(tmp) / "job.toml"
        spec.write_text("\n".join(lines) + "\n")
        X, y = case.pooled()
        federated = _federated(_simulate(spec), X, y, 1e-4)
    train = pd.concat(case.banks.values(), ignore_index=True)
    pooled = _sklearn_pooled_default(train, case.test, case.features)
    return {"dataset": "heavy_noniid: homo default credit, x11 x12 x13 x17 x18 -> exp(1.5 x), banks of 8000/2400/480 "
                       "rows by x0 tercile", "federated": federated, "centralized": pooled,
            "auc_federated_minus_centralized": federated["auc"] - pooled["auc"]}


def _sklearn_pooled_default(train: pd.DataFrame, test: pd.DataFrame, feats: list[str]) -> dict:
    """StandardScaler + LogisticRegression() (C = 1): the public check's pooled reference."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from fedrisk.finance.metrics import auc

    with measured() as m:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(train[feats], train["y"])
        p = model.predict_proba(test[feats])[:, 1]
    return {"auc": auc(test["y"], p), **m, "rows": len(train)}


def _startup_seconds(text: str) -> float | None:
    m = re.search(r"agree on the job \(([\d.]+) s\)", text)
    return float(m.group(1)) if m else None


def run(args: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="horizontal-lr")
    ap.add_argument("--spec", type=Path, default=EXAMPLE)
    ap.add_argument("--no-stress", action="store_true", help="skip the heavy-tailed non-IID stress case")
    opts = ap.parse_args(args)
    data = require_shared_data(*FILES.values(), "default_credit_homo_test.csv")
    frames = {b: pd.read_csv(data / f) for b, f in FILES.items()}
    test = pd.read_csv(data / "default_credit_homo_test.csv")
    feats = [c for c in test.columns if c not in ("id", "y")]
    run = _simulate(opts.spec)
    startup = _startup_seconds(run["run_files"]["logs/coordinator.log"])
    progress = [json.loads(line) for line in run["run_files"]["progress/coordinator.jsonl"].splitlines()]
    pooled = pd.concat(frames.values(), ignore_index=True)
    from fedrisk.runtime.spec import load_spec

    l2 = float(load_spec(opts.spec).task.get("l2", 1e-4))
    federated = _federated(run, pooled[feats].to_numpy(float), pooled["y"].to_numpy(float), l2)
    centralized = _sklearn(pd.concat(frames.values()), test, feats)
    per_bank = {b: _sklearn(f, test, feats) for b, f in frames.items()}
    best = max(per_bank, key=lambda b: per_bank[b]["auc"])
    local_only = {**per_bank[best], "party": best, "per_party": per_bank}
    phases = {"process_start_and_handshake_s": startup,
              "training_s": round(progress[-1]["time"] - progress[0]["time"], 3) if len(progress) > 1 else None,
              "per_round_s": round((progress[-1]["time"] - progress[0]["time"]) / max(1, len(progress) - 1), 4)}
    stress = None if opts.no_stress else _stress(data)
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
        "stress": stress,
        "aim": {"wall_s": 10.0, "met": federated["wall_s"] < 10.0, "coef_max_abs_diff": 1e-4, "rounds": 15,
                "exact_met": federated["coef_max_abs_diff"] <= 1e-4 and federated["rounds"] <= 15
                and (stress is None or (stress["federated"]["coef_max_abs_diff"] <= 1e-4
                                        and stress["federated"]["rounds"] <= 15))},
    }
