"""Bin edges for horizontal trees, agreed from secure sums of counts: no bank shows a value.

Every bank must bin its rows with the *same* cut points, and those should be the quantiles of the
pooled data (as XGBoost's ``hist`` takes them), yet a bank's values, and even its own quantiles,
must stay on its premises. Counts are additive, so the banks count their values on a common grid
and only the secure sum of the counts is opened; the cut points are quantiles of that sum.

The grid lives on an order-preserving scale, ``z = asinh(x * 2^20)``: about ``ln(2|x|) + 14``
for ``|x| >= 1e-5`` (so a cell is a fixed *relative* width of ``x``, whether ``x`` is a
standardised score or a raw credit limit) and linear around 0. Two rounds (``agg`` = the job's
:class:`~fedrisk.algorithms.horizontal.aggregation.Aggregation`, secure by default)::

    1. bank_k -> coordinator : <tag>.range via agg   per feature: counts of floor(z) in [-64, 64)
                                                     and of missing values; plus ``extra`` (the
                                                     caller's [rows, sum of y])
       coordinator -> bank_k : <tag>.grid            per feature, the occupied unit range
                                                     [lo, hi] of z; sub-cells per unit (aggregate)
    2. bank_k -> coordinator : <tag>.fine via agg    per feature: counts on 64 sub-cells per unit
                                                     of z over [lo, hi + 1) (8 with DP noise, so
                                                     that cells hold enough rows to stand out)
       coordinator -> bank_k : <tag>.cuts            per feature, the cut points (quantiles of
                                                     the summed counts), whether any bank has
                                                     missing values                 (aggregate)

Zoom rounds (no ``[privacy]`` only; at most ``MAX_ZOOM``, usually none). A relative grid cannot
separate values whose spread is small next to their magnitude: birth years 1940-2005 fall in three
cells, dates written ``20230115`` in one, ``1e12 + noise of 1e6`` in one even after a first zoom,
so the column would be nearly useless to the trees while XGBoost's pooled quantiles split it
finely. A zoom that leaves every row in one cell zooms again into that cell (a constant column
therefore uses every zoom round; it cannot be told from a very narrow one by counts). When a feature has fewer occupied cells than
``max_bin`` and one of them is wider than ``1/max_bin`` of the occupied span (so it may hide values
that deserve bins of their own), the coordinator zooms in::

       coordinator -> bank_k : <tag>.cuts            {"zoom": features, lo, hi, cells}: the
                                                     occupied span [lo, hi) of each such feature,
                                                     cut into ``ZOOM_CELLS`` equal cells (aggregate)
       bank_k -> coordinator : <tag>.zoomR via agg   counts on those cells
       ... until no feature needs it (or its occupied cells stop growing); then the final cuts.

A zoom reveals the same kind of thing as the fine round (the federation's counts on a public
grid), at a finer resolution inside the span the coordinator already knew was occupied. Under
``[privacy]`` the number of noisy sums is fixed in advance, so there is no zoom (documented limit).

Refine rounds (no ``[privacy]`` only; at most ``MAX_REFINE``, usually all of them). The cut rule
(below) picks the entries of an exact quantile summary nearest to rank targets, but a 1.6 % cell
of a dense column holds dozens of rows and distinct values: with cell edges for cuts, rare_bad's
bill columns got 19-22 bins where XGBoost has 29-31, and the federated AUC was XGBoost's on those
bins, 0.013 below its own. So the coordinator asks for the cells on which a cut depends (holding
a rank target of one of XGBoost's prunes near a final target, or the first or last occupied cell)
and that hold more than one row, each cut into ``REFINE_CELLS`` equal sub-cells; when it is in
doubt whether a prune acts at all (the column's distinct values straddle the prune's size, e.g.
300 integer levels two to a cell), every cell of more than one row::

       coordinator -> bank_k : <tag>.cuts            {"zoom": features, lo, hi, cells, "inside":
                                                     true}: one [lo, hi) per refined cell (a feature
                                                     may repeat), ``REFINE_CELLS``       (aggregate)
       bank_k -> coordinator : <tag>.zoomR via agg   counts of its rows inside each [lo, hi) on
                                                     those sub-cells
       ... until no cell needs it, or a cell is as narrow as float resolution (a point mass: three
       rounds take a 1.6 % cell to float32 resolution); then the final cuts.

A bank answers only requests an honest coordinator can send (:func:`_honest_request`): no zoom or
refine round under ``[privacy]``, at most ``MAX_ZOOM`` span zooms of ``ZOOM_CELLS`` cells, then at
most ``MAX_REFINE`` refine rounds of at most :func:`refine_cell_bound` (``21 x max_bin``, the bank's
own setting) disjoint cells per feature, each in ``REFINE_CELLS`` sub-cells; anything else ends the
job with one ProtocolError line naming the coordinator and the tag.

What each participant learns: the coordinator learns, per feature, the *federation's* counts on
the grid (the pooled distribution at about 1.6% relative resolution; with ``[privacy]``, noisy
counts) and the totals in ``extra``; never a bank's own counts or values. From the refine rounds
it also learns the federation's counts on 64 sub-cells (then 64 x 64, ...) of the cells around each
cut's rank targets, i.e. the pooled distribution near the cut points to about 0.03 % (down to
float32 resolution for a point mass) and, for a column of a few hundred distinct values whose
count is in doubt, those values and their pooled counts. A bank learns the occupied range, the
refined cells' edges and the cut points — the cut points are part of the global model every
bank receives anyway, and the refined cells are the neighbourhoods of those cut points.

Cut points are cell edges: a row goes left at a split on cut ``c`` when ``x < c``
(:class:`~fedrisk.algorithms.vertical.binning.QuantileBinner` semantics, reused for ``transform``
and ``threshold``). The rule is XGBoost's ``hist`` rule (:func:`_pruned_cells`) on the summed
cell counts: a feature with at most ``max_bin`` occupied cells gets one bin per cell, as XGBoost
gives one bin per distinct value; otherwise its summary is pruned as XGBoost's quantile sketch
prunes it, with the refined cells for distinct values. Where XGBoost's summary is exact (its
sketch's buffer holds every value of the column: about 1000 rows at ``max_bin = 32``, or a few
hundred distinct values) the federated cuts split the pooled rows exactly as pooled XGBoost's do;
on more rows XGBoost merges buffers in row order and its cuts move by up to ``n / (8 max_bin)``
ranks with the order of the rows (pooled XGBoost's AUC on rare_bad ranges over 0.722-0.747 for
eleven shuffles of the same rows), while the federated cuts are the exact rule's. Missing values
cost no bin, as in XGBoost: the rule runs on the present values with all of ``max_bin``, and a
column with missing values gets one more bin index past its value bins (``max_bin + 1`` bins;
bin codes are ``uint16`` when that passes 256).

Supported values: finite (a bank refuses infinities, :func:`fedrisk.algorithms.horizontal.gbdt.run_bank`),
with magnitudes up to about ``1e20`` and spreads down to about ``1e-17``. The scale is clipped to
``[-64, 64)``, i.e. ``|x|`` up to ``sinh(64) / 2^20``, about ``3e21``: larger values share the
outermost cell, so a column of values around ``1e21``-``1e22`` gets fewer than XGBoost's cuts and one
around ``1e24`` or beyond none (it never splits); and three zooms of 1024 cells resolve a column
near 0 down to a spread of about ``1e-17`` (values all below ``1e-20``: no cuts). Measured against
pooled XGBoost at ``max_bin = 32`` (lognormal columns times ``1e-17`` .. ``1e20``: the same
partition; ``1e21``, ``1e22``: 31 cuts, not the same; ``1e-20``, ``1e24``: none). Rescale such
columns before training (a credit file's amounts and rates are far inside the range).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from fedrisk.algorithms.vertical.binning import QuantileBinner
from fedrisk.errors import ProtocolError
from fedrisk.transport.channel import Channel
from fedrisk.transport import expect

__all__ = ["bank_agree_bins", "coordinator_agree_bins", "binner_from_cuts", "z_scale", "SUB_CELLS", "refine_cell_bound"]

_SCALE = 2.0 ** 20
_Z_LO, _Z_HI = -64, 64
_COARSE = _Z_HI - _Z_LO
#: sub-cells per unit of z (a unit is a factor e of |x| far from 0)
SUB_CELLS = 64
#: with DP noise on the counts, coarser cells hold enough rows to stand out of the noise
SUB_CELLS_DP = 8
#: equal cells over a zoomed feature's occupied span, and the most zoom rounds a run makes
ZOOM_CELLS = 1024
MAX_ZOOM = 3
#: sub-cells a refine round cuts each coarse quantile cell into, and the most refine rounds a run makes
REFINE_CELLS = 64
MAX_REFINE = 3
#: most counts one zoom request may ask a bank for (a crafted request must not exhaust its memory)
_MAX_ZOOM_COUNTS = 1 << 22


def z_scale(x: np.ndarray) -> np.ndarray:
    """The grid's order-preserving scale ``asinh(x * 2^20)``, clipped into [-64, 64)."""
    return np.clip(np.arcsinh(np.asarray(x, dtype=np.float64) * _SCALE), _Z_LO, np.nextafter(_Z_HI, 0))


def _from_z(z: np.ndarray) -> np.ndarray:
    return np.sinh(np.asarray(z, dtype=np.float64)) / _SCALE


def _coarse_counts(X: np.ndarray) -> np.ndarray:
    n, d = X.shape
    out = np.zeros((d, _COARSE + 1))
    for f in range(d):
        col = X[:, f]
        miss = np.isnan(col)
        out[f, _COARSE] = miss.sum()
        z = np.floor(z_scale(col[~miss])).astype(np.int64) - _Z_LO
        out[f, :_COARSE] = np.bincount(z, minlength=_COARSE)
    return out


def _fine_counts(X: np.ndarray, ranges: np.ndarray, sub: int) -> list[np.ndarray]:
    out = []
    for f in range(X.shape[1]):
        lo, hi = int(ranges[f, 0]), int(ranges[f, 1])
        if hi < lo:
            out.append(np.zeros(0))
            continue
        col = X[:, f]
        col = col[~np.isnan(col)]
        k = np.floor((z_scale(col) - lo) * sub).astype(np.int64)
        size = (hi - lo + 1) * sub
        out.append(np.bincount(np.clip(k, 0, size - 1), minlength=size).astype(np.float64))
    return out


def bank_agree_bins(channel: Channel, coordinator: str, X: np.ndarray, extra: np.ndarray,
                    submit: Callable[[str, np.ndarray, float], None], tag: str = "hgb.bins", *,
                    max_bin: int, private: bool = False) -> QuantileBinner:
    """A bank's side: count, submit, receive the agreed cuts. Returns a fitted binner.

    ``submit(tag, vector, sensitivity)`` aggregates ``vector``; one row changes the counts of one
    cell per feature (L2 ``sqrt(d)``) and each ``extra`` entry by at most 1. ``max_bin`` (the job's
    own, not the coordinator's word) and ``private`` bound the zoom and refine requests the bank
    answers to what an honest coordinator can need (:func:`_honest_request`).
    """
    X = np.asarray(X, dtype=np.float64)
    d = X.shape[1]
    extra = np.asarray(extra, dtype=np.float64)
    submit(f"{tag}.range", np.concatenate([_coarse_counts(X).ravel(), extra]), float(np.sqrt(d + len(extra))))
    msg = channel.recv(coordinator, f"{tag}.grid")
    ranges = np.asarray(msg.get("ranges") if isinstance(msg, dict) else None)
    sub = msg.get("sub_cells") if isinstance(msg, dict) else None
    if (ranges.shape != (d, 2) or ranges.dtype.kind not in "iu" or not isinstance(sub, int)
            or sub not in (SUB_CELLS, SUB_CELLS_DP) or np.any((ranges < _Z_LO) | (ranges >= _Z_HI))):
        raise ProtocolError(f"{channel.me}: the coordinator's bin grid is malformed (shape {ranges.shape}, sub-cells {sub!r})")
    fine = _fine_counts(X, ranges, sub)
    # the grid the coordinator holds, per feature (its cell edges): a refined cell must be one of them
    grid = [_from_z(int(lo) + np.arange(max(0, int(hi) - int(lo) + 1) * sub + 1) / sub) for lo, hi in ranges]
    submit(f"{tag}.fine", np.concatenate(fine) if fine else np.zeros(0), float(np.sqrt(d)))
    msg = channel.recv(coordinator, f"{tag}.cuts")
    done = {False: 0, True: 0}  # span zooms and refine rounds answered
    for r in range(MAX_ZOOM + MAX_REFINE + 1):
        if not isinstance(msg, dict) or "zoom" not in msg:
            break
        inside = _honest_request(channel.me, coordinator, f"{tag}.cuts", msg["zoom"], done, max_bin, private, grid)
        submit(f"{tag}.zoom{r}", _zoom_counts(X, msg["zoom"], channel.me), float(np.sqrt(d)))
        done[inside] += 1
        msg = channel.recv(coordinator, f"{tag}.cuts")
    if not isinstance(msg, dict):
        raise ProtocolError(f"{channel.me}: the coordinator's cut points are malformed")
    cuts, has_missing, theirs = msg.get("cuts"), msg.get("missing"), msg.get("max_bin")
    if not isinstance(cuts, list) or len(cuts) != d or not expect.whole(theirs):
        raise ProtocolError(f"{channel.me}: the coordinator's cut points are malformed")
    if theirs != max_bin:
        raise ProtocolError(f"{channel.me}: coordinator {coordinator!r} sent cut points for max_bin {theirs} "
                            f"({tag}.cuts); this bank's job says max_bin {max_bin}: the two specs must agree")
    return checked_binner(channel.me, cuts, has_missing, max_bin)


def checked_binner(me: str, cuts: Any, has_missing: Any, max_bin: int) -> QuantileBinner:
    """The binner of cut points and missing-bin flags a bank received (final cuts, or a rejoin's):
    per feature a finite rising list of fewer than the bank's own ``max_bin`` numbers, and one
    true/false flag, else one ProtocolError line."""
    if not isinstance(cuts, list):
        raise ProtocolError(f"{me}: the coordinator's cut points are malformed")
    if isinstance(has_missing, np.ndarray):
        has_missing = has_missing.tolist()
    return binner_from_cuts(max_bin, [_checked_cuts(me, j, c, max_bin) for j, c in enumerate(cuts)],
                            _checked_flags(me, has_missing, len(cuts)))


def _checked_cuts(me: str, j: int, c: Any, max_bin: int) -> np.ndarray:
    """Feature ``j``'s cut points from the coordinator: finite, strictly rising, fewer than ``max_bin``."""
    if not isinstance(c, list) or len(c) >= max_bin or not all(
            expect.real(v) for v in c):
        raise ProtocolError(f"{me}: the coordinator's cut points of feature {j} are not a list of fewer than "
                            f"{max_bin} numbers")
    a = np.asarray(c, dtype=np.float64)
    if not np.isfinite(a).all() or (a.size > 1 and not (np.diff(a) > 0).all()):
        raise ProtocolError(f"{me}: the coordinator's cut points of feature {j} are not finite and rising")
    return a


def _checked_flags(me: str, has_missing: Any, d: int) -> np.ndarray:
    """The coordinator's per-feature "has a missing bin" flags: ``d`` true/false values."""
    if not isinstance(has_missing, list) or len(has_missing) != d or not all(isinstance(v, bool) for v in has_missing):
        raise ProtocolError(f"{me}: the coordinator's missing-bin flags are not {d} true/false values")
    return np.asarray(has_missing, dtype=bool)


def binner_from_cuts(max_bin: int, cuts: list[np.ndarray], has_missing: np.ndarray) -> QuantileBinner:
    """A :class:`QuantileBinner` with agreed cut points (what every bank bins with; also for tests)."""
    b = QuantileBinner(max_bin)
    b.cuts_ = cuts
    b.has_missing_ = has_missing
    b.n_bins_ = np.array([len(c) + 1 + int(m) for c, m in zip(cuts, has_missing)], dtype=np.int64)
    return b


def coordinator_agree_bins(channel: Channel, banks: Sequence[str], d: int, n_extra: int, max_bin: int,
                           collect: Callable[[str, int], np.ndarray], noise_std: Callable[[float], float],
                           tag: str = "hgb.bins") -> tuple[QuantileBinner, np.ndarray, dict]:
    """The coordinator's side. Returns ``(binner, summed extra, info)``.

    ``noise_std(sensitivity)`` is the standard deviation of the DP noise in a sum (0 without
    ``[privacy]``): cells whose summed count is below three of it (or 0.5 without noise) count
    as empty, so noise alone never opens a bin.
    """
    coarse_len = d * (_COARSE + 1)
    tot = collect(f"{tag}.range", coarse_len + n_extra)
    counts, extra = tot[:coarse_len].reshape(d, _COARSE + 1), tot[coarse_len:]
    floor1 = max(0.5, 3.0 * noise_std(float(np.sqrt(d + n_extra))))
    ranges = np.full((d, 2), [0, -1], dtype=np.int64)
    for f in range(d):
        occ = np.flatnonzero(counts[f, :_COARSE] > floor1)
        if occ.size:
            ranges[f] = (occ[0] + _Z_LO, occ[-1] + _Z_LO)
    has_missing = counts[:, _COARSE] > floor1
    sub = SUB_CELLS if noise_std(1.0) == 0 else SUB_CELLS_DP
    channel.broadcast(banks, f"{tag}.grid", {"ranges": ranges, "sub_cells": sub}, kind="aggregate")
    sizes = [max(0, int(hi - lo + 1)) * sub for lo, hi in ranges]
    fine = collect(f"{tag}.fine", int(sum(sizes)))
    floor2 = max(0.5, 3.0 * noise_std(float(np.sqrt(d))))
    counts_f: list[np.ndarray] = []  # per feature: summed counts and the edges of their cells
    edges_f: list[np.ndarray] = []
    off = 0
    for f in range(d):
        c = fine[off:off + sizes[f]]
        off += sizes[f]
        counts_f.append(np.where(c > floor2, c, 0.0))
        edges_f.append(_from_z(int(ranges[f, 0]) + np.arange(sizes[f] + 1) / sub))
    # XGBoost spends no bin on missing values: its cut rule runs on the present values with all of
    # max_bin, and missing rows get their own bin index past them (max_bin + 1 bins in all)
    bins_f = [max_bin] * d
    zooms, refines, settled = 0, 0, set()  # settled: a zoom separated nothing more (a constant column, say)
    if noise_std(1.0) == 0:  # a zoom is one more sum: none under [privacy], whose sums are planned ahead
        for r in range(MAX_ZOOM):
            want = [f for f in range(d) if f not in settled and _needs_zoom(counts_f[f], edges_f[f], bins_f[f])]
            if not want:
                break
            spans = [_occupied_span(counts_f[f], edges_f[f]) for f in want]
            channel.broadcast(banks, f"{tag}.cuts", {"zoom": {"features": want, "lo": [a for a, _ in spans],
                                                              "hi": [b for _, b in spans], "cells": ZOOM_CELLS}},
                              kind="aggregate")
            zoomed = collect(f"{tag}.zoom{r}", len(want) * ZOOM_CELLS).reshape(len(want), ZOOM_CELLS)
            zooms += 1
            for f, (a, b), c in zip(want, spans, zoomed):
                c = np.where(c > floor2, c, 0.0)
                occupied = np.count_nonzero(c)
                grew = occupied > np.count_nonzero(counts_f[f])
                counts_f[f], edges_f[f] = c, sub_edge(a, b, np.arange(ZOOM_CELLS + 1), ZOOM_CELLS)
                # every row still in one cell: the next zoom looks 1024x closer (1e12 + noise of 1e6
                # needs two), until the cell is as narrow as float resolution (a constant column)
                narrowing = occupied == 1 and (b - a) / ZOOM_CELLS > 1e-12 * max(abs(a), abs(b), 1e-300)
                if not grew and not narrowing:
                    settled.add(f)
        for _ in range(MAX_REFINE):
            # the cells to refine, feature by feature (ascending within a feature), as flat arrays:
            # tens of thousands of (feature, cell) pairs as Python tuples cost the coordinator
            # ~0.1 s per job on its critical path; arrays also travel as raw bytes in the codec
            # (thousands of floats as JSON numbers cost more than all the counting)
            wanted = [_coarse_quantile_cells(counts_f[f], edges_f[f], bins_f[f]) for f in range(d)]
            keep = _MAX_ZOOM_COUNTS // REFINE_CELLS  # what a bank accepts in one request (a very wide table)
            at = np.repeat(np.arange(d, dtype=np.int64), [len(w) for w in wanted])[:keep]
            if not at.size:
                break
            cell = np.concatenate(wanted).astype(np.int64)[:keep]
            lo = np.concatenate([edges_f[f][w] for f, w in enumerate(wanted)])[:keep]
            hi = np.concatenate([edges_f[f][w + 1] for f, w in enumerate(wanted)])[:keep]
            channel.broadcast(banks, f"{tag}.cuts", {"zoom": {
                "features": at, "lo": lo.astype(np.float64), "hi": hi.astype(np.float64),
                "cells": REFINE_CELLS, "inside": True}}, kind="aggregate")
            sub = collect(f"{tag}.zoom{zooms}", at.size * REFINE_CELLS).reshape(at.size, REFINE_CELLS)
            zooms += 1
            refines += 1
            # splice each refined cell's sub-cells in (its counts and edges in place of the cell's)
            sub = np.where(sub > floor2, sub, 0.0)
            for f in np.unique(at):
                k = np.flatnonzero(at == f)
                counts_f[f], edges_f[f] = _spliced(counts_f[f], edges_f[f], cell[k], sub[k])
    cuts = [_cuts_from_counts(counts_f[f], edges_f[f], bins_f[f]) for f in range(d)]
    channel.broadcast(banks, f"{tag}.cuts", {"cuts": [c.tolist() for c in cuts], "missing": has_missing.tolist(),
                                             "max_bin": int(max_bin)}, kind="aggregate")
    info = {"grid_cells": int(sum(sizes)), "occupied_cells": int(np.count_nonzero(fine > floor2)),
            "zoom_rounds": zooms - refines, "refine_rounds": refines}
    return binner_from_cuts(max_bin, cuts, has_missing), extra, info


def sub_edge(a: Any, b: Any, k: Any, cells: int) -> np.ndarray:
    """Edge ``k`` (``0..cells``) of ``[a, b)`` cut into ``cells`` equal sub-cells: the one formula
    both sides use (the coordinator to place counts, a bank to count its values), so the two agree
    on every value, even one exactly on an edge or one ulp below it (edge ``cells`` is ``b`` itself)."""
    k = np.asarray(k)
    return np.where(k >= cells, b, a + (b - a) * k / cells)


def sub_cell(v: np.ndarray, a: Any, b: Any, cells: int) -> np.ndarray:
    """The sub-cell ``k`` with ``sub_edge(a, b, k) <= v < sub_edge(a, b, k + 1)`` of each value
    (values outside ``[a, b)``: the first or last sub-cell). The arithmetic guess ``floor((v - a) /
    (b - a) * cells)`` is off by one for about a fifth of the values on or just below an edge; it is
    corrected against the edges themselves (a search over the same edges, done per value)."""
    with np.errstate(invalid="ignore", over="ignore"):
        k = np.clip(np.nan_to_num(np.floor((v - a) / (b - a) * cells), nan=0.0), 0, cells - 1).astype(np.int64)
    for _ in range(cells):
        down = (k > 0) & (sub_edge(a, b, k, cells) > v)
        up = (k < cells - 1) & (sub_edge(a, b, k + 1, cells) <= v)
        if not (down.any() or up.any()):
            break
        k = k - down + up
    return k


def _spliced(counts: np.ndarray, edges: np.ndarray, cells: np.ndarray, sub: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One feature's counts and edges with cells ``cells`` (ascending) replaced by their equal
    sub-cells' counts ``sub`` (one row per cell)."""
    r = sub.shape[1]
    a, b = edges[cells], edges[cells + 1]
    sub_edges = sub_edge(a[:, None], b[:, None], np.arange(r)[None, :], r)  # each sub-cell's lower edge
    size = np.ones(len(counts), dtype=np.int64)
    size[cells] = r
    start = np.concatenate([[0], np.cumsum(size)[:-1]])
    keep = np.ones(len(counts), dtype=bool)
    keep[cells] = False
    new_c = np.empty(int(size.sum()))
    new_e = np.empty(int(size.sum()) + 1)
    new_c[start[keep]], new_e[start[keep]] = counts[keep], edges[:-1][keep]
    idx = (start[cells][:, None] + np.arange(r)[None, :]).ravel()
    new_c[idx], new_e[idx] = sub.ravel(), sub_edges.ravel()
    new_e[-1] = edges[-1]
    return new_c, new_e


def _occupied_span(counts: np.ndarray, edges: np.ndarray) -> tuple[float, float]:
    """``[lower edge of the first occupied cell, upper edge of the last)`` of one feature."""
    occ = np.flatnonzero(counts > 0)
    return float(edges[occ[0]]), float(edges[occ[-1] + 1])


def _needs_zoom(counts: np.ndarray, edges: np.ndarray, max_bin: int) -> bool:
    """Fewer occupied cells than bins, and one of them wider than ``1/max_bin`` of the occupied span.

    A discrete column (0/1, -2..3, 0..100) has narrow cells around its few values and needs no
    zoom; birth years or ``YYYYMMDD`` dates pile into a few cells as wide as their whole span.
    """
    occ = np.flatnonzero(counts > 0)
    if max_bin < 2 or occ.size == 0 or occ.size >= max_bin:
        return False
    lo, hi = _occupied_span(counts, edges)
    widths = edges[occ + 1] - edges[occ]
    return bool(hi > lo and np.isfinite(hi - lo) and widths.max() > (hi - lo) / max_bin)


def refine_cell_bound(max_bin: int) -> int:
    """The most cells of one feature an honest coordinator asks to refine in one round.

    :func:`_coarse_quantile_cells` asks for the cells holding a rank target: the ``max_bin - 1``
    final targets; the targets of the ``SKETCH_FACTOR x max_bin`` prune within 1.5 of its steps of
    a final one (a window of 3 steps holds at most 4 of them: ``4 (max_bin - 1)``); those of the
    sketch-limit prune within 1.5 of its steps of these (``16 (max_bin - 1)``); and the first and
    last occupied cell: ``21 (max_bin - 1) + 2``. In doubt whether a prune acts it asks for every
    cell of more than one row, and there are at most as many occupied cells as the prune's size:
    ``8 max_bin``, or the sketch's limit while its buffer holds every value (``16 max_bin + 1`` at
    most). ``21 max_bin`` covers both.
    """
    return 21 * int(max_bin)


def _honest_request(me: str, coordinator: str, tag: str, zoom: object, done: dict[bool, int], max_bin: int,
                    private: bool, grid: list[np.ndarray] | None = None) -> bool:
    """Refuse a zoom or refine request beyond what an honest coordinator sends; returns whether it
    is a refine request (``inside``).

    Honest: none under ``[privacy]`` (its noisy sums are planned ahead: an unplanned one would
    spend budget the accountant never counted); at most ``MAX_ZOOM`` span zooms of ``ZOOM_CELLS``
    cells, each feature once, all before the refine rounds; at most ``MAX_REFINE`` refine rounds of
    ``REFINE_CELLS`` sub-cells per cell, at most :func:`refine_cell_bound` disjoint cells per
    feature, each a cell of the grid the coordinator holds (``grid``: per feature the cell edges of
    the fine round, the span zooms and the refine rounds before, kept up to date here; a span zoom's
    ends must be edges of it too). Without this a malicious coordinator could aim about 4M counts
    per round anywhere.
    """
    def refuse(why: str) -> ProtocolError:
        return ProtocolError(f"{me}: coordinator {coordinator!r} asked ({tag}) for {why}; an honest coordinator "
                             f"never does, so this bank stops")

    if private:
        raise refuse("a bin zoom round under [privacy] (an unplanned noisy sum)")
    try:
        inside = zoom.get("inside", False)  # type: ignore[union-attr]
        feats = _feature_indices(zoom["features"])  # type: ignore[index]
        lo = np.asarray(zoom["lo"], dtype=np.float64)  # type: ignore[index]
        hi = np.asarray(zoom["hi"], dtype=np.float64)  # type: ignore[index]
        cells = zoom["cells"]  # type: ignore[index]
    except (TypeError, KeyError, ValueError, AttributeError):
        raise ProtocolError(f"{me}: the coordinator's bin zoom request is malformed ({tag})") from None
    if not isinstance(inside, bool) or lo.shape != feats.shape or hi.shape != feats.shape:
        raise ProtocolError(f"{me}: the coordinator's bin zoom request is malformed ({tag})")
    if not inside:
        if done[True] or done[False] >= MAX_ZOOM:
            raise refuse(f"a span zoom beyond the {MAX_ZOOM} that come before the refine rounds")
        if cells != ZOOM_CELLS or len(np.unique(feats)) != feats.size:
            raise refuse(f"a span zoom other than {ZOOM_CELLS} cells once per feature")
        if grid is not None:
            for f, a, b in zip(feats.tolist(), lo, hi):
                if not (0 <= f < len(grid) and _edge_index(grid[f], a) >= 0 and _edge_index(grid[f], b) >= 0):
                    raise refuse(f"a span zoom of feature {f} whose ends are not edges of the grid it holds")
                grid[f] = sub_edge(a, b, np.arange(ZOOM_CELLS + 1), ZOOM_CELLS)
        return False
    if done[True] >= MAX_REFINE:
        raise refuse(f"more than {MAX_REFINE} refine rounds")
    if cells != REFINE_CELLS:
        raise refuse(f"refined cells of {cells!r} sub-cells (the agreed number is {REFINE_CELLS})")
    bound = refine_cell_bound(max_bin)
    for f in np.unique(feats):
        k = np.flatnonzero(feats == f)
        if k.size > bound:
            raise refuse(f"{k.size} refined cells of feature {int(f)} in one round (at most {bound} at max_bin "
                         f"{max_bin})")
        order = np.argsort(lo[k], kind="stable")
        if np.any(lo[k][order][1:] < hi[k][order][:-1]):
            raise refuse(f"overlapping refined cells of feature {int(f)}")
    if grid is not None:
        for f in np.unique(feats):
            k = np.flatnonzero(feats == f)
            e = grid[f] if 0 <= f < len(grid) else np.zeros(1)
            i = _edge_index(e, lo[k])
            if np.any((i < 0) | (i >= len(e) - 1)) or np.any(e[np.minimum(i + 1, len(e) - 1)] != hi[k]):
                raise refuse(f"refined cells of feature {int(f)} that are not cells of the grid it holds")
            i = np.sort(i)
            grid[f] = _spliced(np.zeros(len(e) - 1), e, i, np.zeros((len(i), REFINE_CELLS)))[1]
    return True


def _edge_index(edges: np.ndarray, v: Any) -> np.ndarray:
    """The index of each ``v`` among the sorted ``edges`` (the last of equal ones: the cell that
    starts there is the non-empty one), -1 where it is not one of them."""
    v = np.asarray(v, dtype=np.float64)
    i = np.maximum(np.searchsorted(edges, v, side="right") - 1, 0)
    return np.where(edges[i] == v, i, -1)


def _feature_indices(v: object) -> np.ndarray:
    """A request's feature indices: a flat array (or list) of whole numbers, else ``ValueError``."""
    a = np.asarray(v)
    if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
        raise ValueError("feature indices are not whole numbers")
    return a.astype(np.int64)


def _zoom_counts(X: np.ndarray, zoom: object, me: str) -> np.ndarray:
    """A bank's counts on the coordinator's zoom grid: ``cells`` equal cells over ``[lo, hi)`` per feature."""
    try:
        feats = _feature_indices(zoom["features"]).tolist()  # type: ignore[index]
        lo = np.asarray(zoom["lo"], dtype=np.float64)  # type: ignore[index]
        hi = np.asarray(zoom["hi"], dtype=np.float64)  # type: ignore[index]
        cells = int(zoom["cells"])  # type: ignore[index]
        inside = zoom.get("inside", False)  # type: ignore[union-attr]
    except (TypeError, KeyError, ValueError, AttributeError):
        raise ProtocolError(f"{me}: the coordinator's bin zoom request is malformed") from None
    if (not 1 <= cells <= 65536 or lo.shape != (len(feats),) or hi.shape != lo.shape or not isinstance(inside, bool)
            or len(feats) * cells > _MAX_ZOOM_COUNTS
            or any(not 0 <= f < X.shape[1] for f in feats) or not np.all(np.isfinite(lo) & np.isfinite(hi) & (hi > lo))):
        raise ProtocolError(f"{me}: the coordinator's bin zoom request is malformed")
    out = np.zeros((len(feats), cells))
    at = np.asarray(feats, dtype=np.int64)
    for f in np.unique(at) if inside else ():
        # refined cells: only each cell's own rows; the cells of a feature are disjoint, so every
        # value finds its cell with one search (thousands of cells, one pass over the column)
        order = np.flatnonzero(at == f)
        order = order[np.argsort(lo[order], kind="stable")]
        a, b = lo[order], hi[order]
        if np.any(a[1:] < b[:-1]):
            continue  # overlapping cells (refused by _honest_request): counted one by one below
        col = X[:, f]
        col = col[~np.isnan(col)]
        j = np.searchsorted(a, col, side="right") - 1
        keep = j >= 0
        keep[keep] = col[keep] < b[j[keep]]
        col, j = col[keep], j[keep]
        k = sub_cell(col, a[j], b[j], cells)
        out[order] = np.bincount(j * cells + k, minlength=len(order) * cells).reshape(len(order), cells)
        at[order] = -1
    for i in np.flatnonzero(at >= 0):
        col = X[:, at[i]]
        col = col[~np.isnan(col)]
        if inside:  # a refined cell: only its own rows (a span zoom takes every row, rounding included)
            col = col[(col >= lo[i]) & (col < hi[i])]
        out[i] = np.bincount(sub_cell(col, lo[i], hi[i], cells), minlength=cells)
    return out.ravel()


#: XGBoost first prunes a feature's summary to ``max_bin x`` this many entries (``WQSketch::kFactor``)
SKETCH_FACTOR = 8


def _set_prune(rmin: np.ndarray, rmax: np.ndarray, wmin: np.ndarray, maxsize: int) -> np.ndarray:
    """The entries XGBoost's ``WQSummary::SetPrune`` keeps of a summary (ranks ``rmin``/``rmax``, own
    weight ``wmin``) when it cuts it down to ``maxsize`` entries: for each rank target
    ``k * range / (maxsize - 1) + begin`` the entry whose rank interval holds it."""
    size = len(rmin)
    if size <= maxsize:
        return np.arange(size)
    begin, span, n = rmax[0], rmin[-1] - rmax[0], maxsize - 1
    dx2 = 2.0 * (np.arange(1, n) * span / n + begin)
    # the first i >= 1 with dx2 < rmax[i + 1] + rmin[i + 1] (XGBoost walks i up; the sums are sorted)
    i = 1 + np.searchsorted((rmax + rmin)[2:], dx2, side="right")
    end = np.flatnonzero(i >= size - 1)  # XGBoost stops at the last entry
    if end.size:
        i, dx2 = i[:end[0]], dx2[:end[0]]
    pick = np.where(dx2 < (rmin[i] + wmin[i]) + (rmax[i + 1] - wmin[i + 1]), i, i + 1)
    return np.unique(np.concatenate([[0], pick, [size - 1]])).astype(np.int64)


def _sketch_limit(n: float, max_bin: int) -> int:
    """The summary size XGBoost's quantile sketch of ``n`` values keeps (``WQuantileSketch::Init`` with
    ``eps = 1 / (SKETCH_FACTOR max_bin)``): the smallest level count whose ``2^levels x limit``
    covers ``n``, ``limit = ceil(levels / eps) + 1``."""
    levels = 1
    while True:
        limit = int(math.ceil(levels * SKETCH_FACTOR * max_bin)) + 1
        if (1 << levels) * limit >= n or levels >= 60:
            return limit
        levels += 1


def _prune_sizes(w: np.ndarray, max_bin: int) -> tuple[int, ...]:
    """The sizes XGBoost prunes a feature's summary to, in order: the sketch's limit, ``SKETCH_FACTOR
    x max_bin`` (both no-ops on a summary already as small) and ``max_bin + 1``."""
    n = float(np.sum(w))
    return _sketch_limit(n, max_bin), int(min(n, SKETCH_FACTOR * max_bin)), max_bin + 1


def _pruned_cells(w: np.ndarray, max_bin: int) -> np.ndarray:
    """Which of the occupied cells (weights ``w``, in order) start a bin: XGBoost's ``hist`` cut rule.

    XGBoost summarises a feature's ``n`` values in a quantile sketch that keeps
    :func:`_sketch_limit` entries, prunes that to ``SKETCH_FACTOR x max_bin`` entries, then to
    ``max_bin + 1`` (:func:`_set_prune` each time), and cuts at every kept entry but the first, at
    most ``max_bin - 1`` of them (``AddCutPoint``). The counts are an exact summary around every
    rank target once the refine rounds are done, with cells for distinct values, so this is that
    rule on the pooled values. XGBoost's own sketch is exact while its buffer (2 x the limit) holds
    every value; on more values it merges buffers in row order, an approximation of this rule that
    changes with the order of the rows.
    """
    rmax = np.cumsum(w)
    rmin = rmax - w
    idx = np.arange(len(w))
    for size in _prune_sizes(w, max_bin):
        k = _set_prune(rmin, rmax, w, size)
        idx, rmin, rmax, w = idx[k], rmin[k], rmax[k], w[k]
    return idx[1:min(len(idx), max_bin)]


def _coarse_quantile_cells(counts: np.ndarray, edges: np.ndarray, max_bin: int) -> np.ndarray:
    """Cells worth refining, with more than one row and still wider than float resolution: those
    holding a rank target of :func:`_pruned_cells` that decides a cut (a final target, or a target
    of an earlier prune within 1.5 of its steps of a target kept so), the first and last occupied
    cell (which set ``begin`` and ``range``), and, while it is in doubt whether a prune acts at all
    (the column's distinct values, at least its occupied cells and at most its rows, straddle the
    prune's size; e.g. 300 integer levels two to a cell) every such cell, unless the prune is the
    sketch's own on more rows than its buffer holds (where XGBoost's summary is approximate and
    depends on the row order, and resolving every value would only show the coordinator more of
    the pooled distribution). Once none is left, the
    counts are an exact summary wherever the rule looks, and the cuts split the rows as XGBoost's
    rule on the pooled values does (a point mass stops at float resolution or after ``MAX_REFINE``)."""
    occ = np.flatnonzero(counts > 0)
    if max_bin < 2 or occ.size <= 1:
        return np.empty(0, dtype=np.int64)
    w = counts[occ]
    lo, hi = edges[occ], edges[occ + 1]
    split = (w > 1.5) & ((hi - lo) > REFINE_CELLS * 4 * np.spacing(np.maximum(np.abs(lo), np.abs(hi))))
    fewest, most = occ.size, occ.size + float(np.sum(np.where(split, w - 1, 0.0)))  # distinct values
    if most <= max_bin + 1:
        return np.empty(0, dtype=np.int64)  # one bin per value: no rank target
    rmax = np.cumsum(w)
    rmin = rmax - w
    begin, span = rmax[0], rmin[-1] - rmax[0]
    final = np.arange(1, max_bin) * span / max_bin + begin
    targets = [final]
    sizes = _prune_sizes(w, max_bin)
    # whether a prune acts is in doubt: resolve the values (not for the sketch's own limit once the
    # rows overflow its buffer: XGBoost's summary is then an approximation that depends on row order)
    exact = rmax[-1] <= 2 * sizes[0]
    if any(fewest <= size < most for size in (sizes if exact else sizes[1:])):
        return occ[split]
    near = final
    for size in sizes[1::-1]:  # a later prune decides between the entries an earlier one kept next to its target
        if size < most:
            t = np.arange(1, size - 1) * span / (size - 1) + begin
            lo_t = np.searchsorted(near, t - 1.5 * span / (size - 1))
            near = t[lo_t < np.searchsorted(near, t + 1.5 * span / (size - 1), side="right")]
            targets.append(near)
    t = np.concatenate(targets)
    j = np.searchsorted(rmax, t, side="right")
    j = j[(j < occ.size) & (rmin[np.minimum(j, occ.size - 1)] < t)]
    cand = np.unique(np.concatenate([j, [0, occ.size - 1]]))
    return occ[cand[split[cand]]]


def _cuts_from_counts(counts: np.ndarray, edges: np.ndarray, max_bin: int) -> np.ndarray:
    """Cut points of one feature from its summed cell counts; ``edges[i]`` is cell ``i``'s lower edge."""
    occ = np.flatnonzero(counts > 0)
    if occ.size <= 1 or max_bin < 2:
        return np.empty(0)
    return edges[occ[_pruned_cells(counts[occ], max_bin)]]
