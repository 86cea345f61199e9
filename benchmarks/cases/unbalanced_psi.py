"""Unbalanced PSI benchmark: ``python benchmarks/run.py unbalanced-psi [--lender 10000,100000] [--bureau 1000000]``.

A bureau with ``--bureau`` ids and a lender with each of ``--lender`` ids (``--overlap`` of them
are bureau customers). The bureau's set is encoded **once** under its OPRF key
(:func:`fedrisk.algorithms.vertical.ub_store.encode_ids`, in this process: wall, CPU-seconds with
the pool's workers, bytes of the encoded set). Then, per lender size, each party in its own OS
process over gRPC + mTLS (:mod:`benchmarks.cases._ub_two_process`):

* ``unbalanced.first_job``: the first job of the epoch (smallest lender size only), which also
  ships the encoded set to the lender's cache;
* ``unbalanced.job``: a job with the cache in place, the per-job cost;
* the balanced protocols on the same sets in the same run (``--baselines``, default ``ecdh`` and
  ``rr22`` when the ``fedrisk[psi]`` extra is installed).

Reported per run: wall, CPU-seconds per party (process + pool workers), bytes each party sent
(its ledger), and ``ratios``: balanced CPU-s / unbalanced CPU-s per party and in total. Every
protocol's row indices must be identical (same intersection, same canonical order): checked.
The machine is shared, so wall times are inflated; CPU-seconds are the figure to compare.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.cases._ub_two_process import _cpu_tree, run_pair


def _bureau(n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct 12-digit customer numbers."""
    return np.random.default_rng(seed).choice(9 * 10**11, n, replace=False) + 10**11


def _lender(bureau: np.ndarray, m: int, overlap: float, seed: int = 1) -> np.ndarray:
    """``m`` ids: ``overlap * m`` of the bureau's, the rest outside it (13-digit), shuffled."""
    rng = np.random.default_rng(seed)
    k = int(round(m * overlap))
    fresh = rng.choice(9 * 10**12, m - k, replace=False) + 10**12
    return rng.permutation(np.concatenate([rng.choice(bureau, k, replace=False), fresh]))


def _encode(bureau: np.ndarray, store: Path) -> dict:
    from fedrisk.algorithms.vertical import ub_store

    t0, c0 = time.perf_counter(), _cpu_tree()
    ub_store.create_key(store, "bureau")
    chunks = (bureau[lo:lo + 262144] for lo in range(0, len(bureau), 262144))
    head = ub_store.encode_ids(chunks, ub_store.load_key(store, "bureau"), store, "bureau", "benchmark ids")
    return {"ids": len(bureau), "wall_s": round(time.perf_counter() - t0, 2), "cpu_s": round(_cpu_tree() - c0, 2),
            "cpu_us_per_id": round(1e6 * (_cpu_tree() - c0) / len(bureau), 1),
            "encoded_bytes": head["count"] * head["width"]}


def _say(what: str, r: dict) -> None:
    """Progress on stderr (a 1M run takes many minutes on a loaded machine)."""
    print(f"{what}: wall {r['wall_s']} s, CPU-s {r.get('cpu_s_by_party', r.get('cpu_s'))}", file=sys.stderr, flush=True)


def _summary(r: dict) -> dict:
    return {k: v for k, v in r.items() if k != "indices"}


def run(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="unbalanced-psi")
    ap.add_argument("--lender", default="10000,100000", help="lender set sizes")
    ap.add_argument("--bureau", type=int, default=1_000_000, help="bureau set size")
    ap.add_argument("--overlap", type=float, default=0.5, help="share of the lender's ids the bureau holds")
    ap.add_argument("--baselines", default=None, help="balanced protocols to compare (default ecdh,rr22 if installed; 'none': unbalanced only)")
    ns = ap.parse_args(argv)
    from fedrisk.crypto import spu_binding

    baselines = (ns.baselines.split(",") if ns.baselines else ["ecdh", *(["rr22"] if spu_binding.available() else [])])
    baselines = [b for b in baselines if b != "none"]
    sizes = [int(s) for s in ns.lender.split(",")]
    out: dict = {"bureau": ns.bureau, "overlap": ns.overlap, "runs": [], "ratios": {}}
    with tempfile.TemporaryDirectory(prefix="fedrisk-bench-ubstore-") as tmp:
        stores = {"lender": str(Path(tmp) / "lender"), "bureau": str(Path(tmp) / "bureau")}
        bureau = _bureau(ns.bureau)
        out["encode_once"] = _encode(bureau, Path(stores["bureau"]))
        _say("encoded once", out["encode_once"])
        for i, m in enumerate(sizes):
            lender = _lender(bureau, m, ns.overlap)
            run_: dict = {"lender": m}
            if i == 0:
                run_["unbalanced_first_job"] = _summary(run_pair(lender, bureau, "unbalanced", stores=stores))
            ub = run_pair(lender, bureau, "unbalanced", stores=stores)
            run_["unbalanced_job"] = _summary(ub)
            _say(f"unbalanced m={m}", run_["unbalanced_job"])
            for proto in baselines:
                b = run_pair(lender, bureau, proto)
                for p in ("lender", "bureau"):
                    if not np.array_equal(b["indices"][p], ub["indices"][p]):
                        raise RuntimeError(f"{proto} and unbalanced PSI disagree at the {p} (lender {m})")
                run_[proto] = _summary(b)
                _say(f"{proto} m={m}", run_[proto])
                cpu_u, cpu_b = ub["cpu_s_by_party"], b["cpu_s_by_party"]
                for p in ("lender", "bureau"):
                    out["ratios"][f"{proto}/unbalanced cpu {p} m={m}"] = round(cpu_b[p] / max(cpu_u[p], 1e-3), 2)
                out["ratios"][f"{proto}/unbalanced cpu total m={m}"] = round(sum(cpu_b.values()) / max(sum(cpu_u.values()), 1e-3), 2)
            if ub["size"] != int(round(m * ns.overlap)):
                raise RuntimeError(f"unbalanced PSI found {ub['size']} common ids, expected {round(m * ns.overlap)}")
            run_["identical_indices"] = True
            out["runs"].append(run_)
    return out
