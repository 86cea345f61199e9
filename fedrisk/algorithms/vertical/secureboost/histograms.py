"""The feature holder's encrypted histograms: cell planning and the homomorphic-sum kernels.

H's histograms are computed in two stages (:func:`_group_cells`): features are grouped (greedy,
on H's own bins, once), rows with equal bins in every feature of a group form a cell, each cell is
the product of its rows' ciphertexts, and each bin sum the product of its cells. The results are
the same residues as one multiplication per (row, feature), with 35-60% fewer multiplications
(correlated and low-cardinality columns share cells). Nothing about the grouping leaves H.

Planning (:class:`_LevelPlan`, numpy, in H's main thread) is separate from the kernels
(:func:`_level_hist_native` on the compiled Montgomery kernel, :func:`_level_hist_kernel` on
gmpy2), which are pure functions over bytes and index arrays, run in chunks through
:func:`fedrisk.crypto.additive.map_chunks` (the crypto pool's seam).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fedrisk.errors import ProtocolError

#: (row, cell) + (cell, slot) entries below which a histogram batch runs inline instead of in the pool
_POOL_HIST_AT = 4_000


def _run_products(m: Any, vals: list, keys: np.ndarray) -> tuple[np.ndarray, list]:
    """Products of ``vals`` grouped by equal ``keys`` (any order): ``(distinct keys, products)``.

    A group of ``k`` values costs ``k - 1`` modular multiplications (no multiplication by 1).
    """
    if not len(vals):
        return keys[:0], []
    order = np.argsort(keys, kind="stable")
    ks = keys[order]
    starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    ordered = [vals[i] for i in order.tolist()]
    bounds = starts.tolist() + [len(ordered)]
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        acc = ordered[lo]
        for c in ordered[lo + 1:hi]:
            acc = acc * c % m
        out.append(acc)
    return ks[starts], out


def _level_hist_kernel(modulus: int, width: int, n_out: int, parts: Sequence[tuple]) -> bytes:
    """Homomorphic sums ``out[t]`` = product of the ciphertexts of every row that feeds slot ``t``.

    Two stages per part ``(ciphertext bytes of k rows, row_cell (E1,) rows, cell ids (E1,),
    cell_slot cells (E2,), slots (E2,))``: first every cell (rows sharing the bins of a group of
    features) is the product of its rows' ciphertexts, then every output slot (node, feature, bin)
    is the product of the cells that fall in it. Rows of a cell whose bins are all skipped never
    appear. The result is the same residue as multiplying each row into each of its slots, with
    far fewer multiplications when features are grouped (see :func:`_group_cells`).
    """
    from gmpy2 import mpz

    from fedrisk.crypto.additive import from_bytes, to_bytes

    m = mpz(modulus)
    out: list = [None] * n_out
    for blob, e_rows, e_cells, c_cells, c_slots in parts:
        cts = from_bytes(blob, width)
        cell_ids, cell_vals = _run_products(m, [cts[i] for i in e_rows.tolist()], e_cells)
        if not cell_vals:
            continue
        # stage 2 over the cells this part holds
        n_cells = int(max(int(cell_ids.max()), int(c_cells.max()) if c_cells.size else 0)) + 1
        where = np.full(n_cells, -1, dtype=np.int64)
        where[cell_ids] = np.arange(len(cell_ids))
        pos = where[c_cells]
        keep = pos >= 0
        slots, prods = _run_products(m, [cell_vals[i] for i in pos[keep].tolist()], c_slots[keep])
        for s, v in zip(slots.tolist(), prods):
            o = out[s]
            out[s] = v if o is None else o * v % m
    one = mpz(1)
    return to_bytes([one if v is None else v for v in out], width)


def _level_hist_native(modulus: int, width: int, n_out: int, parts: Sequence[tuple]) -> bytes:
    """:func:`_level_hist_kernel` on the compiled kernel (:mod:`fedrisk.crypto.montgomery`): the
    same residues, two grouped-product passes per part, GIL released (runs on threads). ``width``
    is unused: the signature is the gmpy2 kernel's, so one call site serves both."""
    from fedrisk.crypto.montgomery import grouped_products, multiply_vectors

    sums = []
    for blob, e_rows, e_cells, c_cells, c_slots in parts:
        n_cells = int(e_cells.max()) + 1 if len(e_cells) else 0
        cells = grouped_products(modulus, blob, e_rows, e_cells, n_cells)
        keep = c_cells < n_cells
        sums.append(grouped_products(modulus, cells, c_cells[keep], c_slots[keep], n_out))
    return multiply_vectors(modulus, sums, n_out)


class _LevelPlan:
    """Rows, cells and slots of one histogram batch (one tree level, or one streamed root chunk).

    ``gi``: positions into the tree's ciphertexts of the rows used (sorted by node); ``e_rows`` /
    ``e_cells``: which row (index into ``gi``) goes into which cell; ``c_cells`` / ``c_slots``:
    which cell goes into which output slot.
    """

    def __init__(self) -> None:
        self.gi: list[np.ndarray] = []
        self.e_rows: list[np.ndarray] = []
        self.e_cells: list[np.ndarray] = []
        self.c_cells: list[np.ndarray] = []
        self.c_slots: list[np.ndarray] = []
        self.n_rows = 0
        self.n_cells = 0
        self._arrays: tuple | None = None

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(e_rows, e_cells, c_cells, c_slots)`` concatenated (kept: root plans are reused)."""
        if self._arrays is None:
            def cat(parts: list[np.ndarray]) -> np.ndarray:
                return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
            self._arrays = (cat(self.e_rows), cat(self.e_cells), cat(self.c_cells), cat(self.c_slots))
        return self._arrays

    def add_node(self, gi: np.ndarray, b: np.ndarray, skip: np.ndarray, offs: np.ndarray,
                 groupings: Sequence[Sequence[np.ndarray]], strides: Sequence[Sequence[np.ndarray]]) -> None:
        """Add one node's rows ``gi`` with bins ``b`` (rows x features); ``offs`` = its first slot per feature."""
        self._arrays = None
        best = None
        for grouping, strd in zip(groupings, strides):
            plan = _group_cells(b, skip, grouping, strd)
            if best is None or plan[0] < best[0]:
                best = plan
        _, pieces = best
        for rows_local, cells_local, n_cells, cell_bins, feats in pieces:
            self.e_rows.append(rows_local + self.n_rows)
            self.e_cells.append(cells_local + self.n_cells)
            slot = cell_bins + offs[feats][None, :]
            slot[cell_bins == skip[feats][None, :]] = -1
            cc = np.repeat(np.arange(n_cells, dtype=np.int64) + self.n_cells, len(feats))
            ss = slot.ravel()
            ok = ss >= 0
            self.c_cells.append(cc[ok])
            self.c_slots.append(ss[ok])
            self.n_cells += n_cells
        self.gi.append(gi)
        self.n_rows += len(gi)


def _group_cells(b: np.ndarray, skip: np.ndarray, grouping: Sequence[np.ndarray], strides: Sequence[np.ndarray]):
    """Cells of one node under one feature grouping, and the modular multiplications they cost.

    For a group ``G`` of features, a cell is the set of the node's rows with equal bins in every
    feature of ``G``; rows whose bins are the skipped bin in all of ``G`` are left out.
    Returns ``(cost, [(rows, cell of each row, number of cells, (cells x |G|) bins, G), ...])``.
    """
    cost = 0
    pieces = []
    for feats, strd in zip(grouping, strides):
        bg = b[:, feats]
        need = ~(bg == skip[feats][None, :]).all(axis=1)
        rows = np.flatnonzero(need)
        key = bg[rows].astype(np.int64) @ strd
        space = int(strd[0]) * (int(bg.max()) + 1) if len(rows) else 1
        if space <= 4 * len(rows) + 4096:
            # counting instead of sorting: linear in rows + key space
            cnt = np.bincount(key, minlength=space)
            u = np.flatnonzero(cnt)
            lookup = np.zeros(space, dtype=np.int64)
            lookup[u] = np.arange(len(u))
            inv = lookup[key]
        else:
            u, inv = np.unique(key, return_inverse=True)
            inv = inv.ravel()
        cell_bins = (u[:, None] // strd[None, :]) % (np.int64(1) << 62)
        if len(feats) > 1:
            cell_bins[:, 1:] = cell_bins[:, 1:] % (strd[:-1] // strd[1:])[None, :]
        cost += len(rows) - len(u)
        for j in range(len(feats)):
            cost += int((cell_bins[:, j] != skip[feats[j]]).sum())
        pieces.append((rows, inv.astype(np.int64), len(u), cell_bins, feats))
    return cost, pieces


def _greedy_grouping(bins: np.ndarray, nb: np.ndarray, skip: np.ndarray) -> list[np.ndarray]:
    """Group features so that summing cells first saves the most multiplications on ``bins``' rows.

    Greedy: start from single features, merge the two groups whose merge saves most, repeat.
    Mixed-radix cell keys must fit in int64.
    """
    groups = [[f] for f in range(bins.shape[1])]

    def cost(g: list[int]) -> int:
        fs = np.array(g)
        return _group_cells(bins, skip, [fs], [_strides(nb, fs)])[0]

    costs = {tuple(g): cost(g) for g in groups}
    while len(groups) > 1:
        best = None
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                g = groups[i] + groups[j]
                if float(np.prod(nb[g].astype(np.float64))) >= 2.0 ** 62:
                    continue
                c = costs.get(tuple(g))
                if c is None:
                    c = costs[tuple(g)] = cost(g)
                s = costs[tuple(groups[i])] + costs[tuple(groups[j])] - c
                if s > 0 and (best is None or s > best[0]):
                    best = (s, i, j)
        if best is None:
            break
        _, i, j = best
        groups = [g for k, g in enumerate(groups) if k not in (i, j)] + [groups[i] + groups[j]]
    return [np.array(g, dtype=np.int64) for g in groups]


def _candidate_groupings(bins: np.ndarray, nb: np.ndarray, skip: np.ndarray) -> list[list[np.ndarray]]:
    """Feature groupings tried for every node: greedy on all rows, greedy on a small sample (deep
    nodes have few rows, so fewer shared cells), and single features."""
    n = len(bins)
    out = [_greedy_grouping(bins, nb, skip)]
    if n > 2000:
        sub = np.random.default_rng(0).choice(n, size=max(1000, n // 8), replace=False)
        out.append(_greedy_grouping(bins[sub], nb, skip))
    out.append([np.array([f], dtype=np.int64) for f in range(bins.shape[1])])
    uniq, seen = [], set()
    for g in out:
        key = tuple(sorted(tuple(x.tolist()) for x in g))
        if key not in seen:
            seen.add(key)
            uniq.append(g)
    return uniq


def _strides(nb: np.ndarray, feats: np.ndarray) -> np.ndarray:
    s = np.ones(len(feats), dtype=np.int64)
    for j in range(len(feats) - 2, -1, -1):
        s[j] = s[j + 1] * int(nb[feats[j + 1]])
    return s


def level_histograms(pub: Any, block: bytes, plan: _LevelPlan, n_out: int) -> list:
    """Encrypted sums for one histogram batch (see :class:`_LevelPlan`): ``n_out`` ciphertexts.

    ``block`` holds the ciphertexts of ``plan``'s rows, in plan order, as fixed-width big-endian
    bytes. Large batches are split by rows over the crypto threads (compiled kernel) or the
    process pool (gmpy2), and the partial sums multiplied together here; small ones run inline.
    """
    from fedrisk.crypto import montgomery
    from fedrisk.crypto.additive import from_bytes, map_chunks, worker_count

    w = pub.ciphertext_bytes
    m = pub.ciphertext_modulus
    n = len(block) // w
    e_rows, e_cells, c_cells, c_slots = plan.arrays()
    workers = worker_count()
    # compiled kernel: threads of this process (GIL released); gmpy2 kernel: the process pool
    native = montgomery.AVAILABLE
    kernel = _level_hist_native if native else _level_hist_kernel
    if len(e_rows) + len(c_cells) < _POOL_HIST_AT or workers < 2 or n < 2 * workers:
        out = kernel(int(m), w, n_out, [(block, e_rows, e_cells, c_cells, c_slots)])
        return from_bytes(out, w)
    size = -(-n // workers)
    parts = []
    for lo in range(0, n, size):
        hi = min(n, lo + size)
        sel = (e_rows >= lo) & (e_rows < hi)
        cells = e_cells[sel]
        present = np.zeros(plan.n_cells, dtype=bool)
        present[cells] = True
        keep = present[c_cells]
        parts.append((block[lo * w:hi * w], e_rows[sel] - lo, cells, c_cells[keep], c_slots[keep]))
    blobs = map_chunks(kernel, (int(m), w, n_out), parts, threads=native, tasks_per_worker=1)
    out = montgomery.multiply_vectors(int(m), blobs, n_out)
    return from_bytes(out, w)


#: partial cell products kept between merges of the root sums (entries; 256 bytes each at 2048 bits)
_ROOT_MERGE_AT = 65_536


def _cell_products(modulus: int, pieces: Sequence[tuple]) -> list[tuple[bytes, np.ndarray]]:
    """Stage 1 over pieces ``(ciphertext bytes, which ciphertext, global cell id)``: each piece's
    products per cell it touches, with those cells' global ids (sorted)."""
    from fedrisk.crypto.montgomery import grouped_products

    out = []
    for blob, which, cells in pieces:
        ids, inv = np.unique(cells, return_inverse=True)
        out.append((grouped_products(modulus, blob, which, inv.ravel(), len(ids)), ids))
    return out


def _spans(n: int, parts: int) -> list[tuple[int, int]]:
    size = -(-n // max(1, parts)) if n else 1
    return [(lo, min(n, lo + size)) for lo in range(0, n, size)] or [(0, 0)]


class RootCells:
    """The root histogram's cells over *all* of a tree's ciphertexts (one plan, reused every tree
    while the rows stay the same).

    Why: the label holder streams the root's ciphertexts in chunks of a few thousand rows. Planned
    chunk by chunk, each chunk's cells hold few rows, and the cells-to-bins stage is paid again per
    chunk: ~3.7 products per row at 285k rows of the grown default-credit data against ~2.0 with
    cells over all rows. Here every chunk multiplies its rows into the cells of the whole root
    (:class:`RootSums`) and the cells go to the bins once, after the last chunk: the products are
    those of one plan over all rows, ``rows - cells`` plus the cells-to-bins stage, however the
    ciphertexts were chunked or split over threads (a cell of ``c`` rows costs ``c - 1`` products
    in any bracketing). The sums are the same residues. Memory: one ciphertext per cell (the
    greedy grouping keeps cells well below the rows), plus at most ``_ROOT_MERGE_AT`` held partial
    products.
    """

    def __init__(self, plan: _LevelPlan, n_out: int) -> None:
        e_rows, e_cells, c_cells, c_slots = plan.arrays()
        gi = np.concatenate(plan.gi) if plan.gi else np.zeros(0, dtype=np.int64)
        ct = gi[e_rows]
        order = np.argsort(ct, kind="stable")
        self.ct, self.cells = ct[order], e_cells[order]
        self.c_cells, self.c_slots = c_cells, c_slots
        self.n_cells, self.n_out = plan.n_cells, n_out

    @classmethod
    def plan(cls, bins_grad: np.ndarray, k: int, skip: np.ndarray, offs: np.ndarray, per_node: int,
             groupings: Sequence[Sequence[np.ndarray]], strides: Sequence[Sequence[np.ndarray]]) -> "RootCells":
        """Cells of a tree's rows ``bins_grad`` (tree order: row ``i`` in ciphertext ``i // k`` at
        position ``i % k``), one sum per (slot, position) as in the deeper levels."""
        n_rows = len(bins_grad)
        n_ct = -(-n_rows // k)
        plan = _LevelPlan()
        cts = np.arange(n_ct, dtype=np.int64)
        for s in range(k):
            i = cts * k + s
            sel = i < n_rows
            if sel.any():
                plan.add_node(cts[sel], bins_grad[i[sel]], skip, offs + s * per_node, groupings, strides)
        return cls(plan, per_node * k)

    @property
    def products(self) -> int:
        """Modular products one tree's root costs (both stages)."""
        return len(self.ct) - self.n_cells + len(self.c_cells)


class RootSums:
    """One tree's root histogram, summed as the ciphertext chunks arrive (see :class:`RootCells`)."""

    def __init__(self, pub: Any, cells: RootCells) -> None:
        self.pub, self.cells = pub, cells
        self.m = int(pub.ciphertext_modulus)
        self.w = pub.ciphertext_bytes
        self._parts: list[tuple[bytes, np.ndarray]] = []
        self._held = 0

    def _pool(self, n_entries: int) -> tuple[bool, int]:
        from fedrisk.crypto import montgomery
        from fedrisk.crypto.additive import worker_count

        workers = worker_count()
        return montgomery.AVAILABLE, (workers if n_entries >= _POOL_HIST_AT and workers >= 2 else 1)

    def add(self, blob: bytes, first: int) -> None:
        """Multiply the chunk ``blob`` (ciphertexts ``first``, ``first + 1``, ...) into the cells."""
        from fedrisk.crypto.additive import map_chunks

        c, w = self.cells, self.w
        count = len(blob) // w
        a, b = np.searchsorted(c.ct, [first, first + count])
        if a == b:
            return
        threads, parts = self._pool(int(b - a))
        # pieces by ciphertext range: each needs only its own ciphertexts' bytes
        cut = np.searchsorted(c.ct[a:b], [first + lo for lo, _ in _spans(count, parts)]).tolist() + [int(b - a)]
        pieces = []
        for j in range(len(cut) - 1):
            lo, hi = a + cut[j], a + cut[j + 1]
            if lo == hi:
                continue
            c0, c1 = int(c.ct[lo]), int(c.ct[hi - 1]) + 1
            pieces.append((blob[(c0 - first) * w:(c1 - first) * w], c.ct[lo:hi] - c0, c.cells[lo:hi]))
        if len(pieces) > 1:
            got = [x for part in map_chunks(_cell_products, (self.m,), pieces, threads=threads, tasks_per_worker=1)
                   for x in part]
        else:
            got = _cell_products(self.m, pieces)
        self._parts += got
        self._held += sum(len(ids) for _, ids in got)
        if self._held >= max(_ROOT_MERGE_AT, self.cells.n_cells):
            self._merge()

    def _merge(self) -> None:
        """Multiply the held partial products of equal cells together (their overlap's products only)."""
        from fedrisk.crypto.additive import map_chunks

        if len(self._parts) < 2:
            return
        ids = np.concatenate([x for _, x in self._parts])
        blob = b"".join(x for x, _ in self._parts)
        uniq, inv = np.unique(ids, return_inverse=True)
        inv = inv.ravel()
        threads, parts = self._pool(len(ids))
        order = np.argsort(inv, kind="stable")
        pieces = []
        for lo, hi in _spans(len(uniq), parts):  # by cell range: no cell is split, no product is added
            a, b = np.searchsorted(inv[order], [lo, hi])
            sel = order[a:b]
            pieces.append((blob, sel, inv[sel] - lo, hi - lo))
        if len(pieces) > 1:
            outs = map_chunks(_grouped_pieces, (self.m,), pieces, threads=threads, tasks_per_worker=1)
            out = b"".join(x for part in outs for x in part)
        else:
            out = b"".join(_grouped_pieces(self.m, pieces))
        self._parts = [(out, uniq)]
        self._held = len(uniq)

    def finish(self) -> list:
        """The root's ``n_out`` encrypted bin sums (after every chunk was added)."""
        from fedrisk.crypto import montgomery
        from fedrisk.crypto.additive import from_bytes, map_chunks

        c = self.cells
        self._merge()
        if c.n_cells and (not self._parts or len(self._parts[0][1]) != c.n_cells):
            raise ProtocolError("the root histogram was finished before every gradient chunk arrived")
        cells = self._parts[0][0] if self._parts else b""
        threads, parts = self._pool(len(c.c_cells))
        pieces = [(cells, c.c_cells[lo:hi], c.c_slots[lo:hi], c.n_out) for lo, hi in _spans(len(c.c_cells), parts)]
        if len(pieces) > 1:
            sums = [x for part in map_chunks(_grouped_pieces, (self.m,), pieces, threads=threads, tasks_per_worker=1)
                    for x in part]
        else:
            sums = _grouped_pieces(self.m, pieces)
        out = montgomery.multiply_vectors(self.m, sums, c.n_out) if len(sums) > 1 else sums[0]
        self._parts, self._held = [], 0
        return from_bytes(out, self.w)


def _grouped_pieces(modulus: int, pieces: Sequence[tuple]) -> list[bytes]:
    """:func:`~fedrisk.crypto.montgomery.grouped_products` of each piece ``(values, which, group,
    n_groups)`` (a merge's ranges of cells, or the cells-to-bins stage's share of the entries)."""
    from fedrisk.crypto.montgomery import grouped_products

    return [grouped_products(modulus, blob, which, group, n) for blob, which, group, n in pieces]
