"""The label holder's gradient encryption (fedrisk.algorithms.vertical.secureboost.encryption):
chunks mix prefetched and fresh obfuscators without waiting, and the model does not depend on which."""
from __future__ import annotations

import threading
from concurrent.futures import Future

import numpy as np

from fedrisk.algorithms.vertical.secureboost import SecureBoostParams, encryption, label_holder
from fedrisk.algorithms.vertical.secureboost.encryption import _Obfuscators, encrypt_chunk_async
from fedrisk.crypto.additive import generate_keypair
from fedrisk.crypto.packing import SlotPacking
from tests.algorithms.vertical.test_secureboost import FAST, make_data, pooled_reference, train


class _SlowKey:
    """Pieces complete only when the test says so (a starved low-priority pool)."""

    obfuscator_bytes = 2

    def __init__(self):
        self.next = 0
        self.futures: list[Future] = []

    def obfuscators_async(self, count, tasks=1, background=False):
        f: Future = Future()
        vals = bytes(x % 256 for v in range(self.next, self.next + count) for x in (v >> 8, v))
        self.next += count
        f.vals = vals  # type: ignore[attr-defined]
        self.futures.append(f)
        return [f.result]


def test_take_ready_hands_out_only_made_values_in_order_and_never_twice(monkeypatch):
    monkeypatch.setattr(encryption, "_OBF_PIECE", 3)
    key = _SlowKey()
    q = _Obfuscators(key)
    q.prefetch(9)                                   # three pieces of 3, none made yet
    assert q.queued == 9 and q.take_ready(5) == b""  # nothing made: no wait, nothing handed out
    key.futures[0].set_result(key.futures[0].vals)
    first = q.take_ready(5)
    assert len(first) == 3 * 2                      # only the made piece
    key.futures[2].set_result(key.futures[2].vals)  # out of order: piece 1 still pending
    assert q.take_ready(5) == b""                   # queue order is kept
    key.futures[1].set_result(key.futures[1].vals)
    rest = q.take_ready(100)
    vals = [b[i:i + 2] for b in (first, rest) for i in range(0, len(b), 2)]
    assert len(vals) == 9 and len(set(vals)) == 9
    q.prefetch(4)                                   # topped up to 4 queued, not 4 more than queued
    assert q.queued == 4


def test_prefetch_keeps_at_most_one_trees_worth(monkeypatch):
    monkeypatch.setattr(encryption, "_OBF_PIECE", 10)
    key = _SlowKey()
    q = _Obfuscators(key)
    for _ in range(5):                              # five trees while the pool is starved
        q.prefetch(25)
    assert q.queued == 25 and key.next == 25


def test_chunk_with_some_ready_obfuscators_decrypts_to_the_packed_rows():
    pub, priv = generate_keypair("ou", 1024, obfuscation_bits=160)
    packing = SlotPacking.for_sums((1.0, 0.25), 1000, plaintext_bits=pub.plaintext_bits, precision=16)
    rng = np.random.default_rng(0)
    gh = np.column_stack([rng.uniform(-1, 1, 300), rng.uniform(0, 0.25, 300)])
    gh = np.round(gh * 2 ** 16) / 2 ** 16
    q = _Obfuscators(priv)
    q.prefetch(120)
    for w in [x for x, _ in q.pending]:
        w()                                         # let the 120 made ones finish
    wire = encrypt_chunk_async(priv, packing, gh, q)()
    assert len(wire) == 300 and q.queued == 0       # 120 prefetched + 180 fresh
    got = np.array(priv.decrypt(pub.ciphertexts_from_wire(wire)))
    assert np.array_equal(got, np.array(packing.pack(gh)))


def test_same_model_whether_chunks_find_obfuscators_made_or_not(monkeypatch):
    """Small chunks and pieces, and a background pool that is made to lag behind: chunks mix
    prefetched and fresh randomness; the trees equal a run without any prefetching and the pooled
    plaintext reference."""
    X, y = make_data(n=2000, seed=11)
    params = SecureBoostParams(**{**FAST, "n_trees": 4})
    parts = [X[:, :3], X[:, 3:]]
    monkeypatch.setattr(label_holder, "_CHUNK_ROWS", 300)
    monkeypatch.setattr(encryption, "_OBF_PIECE", 200)
    real = _Obfuscators.prefetch
    gate = threading.Event()

    def lagging(self, count):
        real(self, count)
        # only every other piece is made before the next tree asks for them
        for i, (w, _) in enumerate(self.pending):
            if i % 2 == 0:
                w()
        gate.set()

    monkeypatch.setattr(_Obfuscators, "prefetch", lagging)
    mixed, _ = train(parts, y, params)
    assert gate.is_set()
    monkeypatch.setattr(_Obfuscators, "prefetch", lambda self, count: None)
    fresh, _ = train(parts, y, params)
    assert mixed["lh"][0].model_.trees == fresh["lh"][0].model_.trees
    assert np.array_equal(mixed["lh"][1], fresh["lh"][1])
    assert np.max(np.abs(mixed["lh"][1] - pooled_reference(parts, y, params))) < 1e-6


def test_close_cancels_the_pieces_not_started_and_forgets_the_rest(monkeypatch):
    monkeypatch.setattr(encryption, "_OBF_PIECE", 3)
    key = _SlowKey()
    q = _Obfuscators(key)
    q.prefetch(9)
    key.futures[0].set_result(key.futures[0].vals)      # made
    assert key.futures[1].set_running_or_notify_cancel()  # being made: cannot be cancelled
    assert q.close() == 3                               # only the piece not started
    assert key.futures[2].cancelled() and not key.futures[1].cancelled()
    assert q.queued == 0 and q.take_ready(9) == b""
