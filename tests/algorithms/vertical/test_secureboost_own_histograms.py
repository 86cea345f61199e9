"""The label holder's own plaintext histograms: per-column sums and sibling subtraction are exact.

The label holder sums its own (feature, bin) gradients for every splittable node. Below the root it
now sums only the smaller of two siblings and takes the larger as parent minus sibling, as the
feature holders' encrypted histograms are derived. That is only safe when every float sum is
exact, which the fixed-point grid guarantees up to a bound; outside it the sums are taken directly.
"""
from __future__ import annotations

import numpy as np
import pytest

from fedrisk.algorithms.vertical.secureboost.label_holder import _Node, _own_histograms, _sums_exact
from fedrisk.algorithms.vertical.tree import column_histogram, histogram


def _data(n: int, f: int, n_bins: int, seed: int, grid: int | None = 16, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    bins = rng.integers(0, n_bins, (n, f)).astype(dtype)
    p = rng.uniform(0.01, 0.99, n)
    y = rng.uniform(size=n) < p
    g, h = p - y, p * (1 - p)
    if grid is not None:
        s = float(2 ** grid)
        g, h = np.round(g * s) / s, np.round(h * s) / s
    return bins, g, h


@pytest.mark.parametrize("dtype,n_bins", [(np.uint8, 33), (np.uint16, 300)])
def test_column_histogram_is_the_row_histogram_bit_for_bit(dtype, n_bins):
    bins, g, h = _data(5_000, 7, n_bins, 1, grid=None, dtype=dtype)  # off-grid floats: order matters
    rows = np.sort(np.random.default_rng(2).choice(len(g), 3_100, replace=False))
    want = histogram(bins[rows], g[rows], h[rows], n_bins)
    got = column_histogram(np.ascontiguousarray(bins.T), rows, g, h, n_bins)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got, want)


def _tree_levels(n: int, seed: int) -> list[list[_Node]]:
    """Three levels of sibling pairs over ``n`` rows, as ``_grow`` builds them (random splits)."""
    rng = np.random.default_rng(seed)
    root = _Node(0, np.arange(n), 0)
    levels, level, next_id = [[root]], [root], 1
    for depth in (1, 2):
        nxt = []
        for nd in level:
            mask = rng.uniform(size=len(nd.rows)) < rng.uniform(0.1, 0.9)
            a = _Node(next_id, nd.rows[mask], depth, parent=nd.id)
            b = _Node(next_id + 1, nd.rows[~mask], depth, parent=nd.id)
            next_id += 2
            nxt += [a, b]
        levels.append(nxt)
        level = nxt
    return levels


def _run(levels, bins_t, g, h, is_grad, n_bins, exact, drop=()):
    by_id = {nd.id: nd for lv in levels for nd in lv}
    got = {}
    for lv in levels:
        for nd in lv:
            nd.own_hist = None
            gr = nd.rows[is_grad[nd.rows]]
            nd.n_grad = len(gr)
        splittable = [nd for nd in lv if nd.id not in drop]
        got.update(_own_histograms(lv, splittable, bins_t, g, h, is_grad, n_bins, by_id, exact))
    return got


@pytest.mark.parametrize("subsample", [1.0, 0.6])
def test_sibling_subtraction_equals_summing_the_rows_on_the_grid(subsample):
    n, n_bins = 20_000, 33
    bins, g, h = _data(n, 9, n_bins, 3)
    assert _sums_exact(g, h, 16)
    is_grad = np.random.default_rng(4).uniform(size=n) < subsample
    levels = _tree_levels(n, 5)
    bins_t = np.ascontiguousarray(bins.T)
    # node 4 not splittable: its sibling 3 is still derived; node 1's pair derives as usual
    got = _run(levels, bins_t, g, h, is_grad, n_bins, exact=True, drop={4})
    derived = 0
    for lv in levels:
        for nd in lv:
            if nd.id == 4:
                continue
            gr = nd.rows[is_grad[nd.rows]]
            want = histogram(bins[gr], g[gr], h[gr], n_bins)
            assert np.array_equal(got[nd.id], want), nd.id
            derived += nd.depth > 0 and nd.n_grad > min(x.n_grad for x in lv if x.parent == nd.parent)
    assert derived >= 3  # the larger siblings really were derived, not summed


def test_off_the_grid_the_subtraction_would_round_so_it_is_not_used():
    n, n_bins = 20_000, 33
    bins, g, h = _data(n, 9, n_bins, 6, grid=None)
    g = g * (1 + 1e-9 * np.arange(n))  # full-mantissa values: sums round
    assert not _sums_exact(g, h, 52)
    is_grad = np.ones(n, dtype=bool)
    levels = _tree_levels(n, 7)
    bins_t = np.ascontiguousarray(bins.T)
    # what the subtraction would give here differs from the rows' sums somewhere...
    sub = _run(levels, bins_t, g, h, is_grad, n_bins, exact=True)
    direct = {nd.id: histogram(bins[nd.rows], g[nd.rows], h[nd.rows], n_bins) for lv in levels for nd in lv}
    assert any(not np.array_equal(sub[k], direct[k]) for k in direct)
    # ...so with the guard off (inexact sums) every node is summed from its rows
    got = _run(levels, bins_t, g, h, is_grad, n_bins, exact=False)
    assert all(np.array_equal(got[k], direct[k]) for k in direct)


def test_the_grid_bound_on_exact_sums():
    g = np.full(1_000, 0.5)
    h = np.full(1_000, 0.25)
    assert _sums_exact(g, h, 16)
    assert _sums_exact(g, h, 42)
    assert not _sums_exact(g, h, 52)  # 500 x 2^52 steps: past 2^53
