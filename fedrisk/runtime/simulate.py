"""Run every participant of a job as its own OS process on this machine, over mTLS on loopback.

``simulate`` is exactly what a real deployment does, minus the separate hosts: one
``fedrisk party`` process per participant, each with its own gRPC server, certificate and ledger.
The parent only starts them, draws progress from the driver's progress file, and collects the
results; it never touches a payload. If one participant fails, the others are told (they abort
their pending receives), stragglers are stopped, and the error names the participant with the
tail of its log.

A run directory that already holds a run is refused unless ``force`` (its previous outputs are
then removed first) or ``resume``. SIGINT/SIGTERM (Ctrl-C, or ``kill`` of the process group) stop
every participant: they get SIGTERM if the signal did not reach them, are killed if they have
not stopped after :data:`STOP_GRACE` seconds, and the error is one line naming the phase the
job was in. ``metrics.json`` is written last, atomically, so a stopped run never looks complete.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from fedrisk.runtime.context import make_dir
from fedrisk.errors import ConfigError, FedriskError, Interrupted
from fedrisk.runtime.interrupt import PARENT_ENV
from fedrisk.runtime.spec import JobSpec, load_spec
from fedrisk.runtime.tasks import get_task
from fedrisk.transport.certs import make_dev_pki

__all__ = ["simulate", "SimulationResult", "RUN_OUTPUTS", "STOP_GRACE"]

#: what a run writes into its directory; ``--force`` removes exactly these, never other files and
#: never the ledgers (``ledger/``, ``ledger-inbound/``): each party moves an earlier run's ledger to
#: ``previous/``, so an audit trail is never deleted by a rerun (issue 12 item 9)
RUN_OUTPUTS = ("metrics.json", "report.html", "model.json", "model-*.json", "scorecard*.json", "woe*.json",
               "scores", "logs", "progress", "checkpoints", "predict", "certs", "job.toml", "membership.json")
#: seconds participants get to stop on their own after an interrupt before they are killed
STOP_GRACE = 15.0
#: seconds a dropped participant of a finished dropout-tolerant job gets to stop on its own
DROPOUT_GRACE = 10.0


def _previous_outputs(out: Path, spec_path: Path) -> list[Path]:
    """Entries of ``out`` other than the spec being run (a run dir may hold its own job.toml)."""
    if not out.is_dir():
        return []
    return [p for p in sorted(out.iterdir()) if p.resolve() != spec_path.resolve()]


def _clear_outputs(out: Path, spec_path: Path) -> None:
    for pattern in RUN_OUTPUTS:
        for p in out.glob(pattern):
            if p.resolve() == spec_path.resolve():
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def _interrupt_phase(out: Path, names: list[str], first: str) -> tuple[str, str]:
    """(participant, phase) from the participants' logs: ``... interrupted by SIGINT during PHASE``."""
    for name in [first] + [n for n in names if n != first]:
        for line in reversed(_tail(out / "logs" / f"{name}.log", 40).splitlines()):
            if " during " in line and "interrupted by" in line:
                return name, line.rsplit(" during ", 1)[1].strip()
    return first, "start-up"


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


def _exit_reason(out: Path, name: str, code: int) -> str:
    """Why a participant process ended: the signal that killed it, or its last ``failed:`` line."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    _, reason = _root_cause(out, [name])
    return reason or f"exited with status {code}"


def prepare_certs(spec: JobSpec, out: Path) -> Path:
    """The spec's certificates if it names a folder that has them, else fresh dev certs in the run dir."""
    certs = spec.resolve(spec.security.certs)
    if certs is not None and (certs / "ca.pem").is_file():
        return certs
    return make_dev_pki(spec.participants(), out / "certs")


def simulate(spec_path: str | Path, out: str | Path, *, resume: bool = False, timeout: float | None = None,
             on_progress: Callable[[dict[str, Any]], None] | None = None, env: dict[str, str] | None = None,
             force: bool = False) -> SimulationResult:
    """Run the whole job locally, one process per participant; return the run's metrics.

    ``out`` must be empty (or hold only the spec itself) unless ``resume`` continues the run in it
    or ``force`` replaces that run (only fedrisk's outputs, :data:`RUN_OUTPUTS`, are removed).
    """
    spec_path = Path(spec_path)
    spec = load_spec(spec_path)
    spec.check_files()
    spec.check_compute()
    out = Path(out).resolve()
    previous = _previous_outputs(out, spec_path)
    if previous and not (resume or force):
        shown = ", ".join(p.name for p in previous[:3]) + (", ..." if len(previous) > 3 else "")
        raise ConfigError(f"run directory {out} is not empty ({shown}); choose a new --out, pass --force to "
                          "replace the run in it, or --resume to continue it")
    if force and not resume:
        _clear_outputs(out, spec_path)
    make_dir(out, "run directory (--out)")
    if not resume:
        # ledgers are not stale: each party moves its earlier run's files to ledger/previous/
        for stale in ("progress", "logs"):
            shutil.rmtree(out / stale, ignore_errors=True)
    # written last by the run: until then the directory must not look like a finished run
    (out / "metrics.json").unlink(missing_ok=True)
    certs = prepare_certs(spec, out)
    if spec_path.resolve() != (out / "job.toml").resolve():
        shutil.copyfile(spec_path, out / "job.toml")
    driver = get_task(spec.task["kind"]).driver(spec)
    (out / "logs").mkdir(exist_ok=True)
    child_env = dict(os.environ, **(env or {}))
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    child_env[PARENT_ENV] = str(os.getpid())  # participants stop if this process dies (even kill -9)
    child_env["FEDRISK_SPEC_KEPT_BY"] = "simulate"  # job.toml above is the whole spec; participants leave it
    # each participant is single-threaded numpy unless it asks otherwise: 2 cores, N processes
    child_env.setdefault("OMP_NUM_THREADS", "1")
    child_env.setdefault("OPENBLAS_NUM_THREADS", "1")
    procs: dict[str, subprocess.Popen] = {}
    t0 = time.perf_counter()
    previous_term = _raise_on_sigterm()
    try:
        return _run(spec, spec_path, out, certs, driver, child_env, procs, t0, resume, timeout, on_progress)
    except (KeyboardInterrupt, Interrupted) as e:
        sig = "SIGTERM" if isinstance(e, Interrupted) else "SIGINT"
        if previous_term is not None:  # a second Ctrl-C must not cut the clean-up short
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        stopped = _stop_all(procs, signal.SIGTERM, STOP_GRACE)
        who, phase = _interrupt_phase(out, list(procs), driver)
        done = "" if (out / "metrics.json").exists() else "; no results were written"
        raise Interrupted(f"interrupted by {sig} during {phase} (at {who}); {stopped} participant processes "
                          f"stopped{done}; logs: {out / 'logs'}") from None
    finally:
        _stop_all(procs, signal.SIGTERM, 5.0)
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _raise_on_sigterm():
    """In the main thread, make SIGTERM stop the simulation like Ctrl-C; return the old handler."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):  # noqa: ANN001 - signal handler signature
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Interrupted("SIGTERM")

    return signal.signal(signal.SIGTERM, handler)


def _stop_all(procs: dict[str, subprocess.Popen], sig: int, grace: float) -> int:
    """Signal every live participant, wait up to ``grace`` s, kill the rest; return how many were live."""
    live = [p for p in procs.values() if p.poll() is None]
    for p in live:
        try:
            p.send_signal(sig)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    for p in live:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return len(live)


def _run(spec: JobSpec, spec_path: Path, out: Path, certs: Path, driver: str, child_env: dict[str, str],
         procs: dict[str, subprocess.Popen], t0: float, resume: bool, timeout: float | None,
         on_progress: Callable[[dict[str, Any]], None] | None) -> SimulationResult:
    for name in spec.participants():
        cmd = [sys.executable, "-m", "fedrisk", "party", str(spec_path), "--as", name, "--out", str(out),
               "--certs", str(certs), "--quiet"] + (["--resume"] if resume else [])
        errf = open(out / "logs" / f"{name}.stderr", "w", encoding="utf-8")
        procs[name] = subprocess.Popen(cmd, stdout=errf, stderr=subprocess.STDOUT, env=child_env)
        errf.close()
    progress_file = out / "progress" / f"{driver}.jsonl"
    seen = 0
    failed: dict[str, int] = {}
    # horizontal tasks survive a bank's loss: only the driver's failure ends the job (issue 14)
    tolerant = bool(getattr(get_task(spec.task["kind"]), "DROPOUT_TOLERANT", False))
    dropped: dict[str, str] = {}
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
        if tolerant:
            for n in failed:
                if n != driver and n not in dropped:
                    dropped[n] = _exit_reason(out, n, failed[n])
            if codes[driver] is not None:
                break
        elif failed or all(c == 0 for c in codes.values()):
            break
        if timeout is not None and time.perf_counter() - t0 > timeout:
            raise FedriskError(f"simulation did not finish within {timeout:.0f} s; logs in {out / 'logs'}")
        time.sleep(0.05)
    if tolerant and procs[driver].returncode == 0:
        # the job is done; a dropped bank that is still alive was told so and stops by itself,
        # one that cannot hear (still cut off) is stopped here: nothing is left behind
        try:
            gone = set(json.loads((out / "membership.json").read_text()).get("dropped", {}))
        except (OSError, ValueError):
            gone = set(procs) - {driver}  # no roster written: every unfinished bank gets the grace only
        deadline = time.time() + DROPOUT_GRACE
        for n, p in procs.items():
            try:
                # banks still in finish writing their outputs (the evaluation holder its metrics)
                p.wait(max(0.0, deadline - time.time()) if n in gone else
                       (None if timeout is None else max(1.0, timeout - (time.perf_counter() - t0))))
            except subprocess.TimeoutExpired:
                pass
        for n, p in procs.items():
            if p.poll() is None:
                _stop_all({n: p}, signal.SIGTERM, 5.0)
                dropped.setdefault(n, "still waiting when the job finished; stopped")
            elif p.returncode != 0:
                dropped.setdefault(n, _exit_reason(out, n, p.returncode))
        failed = {}
    if failed:
        # the others were told by the failing party; give them a moment to exit on their own
        deadline = time.time() + 5
        for p in procs.values():
            try:
                p.wait(max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
        failed_names = [n for n, p in procs.items() if p.returncode not in (None, 0)]
        # a process killed by a signal said nothing: that, not its partners' knock-on errors, is the cause
        killed = [n for n in failed_names if procs[n].returncode < 0]
        own = _root_cause(out, [driver])[1] if tolerant and driver in failed_names else ""
        if own and "aborted the job" not in own:
            # a dropout-tolerant job stopped by its driver (e.g. too few banks left): it names the dropouts
            name, reason = driver, own
        elif killed:
            name, reason = killed[0], _exit_reason(out, killed[0], procs[killed[0]].returncode)
        else:
            name, reason = _root_cause(out, failed_names)
        raise FedriskError(f"participant {name!r} failed: {reason}\nlogs: {out / 'logs'}")
    wall = time.perf_counter() - t0
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    result = SimulationResult(metrics)
    if dropped:
        result["dropped"] = dropped
    result["run_dir"] = str(out)
    result["wall_s"] = wall
    return result
