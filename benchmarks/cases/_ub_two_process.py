"""One PSI alignment between two party processes over gRPC + mTLS, for the unbalanced-PSI benchmark.

Like :mod:`benchmarks.cases._psi_two_process` (which is RR22-only), but for any ``[psi] protocol``
including ``"unbalanced"`` (the lender is the client, the bureau the key holder with a prepared
store). Each party process builds its channel as ``fedrisk.runtime.party`` does (ledger files,
``psi.`` tags), waits for ``go``, runs :func:`~fedrisk.algorithms.vertical.alignment.align_parties`
and reports its wall time, its CPU-seconds **including its process-pool workers** (psutil, the
process and its live children: the ristretto255 kernels run in the pool), its peak RSS and the
bytes its ledger recorded.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PARTIES = ("lender", "bureau")
_ROOT = Path(__file__).resolve().parents[2]


def _cpu_tree() -> float:
    """CPU-seconds of this process and its live children (the PSI process pool)."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for c in me.children(recursive=True):
        try:
            total += sum(c.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def _party(ns: argparse.Namespace) -> None:
    from fedrisk.runtime.rss import peak_rss_mb
    from fedrisk.algorithms.vertical.alignment import align_parties
    from fedrisk.algorithms.vertical.unbalanced_psi import UbSettings
    from fedrisk.crypto import psi
    from fedrisk.transport.certs import tls_files
    from fedrisk.transport.grpc_channel import GrpcChannel
    from fedrisk.transport.ledger import Ledger

    folder, me = Path(ns.dir), ns.name
    cfg = json.loads((folder / "job.json").read_text())
    ids = np.load(folder / f"{me}.npy")
    if cfg["protocol"] == "rr22":
        from fedrisk.crypto import spu_binding

        spu_binding.load()
    psi.get_pool()  # start the pool's workers before the clock, as a running party has
    channel = GrpcChannel(me, cfg["addresses"], cfg["job"], tls_files(folder / "certs", me), connect_timeout=120.0,
                          recv_timeout=3600.0, ledger=Ledger(me, folder / f"ledger-{me}.jsonl"),
                          inbound_ledger=Ledger(me, folder / f"inbound-{me}.jsonl", direction="in", fsync=False),
                          tag_prefixes=("psi.",)).start()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit(f"{me}: the benchmark did not say go")
    ub = UbSettings("bureau", Path(cfg["stores"][me]), True) if cfg["protocol"] == "unbalanced" else None
    t0, c0 = time.monotonic(), _cpu_tree()
    al = align_parties(channel, "lender", ["bureau"], ids, salt=cfg["salt"], protocol=cfg["protocol"], unbalanced=ub)
    t1, c1 = time.monotonic(), _cpu_tree()
    channel.close()
    np.save(folder / f"{me}-indices.npy", al.indices)
    (folder / f"{me}-result.json").write_text(json.dumps({
        "start": t0, "end": t1, "cpu_s": round(c1 - c0, 3), "max_rss_mb": peak_rss_mb(),
        "bytes_sent": channel.ledger.bytes_sent, "frames": len(channel.ledger.entries), "size": al.size,
        "cache_bytes": sum(e["bytes"] for e in channel.ledger.entries if ".cache." in e["tag"])}))


def _start_together(procs: dict[str, subprocess.Popen]) -> float:
    """Wait until every party printed ``ready`` (its channel is up), then tell all ``go``; the time of go."""
    for p, proc in procs.items():
        lines = iter(proc.stdout.readline, "")  # type: ignore[union-attr]
        if not any(line.strip() == "ready" for line in lines):
            proc.wait(timeout=30)
            raise RuntimeError(f"party {p} did not start: {proc.stderr.read()[-3000:]}")  # type: ignore[union-attr]
    go = time.monotonic()
    for proc in procs.values():
        print("go", file=proc.stdin, flush=True)
    return go


def run_pair(lender: np.ndarray, bureau: np.ndarray, protocol: str, *, stores: dict[str, str] | None = None,
             salt: str = "fedrisk:bench-ub:train", timeout: float = 7200.0) -> dict:
    """Run one alignment between two party processes; figures per party, and both parties' row indices."""
    from fedrisk.runtime.demo import free_ports
    from fedrisk.transport.certs import make_dev_pki

    with tempfile.TemporaryDirectory(prefix="fedrisk-bench-ub-") as tmp:
        folder = Path(tmp)
        make_dev_pki(list(PARTIES), folder / "certs")
        ports = free_ports(2)
        (folder / "job.json").write_text(json.dumps({
            "addresses": {p: f"127.0.0.1:{port}" for p, port in zip(PARTIES, ports)}, "job": f"bench-ub-{protocol}",
            "salt": salt, "protocol": protocol, "stores": stores or {}}))
        np.save(folder / "lender.npy", lender)
        np.save(folder / "bureau.npy", bureau)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(_ROOT), *filter(None, [env.get("PYTHONPATH")])])
        procs = {p: subprocess.Popen([sys.executable, "-m", "benchmarks.cases._ub_two_process", "party", "--name", p,
                                      "--dir", str(folder)], cwd=str(_ROOT), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for p in PARTIES}
        try:
            go = _start_together(procs)
            stderr = {p: proc.communicate(timeout=timeout)[1] for p, proc in procs.items()}
            failed = {p: stderr[p][-3000:] for p, proc in procs.items() if proc.returncode != 0}
            if failed:
                raise RuntimeError(f"two-process {protocol} PSI failed: {failed}")
        finally:
            for proc in (q for q in procs.values() if q.poll() is None):
                proc.kill()
                proc.wait()
        res = {p: json.loads((folder / f"{p}-result.json").read_text()) for p in PARTIES}
        idx = {p: np.load(folder / f"{p}-indices.npy") for p in PARTIES}
    return {
        "wall_s": round(max(r["end"] for r in res.values()) - go, 3),
        "cpu_s_by_party": {p: r["cpu_s"] for p, r in res.items()},
        "bytes_sent_by_party": {p: r["bytes_sent"] for p, r in res.items()},
        "encoded_set_bytes": res["bureau"]["cache_bytes"],
        "max_rss_mb_by_party": {p: r["max_rss_mb"] for p, r in res.items()},
        "size": res["lender"]["size"],
        "indices": idx,
    }


if __name__ == "__main__":  # python -m benchmarks.cases._ub_two_process party --name NAME --dir DIR
    _args = sys.argv[1:]
    if len(_args) != 5 or _args[0] != "party" or _args[1] != "--name" or _args[2] not in PARTIES or _args[3] != "--dir":
        raise SystemExit("usage: _ub_two_process party --name lender|bureau --dir DIR")
    _party(argparse.Namespace(name=_args[2], dir=_args[4]))
