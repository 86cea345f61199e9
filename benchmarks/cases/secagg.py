"""Secure vs plain aggregation in a real job: horizontal FedAvg LR on default-credit, 3 banks.

The same 20-round job (``fedrisk.algorithms.horizontal.fedavg_lr``) runs in-process over the
in-memory network twice: once with :class:`PlainAggregation` (the coordinator sees every update)
and with secure aggregation (it sees only masked vectors and the sum): ``secure`` is the default
session mode (:class:`SessionSecureAggregation`: one key setup for the whole job, three messages per
party per aggregation), ``secure_single_round`` the single-round :class:`SecureAggregation` (fresh
keys every aggregation). Reported: wall seconds (median of ``--repeats`` runs), bytes and messages
sent by all parties, test AUC, and the secure/plain ratios (``ratio`` for session mode,
``ratio_single_round``). The models must agree to fixed-point precision, so the AUCs match.

``python benchmarks/run.py secagg [--rounds 20] [--repeats 5]``
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from benchmarks.measure import require_shared_data
from fedrisk.algorithms.horizontal.aggregation import Aggregation, PlainAggregation
from fedrisk.algorithms.horizontal.fedavg_lr import TAG_PREFIXES, FedAvgConfig, run_bank, run_coordinator
from fedrisk.crypto.secagg_session import SessionSecureAggregation
from fedrisk.crypto.secure_aggregation import SecureAggregation
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork

BANKS = {"guest": "default_credit_homo_guest.csv", "host_1": "default_credit_homo_host_1.csv",
         "host_2": "default_credit_homo_host_2.csv"}
TEST = "default_credit_homo_test.csv"
COORD = "coordinator"


def _load(path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    with open(path, encoding="utf-8") as fh:
        header = fh.readline().strip().split(",")
    data = np.loadtxt(path, delimiter=",", skiprows=1)
    feats = [c for c in header if c not in ("id", "y")]
    cols = [header.index(c) for c in feats]
    return data[:, cols], data[:, header.index("y")], feats


def _job(data: dict, cfg: FedAvgConfig, agg: Aggregation) -> tuple[float, int, int, object]:
    net = InMemoryNetwork([*data, COORD], job="bench-secagg", tag_prefixes=TAG_PREFIXES, recv_timeout=300.0)
    roles = {b: (lambda ch, b=b: run_bank(ch, COORD, data[b][0], data[b][1], data[b][2], cfg, agg)) for b in data}
    roles[COORD] = lambda ch: run_coordinator(ch, list(data), cfg, agg)
    t0 = time.perf_counter()
    out = run_roles(roles, network=net)
    wall = time.perf_counter() - t0
    entries = [e for p in net.parties for e in net[p].ledger.entries]
    return wall, sum(e["bytes"] for e in entries), len(entries), out[COORD]


def run(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="secagg")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    root = require_shared_data(*BANKS.values(), TEST)
    data = {b: _load(root / f) for b, f in BANKS.items()}
    Xt, yt, _ = _load(root / TEST)
    # tol=0 so both jobs run exactly ``rounds`` rounds
    cfg = FedAvgConfig(rounds=args.rounds, tol=0.0)
    result: dict = {"case": "secagg", "dataset": "default_credit_homo", "rounds": args.rounds, "banks": len(data)}
    aggs = {"plain": PlainAggregation(), "secure": SessionSecureAggregation(), "secure_single_round": SecureAggregation()}
    walls: dict[str, list[float]] = {k: [] for k in aggs}
    nbytes: dict[str, int] = {}
    nmsgs: dict[str, int] = {}
    models: dict = {}
    # interleave plain and secure runs so both see the same machine load
    for _ in range(max(1, args.repeats)):
        for name, agg in aggs.items():
            wall, nbytes[name], nmsgs[name], models[name] = _job(data, cfg, agg)
            walls[name].append(wall)
    for name in aggs:
        result[name] = {"wall_s": round(statistics.median(walls[name]), 4),
                        "wall_s_runs": [round(w, 4) for w in walls[name]], "bytes_sent": nbytes[name],
                        "messages_sent": nmsgs[name], "messages_per_aggregation": round(nmsgs[name] / (args.rounds + 1), 2),
                        "auc": round(float(roc_auc_score(yt, models[name].predict_proba(Xt))), 6)}
    p = result["plain"]
    for name, key in (("secure", "ratio"), ("secure_single_round", "ratio_single_round")):
        s = result[name]
        s["max_abs_coef_diff_vs_plain"] = float(np.max(np.abs(models[name].coef - models["plain"].coef)))
        s["overhead_ms_per_aggregation"] = round(1000 * (s["wall_s"] - p["wall_s"]) / (args.rounds + 1), 3)
        result[key] = {"time": round(s["wall_s"] / p["wall_s"], 4), "bytes": round(s["bytes_sent"] / p["bytes_sent"], 4)}
    return result
