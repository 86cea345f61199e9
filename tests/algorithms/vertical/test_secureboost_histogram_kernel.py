"""The feature holder's two-stage (cells, then bins) histogram equals the per-row, per-feature product."""
from __future__ import annotations

import secrets

import numpy as np
import pytest
from gmpy2 import mpz

from fedrisk.algorithms.vertical.secureboost import histograms as sb
from fedrisk.algorithms.vertical.secureboost.encryption import _Obfuscators
from fedrisk.crypto.additive import generate_keypair, to_bytes


@pytest.fixture(scope="module")
def pub():
    return generate_keypair("ou", 1024, obfuscation_bits=160)[0]


def _naive(m, cts, bins, skip, offs, n_out):
    out = [mpz(1)] * n_out
    for c, row in zip(cts, bins.tolist()):
        for f, b in enumerate(row):
            if b != skip[f]:
                out[b + offs[f]] = out[b + offs[f]] * c % m
    return out


@pytest.mark.parametrize("n", [50, 700, 5000])
def test_grouped_level_histograms_equal_naive(pub, n):
    rng = np.random.default_rng(n)
    nb = np.array([2, 4, 7, 11, 11, 26, 3])
    base = rng.integers(0, 3, n)
    bins = np.column_stack([np.minimum(base + rng.integers(0, 2, n), k - 1) if k < 12 else rng.integers(0, k, n)
                            for k in nb]).astype(np.uint8)
    skip = np.array([int(np.argmax(np.bincount(bins[:, f], minlength=nb[f]))) for f in range(len(nb))])
    offs = np.concatenate([[0], np.cumsum(nb)[:-1]]).astype(np.int64)
    per_node = int(nb.sum())
    groupings = sb._candidate_groupings(bins, nb, skip)
    strides = [[sb._strides(nb, fs) for fs in g] for g in groupings]
    m = pub.ciphertext_modulus
    cts = [mpz(secrets.randbelow(int(m) - 1) + 1) for _ in range(n)]
    nodes = [np.sort(rng.permutation(n)[: n // 3]), np.arange(n // 3, n // 2)]
    plan = sb._LevelPlan()
    for k, gi in enumerate(nodes):
        plan.add_node(gi, bins[gi], skip, offs + k * per_node, groupings, strides)
    gi_all = np.concatenate(plan.gi)
    got = sb.level_histograms(pub, to_bytes([cts[i] for i in gi_all.tolist()], pub.ciphertext_bytes), plan,
                              2 * per_node)
    want = []
    for gi in nodes:
        want += _naive(m, [cts[i] for i in gi.tolist()], bins[gi], skip, offs, per_node)
    assert [int(x) for x in got] == [int(x) for x in want]


def test_greedy_grouping_saves_multiplications():
    rng = np.random.default_rng(0)
    n = 4000
    a = rng.integers(0, 4, n)
    bins = np.column_stack([a, np.minimum(a + rng.integers(0, 2, n), 4), rng.integers(0, 2, n), rng.integers(0, 30, n)])
    nb = np.array([4, 5, 2, 30])
    skip = np.array([int(np.argmax(np.bincount(bins[:, f]))) for f in range(4)])
    singles = [np.array([f]) for f in range(4)]
    greedy = sb._greedy_grouping(bins, nb, skip)
    cost = lambda g: sb._group_cells(bins, skip, g, [sb._strides(nb, fs) for fs in g])[0]  # noqa: E731
    assert cost(greedy) < cost(singles)


class _FakeKey:
    obfuscator_bytes = 2

    def __init__(self):
        self.next = 0

    def obfuscators_async(self, count, tasks=1, background=False):
        vals = bytes(x % 256 for v in range(self.next, self.next + count) for x in (v >> 8, v))
        self.next += count
        return [lambda: vals]


def test_obfuscator_queue_hands_out_each_value_once():
    q = _Obfuscators(_FakeKey())
    assert q.take(3) is None
    q.prefetch(10)
    got = [q.take(4), q.take(4)]
    assert q.take(4) is None          # only 2 left: the caller encrypts with fresh randomness
    got.append(q.take(2))
    vals = [b[i:i + 2] for b in got for i in range(0, len(b), 2)]
    assert len(vals) == 10 and len(set(vals)) == 10
