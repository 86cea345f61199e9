"""Run one participant of a job as this process: ``fedrisk party JOB.toml --as NAME --out RUN_DIR``.

This is the unit of deployment: one institution runs exactly this on its own host. ``simulate``
runs one such process per participant on this machine. The runtime owns everything around the
algorithm: logging, the gRPC channel and its ledger, the start-up handshake, checkpoints, and
telling the other participants when this one fails.

Start-up has a deadline (``security.connect_timeout``): the participant first waits, logging
every few seconds, until the peers it must reach accept a TLS connection
(:mod:`fedrisk.runtime.preflight`, which also names a certificate problem at once), then runs the
handshake. SIGINT/SIGTERM stop the participant with one line naming the phase it was in
(:mod:`fedrisk.runtime.interrupt`). This party's view of the job spec it ran (own paths resolved,
other parties' data paths left out: :mod:`fedrisk.runtime.spec_copy`) is written to
``RUN_DIR/job.toml``, so the run directory alone is enough for ``fedrisk predict`` later, on this host.

``--resume`` continues from this party's checkpoints (:mod:`fedrisk.runtime.checkpoint`): a
checkpoint that does not fit this party's data or the job is refused before anyone connects. In
a horizontal job, a dropped bank restarted with ``--resume`` while the job still runs is taken
back by the coordinator at the next round boundary (its handshake is answered mid-job).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from fedrisk.errors import ConfigError, FedriskError, Interrupted
from fedrisk.runtime.abort_reason import public_names, wire_reason
from fedrisk.runtime.compute import party_compute
from fedrisk.runtime.context import PartyContext, ProgressLog, make_dir
from fedrisk.runtime.handshake import handshake
from fedrisk.runtime.interrupt import set_phase, stop_with_parent, stop_on_signals
from fedrisk.runtime.log_files import log_to_file
from fedrisk.runtime.preflight import wait_for_peers
from fedrisk.runtime.spec import JobSpec, load_spec, shared_settings
from fedrisk.runtime.tasks import get_task
from fedrisk.transport.certs import tls_files
from fedrisk.transport.channel import MailboxLimits
from fedrisk.transport.grpc_channel import GrpcChannel
from fedrisk.transport.ledger import Ledger, archive_previous, inbound_path
from fedrisk.transport.safe_text import EscapingFormatter

__all__ = ["run_party", "party_logger"]


def party_logger(name: str, out: Path, console: bool) -> logging.Logger:
    log = logging.getLogger(f"fedrisk.party.{name}")
    # messages may quote a peer's text: one line each, whatever it contains
    fmt = EscapingFormatter(f"%(asctime)s {name} %(levelname)s %(message)s")
    (out / "logs").mkdir(parents=True, exist_ok=True)
    log_to_file(log, out / "logs" / f"{name}.log", fmt, console)
    return log


def _write_run_record(ctx: PartyContext, seconds: float) -> None:
    """``run-<party>.json``: this party's own record of the run (the header of its own report).

    Written by every participant, feature holders included, so ``fedrisk report`` works on a
    feature holder's run directory from what that party itself knows.
    """
    from fedrisk import __version__

    ctx.write_json(f"run-{ctx.name}.json", {
        "party": ctx.name, "task": ctx.spec.task["kind"], "job": ctx.spec.job_id, "run_id": ctx.run_id,
        "seed": ctx.spec.federation.seed, "fedrisk_version": __version__, "params": dict(ctx.spec.task),
        "participants": list(ctx.spec.participants()), "seconds": round(seconds, 3),
        "messages_sent": len(ctx.channel.ledger.entries), "bytes_sent": ctx.channel.ledger.bytes_sent,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def run_party(spec: JobSpec | str | Path, name: str, out: str | Path, certs: str | Path | None = None,
              resume: bool = False, console: bool = True) -> None:
    """Run participant ``name`` of the job to completion; raise a :class:`FedriskError` on failure."""
    spec_file = None
    if not isinstance(spec, JobSpec):
        spec_file = Path(spec)
        spec = load_spec(spec)
    if name not in spec.participants():
        raise ConfigError(f"--as {name!r}: the job has no such participant; choose one of {spec.participants()}")
    spec.check_files(name)
    spec.check_compute(name)
    out = make_dir(Path(out), "run directory (--out)")
    log = party_logger(name, out, console)
    if spec_file is not None:
        _keep_spec(spec_file, out, name, spec)
    certs_dir = Path(certs) if certs is not None else spec.resolve(spec.security.certs)
    if certs_dir is None:
        raise ConfigError(f"participant {name!r}: no certificates; set security.certs in the job spec or pass --certs DIR")
    tls = tls_files(certs_dir, name, own_ca=spec.pinned_cas().get(name))
    task = get_task(spec.task["kind"])
    driver = task.driver(spec)
    ledger_path = out / "ledger" / f"{name}.jsonl"
    in_path = inbound_path(out, name)
    if not resume:
        # a new run's ledger holds only that run's messages; the earlier run's is kept, never deleted
        archive_previous(ledger_path)
        archive_previous(in_path)
    channel = GrpcChannel(
        name, spec.addresses(), spec.job_id, tls,
        connect_timeout=spec.security.connect_timeout, recv_timeout=spec.security.recv_timeout,
        ledger=Ledger(name, ledger_path), inbound_ledger=Ledger(name, in_path, direction="in", fsync=False),
        limits=MailboxLimits(max_queued_bytes=spec.security.max_queued_mib << 20, unread_ttl=spec.security.unread_ttl),
        tag_prefixes=tuple(task.TAG_PREFIXES) + ("ctl.", "ckpt."), peer_cas=spec.pinned_cas(),
        listen=spec.listen_address(name),
    )
    progress = ProgressLog(out / "progress" / f"{name}.jsonl" if name == driver else None, log)
    ctx = PartyContext(name=name, spec=spec, channel=channel, out=out, log=log, progress=progress,
                       certs_dir=certs_dir, resume=resume)
    if not resume:
        # a new run never resumes from an earlier run's steps later (it writes its own from step 1)
        (out / "checkpoints" / f"{name}.json").unlink(missing_ok=True)
    if resume:
        try:  # refuse an unknown or mismatched checkpoint before anyone connects
            ctx.checkpoints  # noqa: B018
        except FedriskError as e:
            log.error("failed: %s", e)  # simulate names the root cause from this line
            raise
    t0 = time.perf_counter()
    limit = spec.security.connect_timeout
    with stop_on_signals(f"participant {name!r}"):
        stop_with_parent()
        try:
            set_phase("start-up")
            channel.start()
            log.info("listening on %s; job %s, task %s", spec.listen_address(name), spec.job_id, spec.task["kind"])
            set_phase("waiting for the other participants")
            others = [p for p in spec.participants() if p != name]
            waited = wait_for_peers(name, others if name == driver else [driver], spec.addresses(), tls.ca, certs_dir,
                                    str(certs_dir / "ca.pem"), limit, log=log, peer_cas=spec.pinned_cas())
            if waited > 1:
                log.info("peers reachable after %.1f s", waited)
            set_phase("start-up handshake")
            # --resume is agreed like the spec: a resuming party must not meet one that starts afresh
            settings = {**shared_settings(spec), "runtime": {"resume": bool(resume)}}
            started: dict = {}
            ctx.run_id = handshake(channel, driver, spec.participants(), settings, wait=limit, log=log,
                                   addresses=spec.addresses(), started=started)
            if started.get("rejoin") is not None:
                ctx.extra["rejoin"] = int(started["rejoin"])
                log.info("rejoined the running job at round %d", ctx.extra["rejoin"])
            else:
                log.info("all %d participants connected and agree on the job (%.2f s)", len(spec.participants()),
                         time.perf_counter() - t0)
            if getattr(task, "DROPOUT_TOLERANT", False) and name == driver:
                from fedrisk.runtime.handshake import answer_late_hello

                # a dropped bank that restarts (`fedrisk party --resume`) says hello mid-job; the
                # protocol asks at each round boundary whether to take it back (see dropouts.Roster)
                ctx.extra["admit"] = lambda bank, at, refuse=None: answer_late_hello(
                    channel, bank, settings, ctx.run_id, at, refuse)
            set_phase(spec.task["kind"])
            if getattr(task, "DROPOUT_TOLERANT", False) and name != driver:
                # a horizontal bank never needs another bank: their failures are their own dropouts
                # (the coordinator decides whether the job goes on), not a reason to stop this bank
                channel.tolerate_dropouts([p for p in others if p != driver])
            with party_compute(spec, name, log):  # this machine's pool, or the party's Ray cluster
                task.run(ctx)
            log.info("done in %.2f s; sent %d messages, %d bytes", time.perf_counter() - t0,
                     len(channel.ledger.entries), channel.ledger.bytes_sent)
            _write_run_record(ctx, time.perf_counter() - t0)
        except BaseException as e:
            reason = str(e) if isinstance(e, FedriskError) else f"{type(e).__name__}: {e}"
            log.error("failed: %s", reason, exc_info=not isinstance(e, (FedriskError, KeyboardInterrupt)))
            if isinstance(e, (Interrupted, KeyboardInterrupt)):
                from fedrisk.crypto.workers import terminate_pools

                terminate_pools()  # never wait for queued crypto batches of a job that is stopping
            channel.abort(wire_reason(name, e, public_names(spec)))  # partners get no ids, values or paths
            raise
        finally:
            channel.close()


def _keep_spec(spec_file: Path, out: Path, name: str, spec: JobSpec) -> None:
    """Keep this party's view of the job spec in the run directory (see :mod:`fedrisk.runtime.spec_copy`)."""
    from fedrisk.runtime.spec_copy import KEPT_BY_ENV, write_party_spec

    if os.environ.get(KEPT_BY_ENV):
        return  # simulate keeps the whole spec in the run directory its participants share
    target = out / "job.toml"
    if target.exists() and target.resolve() == spec_file.resolve():
        return
    write_party_spec(spec_file, out, name, spec.evaluation_holder())
