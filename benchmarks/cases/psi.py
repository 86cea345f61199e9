"""ECDH-PSI alignment benchmark: ``python benchmarks/run.py psi [--sizes 30000,100000] [--full]``.

Two parties (lender = leader, payco = follower) with ``n`` ids each and a partial overlap run
:func:`fedrisk.algorithms.vertical.psi_protocol.psi_align` as threads over the in-memory network
(same codec and ledger as the wire); the module's process pool does the group arithmetic on every
core of this machine, shared by both parties. Wall and CPU time include the pool's start-up and
shutdown (CPU of the worker processes is counted once they are joined). The reference is a plain
hash join on the raw ids (what a trusted third party would do), measured in the same run.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.measure import measured
from fedrisk.algorithms.vertical.psi_protocol import psi_align
from fedrisk.crypto import psi
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork


def _ids(n: int, overlap: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    k = int(round(n * overlap))
    pool = rng.choice(10**12, 2 * n - k, replace=False) + 10**11  # 12-digit customer numbers
    a = rng.permutation(pool[:n])
    b = rng.permutation(np.concatenate([pool[:k], pool[n:]]))
    return a, b


def _plain(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """Plaintext alignment: normalise, hash join, both parties' row indices in one order."""
    t = time.perf_counter()
    na, nb = psi.normalize_ids(a), psi.normalize_ids(b)
    row = {v: i for i, v in enumerate(na)}
    pairs = sorted((row[v], j) for j, v in enumerate(nb) if v in row)
    ia = np.array([p[0] for p in pairs], np.int64)
    ib = np.array([p[1] for p in pairs], np.int64)
    assert len(ia) == len(ib)
    return time.perf_counter() - t, len(ia)


def _one(n: int, overlap: float, seed: int, salt: str) -> dict:
    a, b = _ids(n, overlap, seed)
    psi.shutdown_pool()
    net = InMemoryNetwork(["lender", "payco"], job="bench-psi", recv_timeout=3600.0, tag_prefixes=("psi.",))
    with measured() as m:
        res = run_roles(
            {
                "lender": lambda ch: psi_align(ch, "payco", a, leader=True, salt=salt),
                "payco": lambda ch: psi_align(ch, "lender", b, leader=False, salt=salt),
            },
            network=net,
        )
        psi.shutdown_pool()  # joins the workers, so their CPU time is counted
    rl, rf = res["lender"], res["payco"]
    correct = bool(np.array_equal(a[rl.indices], b[rf.indices])) and rl.size == len(np.intersect1d(a, b))
    plain_wall, plain_size = _plain(a, b)
    fed = dict(m)
    fed["bytes_sent"] = {p: net[p].ledger.bytes_sent for p in net.parties}
    fed["messages"] = {p: len(net[p].ledger.entries) for p in net.parties}
    fed["cpu_us_per_id_per_party"] = round(m["cpu_s"] / (2 * n) * 1e6, 1)
    fed["workers"] = psi.worker_count()
    return {
        "n_leader": n,
        "n_follower": n,
        "overlap": overlap,
        "intersection": rl.size,
        "correct": correct and plain_size == rl.size,
        "federated": fed,
        "plain_hash_join": {"wall_s": round(plain_wall, 4)},
        "ratio_time": round(m["wall_s"] / plain_wall, 1),
    }


def run(args: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="benchmarks/run.py psi")
    ap.add_argument("--sizes", default="30000,100000", help="comma-separated ids per party")
    ap.add_argument("--full", action="store_true", help="also run 1,000,000 x 1,000,000 (about 2.5 min)")
    ap.add_argument("--overlap", type=float, default=0.5, help="fraction of each party's ids in the intersection")
    ap.add_argument("--seed", type=int, default=0)
    ns = ap.parse_args(args)
    sizes = [int(s) for s in ns.sizes.split(",") if s]
    if ns.full and 1_000_000 not in sizes:
        sizes.append(1_000_000)
    runs = [_one(n, ns.overlap, ns.seed + i, salt=f"bench-{ns.seed}-{i}") for i, n in enumerate(sizes)]
    return {
        "case": "psi",
        "protocol": "ecdh-psi ristretto255 (rbcl/libsodium), reveal=both",
        "runs": runs,
        "ratio": {f"time_{r['n_leader']}": r["ratio_time"] for r in runs},
    }
