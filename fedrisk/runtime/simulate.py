"""Run every participant of a job as its own OS process on this machine, over mTLS on loopback.

``simulate`` is exactly what a real deployment does, minus the separate hosts: one
``fedrisk party`` process per participant, each with its own gRPC server, certificate and ledger.
The parent only starts them, draws progress from the driver's progress file, and collects the
results; it never touches a payload. If one participant fails, the others are told (they abort
their pending receives), stragglers are stopped, and the error names the participant with the
tail of its log.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from fedrisk.errors import FedriskError
from fedrisk.runtime.spec import JobSpec, load_spec
from fedrisk.runtime.tasks import get_task
from fedrisk.transport.certs import make_dev_pki

__all__ = ["simulate", "SimulationResult"]


class SimulationResult(dict):
    """``metrics.json`` of the run plus ``run_dir`` and ``wall_s``."""


def _tail(path: Path, n: int = 6) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def _root_cause(out: Path, failed: list[str]) -> tuple[str, str]:
    """The participant whose failure started it all: not one that only relays a peer's abort."""
    reasons = {}
    for name in failed:
        line = next((l for l in reversed(_tail(out / "logs" / f"{name}.log", 50).splitlines()) if " ERROR failed: " in l), "")
        reasons[name] = line.split(" ERROR failed: ", 1)[-1] if line else _tail(out / "logs" / f"{name}.stderr", 1)
    for name, reason in reasons.items():
        if "aborted the job" not in reason:
            return name, reason
    name = failed[0]
    return name, reasons[name]


def prepare_certs(spec: JobSpec, out: Path) -> Path:
    """The spec's certificates if it names a folder that has them, else fresh dev certs in the run dir."""
    certs = spec.resolve(spec.security.certs)
    if certs is not None and (certs / "ca.pem").is_file():
        return certs
    return make_dev_pki(spec.participants(), out / "certs")


def simulate(spec_path: str | Path, out: str | Path, *, resume: bool = False, timeout: float | None = None,
             on_progress: Callable[[dict[str, Any]], None] | None = None, env: dict[str, str] | None = None) -> SimulationResult:
    """Run the whole job locally, one process per participant; return the run's metrics."""
    spec_path = Path(spec_path)
    spec = load_spec(spec_path)
    spec.check_files()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        # ledgers are not stale: each party moves its earlier run's files to ledger/previous/
        for stale in ("progress", "logs"):
            shutil.rmtree(out / stale, ignore_errors=True)
        (out / "metrics.json").unlink(missing_ok=True)
    certs = prepare_certs(spec, out)
    if spec_path.resolve() != (out / "job.toml").resolve():
        shutil.copyfile(spec_path, out / "job.toml")
    driver = get_task(spec.task["kind"]).driver(spec)
    (out / "logs").mkdir(exist_ok=True)
    child_env = dict(os.environ, **(env or {}))
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    # each participant is single-threaded numpy unless it asks otherwise: 2 cores, N processes
    child_env.setdefault("OMP_NUM_THREADS", "1")
    child_env.setdefault("OPENBLAS_NUM_THREADS", "1")
    procs: dict[str, subprocess.Popen] = {}
    t0 = time.perf_counter()
    for name in spec.participants():
        cmd = [sys.executable, "-m", "fedrisk", "party", str(spec_path), "--as", name, "--out", str(out),
               "--certs", str(certs), "--quiet"] + (["--resume"] if resume else [])
        errf = open(out / "logs" / f"{name}.stderr", "w", encoding="utf-8")
        procs[name] = subprocess.Popen(cmd, stdout=errf, stderr=subprocess.STDOUT, env=child_env)
        errf.close()
    progress_file = out / "progress" / f"{driver}.jsonl"
    seen = 0
    failed: dict[str, int] = {}
    try:
        while True:
            if on_progress is not None and progress_file.exists():
                lines = progress_file.read_text(encoding="utf-8").splitlines()
                for line in lines[seen:]:
                    try:
                        on_progress(json.loads(line))
                    except json.JSONDecodeError:
                        break
                    seen += 1
            codes = {n: p.poll() for n, p in procs.items()}
            failed = {n: c for n, c in codes.items() if c not in (None, 0)}
            if failed or all(c == 0 for c in codes.values()):
                break
            if timeout is not None and time.perf_counter() - t0 > timeout:
                raise FedriskError(f"simulation did not finish within {timeout:.0f} s; logs in {out / 'logs'}")
            time.sleep(0.05)
        if failed:
            # the others were told by the failing party; give them a moment to exit on their own
            deadline = time.time() + 5
            for p in procs.values():
                try:
                    p.wait(max(0.0, deadline - time.time()))
                except subprocess.TimeoutExpired:
                    pass
            name, reason = _root_cause(out, [n for n, p in procs.items() if p.returncode not in (None, 0)])
            raise FedriskError(f"participant {name!r} failed: {reason}\nlogs: {out / 'logs'}")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        for p in procs.values():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
    wall = time.perf_counter() - t0
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    result = SimulationResult(metrics)
    result["run_dir"] = str(out)
    result["wall_s"] = wall
    return result
