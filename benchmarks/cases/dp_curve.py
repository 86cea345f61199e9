"""``dp-curve``: test AUC vs the differential-privacy budget for both horizontal trainers.

``python benchmarks/run.py dp-curve [--repeats 2] [--chart FILE.svg] --out FILE.json``

Default credit, horizontal split (3 banks x 8000 training rows, 6000 test rows), delta = 1e-5,
epsilon in (inf, 8, 4, 2, 1); inf is the same trainer without ``[privacy]``. Each point is the mean
test AUC of ``--repeats`` in-process runs over secure aggregation as the tasks configure it (the
noise is fresh every run, so the spread is reported too):

* ``horizontal.gbdt``: 30 trees, depth 3, 32 bins, lr 0.3 (the example's settings), one-shot
  session secure aggregation; noise on every histogram, leaf and binning sum.
* ``horizontal.lr``: the Newton solver (``l2 = 1e-4``); under privacy ``privacy_rounds = 6`` noisy
  Newton steps on row-clipped standardised data, plus the 3 noised standardisation sums.

The budget of every point is computed by the dp-accounting PLD accountant over all of the run's
noisy sums (``epsilon_spent`` <= the target). ``--chart`` writes the report chart
(:func:`fedrisk.finance.charts.epsilon_curve_chart`) as a standalone SVG.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from benchmarks.cases.horizontal_gbdt import FILES, TEST, _dp_curve, epsilon_curve
from benchmarks.measure import require_shared_data

GBDT_TASK = {"n_trees": 30, "max_depth": 3, "learning_rate": 0.3, "max_bin": 32}


def _lr_curve(data: dict, Xt, yt, feats: list[str], repeats: int) -> list[dict]:
    from fedrisk.algorithms.horizontal.newton_lr import NewtonConfig, private_mechanisms, run_bank, run_coordinator
    from fedrisk.crypto.secagg_session import SessionSecureAggregation
    from fedrisk.finance.metrics import auc
    from fedrisk.runtime.threads import run_roles
    from fedrisk.transport.channel import InMemoryNetwork

    cfg = NewtonConfig()

    def once(plan) -> float:
        agg = SessionSecureAggregation()  # what horizontal.lr uses
        net = InMemoryNetwork([*data, "coordinator"], job="bench-hlr-dp", recv_timeout=300.0)
        roles = {b: (lambda ch, b=b: run_bank(ch, "coordinator", data[b][0], data[b][1], feats, cfg, agg,
                                              privacy=plan, n_banks=len(data))) for b in data}
        roles["coordinator"] = lambda ch: run_coordinator(ch, list(data), cfg, agg, privacy=plan)
        return auc(yt, run_roles(roles, network=net)["coordinator"].predict_proba(Xt))

    return epsilon_curve(once, private_mechanisms(cfg), repeats)


def run(args: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="benchmarks/run.py dp-curve")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--chart", type=Path, default=None, help="also write the AUC-vs-epsilon chart as an SVG file")
    a = ap.parse_args(args)
    root = require_shared_data(*FILES.values(), TEST)
    frames = {b: pd.read_csv(root / f) for b, f in FILES.items()}
    test = pd.read_csv(root / TEST)
    feats = [c for c in test.columns if c not in ("id", "y")]
    Xt, yt = test[feats].to_numpy(float), test["y"].to_numpy()
    data = {b: (f[feats].to_numpy(float), f["y"].to_numpy(float)) for b, f in frames.items()}
    t0 = time.perf_counter()
    gbdt = _dp_curve(data, Xt, yt, feats, GBDT_TASK, max(1, a.repeats))
    t1 = time.perf_counter()
    lr = _lr_curve(data, Xt, yt, feats, max(1, a.repeats))
    t2 = time.perf_counter()
    curves = {"horizontal.gbdt": gbdt, "horizontal.lr": lr}
    if a.chart is not None:
        from fedrisk.finance.charts import epsilon_curve_chart

        a.chart.parent.mkdir(parents=True, exist_ok=True)
        a.chart.write_text('<?xml version="1.0" encoding="utf-8"?>\n' + epsilon_curve_chart(curves) + "\n")

    def cost(points: list[dict]) -> dict:
        base = points[0]["auc"]
        return {f"auc_loss_at_eps_{p['epsilon']:g}": round(base - p["auc"], 4) for p in points[1:]}

    return {
        "case": "dp-curve",
        "dataset": "UCI default of credit card clients, horizontal split (3 x 8000 train, 6000 test)",
        "setup": "in-process, secure aggregation; delta 1e-5; mean of --repeats runs per epsilon (fresh noise)",
        "repeats": a.repeats,
        "dp_curve": curves,
        "seconds": {"horizontal.gbdt": round(t1 - t0, 1), "horizontal.lr": round(t2 - t1, 1)},
        "ratios": {**{f"gbdt_{k}": v for k, v in cost(gbdt).items()}, **{f"lr_{k}": v for k, v in cost(lr).items()}},
        "note": "AUC only (no timing claims); each run's noise is fresh, see auc_runs for the spread",
    }
