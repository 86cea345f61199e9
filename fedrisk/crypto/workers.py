"""The one pool of local worker processes (and threads) that heavy crypto kernels run on.

A party has a fixed number of cores, and every batch kernel — PSI hashing and blinding,
Paillier/OU encryption, histogram sums — competes for them. One shared pool per process keeps
the party at one worker per core instead of one pool per module. Kernels are pure functions over
bytes/ints chunks, so moving them to a cluster engine later only changes this module.

``spawn``, not ``fork``: parties often run as threads of one process, and forking a
multi-threaded process can copy a lock held by another thread into the child. A spawned child
normally re-runs the parent's main script first, which breaks a plain script without an
``if __name__ == "__main__":`` guard (the README's Python snippet is one); the workers need only
fedrisk's kernel modules, so they are all started at once when the pool is made, with the main
script hidden from them (:func:`_start_workers`).
``FEDRISK_WORKERS`` overrides the worker count (e.g. ``1`` to rule out resource limits).

Workers never outlive their party: each one watches its parent's sentinel (a pipe that closes
when the parent dies, however it dies, ``kill -9`` included) and exits at once, and ignores SIGINT
so a Ctrl-C to the terminal's process group is handled once, by the party, which then stops the
pool (:func:`terminate_pools`). A ``prctl(PR_SET_PDEATHSIG)`` would not do: it fires when the
*thread* that started the worker exits, and pools here are started from short-lived threads.

The backend is pluggable: a party whose job spec says ``compute = "ray"`` installs its Ray cluster
with :func:`use_backend` (:class:`fedrisk.crypto.ray_executor.RayExecutor`, through
:mod:`fedrisk.runtime.compute`). From then on :func:`process_pool` and :func:`kernel_pool` hand out
that executor instead of the local pools, and :func:`worker_count` is the cluster's CPU count, so
every kernel caller chunks for the cluster without knowing it is there. Callers keep their chunks
in submission order, so results do not depend on the backend. Thread pools stay local
(:func:`local_cores` threads): they serve in-process work such as the key owner's table builds.
"""
from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import threading
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

from fedrisk.errors import CryptoError

__all__ = ["worker_count", "local_cores", "process_pool", "kernel_pool", "thread_pool", "background_thread_pool",
           "shutdown_pools", "terminate_pools", "broken_pool_error", "warm_up", "use_backend", "backend",
           "distributed"]

#: modules whose kernels run in the workers; imported once per worker, not per task
_KERNEL_MODULES = ("fedrisk.crypto.psi", "fedrisk.crypto.additive", "fedrisk.crypto.paillier",
                   "fedrisk.crypto.okamoto_uchiyama")

_PROC: ProcessPoolExecutor | None = None
_THREADS: ThreadPoolExecutor | None = None
_BACKGROUND: ThreadPoolExecutor | None = None
#: how much lower the background threads' CPU priority is (Linux nice levels)
BACKGROUND_NICENESS = 10
_LOCK = threading.Lock()
#: the party's cluster executor when it computes on one (``compute = "ray"``), else None
_REMOTE: Executor | None = None


def use_backend(executor: Executor | None) -> Executor | None:
    """Send batch kernels to ``executor`` (a cluster executor with a ``cpus`` attribute), or back
    to the local pools with ``None``; returns the executor that was installed before.

    Process-wide: every party of this process uses it, so a party that computes on a cluster runs
    in its own process (``fedrisk party``), as ``fedrisk simulate`` does.
    """
    global _REMOTE
    if executor is not None and int(getattr(executor, "cpus", 0)) < 1:
        raise CryptoError("a kernel backend must report how many CPUs it has (cpus >= 1)")
    with _LOCK:
        previous, _REMOTE = _REMOTE, executor
    return previous


def backend() -> Executor | None:
    """The installed cluster executor, or None when kernels run on this machine's pools."""
    return _REMOTE


def distributed() -> bool:
    """Whether batch kernels currently run on a cluster instead of this machine's pools."""
    return _REMOTE is not None


def worker_count() -> int:
    """How many kernel tasks run at once: the cluster's CPUs when the party computes on one
    (:func:`use_backend`), else :func:`local_cores`. Callers size their chunks with it."""
    remote = _REMOTE
    if remote is not None:
        return max(1, int(remote.cpus))
    return local_cores()


def local_cores() -> int:
    """Cores this process may use (``sched_getaffinity``); ``FEDRISK_WORKERS`` overrides."""
    env = os.environ.get("FEDRISK_WORKERS")
    if env:
        if not env.strip().isdigit():
            raise CryptoError(f"FEDRISK_WORKERS={env!r} must be a whole number of worker processes, e.g. 1 or 2")
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def process_pool() -> Executor:
    """The executor for batch kernels: the party's cluster when it computes on one, else the
    lazily created local process pool, one worker per core."""
    global _PROC
    with _LOCK:
        if _REMOTE is not None:
            return _REMOTE
        if _PROC is None:
            _PROC = ProcessPoolExecutor(max_workers=local_cores(), mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_import_kernels)
            _start_workers(_PROC, local_cores())
        return _PROC


def kernel_pool(threads: bool = False) -> Executor:
    """Where a batch kernel runs: the party's cluster when it computes on one; otherwise the
    thread pool for GIL-releasing kernels (``threads``) or the process pool."""
    remote = _REMOTE
    if remote is not None:
        return remote
    return thread_pool() if threads else process_pool()


def _start_workers(pool: ProcessPoolExecutor, n: int) -> None:
    """Start the pool's ``n`` workers now without letting them import the parent's ``__main__``.

    ``spawn`` tells a child to re-import the main module (by path for a script, by name for
    ``python -m``) so that functions defined there can be unpickled. Our kernels live in fedrisk
    modules, so the children do not need it, and re-running an unguarded script in every worker
    would start the user's job again in each. Each ``submit`` starts one worker while none is idle
    (workers take far longer to boot than this loop), and the preparation data is read then, so
    hiding ``__file__``/``__spec__`` of ``__main__`` around these submits covers every worker.
    """
    import sys

    main = sys.modules.get("__main__")
    if main is None:
        for _ in range(n):
            pool.submit(_noop)
        return
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    try:
        main.__dict__.pop("__file__", None)
        main.__dict__["__spec__"] = None
        for _ in range(n):
            pool.submit(_noop)
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def _import_kernels() -> None:
    """Worker initializer: die with the parent, leave Ctrl-C to the parent, import the kernels."""
    import importlib

    _watch_parent()
    for name in _KERNEL_MODULES:
        importlib.import_module(name)


def _watch_parent() -> None:
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (ValueError, OSError):  # not the main thread of the worker: nothing to ignore
        pass
    parent = multiprocessing.parent_process()
    sentinel = getattr(parent, "sentinel", None)
    if sentinel is None:  # no pipe to the parent (not a spawned child): fall back to polling the pid
        ppid = os.getppid()

        def poll() -> None:
            import time

            while os.getppid() == ppid:
                time.sleep(0.5)
            os._exit(1)

        threading.Thread(target=poll, name="fedrisk-parent-watch", daemon=True).start()
        return

    def wait() -> None:
        from multiprocessing.connection import wait as wait_ready

        wait_ready([sentinel])
        os._exit(1)  # the parent is gone: nobody will read our results

    threading.Thread(target=wait, name="fedrisk-parent-watch", daemon=True).start()


def _noop() -> None:
    return None


def warm_up() -> None:
    """Start the workers now, without waiting: they import the kernels while the caller loads data
    and connects, instead of on the first batch (about half a second of a 30k-row PSI)."""
    remote = _REMOTE
    if remote is not None:
        getattr(remote, "warm_up", lambda: None)()
        return
    if worker_count() > 1:
        pool = process_pool()
        for _ in range(worker_count()):
            pool.submit(_noop)


def thread_pool() -> Executor:
    """Threads for kernels that release the GIL (gmpy2 exponentiation) and must keep secrets in-process."""
    global _THREADS
    with _LOCK:
        if _THREADS is None:
            _THREADS = ThreadPoolExecutor(max_workers=local_cores(), thread_name_prefix="fedrisk-crypto")
        return _THREADS


def _lower_priority() -> None:
    try:  # Linux: a thread is a task with its own nice value; raising it needs no privilege
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + BACKGROUND_NICENESS))
    except (AttributeError, OSError):  # not Linux, or refused: plain priority
        pass


def background_thread_pool() -> Executor:
    """Threads at lower CPU priority, for work made ahead of need (the label holder's next-tree
    obfuscators): they use cores the critical path leaves idle — in this process and in other
    parties' processes on the same machine — instead of competing with it, and never queue in
    front of critical tasks on :func:`thread_pool`."""
    global _BACKGROUND
    with _LOCK:
        if _BACKGROUND is None:
            _BACKGROUND = ThreadPoolExecutor(max_workers=local_cores(), thread_name_prefix="fedrisk-background",
                                             initializer=_lower_priority)
        return _BACKGROUND


def _take_pools() -> tuple:
    """Detach the process, thread and background pools (each restarts on next use)."""
    global _PROC, _THREADS, _BACKGROUND
    with _LOCK:
        proc, _PROC = _PROC, None
        threads, _THREADS = _THREADS, None
        background, _BACKGROUND = _BACKGROUND, None
    return proc, threads, background


def shutdown_pools() -> None:
    """Stop the pools (they restart on next use); joins workers so their CPU time is accounted."""
    proc, threads, background = _take_pools()
    if proc is not None:
        proc.shutdown(wait=True, cancel_futures=True)
    for pool in (threads, background):
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def terminate_pools() -> None:
    """Stop now, for an interrupted job: kill the worker processes, drop queued thread tasks.

    Unlike :func:`shutdown_pools` this never waits for a batch to finish; tasks already running on
    a thread finish in the background of a process that is about to exit.
    """
    proc, threads, background = _take_pools()
    if proc is not None:
        workers = list(getattr(proc, "_processes", {}).values())
        for p in workers:
            try:
                p.kill()
            except (OSError, AttributeError):
                pass
        proc.shutdown(wait=False, cancel_futures=True)
        for p in workers:  # reap them: a killed child stays a zombie until its parent waits for it
            try:
                p.join(2.0)
            except (OSError, AssertionError, AttributeError):
                pass
        _stop_resource_tracker()
    for pool in (threads, background):
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _stop_resource_tracker() -> None:
    """Stop (and reap) multiprocessing's resource-tracker helper process, if this process started one."""
    try:
        from multiprocessing import resource_tracker

        resource_tracker._resource_tracker._stop()
    except Exception:  # noqa: BLE001 - private API, best effort: the tracker exits with us anyway
        pass


atexit.register(shutdown_pools)


def broken_pool_error() -> CryptoError:
    """Reset the pool after a worker died and explain the usual cause."""
    shutdown_pools()
    return CryptoError(
        "the crypto worker pool died (a worker crashed or could not start). A script that runs batch "
        "crypto must guard its entry point with `if __name__ == \"__main__\":` because workers are "
        "spawned; set FEDRISK_WORKERS=1 to rule out resource limits"
    )
