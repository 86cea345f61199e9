"""SecureBoost (Cheng et al. 2019): gradient-boosted trees over vertically split data, per role.

The label holder L holds ``y`` and some features; feature holders H_1..H_k hold other features of
the same (PSI-aligned) rows. Every party bins its own columns locally
(:mod:`fedrisk.algorithms.vertical.binning`). Trees are grown level by level (depth-wise, as
XGBoost's default); the loss is binary log-loss.

Message flow (tags ``sb.*``; ``t`` = tree, ``d`` = depth)
----------------------------------------------------------
==  =========  =====================  ==================  =============================================
#   direction  tag                    kind                payload
==  =========  =====================  ==================  =============================================
1   L -> H     ``sb.setup``           public-parameter    public key (OU or Paillier), slot layout of
                                                          the packed ``(g, h)``, row count
2   H -> L     ``sb.bins``            plaintext-by-design number of bins of each of H's features, the
                                                          index of its most populous bin, which H
                                                          never sums (L fills it in as node total
                                                          minus the other bins), the index of its
                                                          missing-value bin (or -1), and its
                                                          monotone direction (+1, -1 or 0)
3   L -> H     ``sb.t<t>.grad``       plaintext-by-design positions of the rows used for this tree
                                                          and the number of chunks (or ``stop``)
3'  L -> H     ``sb.t<t>.grad.<k>``   ciphertext          ``Enc(pack(g_i, h_i))``, one ciphertext per
                                                          row, streamed in chunks of 6,000 rows
4   L -> H     ``sb.t<t>.d<d>.plan``  plaintext-by-design partitions of the previous level (for every
                                                          split node: its children and a left/right
                                                          bit per row of the node) and which nodes H
                                                          must build histograms for (the smaller
                                                          child of each pair); ``done`` ends the tree
5   H -> L     ``sb.t<t>.d<d>.hist``  ciphertext          per built node, per feature and bin, the
                                                          homomorphic sum of the rows' ciphertexts,
                                                          compressed (several bin sums per ciphertext)
6   L -> H     ``sb.t<t>.d<d>.win``   control             for the nodes H won: (node, feature index,
                                                          bin index, missing values left?). Empty
                                                          list if H won none.
7   H -> L     ``sb.t<t>.d<d>.mask``  plaintext-by-design for each won node, one left/right bit per row
                                                          of the node (H keeps the threshold)
8   L -> H     ``sb.importance``      aggregate           number of trees kept, split counts and total
                                                          gain of each of H's features
9   H -> L     ``sb.stats``           metric              H's time per phase (for the benchmark)
==  =========  =====================  ==================  =============================================

Scoring (training's test rows and ``fedrisk predict``; tags ``sbi.*``): L walks all trees level
by level. For each level it sends every H ``sbi.<tag>.q<r>`` (plaintext-by-design): H's split nodes
of that level and, for each, the positions of the rows that reached it; H answers
``sbi.<tag>.a<r>`` (plaintext-by-design) with one bit per asked row (``x < threshold``; a missing
value goes left only where training learned so). ``{"done": true}`` ends scoring. L is the only one
to get scores. Leakage of scoring: L learns, for each scored row, the side of each H split node
*on that row's path* — at most ``max_depth`` bits per row and tree, ~14 per row for 6 trees of
depth 4 in ``tests/algorithms/vertical/test_secureboost_attacks.py`` where answering every node
gave 48 — enough to place the row in an interval of H's feature at those nodes. H learns which of
its rows reach each of its own nodes (the same partition it learns in training). H refuses to
answer a node twice or a row twice per tree and level; a deviating L can still spread questions
over more rounds (up to one per H node), so against a malicious L the bound is one bit per row
per H node, as before.

Missing values: parties that load with ``missing = "keep"`` keep NaN; each party's binner gives a
feature's missing values a bin of their own (:mod:`fedrisk.algorithms.vertical.binning`), and
split finding tries them on both sides of every threshold, as XGBoost does
(:func:`fedrisk.algorithms.vertical.tree.best_split`); the owner records the side with the
threshold.

What each party learns
----------------------
* **L** learns, per node, the sums of ``g`` and ``h`` of H's rows in each of H's bins (that is
  what it decrypts), which H-feature index and bin won, and for every H split the left/right side
  of every row that reached the node (training and scoring). It never sees H's thresholds, cut
  points, feature names or values. It also learns the index (not the values) of each H feature's
  most populous bin, which of H's features have missing values (their missing bin is summed like
  any other), and H's split counts per (anonymous) feature.
* **H** learns the public key, ciphertexts it cannot decrypt, which rows L uses for each tree
  (subsampling/validation), and **which of its rows fall in each tree node** — the known
  SecureBoost leakage: since L must tell H each node's instance space, H sees the partition made
  by every split, including L's and other feature holders'. H also learns the tree shape, its own
  winning (feature, bin) pairs, and at the end the split counts and total gain of its features.
  H never sees a gradient, hessian, label, leaf weight or prediction in plaintext.
* Mitigation (option ``first_tree_label_holder_only``): the first tree, which is the most
  label-revealing (its partitions follow ``y`` most closely), is built on L's features alone and no
  message about it is sent to H.

Monotone constraints (``monotone = {x = 1}`` in a party's table; XGBoost semantics, see
:mod:`fedrisk.algorithms.vertical.tree`): the owner of a feature declares its direction in
``sb.bins`` by anonymous feature index; L, which computes every gain and leaf weight, rejects
splits whose child weights go the wrong way and propagates weight bounds to the children, as
XGBoost does. H's bins are ordered by value (bin ``<= k`` = left = lower values), so L needs no
cut point. What this reveals to L: for each of H's constrained features, *that* it is constrained
and the direction (which L, holding the label, could estimate from the split statistics anyway);
never the feature's name, cut points or values. Nothing else changes in the messages.

Security model: semi-honest parties, no collusion between L and an H beyond what they learn
above. OU/Paillier are not CCA-secure: L decrypts only sums H computed and reveals only derived
decisions (bin indices), never raw decryptions. Bin sums are not re-randomised; L could test row
membership of a sum only for rows it already routes itself, which it knows anyway.

Performance design: one packed plaintext per row (both values in one ciphertext, 16 fractional
bits), streamed in chunks so that H sums the root histogram of chunk k while L encrypts chunk k+1;
H builds only the smaller child of each sibling pair and L derives the other by plaintext
subtraction of decrypted sums (parent minus child); H skips each feature's most populous bin
(about half the rows of a low-cardinality column) and L derives it from the node total; H
compresses every level's bin sums into as few ciphertexts as the plaintext space holds, and L
decrypts each level in one batch on the crypto thread pool.

Encryption (one per row and tree, 24k per tree here) dominates. L owns the key, so it encrypts
through CRT (``mod p^2`` and ``mod q``, see :class:`fedrisk.crypto.okamoto_uchiyama._CrtEncryptor`)
on the compiled Montgomery kernel (:mod:`fedrisk.crypto.montgomery`) in its own threads — the
factors never leave its process — and splits each encryption in two: the obfuscators ``h^r``
(16 of 18 table products, independent of the data) for tree ``t+1`` are queued right behind tree
``t``'s chunks, so the cores make them while the tree's levels are built; each is used for
exactly one ciphertext (:class:`_Obfuscators`). At the critical moment only ``g^m`` remains, two
products through per-slot tables of ``g^v``. Ciphertexts go from L's threads to the wire and from
the wire to H's kernels as fixed-width bytes (no per-value conversion in the main threads). H's
histograms and compression run on the same compiled kernel in its threads (gmpy2 in the crypto
process pool when the kernel is not built: same results, ~2x slower).

H's histograms are computed in two stages (:func:`_group_cells`): features are grouped (greedy,
on H's own bins, once), rows with equal bins in every feature of a group form a cell, each cell is
the product of its rows' ciphertexts, and each bin sum the product of its cells. The results are
the same residues as one multiplication per (row, feature), with 35-60% fewer multiplications
(correlated and low-cardinality columns share cells). Nothing about the grouping leaves H.

Measured (benchmarks/run.py vertical-secureboost, 2 cores, 24k rows, 30 trees, OU 2048): training
~46-48 s, ~97 CPU-s with gmpy2 and the public-key encryption path; 26-38 s after the grouping,
skipping and prefetching above; ~14 s, ~25 CPU-s with the compiled kernel and CRT encryption.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from fedrisk.algorithms.vertical.binning import QuantileBinner
from fedrisk.algorithms.vertical.tree import (
    check_boosting_settings,
    TreeParams,
    base_score,
    UNBOUNDED,
    best_split,
    check_monotone,
    child_bounds,
    goes_left,
    histogram,
    leaf_weight,
    logloss_grad_hess,
    sigmoid,
)
from fedrisk.errors import ConfigError, ProtocolError
from fedrisk.transport.channel import Channel

__all__ = [
    "SecureBoostParams",
    "SecureBoostLabelHolder",
    "SecureBoostFeatureHolder",
    "LabelHolderModel",
    "FeatureHolderModel",
    "score_label_holder",
    "walk_label_holder",
    "score_feature_holder",
    "TAG_PREFIXES",
]

TAG_PREFIXES = ("sb.", "sbi.")
#: bounds of one row's packed values: |g| <= 1, 0 <= h <= 1/4 for log-loss
_G_BOUND, _H_BOUND = 1.0, 0.25


@dataclass(frozen=True)
class SecureBoostParams:
    """Hyper-parameters of SecureBoost, shared by all parties of a job.

    Parameters
    ----------
    n_trees : int
        Boosting rounds (upper bound when early stopping).
    max_depth : int
        Depth of every tree (depth-wise growth).
    learning_rate : float
        Shrinkage of leaf weights.
    max_bin : int
        Quantile bins per feature (each party bins its own features).
    min_child_weight : float
        Minimum hessian sum in each child of a split.
    reg_lambda : float
        L2 penalty on leaf weights.
    min_split_gain : float
        Minimum loss reduction for a split (XGBoost's ``gamma``).
    subsample : float
        Fraction of training rows used (and encrypted) for each tree.
    validation_fraction : float
        Fraction of training rows held out by the label holder for early stopping (0 = none).
    early_stopping_rounds : int
        Stop when the validation log-loss has not improved for this many trees (0 = off).
    scheme : {"ou", "paillier"}
        Additively homomorphic scheme of the label holder's key.
    key_bits : int
        Modulus size of that key.
    precision : int
        Fractional bits of the fixed-point ``g`` and ``h``.
    first_tree_label_holder_only : bool
        Build the first tree on the label holder's features only (a leakage mitigation).
    seed : int
        Seeds row subsampling and the validation split.
    """

    n_trees: int = 30
    max_depth: int = 3
    learning_rate: float = 0.3
    max_bin: int = 32
    min_child_weight: float = 1.0
    reg_lambda: float = 1.0
    min_split_gain: float = 0.0
    subsample: float = 1.0
    validation_fraction: float = 0.0
    early_stopping_rounds: int = 0
    scheme: str = "ou"
    key_bits: int = 2048
    precision: int = 16
    first_tree_label_holder_only: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        check_boosting_settings(self, "SecureBoost", [
            (self.scheme in ("ou", "paillier"), "scheme must be 'ou' or 'paillier'"),
            (isinstance(self.key_bits, int) and 512 <= self.key_bits <= 8192, "key_bits must be in [512, 8192]"),
            (isinstance(self.precision, int) and 8 <= self.precision <= 52, "precision must be an integer in [8, 52]"),
        ])

    @property
    def tree(self) -> TreeParams:
        return TreeParams(self.max_depth, self.learning_rate, self.min_child_weight, self.reg_lambda, self.min_split_gain)


class _Phases:
    """Seconds per phase; ``idle`` is time blocked in ``recv``, ``network`` time in ``send``."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.t[name] = self.t.get(name, 0.0) + time.perf_counter() - t0

    def send(self, channel: Channel, to: str, tag: str, obj: Any, kind: str) -> None:
        with self("network"):
            channel.send(to, tag, obj, kind=kind)

    def recv(self, channel: Channel, frm: str, tag: str) -> Any:
        with self("idle"):
            return channel.recv(frm, tag)


def _pack_bits(mask: np.ndarray) -> np.ndarray:
    return np.packbits(mask.astype(bool))


def _unpack_bits(bits: Any, n: int, who: str) -> np.ndarray:
    if not isinstance(bits, np.ndarray) or bits.dtype != np.uint8 or bits.size != (n + 7) // 8:
        raise ProtocolError(f"{who}: expected {(n + 7) // 8} bytes of row bits, got {getattr(bits, 'shape', type(bits))}")
    return np.unpackbits(bits, count=n).astype(bool)


class _RowSchedule:
    """Validation rows and every tree's gradient rows, from the shared job settings alone.

    Both roles build it (same ``seed``, ``validation_fraction``, ``subsample`` and row count), so
    the feature holder can refuse any other row set: the label holder cannot shrink a tree's rows
    to a few chosen customers and read their bins off the sums.
    """

    def __init__(self, p: SecureBoostParams, n: int) -> None:
        self.p = p
        self.rng = np.random.default_rng(p.seed)
        self.val = np.zeros(n, dtype=bool)
        if p.validation_fraction > 0:
            self.val[self.rng.choice(n, size=max(1, int(round(p.validation_fraction * n))), replace=False)] = True
        self.train_pos = np.flatnonzero(~self.val)

    def tree_rows(self) -> np.ndarray:
        """The next tree's rows (call once per tree, in order, on both sides)."""
        if self.p.subsample >= 1:
            return self.train_pos
        k = max(2, int(round(self.p.subsample * len(self.train_pos))))
        return np.sort(self.rng.choice(self.train_pos, size=k, replace=False))


def _expected_packing(p: SecureBoostParams, n_rows: int, plaintext_bits: int) -> Any:
    """The slot layout the job spec implies: what the label holder must use, derived by the feature holder.

    The layout bounds what one decrypted bin sum can hold; a label holder free to choose it
    (a huge ``max_abs``, a tiny ``max_terms`` ...) could widen slots until crafted per-row
    plaintexts decode into row memberships. So every number is re-derived from the shared job
    spec (``precision``, ``validation_fraction``) and the agreed row count, never taken from the
    label holder's message.
    """
    from fedrisk.crypto.packing import SlotPacking

    n_val = max(1, int(round(p.validation_fraction * n_rows))) if p.validation_fraction > 0 else 0
    return SlotPacking.for_sums((_G_BOUND, _H_BOUND), max(1, n_rows - n_val),
                                plaintext_bits=plaintext_bits, precision=p.precision)


def _check_declared_packing(who: str, setup: dict, packing: Any) -> None:
    """Refuse a setup whose declared layout differs from the one the job spec implies."""
    want = {"max_abs": list(packing.max_abs), "max_terms": packing.max_terms, "precision": packing.precision,
            "slot_bits": packing.slot_bits}
    for key, value in want.items():
        got = setup.get(key)
        same = (isinstance(got, list) and len(got) == len(value) and all(
            isinstance(a, (int, float)) and not isinstance(a, bool) and float(a) == float(b) for a, b in zip(got, value))
        ) if isinstance(value, list) else (isinstance(got, int) and not isinstance(got, bool) and got == value)
        if not same:
            shown = repr(got)[:40]
            raise ProtocolError(f"{who} declared SecureBoost packing {key} = {shown}, but the job spec gives {value}; "
                                f"refusing (a partner-chosen layout could expose this party's bins). Check that both "
                                f"parties run the same job spec and fedrisk version")


def _int_array(x: Any, who: str, what: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "iu":
        raise ProtocolError(f"{who}: {what} must be an integer array")
    return x.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Kernels: pure functions over ints/bytes chunks, run in the crypto pool (fedrisk.crypto.workers)
# ---------------------------------------------------------------------------------------------
#: (row, cell) + (cell, slot) entries below which a histogram batch runs inline instead of in the pool
_POOL_HIST_AT = 4_000
#: rows per streamed chunk of encrypted gradients
_CHUNK_ROWS = 6_000


def encrypt_rows(private_key: Any, plaintexts: list[int]) -> list:
    """Encrypt packed rows with the label holder's key (the crypto pool parallelises large batches)."""
    return private_key.encrypt(plaintexts)


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
        return from_bytes(kernel(int(m), w, n_out, [(block, e_rows, e_cells, c_cells, c_slots)]), w)
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
    return from_bytes(montgomery.multiply_vectors(int(m), blobs, n_out), w)


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------
@dataclass
class LabelHolderModel:
    """The label holder's part: full tree shapes, its own thresholds, all leaf weights.

    ``trees[t]["nodes"]`` lists nodes in id order; an internal node has ``owner``, ``left``,
    ``right`` and, if the label holder owns it, ``feature`` (name) and ``threshold``; a leaf has
    ``leaf`` (its weight, learning rate included).
    """

    base_score: float
    features: list[str]
    trees: list[dict]
    importance: dict[str, dict] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    best_iteration: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    host_phases: dict[str, dict] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"base_score": self.base_score, "features": self.features, "trees": self.trees,
                "importance": self.importance, "history": self.history, "best_iteration": self.best_iteration}

    @classmethod
    def from_json(cls, d: dict) -> "LabelHolderModel":
        return cls(float(d["base_score"]), list(d["features"]), list(d["trees"]), dict(d.get("importance") or {}))


@dataclass
class FeatureHolderModel:
    """A feature holder's part: for each tree, its own split nodes ``{id, feature, threshold}``."""

    features: list[str]
    trees: list[dict]
    importance: dict[str, dict] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"features": self.features, "trees": self.trees, "importance": self.importance}

    @classmethod
    def from_json(cls, d: dict) -> "FeatureHolderModel":
        return cls(list(d["features"]), list(d["trees"]), dict(d.get("importance") or {}))


# ---------------------------------------------------------------------------------------------
# Label holder
# ---------------------------------------------------------------------------------------------
@dataclass
class _Node:
    id: int
    rows: np.ndarray          # positions into the fit rows (all rows the label holder routes)
    depth: int
    G: float = 0.0
    H: float = 0.0
    n_grad: int = 0
    host_hist: dict[str, np.ndarray] = field(default_factory=dict)
    parent: int = -1
    bounds: tuple[float, float] = UNBOUNDED


class _Obfuscators:
    """Queue of precomputed OU obfuscators ``h^r`` of the label holder (single use each).

    :meth:`prefetch` starts fresh ones on the crypto pool; :meth:`take` hands out exactly ``k``
    of them and forgets them, or ``None`` if fewer than ``k`` were prefetched (the caller then
    encrypts with fresh randomness made on the spot), so no obfuscator is ever used twice.
    """

    def __init__(self, key: Any) -> None:
        self.key = key
        self.w = key.obfuscator_bytes
        self.pending: list[Callable[[], bytes]] = []
        self.n_pending = 0
        self.buf = b""

    def prefetch(self, count: int) -> None:
        size = -(-count // 8)
        for lo in range(0, count, size):
            # made ahead of need, at lower CPU priority: they fill idle cores instead of delaying
            # the feature holders' histograms or this party's decryptions
            self.pending.extend(self.key.obfuscators_async(min(size, count - lo), tasks=1, background=True))
        self.n_pending += count

    def take(self, k: int) -> bytes | None:
        need = k * self.w
        if len(self.buf) + self.n_pending * self.w < need:
            return None
        while len(self.buf) < need:
            blob = self.pending.pop(0)()
            self.n_pending -= len(blob) // self.w
            self.buf += blob
        out, self.buf = self.buf[:need], self.buf[need:]
        return out


class SecureBoostLabelHolder:
    """The label holder's side of SecureBoost training.

    Parameters
    ----------
    params : SecureBoostParams
        Identical at every party.
    on_tree : callable, optional
        ``on_tree(t, record)`` after every tree (progress reporting).

    Attributes
    ----------
    model_ : LabelHolderModel
    train_margin_ : numpy.ndarray
        Final margins of the rows passed to :meth:`fit`.
    n_val_ : int
        Rows held out for early stopping.
    """

    def __init__(self, params: SecureBoostParams, on_tree: Callable[[int, dict], None] | None = None) -> None:
        self.params = params
        self.on_tree = on_tree

    # -- setup -------------------------------------------------------------------------------
    def _setup(self, ch: Channel, hosts: Sequence[str], n_rows: int, n_train: int) -> None:
        from fedrisk.crypto.additive import generate_keypair
        from fedrisk.crypto.packing import SlotPacking

        p = self.params
        with self.ph("keygen"):
            from fedrisk.crypto.paillier import security_bits_for_modulus

            # short randomness of 2x the modulus's security level (112 bits at 2048): generic
            # attacks on it cost as much as factoring the modulus, so the key stays at that level
            obf = max(128, 2 * security_bits_for_modulus(p.key_bits))
            self.pub, self.priv = generate_keypair(p.scheme, p.key_bits, obfuscation_bits=obf)
            self.packing = SlotPacking.for_sums((_G_BOUND, _H_BOUND), max(1, n_train),
                                                plaintext_bits=self.pub.plaintext_bits, precision=p.precision)
        setup = {"pk": self.pub.to_wire(), "slot_bits": self.packing.slot_bits, "max_abs": list(self.packing.max_abs),
                 "max_terms": self.packing.max_terms, "precision": p.precision, "n_rows": n_rows}
        for h in hosts:
            self.ph.send(ch, h, "sb.setup", setup, "public-parameter")
        self.host_bins: dict[str, np.ndarray] = {}
        self.host_skip: dict[str, np.ndarray] = {}
        self.host_missing: dict[str, np.ndarray] = {}
        self.host_monotone: dict[str, np.ndarray] = {}
        for h in hosts:
            msg = self.ph.recv(ch, h, "sb.bins")
            nb = _int_array(msg.get("n_bins") if isinstance(msg, dict) else None, f"party {h!r}", "n_bins")
            skip = _int_array(msg.get("skip"), f"party {h!r}", "skip")
            if nb.ndim != 1 or (nb.size and (nb.min() < 1 or nb.max() > p.max_bin)):
                raise ProtocolError(f"party {h!r} reported bin counts outside [1, {p.max_bin}]")
            if skip.shape != nb.shape or (skip.size and (skip.min() < 0 or (skip >= nb).any())):
                raise ProtocolError(f"party {h!r} reported impossible skipped bins")
            miss = _int_array(msg.get("missing", np.full(len(nb), -1)), f"party {h!r}", "missing")
            if miss.shape != nb.shape or not np.all((miss == -1) | (miss == nb - 1)):
                raise ProtocolError(f"party {h!r} reported impossible missing-value bins")
            mono = _int_array(msg.get("monotone", np.zeros(len(nb), dtype=np.int64)), f"party {h!r}", "monotone")
            if mono.shape != nb.shape or not np.all(np.isin(mono, (-1, 0, 1))):
                raise ProtocolError(f"party {h!r} reported monotone directions other than -1, 0, 1 per feature")
            self.host_bins[h] = nb
            self.host_skip[h] = skip
            self.host_missing[h] = miss
            self.host_monotone[h] = mono

    def fit(self, channel: Channel, hosts: Sequence[str], X: np.ndarray, y: np.ndarray,
            feature_names: Sequence[str], monotone: dict[str, int] | None = None,
            start: dict | None = None, checkpoint: Callable[[int, dict], None] | None = None) -> "SecureBoostLabelHolder":
        """Train with every feature holder in ``hosts`` (which call :meth:`SecureBoostFeatureHolder.fit`).

        Resume hooks (the runtime owns the files): ``checkpoint(t, state)`` after tree ``t`` with
        this party's own state; ``start`` is such a state to continue from.

        ``X``/``y`` are the PSI-aligned training rows, in the order every party shares.
        ``monotone`` maps some of this party's features to +1/-1 (score non-decreasing /
        non-increasing in it); feature holders declare theirs in their own ``fit``.
        """
        p = self.params
        tp = p.tree
        self.ph = _Phases()
        t_start, cpu_start = time.perf_counter(), time.process_time()
        hosts = list(hosts)
        self._names = list(feature_names)
        self._monotone = check_monotone(monotone, self._names, f"party {channel.me!r}")
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        n = len(y)
        schedule = _RowSchedule(p, n)
        val, train_pos = schedule.val, schedule.train_pos
        self.n_val_ = int(val.sum())
        if len(np.unique(y[train_pos])) < 2:
            raise ConfigError("SecureBoost: the training rows hold only one class; both defaults and non-defaults are needed")
        with self.ph("binning"):
            binner = QuantileBinner(p.max_bin).fit(X[train_pos])
            bins = binner.transform(X)
        self._setup(channel, hosts, n, len(train_pos))
        self._any_monotone = bool(self._monotone.any()) or any(m.any() for m in self.host_monotone.values())
        # the key owner encrypts with its private key: through CRT when the compiled kernel is there
        self._obf = _Obfuscators(self.priv) if hosts and hasattr(self.priv, "obfuscators_async") else None
        base = base_score(y[train_pos])
        margin = np.full(n, base)
        scale = float(2 ** p.precision)
        trees: list[dict] = []
        history: list[dict] = []
        best_loss, best_it, stop, first = np.inf, 0, False, 0
        if start is not None:  # resume hook: trees so far, margins, early-stopping state; replay the row draws
            trees, history, margin, best_loss, best_it, stop, first = (start[k] for k in (
                "trees", "history", "margin", "best_loss", "best_it", "stop", "t"))
            for _ in range(first):
                schedule.tree_rows()
        for t in range(p.n_trees if stop else first, p.n_trees):
            g, h = logloss_grad_hess(y, margin)
            # the fixed-point grid the feature holders see: plaintext and encrypted sums then agree
            g, h = np.round(g * scale) / scale, np.round(h * scale) / scale
            rows = schedule.tree_rows()
            local = p.first_tree_label_holder_only and t == 0
            is_grad = np.zeros(n, dtype=bool)
            is_grad[rows] = True
            if not local:
                # streamed in chunks: feature holders sum chunk k while chunk k+1 is encrypted
                spans = [(lo, min(len(rows), lo + _CHUNK_ROWS)) for lo in range(0, len(rows), _CHUNK_ROWS)]
                for hh in hosts:
                    self.ph.send(channel, hh, f"sb.t{t}.grad", {"rows": rows.astype(np.int64), "chunks": len(spans)},
                                 "plaintext-by-design")
                # every chunk is queued on the crypto pool at once, so the workers encrypt chunk k+1
                # while chunk k is sent; the workers' ciphertext bytes go to the wire as they are
                with self.ph("encryption"):
                    pending = []
                    for lo, hi in spans:
                        gh = np.column_stack([g[rows[lo:hi]], h[rows[lo:hi]]])
                        obf = self._obf.take(hi - lo) if self._obf is not None else None
                        if hasattr(self.priv, "encrypt_slots_to_wire_async"):
                            # same ciphertexts as encrypting pack(gh), g^m made slot by slot
                            pending.append(self.priv.encrypt_slots_to_wire_async(
                                self.packing.slot_ints(gh), self.packing.slot_bits, self.packing.slot_bounds, obf))
                        else:
                            pending.append(self.priv.encrypt_to_wire_async(self.packing.pack(gh)))
                    if self._obf is not None and t + 1 < p.n_trees:
                        # the next tree's h^r, made by the workers while this tree's levels are
                        # built (they would idle); queued behind this tree's chunks
                        self._obf.prefetch(len(rows))
                for k, wait in enumerate(pending):
                    with self.ph("encryption"):
                        wire = wait()
                    for hh in hosts:
                        self.ph.send(channel, hh, f"sb.t{t}.grad.{k}", {"cts": wire}, "ciphertext")
            tree, leaf_of = self._grow(channel, [] if local else hosts, t, bins, binner, g, h, is_grad, tp)
            margin += leaf_of
            trees.append(tree)
            rec: dict[str, Any] = {"tree": t + 1, "train_loss": _logloss(y[train_pos], margin[train_pos])}
            if self.n_val_:
                rec["val_loss"] = _logloss(y[val], margin[val])
                if rec["val_loss"] < best_loss - 1e-9:
                    best_loss, best_it = rec["val_loss"], t + 1
                elif p.early_stopping_rounds and t + 1 - best_it >= p.early_stopping_rounds:
                    stop = True
            else:
                best_it = t + 1
            history.append(rec)
            if checkpoint is not None:
                checkpoint(t + 1, {"t": t + 1, "trees": trees, "history": history, "margin": margin,
                                   "best_loss": best_loss, "best_it": best_it, "stop": stop})
            if self.on_tree is not None:
                self.on_tree(t + 1, rec)
            if stop:
                break
        for hh in hosts:
            self.ph.send(channel, hh, f"sb.t{len(trees)}.grad", {"stop": True}, "control")
        kept = trees[:best_it]
        importance = self._importance(kept)
        for hh in hosts:
            nb = len(self.host_bins[hh])
            cnt, gain = np.zeros(nb, dtype=np.int64), np.zeros(nb)
            for tr in kept:
                for nd in tr["nodes"]:
                    if nd.get("owner") == hh:
                        cnt[nd["_f"]] += 1
                        gain[nd["_f"]] += nd["gain"]
            self.ph.send(channel, hh, "sb.importance", {"n_trees": len(kept), "splits": cnt, "gain": gain}, "aggregate")
        host_phases = {}
        for hh in hosts:
            host_phases[hh] = self.ph.recv(channel, hh, "sb.stats")
        for tr in trees:
            for nd in tr["nodes"]:
                nd.pop("_f", None)
        # margins of kept trees only
        if len(kept) < len(trees):
            margin = np.full(n, base)
            for tr in kept:
                margin += tr.pop("_leaf_of")
        for tr in trees:
            tr.pop("_leaf_of", None)
        self.ph.t["train_s"] = time.perf_counter() - t_start
        # CPU of this process and its threads (crypto threads included; process-pool workers not)
        self.ph.t["train_cpu_s"] = time.process_time() - cpu_start
        self.train_margin_ = margin
        self.val_mask_ = val
        self.model_ = LabelHolderModel(base, list(feature_names), kept, importance, history, best_it,
                                       dict(self.ph.t), host_phases)
        return self

    # -- one tree -----------------------------------------------------------------------------
    def _grow(self, ch: Channel, hosts: list[str], t: int, bins: np.ndarray, binner: QuantileBinner,
              g: np.ndarray, h: np.ndarray, is_grad: np.ndarray, tp: TreeParams) -> tuple[dict, np.ndarray]:
        n = len(g)
        me = ch.me
        own_nb = binner.n_bins_
        own_missing = binner.missing_bins()
        max_b = self.params.max_bin
        root = _Node(0, np.arange(n), 0)
        nodes: list[dict] = [{"id": 0}]
        level = [root]
        parts: list[list] = []
        by_id: dict[int, _Node] = {0: root}
        leaf_of = np.zeros(n)
        for depth in range(tp.max_depth + 1):
            for nd in level:
                gr = nd.rows[is_grad[nd.rows]]
                nd.G, nd.H, nd.n_grad = float(g[gr].sum()), float(h[gr].sum()), len(gr)
            splittable = [nd for nd in level if depth < tp.max_depth and nd.n_grad >= 2
                          and nd.H >= 2 * tp.min_child_weight]
            # which nodes the feature holders build: the root, else the smaller child of each pair
            # with a splittable member; the sibling is parent minus child, here, in plaintext
            build: list[int] = []
            derive: list[tuple[int, int, int]] = []  # (node, built sibling, parent)
            if hosts and splittable:
                if depth == 0:
                    build = [0]
                else:
                    want = {nd.id for nd in splittable}
                    for i in range(0, len(level), 2):
                        a, b = level[i], level[i + 1]
                        if a.id in want or b.id in want:
                            small, big = (a, b) if a.n_grad <= b.n_grad else (b, a)
                            build.append(small.id)
                            if big.id in want:
                                derive.append((big.id, small.id, big.parent))
            if hosts:
                plan = {"parts": parts, "build": build, "done": not build}
                for hh in hosts:
                    self.ph.send(ch, hh, f"sb.t{t}.d{depth}.plan", plan, "plaintext-by-design")
            if not splittable:
                break
            with self.ph("histogram"):
                own = {nd.id: histogram(bins[gr], g[gr], h[gr], max_b)
                       for nd in splittable for gr in [nd.rows[is_grad[nd.rows]]]}
            if build:
                self._receive_histograms(ch, hosts, t, depth, build, by_id)
                for node, sib, parent in derive:
                    for hh in hosts:
                        by_id[node].host_hist[hh] = by_id[parent].host_hist[hh] - by_id[sib].host_hist[hh]
            # best split over every party's features
            wins: dict[str, list[tuple[int, int, int]]] = {hh: [] for hh in hosts}
            decided: dict[int, tuple] = {}
            with self.ph("split_finding"):
                for nd in splittable:
                    cands = []
                    # with constraints anywhere, every party's gains use the node's bounds
                    mono_on = self._any_monotone
                    s = best_split(own[nd.id], own_nb, nd.G, nd.H, tp, own_missing,
                                   self._monotone if mono_on else None, nd.bounds)
                    if s is not None:
                        cands.append((s[0], me, s[1], s[2], s[5], s[3], s[4]))
                    for hh in hosts:
                        s = best_split(nd.host_hist[hh], self.host_bins[hh], nd.G, nd.H, tp, self.host_missing[hh],
                                       self.host_monotone[hh] if mono_on else None, nd.bounds)
                        if s is not None:
                            cands.append((s[0], hh, s[1], s[2], s[5], s[3], s[4]))
                    if not cands:
                        continue
                    best = cands[0]
                    for c in cands[1:]:
                        if c[0] > best[0] + 1e-12:
                            best = c
                    decided[nd.id] = best
                    if best[1] != me:
                        wins[best[1]].append((nd.id, best[2], best[3], best[4]))
            for hh in hosts:
                w = wins[hh]
                self.ph.send(ch, hh, f"sb.t{t}.d{depth}.win",
                             {"nodes": np.array([x[0] for x in w], dtype=np.int64),
                              "features": np.array([x[1] for x in w], dtype=np.int64),
                              "bins": np.array([x[2] for x in w], dtype=np.int64),
                              "missing_left": np.array([x[3] for x in w], dtype=np.int64)}, "control")
            masks: dict[int, np.ndarray] = {}
            for node_id, (gain, party, f, b, miss_left, _, _) in decided.items():
                if party == me:
                    masks[node_id] = goes_left(bins[by_id[node_id].rows, f], b, miss_left, int(own_missing[f]))
            for hh in hosts:
                if not wins[hh]:
                    continue
                msg = self.ph.recv(ch, hh, f"sb.t{t}.d{depth}.mask")
                got = _int_array(msg.get("nodes"), f"party {hh!r}", "mask nodes")
                if sorted(got.tolist()) != sorted(x[0] for x in wins[hh]) or len(msg.get("bits", [])) != len(got):
                    raise ProtocolError(f"party {hh!r} answered split masks for nodes {got.tolist()}, "
                                        f"expected {[x[0] for x in wins[hh]]}")
                for node_id, bits in zip(got.tolist(), msg["bits"]):
                    masks[node_id] = _unpack_bits(bits, len(by_id[node_id].rows), f"party {hh!r}")
            parts = []
            nxt: list[_Node] = []
            for nd in level:
                if nd.id not in decided:
                    continue
                gain, party, f, b, miss_left, GL, HL = decided[nd.id]
                mask = masks[nd.id]
                lid, rid = len(nodes), len(nodes) + 1
                direction = int((self._monotone if party == me else self.host_monotone[party])[f])
                bl, br = child_bounds(nd.bounds, direction, GL, HL, nd.G - GL, nd.H - HL, tp)
                left = _Node(lid, nd.rows[mask], depth + 1, parent=nd.id, bounds=bl)
                right = _Node(rid, nd.rows[~mask], depth + 1, parent=nd.id, bounds=br)
                by_id[lid], by_id[rid] = left, right
                nxt += [left, right]
                entry: dict[str, Any] = {"id": nd.id, "owner": party, "left": lid, "right": rid, "gain": gain}
                if party == me:
                    entry["feature"] = self._names[f]
                    entry["threshold"] = binner.threshold(f, b)
                    if miss_left:
                        entry["missing_left"] = True
                else:
                    entry["_f"] = f
                nodes[nd.id] = entry
                nodes += [{"id": lid}, {"id": rid}]
                parts.append([nd.id, lid, rid, _pack_bits(mask)])
            level = nxt
        # every node without children is a leaf
        for entry in nodes:
            if "left" not in entry:
                nd = by_id[entry["id"]]
                w = leaf_weight(nd.G, nd.H, tp, nd.bounds)
                entry["leaf"] = w
                leaf_of[nd.rows] = w
        return {"nodes": nodes, "_leaf_of": leaf_of}, leaf_of

    def _receive_histograms(self, ch: Channel, hosts: list[str], t: int, depth: int, build: list[int],
                            by_id: dict[int, _Node]) -> None:
        from fedrisk.crypto.packing import decompress

        for hh in hosts:
            msg = self.ph.recv(ch, hh, f"sb.t{t}.d{depth}.hist")
            if not isinstance(msg, dict) or "cts" not in msg:
                raise ProtocolError(f"party {hh!r} sent a malformed histogram for tree {t}, depth {depth}")
            nb = self.host_bins[hh]
            per_node = int(nb.sum())
            count = per_node * len(build)
            with self.ph("decryption"):
                cts = self.pub.ciphertexts_from_wire(msg["cts"])
                try:
                    vals = decompress(self.priv, self.packing, cts, count)
                except Exception as e:  # noqa: BLE001 - a peer's malformed answer, reported as such
                    raise ProtocolError(f"party {hh!r}: histogram for tree {t}, depth {depth} does not decode: {e}") from None
            offs = np.concatenate([[0], np.cumsum(nb)])
            skip = self.host_skip[hh]
            for k, node_id in enumerate(build):
                block = vals[k * per_node:(k + 1) * per_node]
                nd = by_id[node_id]
                hist = np.zeros((len(nb), self.params.max_bin, 2))
                for f in range(len(nb)):
                    hist[f, :nb[f]] = block[offs[f]:offs[f + 1]]
                    # the feature holder leaves out its most populous bin: node total minus the rest
                    hist[f, skip[f]] = 0.0
                    hist[f, skip[f]] = (nd.G, nd.H) - hist[f].sum(axis=0)
                nd.host_hist[hh] = hist

    def _importance(self, trees: list[dict]) -> dict[str, dict]:
        """Split counts and total gain per party and feature (feature holders' as anonymous ``f<i>``)."""
        out: dict[str, dict] = {}
        for tr in trees:
            for nd in tr["nodes"]:
                owner = nd.get("owner")
                if owner is None:
                    continue
                key = nd["feature"] if "feature" in nd else f"f{nd['_f']}"
                bucket = out.setdefault(owner, {}).setdefault(key, {"splits": 0, "gain": 0.0})
                bucket["splits"] += 1
                bucket["gain"] += float(nd["gain"])
        return out


def _logloss(y: np.ndarray, margin: np.ndarray) -> float:
    # log(1 + e^m) - y m, stable
    return float(np.mean(np.logaddexp(0.0, margin) - y * margin))


# ---------------------------------------------------------------------------------------------
# Feature holder
# ---------------------------------------------------------------------------------------------
class SecureBoostFeatureHolder:
    """A feature holder's side of SecureBoost training.

    Attributes
    ----------
    model_ : FeatureHolderModel
        Its own split nodes (feature name and threshold), nothing else.
    """

    def __init__(self, params: SecureBoostParams) -> None:
        self.params = params

    def fit(self, channel: Channel, label_holder: str, X: np.ndarray, feature_names: Sequence[str],
            monotone: dict[str, int] | None = None,
            start: dict | None = None, checkpoint: Callable[[int, dict], None] | None = None) -> "SecureBoostFeatureHolder":
        """Train with the label holder; ``monotone`` maps some of this party's features to +1/-1.

        Resume hooks as in :meth:`SecureBoostLabelHolder.fit` (this party's own split nodes per tree).

        Only each constrained feature's anonymous index and direction are sent (in ``sb.bins``).
        """
        from fedrisk.crypto.additive import public_key_from_wire
        from fedrisk.crypto.packing import SlotPacking, compress

        p = self.params
        ph = _Phases()
        cpu_start = time.process_time()
        ch, lh = channel, label_holder
        who = f"label holder {lh!r}"
        X = np.asarray(X, dtype=np.float64)
        n = len(X)
        mono = check_monotone(monotone, list(feature_names), f"party {ch.me!r}")
        with ph("binning"):
            binner = QuantileBinner(p.max_bin).fit(X)
            bins = binner.transform(X)
        nb = binner.n_bins_
        # each feature's most populous bin is never summed: the label holder gets it as the node
        # total minus the other bins (saves ~half the work on low-cardinality columns)
        skip = np.array([int(np.argmax(np.bincount(bins[:, f], minlength=nb[f]))) for f in range(len(nb))],
                        dtype=np.int64)
        offs = np.concatenate([[0], np.cumsum(nb)[:-1]]).astype(np.int64)
        per_node = int(nb.sum())
        schedule = _RowSchedule(p, n)  # the rows each tree may use: fixed by the shared job settings
        setup = ph.recv(ch, lh, "sb.setup")
        if not isinstance(setup, dict) or setup.get("n_rows") != n:
            raise ProtocolError(f"{who} trains on {setup.get('n_rows') if isinstance(setup, dict) else '?'} aligned rows, "
                                f"this party has {n}; the parties' alignments differ")
        pub = public_key_from_wire(setup["pk"], min_bits=p.key_bits)
        if pub.scheme != p.scheme:
            raise ProtocolError(f"{who} sent a {pub.scheme} key; the job says scheme = {p.scheme!r}")
        packing = _expected_packing(p, n, pub.plaintext_bits)
        _check_declared_packing(who, setup, packing)
        missing = binner.missing_bins()
        bins_msg = {"n_bins": nb.astype(np.int64), "skip": skip, "missing": missing}
        if mono.any():  # only when set: unconstrained jobs send exactly what they always sent
            bins_msg["monotone"] = mono
        ph.send(ch, lh, "sb.bins", bins_msg, "plaintext-by-design")
        with ph("binning"):
            # local only (nothing is sent): which features to sum together, see _group_cells
            groupings = _candidate_groupings(bins, nb, skip)
            strides = [[_strides(nb, fs) for fs in g] for g in groupings]
        trees: list[dict] = []
        root_plans: dict[tuple[int, int], _LevelPlan] = {}
        plan_rows: np.ndarray | None = None
        t = first = int(start["t"]) if start is not None else 0
        if start is not None:  # resume hook: this party's split nodes so far; replay the row draws
            trees = start["trees"]
            for _ in range(t):
                schedule.tree_rows()
        while True:
            if checkpoint is not None and t > first:
                checkpoint(t, {"t": t, "trees": trees})
            expected_rows = schedule.tree_rows()  # drawn for every tree, as the label holder does
            if t == 0 and p.first_tree_label_holder_only:
                # the label holder builds tree 0 alone (a shared setting): nothing to receive
                trees.append({"nodes": []})
                t += 1
                continue
            msg = ph.recv(ch, lh, f"sb.t{t}.grad")
            if not isinstance(msg, dict):
                raise ProtocolError(f"{who} sent a malformed gradient message for tree {t}")
            if msg.get("stop"):
                break
            rows = _int_array(msg.get("rows"), who, "gradient rows")
            if not np.array_equal(rows, expected_rows):
                # a label holder choosing the rows (e.g. a handful per tree) would make every bin
                # sum describe a few known customers; the job's seed fixes them for both sides
                raise ProtocolError(f"{who} announced {len(rows)} gradient rows for tree {t} that differ from the "
                                    f"{len(expected_rows)} rows the job's seed, subsample and validation_fraction give; "
                                    f"refusing")
            packing.check_terms(len(rows))
            n_chunks = msg.get("chunks")
            if not isinstance(n_chunks, int) or not 1 <= n_chunks <= len(rows):
                raise ProtocolError(f"{who} announced {n_chunks!r} gradient chunks for {len(rows)} rows")
            bins_grad = bins[rows]
            if plan_rows is None or not np.array_equal(rows, plan_rows):
                root_plans.clear()
                plan_rows = rows.copy()
            # the root histogram is summed chunk by chunk as the label holder streams them
            # ciphertexts stay fixed-width bytes here (validated on arrival); only workers make mpz
            w = pub.ciphertext_bytes
            blocks: list[bytes] = []
            n_got = 0
            root_hist: list | None = None
            m = pub.ciphertext_modulus
            for k in range(n_chunks):
                part = pub.ciphertext_block_from_wire(ph.recv(ch, lh, f"sb.t{t}.grad.{k}").get("cts"))
                k_rows = len(part) // w
                if n_got + k_rows > len(rows):
                    raise ProtocolError(f"{who} sent more ciphertexts than the {len(rows)} announced rows")
                with ph("histogram"):
                    # a chunk's plan depends only on its rows' bins: the same every tree (no subsampling)
                    plan = root_plans.get((n_got, k_rows))
                    if plan is None:
                        plan = root_plans[(n_got, k_rows)] = _LevelPlan()
                        plan.add_node(np.arange(k_rows), bins_grad[n_got:n_got + k_rows], skip, offs, groupings, strides)
                    ph_part = level_histograms(pub, part, plan, per_node)
                    root_hist = ph_part if root_hist is None else [x * y % m for x, y in zip(root_hist, ph_part)]
                blocks.append(part)
                n_got += k_rows
            if n_got != len(rows):
                raise ProtocolError(f"{who} sent {n_got} ciphertexts for {len(rows)} rows")
            cts = np.frombuffer(b"".join(blocks), dtype=np.uint8).reshape(len(rows), w)
            del blocks
            grad_index = np.full(n, -1, dtype=np.int64)
            grad_index[rows] = np.arange(len(rows))
            node_rows: dict[int, np.ndarray] = {0: np.arange(n)}
            mine: list[dict] = []
            depth = 0
            while True:
                plan = ph.recv(ch, lh, f"sb.t{t}.d{depth}.plan")
                for node, lid, rid, bits in plan.get("parts", []):
                    r = node_rows.pop(int(node))
                    mask = _unpack_bits(bits, len(r), who)
                    node_rows[int(lid)], node_rows[int(rid)] = r[mask], r[~mask]
                build = [int(b) for b in plan.get("build", [])]
                if plan.get("done") or not build:
                    break
                if depth == 0 and build == [0] and root_hist is not None:
                    flat = root_hist
                else:
                    with ph("histogram"):
                        plan = _LevelPlan()
                        for k, node in enumerate(build):
                            gi = grad_index[node_rows[node]]
                            gi = gi[gi >= 0]
                            plan.add_node(gi, bins_grad[gi], skip, offs + k * per_node, groupings, strides)
                        gi_all = np.concatenate(plan.gi)
                        flat = level_histograms(pub, cts[gi_all].tobytes(), plan, per_node * len(build))
                with ph("compression"):
                    comp, _ = compress(pub, packing, flat)
                ph.send(ch, lh, f"sb.t{t}.d{depth}.hist", {"nodes": np.array(build, dtype=np.int64),
                                                           "cts": pub.ciphertexts_to_wire(comp)}, "ciphertext")
                win = ph.recv(ch, lh, f"sb.t{t}.d{depth}.win")
                won = _int_array(win.get("nodes"), who, "won nodes")
                if won.size:
                    feats = _int_array(win.get("features"), who, "won features")
                    wbins = _int_array(win.get("bins"), who, "won bins")
                    wmiss = _int_array(win.get("missing_left", np.zeros(len(won), dtype=np.int64)), who, "missing sides")
                    out_bits = []
                    for node, f, b, ml in zip(won.tolist(), feats.tolist(), wbins.tolist(), wmiss.tolist()):
                        if not (0 <= f < len(nb) and 0 <= b < nb[f] - 1) or node not in node_rows \
                                or ml not in (0, 1) or (ml and missing[f] < 0):
                            raise ProtocolError(f"{who} chose an impossible split (node {node}, feature {f}, bin {b})")
                        out_bits.append(_pack_bits(goes_left(bins[node_rows[node], f], b, bool(ml), int(missing[f]))))
                        entry = {"id": node, "feature": feature_names[f], "threshold": binner.threshold(f, b)}
                        if ml:
                            entry["missing_left"] = True
                        mine.append(entry)
                    ph.send(ch, lh, f"sb.t{t}.d{depth}.mask", {"nodes": won, "bits": out_bits}, "plaintext-by-design")
                depth += 1
            trees.append({"nodes": mine})
            t += 1
        imp = ph.recv(ch, lh, "sb.importance")
        kept = int(imp.get("n_trees", len(trees)))
        cnt, gain = imp.get("splits"), imp.get("gain")
        importance = {feature_names[f]: {"splits": int(cnt[f]), "gain": float(gain[f])}
                      for f in range(len(nb)) if int(cnt[f])}
        ph.t["train_cpu_s"] = time.process_time() - cpu_start
        ph.send(ch, lh, "sb.stats", {k: float(v) for k, v in ph.t.items()}, "metric")
        self.model_ = FeatureHolderModel(list(feature_names), trees[:kept], importance, dict(ph.t))
        return self


# ---------------------------------------------------------------------------------------------
# Scoring: each party answers for its own split nodes; only the label holder gets scores
# ---------------------------------------------------------------------------------------------
def _split_left(x: np.ndarray, node: dict) -> np.ndarray:
    """A split node's rule on raw values: ``x < threshold``; missing values go left only where
    training learned so (``missing_left``), else right (NaN fails every comparison)."""
    left = x < float(node["threshold"])
    if node.get("missing_left"):
        left |= np.isnan(x)
    return left


def score_feature_holder(channel: Channel, model: FeatureHolderModel, X: np.ndarray, label_holder: str,
                         tag: str = "predict") -> None:
    """Answer the label holder's per-level questions: a left/right bit for each row that reached a node.

    The label holder walks all trees level by level and asks, for each of this party's split nodes
    in the current level, about exactly the rows that reached it (``sbi.<tag>.q<r>``); this party
    answers one bit per asked row (``sbi.<tag>.a<r>``) until ``done``. Checks keep even a deviating
    label holder from asking about one row twice in a round of one tree or about one node twice.
    """
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    name_to_col = {f: i for i, f in enumerate(model.features)}
    own = {(t, int(nd["id"])): nd for t, tree in enumerate(model.trees) for nd in tree["nodes"]}
    who = f"label holder {label_holder!r}"
    asked: set[tuple[int, int]] = set()
    for r in range(len(own) + 1):
        msg = channel.recv(label_holder, f"sbi.{tag}.q{r}")
        if not isinstance(msg, dict):
            raise ProtocolError(f"{who} sent a malformed scoring question")
        if msg.get("done"):
            return
        if msg.get("n_rows") != n:
            raise ProtocolError(f"{who} scores {msg.get('n_rows')!r:.20} rows, this party holds {n}; the alignments differ")
        keys = _int_array(msg.get("nodes"), who, "nodes").reshape(-1, 2)
        rows_list = msg.get("rows")
        if not isinstance(rows_list, list) or len(rows_list) != len(keys):
            raise ProtocolError(f"{who} sent {len(keys)} nodes but no matching row lists")
        seen_in_round: dict[int, np.ndarray] = {}
        answers = []
        for (t, node), rows in zip(keys.tolist(), rows_list):
            rows = _int_array(rows, who, "rows")
            if (t, node) not in own or (t, node) in asked:
                raise ProtocolError(f"{who} asked about tree {t}, node {node}, which this party does not own "
                                    f"or already answered")
            if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= n or np.any(np.diff(rows) <= 0))):
                raise ProtocolError(f"{who} asked about rows that are not sorted, unique positions in [0, {n})")
            prev = seen_in_round.get(t)
            if prev is not None and np.intersect1d(prev, rows, assume_unique=True).size:
                raise ProtocolError(f"{who} asked about one row at two nodes of tree {t} in one level; refusing "
                                    f"(a row reaches one node per level)")
            seen_in_round[t] = rows if prev is None else np.union1d(prev, rows)
            asked.add((t, node))
            nd = own[(t, node)]
            answers.append(_pack_bits(_split_left(X[rows, name_to_col[nd["feature"]]], nd)))
        channel.send(label_holder, f"sbi.{tag}.a{r}", {"bits": answers}, kind="plaintext-by-design")
    raise ProtocolError(f"{who} asked more scoring rounds than this party has split nodes")


def score_label_holder(channel: Channel, model: LabelHolderModel, X: np.ndarray, hosts: Sequence[str],
                       tag: str = "predict") -> np.ndarray:
    """Walk every tree over aligned rows ``X``, level by level; return probabilities (see :func:`walk_label_holder`)."""
    return sigmoid(walk_label_holder(channel, model, X, hosts, tag)[0])


def walk_label_holder(channel: Channel, model: LabelHolderModel, X: np.ndarray, hosts: Sequence[str],
                      tag: str = "predict") -> tuple[np.ndarray, list[dict[int, np.ndarray]]]:
    """Walk every tree over aligned rows ``X``, level by level; return margins and, per tree, the
    positions of the rows that reached each node (the reason codes' paths).

    Own split nodes and leaves are resolved locally; for the feature holders' split nodes of the
    current level this party asks each owner about exactly the rows that reached the node, so a
    feature holder reveals one bit per row per own node *on that row's path*, not per node.
    """
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    margin = np.full(n, float(model.base_score))
    cols = {f: i for i, f in enumerate(model.features)}
    trees = [{int(nd["id"]): nd for nd in tree["nodes"]} for tree in model.trees]
    frontier: list[dict[int, np.ndarray]] = [{0: np.arange(n)} for _ in trees]
    seen: list[dict[int, np.ndarray]] = [{} for _ in trees]
    hosts = list(hosts)
    row_dtype = np.uint32 if n < 2 ** 32 else np.int64  # half the bytes of int64 positions
    r = 0
    while True:
        asks: dict[str, list[tuple[int, int, np.ndarray]]] = {h: [] for h in hosts}
        for t, nodes in enumerate(trees):
            stack = list(frontier[t].items())
            waiting: dict[int, np.ndarray] = {}
            while stack:
                node_id, rows = stack.pop()
                seen[t][node_id] = rows
                nd = nodes[node_id]
                if "leaf" in nd:
                    margin[rows] += float(nd["leaf"])
                elif rows.size == 0:
                    continue
                elif "threshold" in nd:
                    go = _split_left(X[rows, cols[nd["feature"]]], nd)
                    stack += [(int(nd["left"]), rows[go]), (int(nd["right"]), rows[~go])]
                else:
                    owner = nd.get("owner")
                    if owner not in asks:
                        raise ProtocolError(f"tree {t}, node {node_id} belongs to {owner!r}, which is not among the "
                                            f"feature holders {hosts}")
                    waiting[node_id] = rows
                    asks[owner].append((t, node_id, rows))
            frontier[t] = waiting
        if not any(asks.values()):
            break
        for h in hosts:
            q = asks[h]
            channel.send(h, f"sbi.{tag}.q{r}", {
                "n_rows": n, "nodes": np.array([(t, i) for t, i, _ in q], dtype=np.int64).reshape(-1, 2),
                "rows": [rows.astype(row_dtype) for _, _, rows in q]}, kind="plaintext-by-design")
        for h in hosts:
            q = asks[h]
            msg = channel.recv(h, f"sbi.{tag}.a{r}")
            bits = msg.get("bits") if isinstance(msg, dict) else None
            if not isinstance(bits, list) or len(bits) != len(q):
                raise ProtocolError(f"party {h!r} answered {len(bits) if isinstance(bits, list) else '?'} of {len(q)} "
                                    f"scoring questions")
            for (t, node_id, rows), b in zip(q, bits):
                go = _unpack_bits(b, len(rows), f"party {h!r}")
                nd = trees[t][node_id]
                del frontier[t][node_id]
                frontier[t][int(nd["left"])] = rows[go]
                frontier[t][int(nd["right"])] = rows[~go]
        r += 1
    for h in hosts:
        channel.send(h, f"sbi.{tag}.q{r}", {"done": True}, kind="control")
    return margin, seen
