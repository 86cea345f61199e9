"""Where a party's heavy batch kernels run: this machine's process pool, or its own Ray cluster.

``[parties.NAME] compute = "ray"`` (with ``ray_address`` or ``RAY_ADDRESS``) makes the party's
process a Ray driver for the length of the job: :func:`party_compute` connects it, installs the
cluster as the kernels' executor (:func:`fedrisk.crypto.workers.use_backend`), logs what it uses,
and disconnects at the end. Nothing else changes: the protocol, its messages and its results are
those of a local run (see docs/ray.md for what runs where).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator

from fedrisk.runtime.spec import JobSpec

__all__ = ["party_compute"]


@contextlib.contextmanager
def party_compute(spec: JobSpec, name: str, log: logging.Logger) -> Iterator[str]:
    """Run the body with party ``name``'s kernels on the backend its spec table chooses.

    Yields a one-line description of the backend. Raises :class:`~fedrisk.errors.ConfigError`
    (one line) when the party asks for Ray and Ray is missing or its cluster unreachable.
    """
    table = spec.parties.get(name)
    if table is None or table.compute != "ray":
        yield "local process pool"
        return
    spec.check_compute(name)
    from fedrisk.crypto import workers
    from fedrisk.crypto.ray_executor import RayExecutor

    address = spec.compute_address(name)
    executor = RayExecutor(address, who=f"party {name}")
    previous = workers.use_backend(executor)
    try:
        log.info("heavy kernels run on %s (retries of lost tasks: %d); keys and plaintext go to that cluster, "
                 "which must be inside this party's trust boundary", executor.describe(), executor.max_retries)
        executor.warm_up()
        yield executor.describe()
        log.info("ran %d kernel tasks on Ray (%s)", executor.tasks,
                 ", ".join(f"{name} {n}" for name, n in sorted(executor.kernels.items())))
    finally:
        workers.use_backend(previous)
        executor.shutdown()
