"""One run of SecretFlow's PSI library (``spu``'s ``psi_execute``) in a child process of the party.

Why a child process: the library's link set-up (yacl's "connect to mesh") and its receives wait
on one timeout, ``recv_timeout_ms``, which must be long (minutes: a starved peer on a loaded
machine is not a dead one), and the binding offers no way to interrupt a call in progress. A
link that never completes its handshake therefore hung its caller for that whole timeout, inside
the party's process, with threads nobody could stop (seen in CI with both parties' libraries in
one test process). In a child the party can give each stage its own deadline and, when one
passes, kill the library outright: no thread, port or brpc state survives it. It also keeps two
libraries of one test process apart (each party gets its own), and the library's memory out of
the party's process.

The child loads only the native modules (:mod:`fedrisk.crypto.spu_binding`), reads one JSON job
from stdin, then commands, and reports events as JSON lines on a private pipe (the library logs
to stdout itself, so the child's stdout is sent to its stderr):

==  =========  =====================  ========================================================
#   direction  message                meaning
==  =========  =====================  ========================================================
1   C -> P     ``loaded``             the native modules are loaded; ``rss_mb`` = the child's RSS
2   P -> C     job                    link description and PSI configuration (paths, sizes)
3   C -> P     ``linked``             the library's link to its peer is up (both directions)
4   P -> C     ``run``                start ``psi_execute`` (both parties' links are up)
5   C -> P     ``done``               finished; ``count`` = intersection size
6   P -> C     ``stop``               stop the link (in step with the peer, see ``rr22_psi``)
7   C -> P     ``stopped``            link stopped; ``rss_mb`` = the child's peak RSS, ``cpu_s``
                                      its CPU seconds; the child then waits for its stdin to
                                      close (the peer's link is down)
any C -> P     ``error``              ``stage`` (``load``/``link``/``run``/``stop``), ``message``
==  =========  =====================  ========================================================

The child exits when its stdin closes (the party ended or died) and, on Linux, when the party's
thread that started it dies; it writes only under the folder the party gives it (``TMPDIR``).
"""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from fedrisk.runtime.rss import peak_rss_mb, rss_mb

__all__ = ["LibraryProcess", "WorkerGone", "WorkerTimeout"]


class WorkerGone(Exception):
    """The child ended (killed, crashed) before the awaited event."""


class WorkerTimeout(Exception):
    """The awaited event did not come within its deadline."""


class LibraryProcess:
    """Parent's handle on one child running the library (see the module docstring).

    Parameters
    ----------
    tmpdir : Path
        The child's ``TMPDIR``: the library spills its hash buckets and trace files there, so
        whatever it leaves (also when killed) goes when the party removes the folder.
    env : dict, optional
        Extra environment variables for the child (e.g. ``MALLOC_ARENA_MAX`` under a budget).
    """

    def __init__(self, tmpdir: Path, env: dict[str, str] | None = None) -> None:
        tmpdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, **(env or {}), TMPDIR=str(tmpdir))
        r, w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fedrisk.crypto.spu_process", str(w)], stdin=subprocess.PIPE,
                pass_fds=(w,), env=env, close_fds=True)
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
        self._events: "queue.Queue[dict[str, Any] | None]" = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(r,), daemon=True,
                                        name=f"spu-events-{self.proc.pid}")
        self._reader.start()

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as fh:
            for line in fh:
                try:
                    self._events.put(json.loads(line))
                except ValueError:
                    continue
        self._events.put(None)  # end of stream: the child is gone

    def send(self, obj: Any) -> None:
        """One JSON line to the child (a job or a command); a dead child is :class:`WorkerGone`."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(obj) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise WorkerGone("the PSI library process has ended") from None

    def wait(self, event: str, timeout: float) -> dict[str, Any]:
        """The next event, which must be ``event`` or ``error`` (returned as is for the caller).

        Raises
        ------
        WorkerTimeout
            Nothing came within ``timeout`` seconds (the child is left running: the caller kills it).
        WorkerGone
            The child ended first.
        """
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerTimeout(f"no {event!r} within {timeout:.0f} s")
            try:
                msg = self._events.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if msg is None:
                self._events.put(None)
                raise WorkerGone(f"the PSI library process ended (exit code {self.proc.poll()}) before {event!r}")
            if msg.get("event") in (event, "error"):
                return msg

    def close(self, grace: float = 5.0) -> None:
        """End the child: let it exit on the closed stdin for ``grace`` seconds, then kill it."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()
        self._reader.join(timeout=grace)

    def kill(self) -> None:
        """Kill the child now (its link, threads and sockets go with it) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
            pass
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        self._reader.join(timeout=5)


# ---------------------------------------------------------------------------------------------
# The child
# ---------------------------------------------------------------------------------------------
def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the thread that started it ends (the party died)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux: stdin EOF still ends us
        pass


def _cpu_s() -> float:
    """CPU seconds of this process so far (all its threads: the library's own work)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return round(r.ru_utime + r.ru_stime, 3)


def _desc(lib: Any, link: dict[str, Any]) -> Any:
    desc = lib.link.Desc()
    desc.id = link["id"]
    for name, addr in link["parties"]:
        desc.add_party(name, addr)
    desc.recv_timeout_ms = int(link["recv_timeout_ms"])
    desc.http_timeout_ms = int(link["http_timeout_ms"])
    desc.connect_retry_times = int(link["connect_retry_times"])
    desc.connect_retry_interval_ms = int(link["connect_retry_interval_ms"])
    ssl = link.get("ssl")
    if ssl:
        desc.enable_ssl = True
        for opts in (desc.client_ssl_opts, desc.server_ssl_opts):
            opts.cert.certificate_path = ssl["cert"]
            opts.cert.private_key_path = ssl["key"]
            opts.verify.ca_file_path = ssl["ca"]
            opts.verify.verify_depth = 1
    return desc


def _config(lib: Any, psi: dict[str, Any]) -> Any:
    pl = lib.libpsi
    return pl.PsiExecuteConfig(
        protocol_conf=pl.PsiProtocolConfig(protocol=pl.PsiProtocol.PROTOCOL_RR22, receiver_rank=0,
                                           bucket_size=int(psi["bucket_size"]),
                                           broadcast_result=bool(psi["broadcast_result"])),
        # fedrisk refuses duplicated keys itself before the run, so the library's own check is off
        input_params=pl.InputParams(path=psi["input"], selected_keys=[psi["key"]], keys_unique=True),
        # fedrisk re-orders the result by key itself (the canonical order), so the library's sort of
        # it by the input's row order (two external sorts, two more passes over the input) is off
        output_params=pl.OutputParams(path=psi["output"], disable_alignment=True),
    )


def _child(event_fd: int) -> None:
    _die_with_parent()
    events = os.fdopen(event_fd, "w", buffering=1)
    os.dup2(2, 1)  # the library logs to stdout: keep the event pipe clean

    def emit(kind: str, **kw: Any) -> None:
        events.write(json.dumps({"event": kind, **kw}) + "\n")
        events.flush()

    commands: "queue.Queue[Any]" = queue.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            commands.put(json.loads(line))
        os._exit(0)  # the party closed our stdin (done, gave up, or died): stop whatever runs

    threading.Thread(target=read_stdin, daemon=True).start()
    from fedrisk.crypto import spu_binding
    from fedrisk.errors import ConfigError

    try:
        lib = spu_binding.load()
    except ConfigError as e:
        emit("error", stage="load", message=str(e))
        return
    emit("loaded", rss_mb=rss_mb())
    job = commands.get()
    try:
        desc = _desc(lib, job["link"])
        cfg = _config(lib, job["psi"])
        lctx = lib.link.create_brpc(desc, int(job["rank"]))
    except RuntimeError as e:
        emit("error", stage="link", message=str(e))
        return
    emit("linked")
    if commands.get() != "run":
        return
    try:
        report = lib.libpsi.psi_execute(cfg, lctx)
    except RuntimeError as e:
        emit("error", stage="run", message=str(e))
        return
    emit("done", count=int(report.intersection_count))
    if commands.get() != "stop":
        return
    try:
        lctx.stop_link()
    except RuntimeError as e:
        emit("error", stage="stop", message=str(e))
        return
    emit("stopped", rss_mb=peak_rss_mb(), cpu_s=_cpu_s())
    # Stay until the party closes our stdin: it does so once the peer's library has stopped too.
    # Exiting now would close this library's sockets under the peer's stop_link, whose brpc then
    # fails a request with errno 0 and aborts on its own CHECK (seen: "error_code is 0").
    commands.get()


if __name__ == "__main__":
    try:
        _child(int(sys.argv[1]))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # no C++ destructors of a half-used link: the party removes our folder
