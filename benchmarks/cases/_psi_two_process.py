"""RR22 PSI with each party in its own OS process over the job's mTLS gRPC channel (the deployed shape).

The one-process measurement of :mod:`benchmarks.cases.psi` runs both parties as threads of one
Python process, so their Python steps take turns on one GIL and their relays talk over the
in-memory network. A real deployment runs each party in its own process
(``fedrisk run --as NAME``), with a :class:`~fedrisk.transport.grpc_channel.GrpcChannel` (mutual
TLS with the job's certificates, a ledger file per party, the tag whitelist) and the same role
code: :func:`fedrisk.algorithms.vertical.alignment.align_parties` with ``protocol="rr22"``.
This module measures exactly that:

1. the parent writes both id sets (``.npy``), a dev PKI and two loopback ports to a temporary
   folder and starts ``python -m benchmarks.cases._psi_two_process party ...`` twice;
2. each party loads its ids, builds its channel the way ``fedrisk.runtime.party`` does (ledger
   and inbound ledger files, ``psi.`` tags only), starts its gRPC server, says ``ready``;
3. when both are ready the parent writes ``go`` to both; each party runs ``align_parties`` and
   reports its start/end on the system-wide monotonic clock, its CPU-seconds (all its threads,
   and the library's child process), its peak RSS and its library process's, the per-step timings (``Rr22Stats``) and what its
   ledger recorded; its row indices go to a file for the correctness check.

``wall_s`` is from ``go`` to the later party's end: hashing, the library's link set-up and run,
reading the result back and the canonical order, as ``align_parties`` does in a job; process
start-up (imports, loading ids, the gRPC server) is reported separately (``startup_s``), since a
party of a job has done it before PSI starts. With ``FEDRISK_PSI_PYSPY=DIR`` each party runs
under ``py-spy record`` (native frames included) and leaves a flame graph there (profiling only;
py-spy's sampling costs CPU, so those runs' timings are not the figure); with ``FEDRISK_PSI_LOGS=DIR``
each party's output (the library logs its phases with timestamps) is kept there.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PARTIES = ("lender", "payco")
LEADER = "lender"
_ROOT = Path(__file__).resolve().parents[2]


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def _party(ns: argparse.Namespace) -> None:
    """One party's process: channel as in ``fedrisk.runtime.party``, then ``align_parties``."""
    t_start = time.monotonic()
    from fedrisk.algorithms.vertical.alignment import align_parties
    from fedrisk.algorithms.vertical.rr22_psi import Rr22Stats
    from fedrisk.crypto import spu_binding
    from fedrisk.runtime.rss import peak_rss_mb
    from fedrisk.transport.certs import tls_files
    from fedrisk.transport.grpc_channel import GrpcChannel
    from fedrisk.transport.ledger import Ledger

    folder = Path(ns.dir)
    me = ns.name
    cfg = json.loads((folder / "job.json").read_text())
    ids = np.load(folder / f"{me}.npy")
    spu_binding.load()  # as the runtime's spec check does before a job starts
    channel = GrpcChannel(
        me, cfg["addresses"], cfg["job"], tls_files(folder / "certs", me), connect_timeout=120.0,
        recv_timeout=3600.0, ledger=Ledger(me, folder / f"ledger-{me}.jsonl"),
        inbound_ledger=Ledger(me, folder / f"inbound-{me}.jsonl", direction="in", fsync=False),
        tag_prefixes=("psi.",),
    ).start()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit(f"{me}: the benchmark did not say go")
    relay_cpu = _count_relay_cpu()
    waits = _time_sends(channel)
    t0, c0, m0 = time.monotonic(), _cpu_self(), time.thread_time()
    stats: dict = {}
    al = align_parties(channel, LEADER, [p for p in PARTIES if p != LEADER], ids, salt=cfg["salt"],
                       protocol="rr22", rr22_stats=stats, memory_mb=cfg.get("memory_mb"))
    t1, c1, m1 = time.monotonic(), _cpu_self(), time.thread_time()
    # the leader's last message (psi.rr22.keep) is delivered before send returns: closing is safe
    channel.close()
    np.save(folder / f"{me}-indices.npy", al.indices)
    out = {"start": t0, "end": t1, "startup_s": round(t0 - t_start, 3), "cpu_s": round(c1 - c0, 3),
           "main_thread_cpu_s": round(m1 - m0, 3), "relay_threads_cpu_s": round(relay_cpu[0], 3),
           "max_rss_mb": peak_rss_mb(), "send_waits": {k: round(v, 3) for k, v in waits.items()},
           "ledger_bytes_sent": channel.ledger.bytes_sent, "ledger_frames": len(channel.ledger.entries),
           "phases": {p: s.as_dict() for p, s in stats.items() if isinstance(s, Rr22Stats)},
           "size": al.size}
    (folder / f"{me}-result.json").write_text(json.dumps(out))


def _count_relay_cpu() -> list[float]:
    """CPU-seconds of the relay's Python threads (socket <-> channel pumps), summed as they end.

    Measurement only: wraps the relay's thread body in this benchmark process, so the CPU of a
    run splits into the calling thread (hashing, files, result, and the library's own driving
    thread, since ``psi_execute`` runs in it), the relay, and the rest (the library's worker
    threads and gRPC's).
    """
    from fedrisk.transport.link_relay import ChannelLinkRelay

    total = [0.0]
    guard = ChannelLinkRelay._guard

    def counted(self, fn, *args):  # type: ignore[no-untyped-def]
        c = time.thread_time()
        try:
            return guard(self, fn, *args)
        finally:
            total[0] += time.thread_time() - c

    ChannelLinkRelay._guard = counted  # type: ignore[method-assign]
    return total


def _time_sends(channel) -> dict[str, float]:
    """Wall seconds the relay's sends spent in the ledger's fsync and in the gRPC call (with the
    number of relayed data frames): while a send waits, that relay thread reads nothing more
    from the library's socket. Measurement only, as :func:`_count_relay_cpu`."""
    waits = {"ledger_fsync_s": 0.0, "grpc_deliver_s": 0.0, "frames": 0, "max_deliver_s": 0.0}
    ledger = channel.ledger
    sync, deliver = ledger._sync_through, channel._deliver

    def timed_sync(seq):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        try:
            return sync(seq)
        finally:
            waits["ledger_fsync_s"] += time.perf_counter() - t

    def timed_deliver(to, frame):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        try:
            return deliver(to, frame)
        finally:
            dt = time.perf_counter() - t
            waits["grpc_deliver_s"] += dt
            waits["frames"] += 1
            waits["max_deliver_s"] = max(waits["max_deliver_s"], dt)

    ledger._sync_through = timed_sync
    channel._deliver = timed_deliver
    return waits


def _spawn(name: str, folder: Path, pyspy: str | None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "benchmarks.cases._psi_two_process", "party", "--name", name, "--dir", str(folder)]
    if pyspy:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        cmd = [spy, "record", "--native", "--threads", "--rate", "50", "--format", "speedscope",
               "-o", str(Path(pyspy) / f"{name}.speedscope.json"), "--", *cmd]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.Popen(cmd, cwd=str(_ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _estimate(res: dict) -> float:
    """Wall on 2 idle cores from CPU: each party's calling thread (hashing, files, reading the
    result, the library's driving thread) is serial but runs beside the other party's; the rest
    (library workers, relay, gRPC) keeps both cores busy, as spu alone does (15 CPU-s in 7 s
    wall). Optimistic by 1-2.5 s for the one-process run on the quiet machine (docs/scale.md)."""
    serial = max(r["main_thread_cpu_s"] for r in res.values())
    rest = sum(r["cpu_s"] - r["main_thread_cpu_s"] for r in res.values())
    return round(serial + rest / 2, 2)


def _library_cpu(r: dict) -> float:
    """CPU seconds of the party's library processes (one per pairwise run), as they reported them."""
    return round(sum(float(ph.get("library_cpu_s") or 0.0) for ph in r["phases"].values()), 3)


def _library_rss(r: dict) -> float:
    """The largest peak RSS of the party's library processes (one per pairwise run), MiB."""
    return max([float(ph.get("library_rss_mb") or 0.0) for ph in r["phases"].values()] or [0.0])


def run_two_processes(a: np.ndarray, b: np.ndarray, salt: str, timeout: float = 1800.0,
                      memory_mb: float | None = None) -> dict:
    """Run RR22 between two party processes over gRPC + mTLS; figures per party and overall."""
    from fedrisk.runtime.demo import free_ports
    from fedrisk.transport.certs import make_dev_pki

    pyspy = os.environ.get("FEDRISK_PSI_PYSPY") or None
    logs = os.environ.get("FEDRISK_PSI_LOGS") or None
    with tempfile.TemporaryDirectory(prefix="fedrisk-bench-psi2p-") as tmp:
        folder = Path(tmp)
        make_dev_pki(list(PARTIES), folder / "certs")
        ports = free_ports(len(PARTIES))
        (folder / "job.json").write_text(json.dumps({
            "addresses": {p: f"127.0.0.1:{port}" for p, port in zip(PARTIES, ports)},
            "job": "bench-psi-rr22-2p", "salt": salt, "memory_mb": memory_mb}))
        np.save(folder / "lender.npy", a)
        np.save(folder / "payco.npy", b)
        procs = {p: _spawn(p, folder, pyspy) for p in PARTIES}
        try:
            for p, proc in procs.items():
                assert proc.stdout is not None
                line = "?"
                while line and line.strip() != "ready":  # (the library may log to stdout first)
                    line = proc.stdout.readline()
                if not line:
                    proc.wait(timeout=30)
                    raise RuntimeError(f"party {p} did not start: {proc.stderr.read()[-3000:] if proc.stderr else ''}")
            go = time.monotonic()
            for proc in procs.values():
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            errs = {}
            for p, proc in procs.items():
                log, err = proc.communicate(timeout=timeout)
                if proc.returncode != 0:
                    errs[p] = err[-3000:]
                if logs:  # the library's own log (phase timestamps), for profiling
                    (Path(logs) / f"{p}.log").write_text(log + err)
            if errs:
                raise RuntimeError(f"two-process RR22 failed: {errs}")
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        res = {p: json.loads((folder / f"{p}-result.json").read_text()) for p in PARTIES}
        idx = {p: np.load(folder / f"{p}-indices.npy") for p in PARTIES}
        ledgers = {p: sum(json.loads(line)["bytes"] for line in (folder / f"ledger-{p}.jsonl").read_text().splitlines())
                   for p in PARTIES}
    end = max(r["end"] for r in res.values())
    out = {
        "wall_s": round(end - go, 3),
        "cpu_s": round(sum(r["cpu_s"] for r in res.values()), 3),
        "cpu_s_by_party": {p: r["cpu_s"] for p, r in res.items()},
        "cpu_split_by_party": {p: {"calling_thread": r["main_thread_cpu_s"], "relay_threads": r["relay_threads_cpu_s"],
                                   "library_and_grpc_threads": round(r["cpu_s"] - r["main_thread_cpu_s"]
                                                                     - r["relay_threads_cpu_s"], 3)}
                               for p, r in res.items()},
        "wall_s_by_party": {p: round(r["end"] - r["start"], 3) for p, r in res.items()},
        # the library's own process(es) vs the rest of the party (hashing, files, relay, gRPC + TLS, ledger)
        "library_cpu_s_by_party": {p: _library_cpu(r) for p, r in res.items()},
        "fedrisk_cpu_s_by_party": {p: round(r["cpu_s"] - _library_cpu(r), 3) for p, r in res.items()},
        "wall_estimate_idle_2_cores_s": _estimate(res),
        "go_lag_s": {p: round(r["start"] - go, 3) for p, r in res.items()},
        "startup_s": {p: r["startup_s"] for p, r in res.items()},
        "max_rss_mb_by_party": {p: r["max_rss_mb"] for p, r in res.items()},
        # the library runs in a child process of each party (fedrisk.crypto.spu_process): its own peak
        "library_rss_mb_by_party": {p: _library_rss(r) for p, r in res.items()},
        # an upper bound of the party's whole footprint (the two peaks need not coincide)
        "party_plus_library_rss_mb_by_party": {p: round(r["max_rss_mb"] + _library_rss(r), 1)
                                               for p, r in res.items() if r["max_rss_mb"] is not None},
        "bytes_sent": {p: r["ledger_bytes_sent"] for p, r in res.items()},
        "ledger_file_bytes": ledgers,
        "messages": {p: r["ledger_frames"] for p, r in res.items()},
        "phases": {p: r["phases"] for p, r in res.items()},
        "send_waits": {p: r.get("send_waits") for p, r in res.items()},
        "size": res[LEADER]["size"],
        "indices": idx,
    }
    if pyspy:
        out["profiled_with_py_spy"] = pyspy
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["party"])
    ap.add_argument("--name", required=True, choices=PARTIES)
    ap.add_argument("--dir", required=True)
    _party(ap.parse_args())


if __name__ == "__main__":
    main()
