"""A party's own Ray cluster as the executor of its batch crypto kernels (``compute = "ray"``).

:mod:`fedrisk.crypto.workers` hands kernel callers a :class:`concurrent.futures.Executor`; this
module provides one backed by Ray, so the same chunked calls (PSI hashing and blinding, OU and
Paillier encryption and decryption, encrypted histogram sums, WOE bin sums) become Ray tasks.
The split of work into chunks, and their order, stays with the caller (results are joined in
submission order, so they do not depend on the backend); scheduling, placement on nodes and
re-running tasks lost with a worker or node (``max_retries``) are Ray's — fedrisk adds no
scheduler of its own.

What crosses into the cluster: the kernels' arguments, i.e. identifiers and the PSI blinding key,
plaintexts (labels, gradients) with the public key, ciphertexts, and for decryption the private
key. The Ray cluster must therefore sit inside the party's own trust boundary (its own hosts and
network), exactly like the party process itself; nothing here talks to another institution.

Workers must import ``fedrisk`` (with its compiled kernel, ``fedrisk/crypto/_montgomery*.so``)
from the same version the party runs: same image or virtualenv on every node, or a Ray
``runtime_env``. A kernel's own exception (e.g. an invalid point from a peer) is re-raised here
unchanged; a task Ray could not complete after its retries becomes one :class:`CryptoError` line.
"""
from __future__ import annotations

import logging
import threading
from collections import Counter
from concurrent.futures import Executor, Future
from typing import Any, Callable

from fedrisk.errors import ConfigError, CryptoError

__all__ = ["RayExecutor", "DEFAULT_MAX_RETRIES", "available"]

#: how many times Ray re-runs a task whose worker or node died (Ray's ``max_retries``)
DEFAULT_MAX_RETRIES = 3
#: modules the workers import before the first batch (see :meth:`RayExecutor.warm_up`)
_KERNEL_MODULES = ("fedrisk.crypto.psi", "fedrisk.crypto.additive", "fedrisk.crypto.paillier",
                   "fedrisk.crypto.okamoto_uchiyama")


def available() -> bool:
    """Whether Ray is importable in this Python (the ``fedrisk[ray]`` extra)."""
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def _check_reachable(address: str, who: str, timeout: float = 10.0) -> None:
    """Fail fast when nothing accepts connections at ``host:port``: ``ray.init`` itself retries an
    unreachable cluster for minutes, which would leave the party's partners waiting."""
    if address == "auto" or "://" in address:
        return
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise ConfigError(f"{who}: cannot reach the Ray cluster at {address} ({reason}); start it "
                          "(`ray start --head --port PORT`) or fix ray_address / RAY_ADDRESS") from None


def _import_kernels() -> int:
    """Ray task: import the kernel modules (and the compiled kernel) on a worker; its pid."""
    import importlib
    import os

    for name in _KERNEL_MODULES:
        importlib.import_module(name)
    return os.getpid()


class RayExecutor(Executor):
    """Submit kernel calls as Ray tasks on an existing cluster; futures resolve in any order,
    callers read them in the order they submitted.

    Parameters
    ----------
    address : str
        The cluster's GCS address (``host:port``, what ``ray start --head --port`` printed) or
        ``"auto"`` for the cluster this host belongs to. Never starts a cluster: a party that
        asked for Ray and cannot reach it stops with a :class:`ConfigError`.
    max_retries : int
        Ray's re-runs of a task lost with its worker or node (kernels are pure, so re-running
        one is safe).
    who : str
        The party, for error messages.

    Notes
    -----
    One Ray driver per process (Ray's rule): the executor connects this process on creation and
    disconnects it in :meth:`shutdown` — the cluster itself keeps running. Tasks of a party that
    dies are cancelled by Ray when the driver's connection drops.
    """

    def __init__(self, address: str, *, max_retries: int = DEFAULT_MAX_RETRIES, who: str = "this party") -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError(f"{who}: compute = \"ray\" needs `pip install fedrisk[ray]`") from None
        self._ray = ray
        self.address = address
        self.max_retries = int(max_retries)
        self.who = who
        self._remotes: dict[Callable, Any] = {}
        self._lock = threading.Lock()
        #: kernel tasks submitted so far, per kernel function name (the party logs them at the end)
        self.kernels: Counter[str] = Counter()
        if ray.is_initialized():
            raise ConfigError(f"{who}: this process is already connected to a Ray cluster; a party runs its "
                              "kernels on one cluster, so run it in its own process (fedrisk party)")
        _check_reachable(address, who)
        try:
            ray.init(address=address, namespace="fedrisk", log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ConfigError(f"{who}: cannot reach the Ray cluster at {address} ({str(e).splitlines()[0][:200]}); "
                              "start it (`ray start --head --port PORT`) or fix ray_address / RAY_ADDRESS") from None
        resources = ray.cluster_resources()
        self.cpus = int(resources.get("CPU", 0))
        self.nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        if self.cpus < 1:
            ray.shutdown()
            raise ConfigError(f"{who}: the Ray cluster at {address} has no CPUs; start its nodes with --num-cpus N")

    # -- Executor ------------------------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` as a Ray task; the future holds its result or its own exception."""
        ray = self._ray
        with self._lock:
            remote = self._remotes.get(fn)
            if remote is None:
                # kernels are pure functions of their arguments: re-running one lost with its
                # worker is safe, but a kernel's own exception is an answer, not a loss
                remote = self._remotes[fn] = ray.remote(num_cpus=1, max_retries=self.max_retries,
                                                        retry_exceptions=False)(fn)
            self.kernels[getattr(fn, "__name__", "kernel")] += 1
        out: Future = Future()
        out.set_running_or_notify_cancel()
        ref = remote.remote(*args, **kwargs)
        ref.future().add_done_callback(lambda f: self._settle(out, f))
        return out

    def _settle(self, out: Future, done: Future) -> None:
        ray = self._ray
        try:
            out.set_result(done.result())
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            out.set_exception(cause if isinstance(cause, BaseException) else
                              CryptoError(f"{self.who}: a kernel task failed on the Ray cluster: {str(e).splitlines()[0][:300]}"))
        except ray.exceptions.RayError as e:
            out.set_exception(CryptoError(
                f"{self.who}: the Ray cluster at {self.address} lost a kernel task after {self.max_retries} retries "
                f"({type(e).__name__}); check its nodes with `ray status`"))
        except BaseException as e:  # noqa: BLE001 - handed to the waiting caller
            out.set_exception(e)

    def map(self, fn: Callable[..., Any], *iterables: Any, timeout: float | None = None, chunksize: int = 1):
        futs = [self.submit(fn, *args) for args in zip(*iterables)]
        return (f.result(timeout) for f in futs)

    def warm_up(self) -> None:
        """Have every CPU's worker import the kernels now, without waiting (as the local pool does)."""
        for _ in range(self.cpus):
            self.submit(_import_kernels)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Disconnect this process from the cluster (the cluster keeps running)."""
        if self._ray.is_initialized():
            self._ray.shutdown()

    @property
    def tasks(self) -> int:
        """Kernel tasks submitted so far (warm-up included)."""
        return sum(self.kernels.values())

    def describe(self) -> str:
        return f"Ray at {self.address} with {self.cpus} CPUs on {self.nodes} node{'s' if self.nodes != 1 else ''}"
