"""How secure aggregation's per-aggregation cost grows with the number of banks: session vs single-round.

``python benchmarks/run.py secagg-parties [--banks 3 10 20] [--aggregations 12] [--length 2000] --out FILE.json``

For each number of banks ``n``, ``n`` banks and a coordinator run in one process over the
in-memory network (threads; no gRPC, so this is the protocol's own cost: key agreement, Shamir
dealing, masking, unmasking, message count — not transport latency) and sum ``--aggregations``
random vectors of ``--length`` floats, once with the single-round protocol
(:class:`SecureAggregation`, fresh keys every aggregation) and once in session mode
(:class:`SessionSecureAggregation`, one setup for all of them). Reported per mode: wall and CPU
seconds per aggregation (whole process, all threads; the first aggregation, which carries the
session's setup, is reported separately), messages the coordinator sends and receives per
aggregation, and bytes. Thresholds are the safe defaults ``t > (n + 1) / 2``. Where SecAgg+'s
sparse graph has fewer neighbours than ``n - 1`` (:mod:`fedrisk.crypto.secagg_graph`), a third
mode ``session_sparse`` runs session mode on it (``t`` over the ``k + 1`` share holders).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from fedrisk.crypto.secagg_graph import choose_degree
from fedrisk.crypto.secagg_session import SessionSecureAggregation
from fedrisk.crypto.secure_aggregation import SecureAggregation, default_threshold
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork

COORD = "coordinator"


def _run(n: int, aggs: int, length: int, session: bool, graph: str = "complete") -> dict:
    names = [f"bank{i:02d}" for i in range(n)]
    agg = SessionSecureAggregation(rounds=max(aggs, 1), dropout_timeout=60.0, graph=graph) if session \
        else SecureAggregation(dropout_timeout=60.0)
    rng = np.random.default_rng(n)
    vecs = {p: rng.normal(size=length) for p in names}
    net = InMemoryNetwork([*names, COORD], job=f"bench-secagg-parties-{n}", recv_timeout=600.0)
    marks: list[tuple[float, float]] = []

    def coordinator(ch):
        out = []
        for k in range(aggs):
            marks.append((time.perf_counter(), time.process_time()))
            out.append(agg.collect(ch, names, f"s.r{k}", length))
        marks.append((time.perf_counter(), time.process_time()))
        return out

    roles = {p: (lambda ch, p=p: [agg.submit(ch, COORD, f"s.r{k}", vecs[p]) for k in range(aggs)]) for p in names}
    roles[COORD] = coordinator
    res = run_roles(roles, network=net)[COORD]
    expect = sum(vecs.values())
    err = max(float(np.max(np.abs(r.total - expect))) for r in res)
    walls = [b[0] - a[0] for a, b in zip(marks, marks[1:])]
    cpus = [b[1] - a[1] for a, b in zip(marks, marks[1:])]
    coord_sent = len(net[COORD].ledger.entries)
    bank_sent = sum(len(net[p].ledger.entries) for p in names)
    return {
        "first_aggregation": {"wall_s": round(walls[0], 4), "cpu_s": round(cpus[0], 4)},
        "later_aggregations": {"wall_s_median": round(statistics.median(walls[1:]), 4) if aggs > 1 else None,
                               "cpu_s_median": round(statistics.median(cpus[1:]), 4) if aggs > 1 else None},
        "wall_s_per_aggregation": round(sum(walls) / aggs, 4),
        "cpu_s_per_aggregation": round(sum(cpus) / aggs, 4),
        "coordinator_messages_per_aggregation": round((coord_sent + bank_sent) / aggs, 2),
        "bytes_per_aggregation": int(sum(net[p].ledger.bytes_sent for p in net.parties) / aggs),
        "max_abs_error": err,
    }


def run(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="secagg-parties")
    ap.add_argument("--banks", type=int, nargs="+", default=[3, 10, 20])
    ap.add_argument("--aggregations", type=int, default=12)
    ap.add_argument("--length", type=int, default=2000)
    a = ap.parse_args(argv)
    out: dict = {"case": "secagg-parties", "aggregations": a.aggregations, "length": a.length, "results": {}}
    for n in a.banks:
        row = {"threshold": default_threshold(n)}
        for mode, session in (("single_round", False), ("session", True)):
            row[mode] = _run(n, a.aggregations, a.length, session)
        if choose_degree(n, "sparse") < n - 1:
            row["session_sparse"] = {"degree": choose_degree(n, "sparse"),
                                     **_run(n, a.aggregations, a.length, True, graph="sparse")}
        row["ratio_session_over_single_round"] = {
            "wall": round(row["session"]["wall_s_per_aggregation"] / row["single_round"]["wall_s_per_aggregation"], 3),
            "cpu": round(row["session"]["cpu_s_per_aggregation"] / row["single_round"]["cpu_s_per_aggregation"], 3)}
        out["results"][str(n)] = row
    ns = [str(n) for n in a.banks]
    if len(ns) > 1:
        lo, hi = out["results"][ns[0]], out["results"][ns[-1]]
        out["growth_later_aggregation_wall"] = {
            m: round(hi[m]["later_aggregations"]["wall_s_median"] / max(lo[m]["later_aggregations"]["wall_s_median"], 1e-9), 2)
            for m in ("single_round", "session") if a.aggregations > 1}
        if "session_sparse" in hi and a.aggregations > 1:
            out["growth_later_aggregation_wall"]["session_sparse_vs_" + ns[0] + "_session"] = round(
                hi["session_sparse"]["later_aggregations"]["wall_s_median"]
                / max(lo["session"]["later_aggregations"]["wall_s_median"], 1e-9), 2)
    out["note"] = "in-process (threads, no gRPC) on a shared 2-core machine; compare ratios from the same run"
    return out
