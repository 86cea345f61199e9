"""The feature holder's root histogram: cells over all rows, summed as chunks arrive, equal the naive sums."""
from __future__ import annotations

import secrets

import numpy as np
import pytest
from gmpy2 import mpz

from fedrisk.algorithms.vertical.secureboost import histograms as sb
from fedrisk.crypto.additive import generate_keypair, to_bytes
from fedrisk.errors import ProtocolError


@pytest.fixture(scope="module")
def pub():
    return generate_keypair("ou", 768, obfuscation_bits=160)[0]


def _bins(n, rng):
    nb = np.array([2, 4, 7, 11, 26, 3])
    base = rng.integers(0, 3, n)
    bins = np.column_stack([np.minimum(base + rng.integers(0, 2, n), k - 1) if k < 12 else rng.integers(0, k, n)
                            for k in nb]).astype(np.uint8)
    skip = np.array([int(np.argmax(np.bincount(bins[:, f], minlength=nb[f]))) for f in range(len(nb))])
    return nb, bins, skip


def _naive(m, cts, bins, skip, offs, per_node, k):
    """One sum per (slot, position): row i is ciphertext i // k at position i % k."""
    out = [mpz(1)] * (per_node * k)
    for i, row in enumerate(bins.tolist()):
        c, s = cts[i // k], i % k
        for f, b in enumerate(row):
            if b != skip[f]:
                j = s * per_node + offs[f] + b
                out[j] = out[j] * c % m
    return out


@pytest.mark.parametrize("n,k,chunk,merge_at", [(1000, 1, 97, 50), (5000, 3, 2000, 300), (4999, 3, 600, 10**9),
                                                (300, 2, 1000, 1)])
def test_root_sums_over_chunks_equal_naive_sums(pub, monkeypatch, n, k, chunk, merge_at):
    monkeypatch.setattr(sb, "_ROOT_MERGE_AT", merge_at)
    monkeypatch.setattr(sb, "_POOL_HIST_AT", 500)  # threads even for small chunks
    rng = np.random.default_rng(n + k)
    nb, bins, skip = _bins(n, rng)
    offs = np.concatenate([[0], np.cumsum(nb)[:-1]]).astype(np.int64)
    per_node = int(nb.sum())
    groupings = sb._candidate_groupings(bins, nb, skip)
    strides = [[sb._strides(nb, fs) for fs in g] for g in groupings]
    m = pub.ciphertext_modulus
    n_ct = -(-n // k)
    cts = [mpz(secrets.randbelow(int(m) - 1) + 1) for _ in range(n_ct)]
    cells = sb.RootCells.plan(bins, k, skip, offs, per_node, groupings, strides)
    sums = sb.RootSums(pub, cells)
    for lo in range(0, n_ct, chunk):
        sums.add(to_bytes(cts[lo:lo + chunk], pub.ciphertext_bytes), lo)
    got = sums.finish()
    assert [int(x) for x in got] == [int(x) for x in _naive(m, cts, bins, skip, offs, per_node, k)]


def test_root_sums_refuse_to_finish_with_a_chunk_missing(pub):
    rng = np.random.default_rng(1)
    nb, bins, skip = _bins(400, rng)
    offs = np.concatenate([[0], np.cumsum(nb)[:-1]]).astype(np.int64)
    groupings = sb._candidate_groupings(bins, nb, skip)
    strides = [[sb._strides(nb, fs) for fs in g] for g in groupings]
    cells = sb.RootCells.plan(bins, 1, skip, offs, int(nb.sum()), groupings, strides)
    m = int(pub.ciphertext_modulus)
    sums = sb.RootSums(pub, cells)
    sums.add(to_bytes([mpz(secrets.randbelow(m - 1) + 1) for _ in range(200)], pub.ciphertext_bytes), 0)
    with pytest.raises(ProtocolError, match="before every gradient chunk"):
        sums.finish()


def test_cells_over_all_rows_cost_fewer_products_than_cells_per_chunk():
    """What the change is for: planned chunk by chunk (2,000 rows a position) the root paid the
    cells-to-bins stage once per chunk; over all rows it pays it once."""
    rng = np.random.default_rng(0)
    n, k, chunk = 60_000, 3, 6_000
    nb, bins, skip = _bins(n, rng)
    offs = np.concatenate([[0], np.cumsum(nb)[:-1]]).astype(np.int64)
    per_node = int(nb.sum())
    groupings = sb._candidate_groupings(bins, nb, skip)
    strides = [[sb._strides(nb, fs) for fs in g] for g in groupings]
    whole = sb.RootCells.plan(bins, k, skip, offs, per_node, groupings, strides).products
    chunked = sum(sb.RootCells.plan(bins[lo:lo + chunk], k, skip, offs, per_node, groupings, strides).products
                  for lo in range(0, n, chunk))
    assert whole < 0.8 * chunked
