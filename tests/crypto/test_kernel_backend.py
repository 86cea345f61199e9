"""The pluggable kernel backend (fedrisk.crypto.workers.use_backend): with a cluster executor
installed, every batch kernel goes to it, chunked for its CPU count, and results are those of the
local pools. A recording executor stands in for Ray here (the real cluster: tests/runtime/test_ray_compute.py)."""
from __future__ import annotations

import threading
from concurrent.futures import Executor, Future, ThreadPoolExecutor

import numpy as np
import pytest

from fedrisk.crypto import additive, psi, workers
from fedrisk.errors import CryptoError


class RecordingExecutor(Executor):
    """Runs each task in a thread of its own pool and records which kernel it was."""

    def __init__(self, cpus: int) -> None:
        self.cpus = cpus
        self.calls: list[str] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=2)

    def submit(self, fn, /, *args, **kwargs) -> Future:
        with self._lock:
            self.calls.append(fn.__name__)
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait=True, *, cancel_futures=False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


@pytest.fixture
def remote():
    ex = RecordingExecutor(cpus=3)  # a chunking the local pool (2 cores here) never uses
    previous = workers.use_backend(ex)
    try:
        yield ex
    finally:
        workers.use_backend(previous)
        ex.shutdown()


def test_backend_switch_is_visible_to_every_caller(remote):
    assert workers.distributed() and workers.backend() is remote
    assert workers.worker_count() == 3 and additive.worker_count() == 3 and psi.worker_count() == 3
    assert workers.process_pool() is remote and workers.kernel_pool(threads=True) is remote
    assert workers.thread_pool() is not remote  # in-process threads stay local


def test_a_backend_without_cpus_is_refused():
    class NoCpus(RecordingExecutor):
        cpus = 0

    with pytest.raises(CryptoError, match="cpus >= 1"):
        workers.use_backend(NoCpus(0))
    assert not workers.distributed()


def test_psi_kernels_go_to_the_backend_with_the_same_points(remote):
    ids = [f"c{i}" for i in range(5000)]
    key = psi.random_key()
    on_backend = psi.hash_and_blind(ids, key, "salt")
    reblinded = psi.reblind(on_backend, psi.random_key())
    assert {"hash_and_blind_kernel", "reblind_kernel"} <= set(remote.calls)
    workers.use_backend(None)
    try:
        assert np.array_equal(on_backend, psi.hash_and_blind(ids, key, "salt"))
    finally:
        workers.use_backend(remote)
    assert reblinded.shape == on_backend.shape


def test_a_kernel_error_keeps_its_row_on_the_backend(remote):
    bad = psi.hash_and_blind([f"c{i}" for i in range(3000)], psi.random_key(), "s")
    bad[2500] = 0  # the identity: refused
    with pytest.raises(CryptoError, match="row 2500 "):
        psi.reblind(bad, psi.random_key())


@pytest.mark.parametrize("scheme", ["ou", "paillier"])
def test_encryption_decryption_and_histograms_go_to_the_backend(remote, scheme):
    pub, priv = additive.generate_keypair(scheme, 1024 if scheme == "ou" else 768)
    rng = np.random.default_rng(0)
    m = rng.integers(-2**40, 2**40, size=2500)
    cts = priv.encrypt(m)  # key owner: public-key kernels on the backend (CRT tables stay local-only)
    cts_pub = pub.encrypt(m)
    assert priv.decrypt(cts) == m.tolist() and priv.decrypt(cts_pub) == m.tolist()
    bins = rng.integers(0, 8, size=(2500, 24))
    sums = pub.bin_sums(cts, bins, 8)
    expect = [[int(m[bins[:, f] == b].sum()) for b in range(8)] for f in range(24)]
    assert [priv.decrypt(row) for row in sums] == expect
    assert [priv.decrypt(row) for row in pub.bin_sums(cts, bins, 8)] == expect
    names = set(remote.calls)
    assert any("encrypt" in n for n in names) and any("decrypt" in n for n in names), names
    assert any(n in names for n in ("_grouped_task", "_bin_sums_task")), names


def test_ou_obfuscators_and_slot_encryption_of_the_key_owner_run_on_the_backend(remote):
    pub, priv = additive.generate_keypair("ou", 1024)
    v = np.random.default_rng(1).integers(-1000, 1000, size=(3000, 2))
    obf = b"".join(w() for w in priv.obfuscators_async(3000, tasks=3))
    blob = priv.encrypt_slots_to_wire_async(v, 24, (1000, 1000), obf)()
    packed = [int(a) + (int(b) << 24) for a, b in v.tolist()]
    assert priv.decrypt(pub.ciphertexts_from_wire(blob)) == packed
    assert {"_obfuscator_task", "_encrypt_slots_task"} <= set(remote.calls)
