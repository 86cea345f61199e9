"""``fedrisk serve``: a feature holder's long-running scoring service (issue 14, "Real hosts").

A vertical model is split across institutions, so every scoring request of the label holder
(``fedrisk predict RUN/model.json NEW.csv --session S --no-spawn``) needs each feature holder to
take part in a small federated session (:mod:`fedrisk.runtime.inference`: PSI alignment of the
new rows, then the model format's scoring protocol). Instead of one process per session started
by hand, a feature holder runs this service once::

    fedrisk serve JOB.toml --as payco --model RUN/model-payco.json --certs CERTS/ \\
        --out /var/lib/fedrisk/serve --health 127.0.0.1:8081

and it serves any number of sessions, one after the other or side by side (``--max-sessions``).

How sessions are opened
-----------------------
The service binds the party's ``listen`` (else ``address``) once, with the same mutual TLS as a
training job. Every frame names its job id; a session's job id is ``<model job>.predict.<S>``.
The label holder's first message of a session is ``ctl.open`` (control); when it arrives from the
**label holder's certificate** for a session name not seen before, the service creates that
session's channel (its own mailbox and ledger; frames are routed to it by job id) and runs the
same per-session code as the one-session process
(:func:`~fedrisk.runtime.inference.feature_holder_session`: handshake, alignment, scoring). Frames
for other jobs, from other senders, or for a session already served are refused with a status the
sender reads as one line. A session name is single-use: ledgers and logs are kept per session.

What the service learns per session is exactly what a one-session feature holder learns (see
:mod:`fedrisk.runtime.inference`): which of its own customers the label holder scores.

Operations
----------
* **Logs**: ``OUT/serve.log`` (the service: sessions opened, finished, failed, shutdown) and
  ``OUT/sessions/<S>/session.log`` (one session's progress), ``OUT/sessions/<S>/ledger/``
  (every message of that session, as for a job).
* **Health**: with ``--health HOST:PORT`` a plain-HTTP endpoint (bind it to loopback; it
  carries no customer data) answers ``GET /healthz`` with ``200`` and a JSON status while
  serving, ``503`` while draining. ``fedrisk health HOST:PORT`` is the probe for Docker / systemd.
  (gRPC's standard health service needs ``grpcio-health-checking``, whose current release needs
  protobuf 7 and conflicts with other packages of this environment; plain HTTP needs nothing.)
* **Shutdown**: SIGTERM or SIGINT stop accepting new sessions, let the running ones finish for up
  to ``--drain-timeout`` seconds, abort the rest (their label holders are told), stop the crypto
  worker processes and exit 0. A second signal skips the wait.
* **Data**: the feature holder's rows (``--data``, else its ``data`` in the job spec) are loaded
  at start and reloaded before a session when the file changed.
"""
from __future__ import annotations

import json
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc

from fedrisk.errors import CodecError, ConfigError, FedriskError
from fedrisk.runtime.inference import (OPEN_TAG, _certs, _check_session, feature_holder_session, get_format,
                                       load_feature_holder)
from fedrisk.runtime.log_files import log_to_file
from fedrisk.transport.certs import tls_files
from fedrisk.transport.codec import frame_job
from fedrisk.transport.grpc_channel import GrpcChannel
from fedrisk.transport.ledger import Ledger, inbound_path
from fedrisk.transport.safe_text import EscapingFormatter, safe_text

__all__ = ["ScoringService", "run_service", "check_health"]

log = logging.getLogger("fedrisk.serve")


class _SessionChannel(GrpcChannel):
    """One session's endpoint: its own mailbox and ledger, no server (the service's server routes to it)."""

    def start(self) -> "_SessionChannel":
        return self


class _Front(GrpcChannel):
    """The service's one gRPC server: routes every frame to its session by job id."""

    def __init__(self, service: "ScoringService", *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.service = service

    def _on_deliver(self, frame: bytes, context: grpc.ServicerContext) -> bytes:
        return self.service.route(frame, context)


@dataclass
class _Session:
    name: str
    channel: _SessionChannel
    started: float = field(default_factory=time.monotonic)
    thread: threading.Thread | None = None
    outcome: str | None = None


class ScoringService:
    """Serves inference sessions of one model part (a feature holder's) until stopped.

    Parameters
    ----------
    spec : JobSpec
        The job spec the model was trained with (addresses, certificates, PSI protocol).
    name : str
        This feature holder's party name.
    model_path : Path
        Its part of the model (``model-NAME.json``).
    certs : Path, optional
        Folder with ``ca.pem``, ``NAME.pem``, ``NAME-key.pem`` (default: ``security.certs``).
    out : Path
        Where ``serve.log`` and ``sessions/<S>/`` are written.
    data : Path, optional
        Rows to score from (default: the party's ``data`` in the spec).
    max_sessions : int
        Sessions served at the same time; more are answered "busy" and their label holder retries.
    """

    def __init__(self, spec, name: str, model_path: Path, certs: Path | None, out: Path, data: Path | None = None,
                 max_sessions: int = 2) -> None:
        self.spec, self.name, self.out = spec, name, Path(out)
        self.model_path = Path(model_path)
        self.data = data
        self.model, self.label_holder, self.hosts, self._table = load_feature_holder(spec, name, model_path, data)
        self._data_file = Path(data) if data else spec.data_path(name)
        self._data_mtime = self._mtime()
        self.mod = get_format(self.model["format"])
        self.certs_dir = _certs(spec, self.model_path.resolve().parent, certs)
        self.tls = tls_files(self.certs_dir, name, own_ca=spec.pinned_cas().get(name))
        self.max_sessions = max(1, int(max_sessions))
        self.prefix = f"{self.model['job']}.predict."
        self.sessions: dict[str, _Session] = {}
        self.finished: dict[str, str] = {}  # session -> "done" | "failed: ..." | "aborted at shutdown"
        self.draining = threading.Event()
        self.stopped = threading.Event()
        self.started = time.time()
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self.front: _Front | None = None

    # -- the server ------------------------------------------------------------------------------
    def start(self) -> "ScoringService":
        self.out.mkdir(parents=True, exist_ok=True)
        addresses = {n: p.address for n, p in self.spec.parties.items()}
        self.front = _Front(self, self.name, addresses, f"{self.prefix}*", self.tls,
                            connect_timeout=self.spec.security.connect_timeout, peer_cas=self.spec.pinned_cas(),
                            listen=self.spec.listen_address(self.name), recv_timeout=self.spec.security.recv_timeout)
        self.front.start()
        log.info("serving %s (model job %r, format %s) on %s; label holder %r; up to %d sessions at once",
                 self.name, self.model["job"], self.model["format"], self.spec.listen_address(self.name),
                 self.label_holder, self.max_sessions)
        return self

    def route(self, frame: bytes, context: grpc.ServicerContext) -> bytes:
        """gRPC handler: hand ``frame`` to its session, opening one on the label holder's ``ctl.open``."""
        try:
            job = frame_job(frame)
        except CodecError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{self.name}: {safe_text(e, 200)}")
        if not job.startswith(self.prefix):
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{self.name}: this scoring service serves model job {self.model['job']!r} (sessions "
                          f"'{self.prefix}<name>'), not {safe_text(job, 80)!r}")
        session = job[len(self.prefix):]
        with self._lock:
            s = self.sessions.get(session)
            if s is None:
                s = self._open(session, context)
        return s.channel._on_deliver(frame, context)

    def _open(self, session: str, context: grpc.ServicerContext) -> _Session:
        """Create a session's channel and thread (called under the lock, from the first frame)."""
        # who asks comes first: nobody else learns which sessions were served or how busy we are
        auth = context.auth_context()
        sender = GrpcChannel._client_identity(auth)
        front = self.front
        if front is not None and sender in front.peer_cas and not front._issued_by_pinned_ca(sender, auth):
            sender = None  # a certificate for that name from another institution's CA
        if sender != self.label_holder:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{self.name}: only the label holder {self.label_holder!r} opens scoring sessions")
        if session in self.finished:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"{self.name}: session {safe_text(session, 40)!r} was already served here "
                          f"({self.finished[session].split(':')[0]}); start predict with a new --session name")
        if self.draining.is_set():
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name}: the scoring service is shutting down")
        try:
            _check_session(session)
        except ConfigError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{self.name}: {e}")
        if sum(1 for x in self.sessions.values() if x.outcome is None) >= self.max_sessions:
            # the label holder backs off and retries RESOURCE_EXHAUSTED for up to its recv_timeout
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{self.name}: {self.max_sessions} scoring sessions already running; retry later")
        work = self.out / "sessions" / session
        (work / "ledger").mkdir(parents=True, exist_ok=True)
        job_id = f"{self.prefix}{session}"
        ch = _SessionChannel(
            self.name, {n: p.address for n, p in self.spec.parties.items()}, job_id, self.tls,
            connect_timeout=self.spec.security.connect_timeout, recv_timeout=self.spec.security.recv_timeout,
            ledger=Ledger(self.name, work / "ledger" / f"{self.name}.jsonl"),
            inbound_ledger=Ledger(self.name, inbound_path(work, self.name), direction="in", fsync=False),
            tag_prefixes=tuple(self.mod.INFERENCE_TAG_PREFIXES) + ("psi.", "ctl."), peer_cas=self.spec.pinned_cas())
        s = _Session(session, ch)
        s.thread = threading.Thread(target=self._serve, args=(s, work), name=f"fedrisk-session-{session}", daemon=True)
        self.sessions[session] = s
        log.info("session %s opened by %r", session, sender)
        s.thread.start()
        return s

    # -- one session ----------------------------------------------------------------------------------
    def _serve(self, s: _Session, work: Path) -> None:
        slog = _session_logger(self.name, s.name, work)
        t0 = time.monotonic()
        try:
            s.channel.recv(self.label_holder, OPEN_TAG, timeout=self.spec.security.connect_timeout)
            feature_holder_session(s.channel, self.spec, self.name, self.model, self.table(slog), s.name, slog)
            s.outcome = "done"
            slog.info("done in %.2f s; sent %d messages, %d bytes", time.monotonic() - t0,
                      len(s.channel.ledger.entries), s.channel.ledger.bytes_sent)
            log.info("session %s done in %.2f s (%d bytes sent)", s.name, time.monotonic() - t0,
                     s.channel.ledger.bytes_sent)
        except BaseException as e:  # noqa: BLE001 - one session's failure must not stop the service
            why = str(e) if isinstance(e, FedriskError) else f"{type(e).__name__}: {e}"
            s.outcome = "aborted at shutdown" if self.stopped.is_set() else f"failed: {why}"
            slog.error("%s", s.outcome, exc_info=not isinstance(e, FedriskError))
            log.warning("session %s %s", s.name, s.outcome)
        finally:
            s.channel.close()
            for h in slog.handlers:
                h.close()
            with self._lock:
                self.finished[s.name] = s.outcome or "failed"
                self.sessions.pop(s.name, None)

    def table(self, slog: logging.Logger):
        """The feature holder's rows, reloaded when the data file changed since they were read."""
        with self._load_lock:
            m = self._mtime()
            if m != self._data_mtime:
                _, _, _, self._table = load_feature_holder(self.spec, self.name, self.model_path, self.data)
                self._data_mtime = m
                slog.info("data file changed: reloaded %d rows", self._table.n_rows)
                log.info("data file changed: reloaded %d rows", self._table.n_rows)
            return self._table

    def _mtime(self) -> float | None:
        try:
            return self._data_file.stat().st_mtime if self._data_file else None
        except OSError:
            return None

    # -- status and shutdown ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        with self._lock:
            done = sum(1 for v in self.finished.values() if v == "done")
            return {"status": "draining" if self.draining.is_set() else "serving", "party": self.name,
                    "model_job": self.model["job"], "format": self.model["format"],
                    "sessions_active": len(self.sessions), "sessions_done": done,
                    "sessions_failed": len(self.finished) - done, "uptime_s": round(time.time() - self.started, 1),
                    # e.g. a column blank in every row of the served data: a broken feed, visible to the operator
                    "data_warnings": list(getattr(getattr(self, "_table", None), "notes", ()))}

    def stop(self, drain_timeout: float) -> int:
        """Refuse new sessions, wait up to ``drain_timeout`` s for running ones, abort the rest; return how many were aborted."""
        self.draining.set()
        deadline = time.monotonic() + drain_timeout
        with self._lock:
            running = list(self.sessions.values())
        if running:
            log.info("draining: waiting up to %.0f s for %d running session(s): %s", drain_timeout, len(running),
                     ", ".join(s.name for s in running))
        for s in running:
            s.thread.join(max(0.0, deadline - time.monotonic()))
        self.stopped.set()
        aborted = [s for s in running if s.thread.is_alive()]
        for s in aborted:
            s.channel.abort(f"{self.name}: the scoring service stopped (shutdown deadline reached)")
            s.channel.mailbox.fail(f"{self.name}: the scoring service is stopping")
        for s in aborted:
            s.thread.join(10)
        if self.front is not None:
            self.front.close(grace=1.0)
        from fedrisk.crypto.workers import shutdown_pools, terminate_pools

        (terminate_pools if aborted else shutdown_pools)()
        return len(aborted)


def _session_logger(party: str, session: str, work: Path) -> logging.Logger:
    # not registered with logging's manager: a service that runs for months must not keep one
    # logger object per session it ever served
    slog = logging.Logger(f"fedrisk.serve.session.{session}", logging.INFO)
    slog.propagate = False
    fh = logging.FileHandler(work / "session.log", encoding="utf-8")
    fh.setFormatter(EscapingFormatter(f"%(asctime)s {party} session={session} %(levelname)s %(message)s"))
    slog.addHandler(fh)
    return slog


class _Health(BaseHTTPRequestHandler):
    service: ScoringService

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.split("?")[0] not in ("/healthz", "/"):
            self.send_error(404)
            return
        st = self.service.status()
        body = json.dumps(st).encode()
        self.send_response(200 if st["status"] == "serving" else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:  # probes every few seconds must not fill the log
        pass


def _health_server(service: ScoringService, address: str) -> ThreadingHTTPServer:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--health {address!r}: give HOST:PORT, e.g. 127.0.0.1:8081")
    handler = type("Health", (_Health,), {"service": service})
    try:
        srv = ThreadingHTTPServer((host.strip("[]"), int(port)), handler)
    except OSError as e:
        raise ConfigError(f"--health {address}: cannot listen there: {e.strerror}; is another process using that port?") from None
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, name="fedrisk-health", daemon=True).start()
    return srv


def run_service(spec_path: str | Path, name: str, model_path: str | Path, certs: str | Path | None = None,
                out: str | Path | None = None, data: str | Path | None = None, health: str | None = None,
                max_sessions: int = 2, drain_timeout: float = 60.0, console: bool = True) -> int:
    """Run the scoring service until SIGTERM/SIGINT; return the number of sessions aborted at shutdown."""
    from fedrisk.runtime.spec import load_spec

    spec = load_spec(spec_path)
    if name not in spec.parties:
        raise ConfigError(f"--as {name!r}: the job has no such party; choose one of {sorted(spec.parties)}")
    model = Path(model_path)
    spec = _with_data_base(spec, name, model, data)
    out = Path(out) if out else model.resolve().parent / "serve"
    out.mkdir(parents=True, exist_ok=True)
    _service_logging(name, out, console)
    service = ScoringService(spec, name, model, Path(certs) if certs else None, out, Path(data) if data else None,
                             max_sessions=max_sessions)
    stop = threading.Event()
    signals: list[int] = []

    def on_signal(signum: int, frame) -> None:  # noqa: ANN001 - signal handler signature
        signals.append(signum)
        stop.set()
        if len(signals) > 1:  # a second signal: do not wait for running sessions
            service.stopped.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    hsrv = None
    try:
        service.start()
        if health:
            hsrv = _health_server(service, health)
            log.info("health check on http://%s/healthz", health)
        while not stop.wait(1.0):
            pass
        log.info("%s received: stopping (no new sessions; up to %.0f s for running ones)",
                 signal.Signals(signals[0]).name, drain_timeout)
        aborted = service.stop(0.0 if service.stopped.is_set() else drain_timeout)
        st = service.status()
        log.info("stopped: %d session(s) served, %d failed, %d aborted at shutdown", st["sessions_done"],
                 st["sessions_failed"] - aborted, aborted)
        return aborted
    finally:
        if hsrv is not None:
            hsrv.shutdown()
            hsrv.server_close()
        for s, h in previous.items():
            signal.signal(s, h)


def _with_data_base(spec, name: str, model: Path, data: str | Path | None):
    """Resolve relative data paths as at training when the spec is the run directory's copy.

    ``RUN/job.toml`` is a copy of the spec the party ran; its relative ``data`` path is relative
    to the original spec's folder, which the model records (``spec_dir``).
    """
    if data is not None:
        return spec
    p = spec.data_path(name)
    if p is not None and p.is_file():
        return spec
    try:
        from fedrisk.model_files import load_model

        spec_dir = load_model(model).get("spec_dir")
    except (FedriskError, OSError):
        return spec
    if spec_dir and Path(spec_dir).is_dir():
        return spec.model_copy(update={"base_dir": Path(spec_dir)})
    return spec


def _service_logging(name: str, out: Path, console: bool) -> None:
    fmt = EscapingFormatter(f"%(asctime)s {name} %(levelname)s %(message)s")
    for logger in (log, logging.getLogger("fedrisk.transport")):
        log_to_file(logger, out / "serve.log", fmt, console)


def check_health(address: str, wait: float = 0.0, timeout: float = 3.0) -> dict[str, Any]:
    """GET ``http://ADDRESS/healthz``; return the status, or raise :class:`ConfigError` saying why not.

    With ``wait`` > 0, retries until the service answers "serving" or ``wait`` seconds have passed.
    """
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + wait
    while True:
        try:
            with urllib.request.urlopen(f"http://{address}/healthz", timeout=timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            why = f"status {e.code}: {safe_text(e.read().decode(errors='replace'), 300)}"
        except (urllib.error.URLError, OSError, ValueError) as e:
            why = f"no answer ({safe_text(getattr(e, 'reason', e), 200)})"
        if time.monotonic() >= deadline:
            raise ConfigError(f"scoring service at {address} is not serving: {why}")
        time.sleep(0.5)
