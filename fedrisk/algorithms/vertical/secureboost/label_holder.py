"""SecureBoost's label holder (guest): keys, gradients, split finding, leaf weights.

Its flow, in :meth:`SecureBoostLabelHolder.fit`: ``sb.setup`` out, ``sb.bins`` in; per tree the
encrypted gradients out (``sb.t<t>.grad*``), then per level the plan out, the feature holders'
histograms in (decrypted here), the winners out and their masks in; at the end the importance out
and the feature holders' timings in. See :mod:`fedrisk.algorithms.vertical.secureboost`.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from fedrisk.algorithms.vertical.binning import QuantileBinner
from fedrisk.algorithms.vertical.secureboost.categorical import bin_values, code_top, partition_candidates
from fedrisk.algorithms.vertical.secureboost.encryption import _CHUNK_ROWS, _Obfuscators, encrypt_chunk_async
from fedrisk.algorithms.vertical.secureboost.messages import _int_array, _pack_bits, _Phases, _unpack_bits, peak_rss_mb
from fedrisk.algorithms.vertical.secureboost.models import LabelHolderModel
from fedrisk.algorithms.vertical.secureboost.params import _G_BOUND, _H_BOUND, SecureBoostParams, _RowSchedule
from fedrisk.algorithms.vertical.tree import (
    TreeParams,
    UNBOUNDED,
    base_score,
    best_split,
    check_monotone,
    child_bounds,
    column_histogram,
    goes_left,
    leaf_weight,
    logloss_grad_hess,
)
from fedrisk.errors import ProtocolError
from fedrisk.transport.channel import Channel
from fedrisk.runtime.abort_reason import refuse_one_class
from fedrisk.transport import expect

log = logging.getLogger(__name__)


@dataclass
class _Node:
    id: int
    rows: np.ndarray          # positions into the fit rows (all rows the label holder routes)
    depth: int
    G: float = 0.0
    H: float = 0.0
    n_grad: int = 0
    host_hist: dict[str, np.ndarray] = field(default_factory=dict)
    own_hist: np.ndarray | None = None  # this party's own (feature, bin, g/h) sums
    parent: int = -1
    bounds: tuple[float, float] = UNBOUNDED



class _ChunkSender:
    """Sends one tree's encrypted gradient chunks (``sb.t<t>.grad.<k>``), in order, from a thread.

    Each chunk leaves as soon as the crypto pool has encrypted it; the label holder's main thread
    meanwhile starts the tree. :meth:`join` re-raises any failure in the caller's thread. Times
    are kept here (``encryption``: waiting for a chunk, ``network``: in ``send``) and added to the
    label holder's phases when joined.
    """

    def __init__(self, ch: Channel, hosts: Sequence[str], t: int, pending: list[Callable[[], Any]]) -> None:
        self.t = {"encryption": 0.0, "network": 0.0}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(ch, list(hosts), t, pending),
                                        name=f"sb-chunks-t{t}", daemon=True)
        self._thread.start()

    def _run(self, ch: Channel, hosts: list[str], t: int, pending: list[Callable[[], Any]]) -> None:
        try:
            for k, wait in enumerate(pending):
                t0 = time.perf_counter()
                wire = wait()
                t1 = time.perf_counter()
                for hh in hosts:
                    ch.send(hh, f"sb.t{t}.grad.{k}", {"cts": wire}, kind="ciphertext")
                self.t["encryption"] += t1 - t0
                self.t["network"] += time.perf_counter() - t1
        except BaseException as e:  # noqa: BLE001 - handed to the main thread by join()
            self._error = e

    def join(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


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
        self.host_categorical: dict[str, np.ndarray] = {}
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
            cat = _int_array(msg.get("categorical", np.zeros(0, dtype=np.int64)), f"party {h!r}", "categorical")
            if cat.size and (cat.ndim != 1 or cat.min() < 0 or cat.max() >= len(nb)):
                raise ProtocolError(f"party {h!r} marked categorical features that do not exist")
            self.host_categorical[h] = np.isin(np.arange(len(nb)), cat)
        self._choose_rows_per_ciphertext(hosts, n_train)

    def _choose_rows_per_ciphertext(self, hosts: Sequence[str], n_train: int) -> None:
        """Rows per encrypted plaintext: the job's setting, else the cheapest for its size
        (:func:`~fedrisk.algorithms.vertical.secureboost.row_packing.choose_rows`); the feature
        holders re-check it against the key. The model does not depend on it."""
        from fedrisk.algorithms.vertical.secureboost.row_packing import RowPacking, choose_rows

        p = self.params
        per_tree = n_train if p.subsample >= 1 else max(2, int(round(p.subsample * n_train)))
        slots = sum(int(self.host_bins[h].sum()) for h in hosts)
        # the cost model's constants are OU's (compiled kernel); Paillier keeps one row unless asked
        auto = p.scheme == "ou" or p.rows_per_ciphertext
        k = choose_rows(self.packing.slot_bits, self.pub.plaintext_bits, per_tree, slots,
                        2 ** max(0, p.tree.max_depth - 1), p.rows_per_ciphertext) if hosts and auto else 1
        self.rows = RowPacking(self.packing.slot_bits, k, self.pub.plaintext_bits)
        if k > 1:
            log.info("SecureBoost: %d rows per encrypted gradient plaintext (%d-bit groups, %d bin sums per "
                     "returned ciphertext)", k, self.rows.group_bits, self.rows.per_ciphertext)

    def fit(self, channel: Channel, hosts: Sequence[str], X: np.ndarray, y: np.ndarray,
            feature_names: Sequence[str], monotone: dict[str, int] | None = None,
            categorical: Sequence[str] = (),
            start: dict | None = None, checkpoint: Callable[[int, dict], None] | None = None) -> "SecureBoostLabelHolder":
        """Train with every feature holder in ``hosts`` (which call :meth:`SecureBoostFeatureHolder.fit`).

        Resume hooks (the runtime owns the files): ``checkpoint(t, state)`` after tree ``t`` with
        this party's own state; ``start`` is such a state to continue from.

        ``X``/``y`` are the PSI-aligned training rows, in the order every party shares.
        ``monotone`` maps some of this party's features to +1/-1 (score non-decreasing /
        non-increasing in it); feature holders declare theirs in their own ``fit``.
        ``categorical`` names this party's level-code columns: split by partitions, never thresholds.
        """
        p = self.params
        tp = p.tree
        self.ph = _Phases()
        t_start, cpu_start = time.perf_counter(), time.process_time()
        hosts = list(hosts)
        self._names = list(feature_names)
        self._monotone = check_monotone(monotone, self._names, f"party {channel.me!r}")
        # level-code columns: split by partitions (XGBoost enable_categorical), never by thresholds
        self._categorical = np.isin(self._names, list(categorical))
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        self._code_top = code_top(X, self._categorical)
        n = len(y)
        schedule = _RowSchedule(p, n)
        val, train_pos = schedule.val, schedule.train_pos
        self.n_val_ = int(val.sum())
        # the task checks every training row; the validation rows held out here can still take the
        # last default (rare bads): refused as every label error is, partners read a summary only
        refuse_one_class(channel.me, y[train_pos], f"the training rows left after validation_fraction = "
                         f"{p.validation_fraction} held out {self.n_val_}",
                         "need both classes (lower validation_fraction or bring more defaults)")
        #: notes for this party's own log (counts of its own labels only; never sent)
        self.warnings_: list[str] = []
        yv = y[val]
        if self.n_val_ and p.early_stopping_rounds and yv.min() == yv.max():
            # early stopping on rows of one class is meaningless: their loss only grows as trees are added
            self.warnings_.append(
                f"the {self.n_val_} validation rows (validation_fraction = {p.validation_fraction}) hold "
                f"{'no default' if yv.max() == 0 else 'only defaults'}, so their loss only grows as trees are added "
                "and early stopping ends training after a few trees; raise validation_fraction, or set "
                "early_stopping_rounds = 0")
            log.warning(self.warnings_[-1])
        with self.ph("binning"):
            binner = QuantileBinner(p.max_bin).fit(X[train_pos])
            bins = binner.transform(X)
        self._bins_t = np.ascontiguousarray(bins.T)  # column-major: own histograms gather per column
        self._setup(channel, hosts, n, len(train_pos))
        self._any_monotone = bool(self._monotone.any()) or any(m.any() for m in self.host_monotone.values())
        # the key owner encrypts with its private key: through CRT when the compiled kernel is there
        self._obf = _Obfuscators(self.priv) if hosts and hasattr(self.priv, "obfuscators_async") else None
        if self._obf is not None and hasattr(self.priv, "expect_encryptions"):
            # one encryption per row and tree: a large job gets wider fixed-base windows for h^r
            # (fewer products each, for a larger table built once)
            self.priv.expect_encryptions(-(-len(train_pos) // self.rows.rows) * p.n_trees)
        base = base_score(y[train_pos])
        margin = np.full(n, base)
        scale = float(2 ** p.precision)
        trees: list[dict] = []
        history: list[dict] = []
        best_loss, best_it, stop, first = np.inf, 0, False, 0
        # the training margin after the best iteration (what the kept trees score), so early stopping
        # needs no per-tree row assignments (kept out of checkpoints: 24k rows x trees x steps)
        best_margin = margin.copy()
        if start is not None:  # resume hook: trees so far, margins, early-stopping state; replay the row draws
            trees, history, margin, best_loss, best_it, stop, first = (start[k] for k in (
                "trees", "history", "margin", "best_loss", "best_it", "stop", "t"))
            margin = np.asarray(margin, dtype=np.float64)
            best_margin = np.asarray(start["best_margin"], dtype=np.float64)
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
                k = self.rows.rows
                step = max(k, _CHUNK_ROWS // k * k)  # whole ciphertexts per chunk
                spans = [(lo, min(len(rows), lo + step)) for lo in range(0, len(rows), step)]
                announce = {"rows": rows.astype(np.int64), "chunks": len(spans)}
                if k > 1:
                    announce["rows_per_ciphertext"] = k
                for hh in hosts:
                    self.ph.send(channel, hh, f"sb.t{t}.grad", announce, "plaintext-by-design")
                # every chunk is queued on the crypto pool at once, so the workers encrypt chunk k+1
                # while chunk k is sent; the workers' ciphertext bytes go to the wire as they are.
                # Queuing never waits: each chunk takes the obfuscators already made and the pool
                # makes the rest on the spot, so chunk 0 leaves as soon as it is encrypted
                with self.ph("encryption"):
                    pending = [encrypt_chunk_async(self.priv, self.packing,
                                                   np.column_stack([g[rows[lo:hi]], h[rows[lo:hi]]]), self._obf,
                                                   self.rows)
                               for lo, hi in spans]
                    if self._obf is not None and t + 1 < p.n_trees:
                        # the next tree's h^r, made by low-priority threads while this tree's
                        # levels are built (cores would idle); at most one tree's worth queued
                        self._obf.prefetch(-(-len(rows) // k))
                # sent from a thread as each is ready, while this thread starts the tree (root
                # sums, plan, own root histogram); joined before the feature holders' root sums
                self._chunks = _ChunkSender(channel, hosts, t, pending)
            try:
                tree, leaf_of = self._grow(channel, [] if local else hosts, t, bins, binner, g, h, is_grad, tp)
            finally:
                self._join_chunks()
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
            if best_it == t + 1:
                best_margin = margin.copy()
            if checkpoint is not None:
                checkpoint(t + 1, {"t": t + 1, "trees": [{k: v for k, v in tr.items() if k != "_leaf_of"} for tr in trees],
                                   "history": history, "margin": margin, "best_margin": best_margin,
                                   "best_loss": best_loss, "best_it": best_it, "stop": stop})
            if self.on_tree is not None:
                self.on_tree(t + 1, rec)
            if stop:
                break
        if self._obf is not None:  # no tree left to take what the background still queues
            self._obf.close()
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
            stats = self.ph.recv(channel, hh, "sb.stats")
            # timings for the report: numbers under short names only (a partner's text must not fill it)
            host_phases[hh] = {str(k)[:64]: float(v) for k, v in list(stats.items())[:64]
                               if expect.real(v, finite=True)} \
                if isinstance(stats, dict) else {}
        for tr in trees:
            for nd in tr["nodes"]:
                nd.pop("_f", None)
        # margins of kept trees only
        if len(kept) < len(trees):
            margin = best_margin  # base + the kept trees' leaves, added in the same order as in training
        for tr in trees:
            tr.pop("_leaf_of", None)
        self.ph.t["train_s"] = time.perf_counter() - t_start
        # CPU of this process and its threads (crypto threads included; process-pool workers not)
        self.ph.t["train_cpu_s"] = time.process_time() - cpu_start
        self.ph.t["peak_rss_mb"] = peak_rss_mb()
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
        bins_t = self._bins_t
        exact = _sums_exact(g, h, self.params.precision)
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
                own = _own_histograms(level, splittable, bins_t, g, h, is_grad, max_b, by_id, exact)
            if build:
                self._join_chunks()
                self._receive_histograms(ch, hosts, t, depth, build, by_id)
                for node, sib, parent in derive:
                    for hh in hosts:
                        by_id[node].host_hist[hh] = by_id[parent].host_hist[hh] - by_id[sib].host_hist[hh]
            # best split over every party's features
            wins: dict[str, list[tuple]] = {hh: [] for hh in hosts}
            decided: dict[int, tuple] = {}
            with self.ph("split_finding"):
                for nd in splittable:
                    cands = []
                    # with constraints anywhere, every party's gains use the node's bounds
                    mono_on = self._any_monotone
                    # categorical features get one bin's worth of thresholds (none): partitions instead
                    s = best_split(own[nd.id], np.where(self._categorical, 1, own_nb), nd.G, nd.H, tp, own_missing,
                                   self._monotone if mono_on else None, nd.bounds)
                    if s is not None:
                        cands.append((s[0], me, s[1], s[2], s[5], s[3], s[4], None))
                    cands += partition_candidates(own[nd.id], own_nb, self._categorical, nd, tp, me)
                    for hh in hosts:
                        hcat = self.host_categorical[hh]
                        s = best_split(nd.host_hist[hh], np.where(hcat, 1, self.host_bins[hh]), nd.G, nd.H, tp,
                                       self.host_missing[hh], self.host_monotone[hh] if mono_on else None, nd.bounds)
                        if s is not None:
                            cands.append((s[0], hh, s[1], s[2], s[5], s[3], s[4], None))
                        cands += partition_candidates(nd.host_hist[hh], self.host_bins[hh], hcat, nd, tp, hh)
                    if not cands:
                        continue
                    best = cands[0]
                    for c in cands[1:]:
                        if c[0] > best[0] + 1e-12:
                            best = c
                    decided[nd.id] = best
                    if best[1] != me:
                        wins[best[1]].append((nd.id, best[2], best[3], best[4], best[7]))
            for hh in hosts:
                w = wins[hh]
                win = {"nodes": np.array([x[0] for x in w], dtype=np.int64),
                       "features": np.array([x[1] for x in w], dtype=np.int64),
                       "bins": np.array([x[2] for x in w], dtype=np.int64),
                       "missing_left": np.array([x[3] for x in w], dtype=np.int64)}
                if any(x[4] is not None for x in w):  # partition splits: the owner's bins that go left
                    win["categories"] = [np.array(x[4] if x[4] is not None else [], dtype=np.int64) for x in w]
                self.ph.send(ch, hh, f"sb.t{t}.d{depth}.win", win, "control")
            masks: dict[int, np.ndarray] = {}
            for node_id, (gain, party, f, b, miss_left, _, _, cats) in decided.items():
                if party == me:
                    masks[node_id] = (np.isin(bins[by_id[node_id].rows, f], cats) if cats is not None else
                                      goes_left(bins[by_id[node_id].rows, f], b, miss_left, int(own_missing[f])))
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
                gain, party, f, b, miss_left, GL, HL, cats = decided[nd.id]
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
                    if cats is not None:
                        entry["categories_left"] = bin_values(binner, f, cats, self._code_top[f])
                    else:
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

    def _join_chunks(self) -> None:
        """Wait until the current tree's chunks are all sent (re-raising a failure to send them)."""
        sender, self._chunks = getattr(self, "_chunks", None), None
        if sender is not None:
            with self.ph("encryption_wait"):
                sender.join()
            for k, v in sender.t.items():
                self.ph.t[k] = self.ph.t.get(k, 0.0) + v

    def _receive_histograms(self, ch: Channel, hosts: list[str], t: int, depth: int, build: list[int],
                            by_id: dict[int, _Node]) -> None:
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
                    vals = self.rows.slot_sums(self.priv, cts, count, self.packing.precision)
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


def _sums_exact(g: np.ndarray, h: np.ndarray, precision: int) -> bool:
    """Whether every float sum of ``g`` or ``h`` over any rows is exact.

    ``g`` and ``h`` are on the ``2^-precision`` grid (the fixed point the feature holders see), so
    each partial sum is an integer multiple of the grid step bounded by the sum of magnitudes;
    below ``2^53`` steps no addition rounds (checked against ``2^52``: a margin for the check's
    own sum). Then a child's histogram computed as parent minus sibling is the same array, bit for
    bit, as summing its rows (default precision: up to ~2^36 rows).
    """
    scale = float(2 ** precision)
    return float(np.abs(g).sum()) * scale < 2.0 ** 52 and float(np.abs(h).sum()) * scale < 2.0 ** 52


def _own_histograms(level: list["_Node"], splittable: list["_Node"], bins_t: np.ndarray, g: np.ndarray,
                    h: np.ndarray, is_grad: np.ndarray, n_bins: int, by_id: dict[int, "_Node"],
                    exact: bool) -> dict[int, np.ndarray]:
    """The label holder's plaintext histograms of the splittable nodes of one level.

    Below the root the level holds sibling pairs; when the sums are exact (:func:`_sums_exact`)
    only the smaller sibling is summed and the larger is its parent's histogram minus it, as the
    feature holders' encrypted histograms are derived. About a third fewer rows summed per tree.
    """
    want = {nd.id for nd in splittable}

    def direct(nd: "_Node") -> np.ndarray:
        return column_histogram(bins_t, nd.rows[is_grad[nd.rows]], g, h, n_bins)

    if not level or level[0].depth == 0 or not exact:
        out = {nd.id: direct(nd) for nd in splittable}
    else:
        out = {}
        for a, b in zip(level[0::2], level[1::2]):
            if a.id not in want and b.id not in want:
                continue
            if a.parent != b.parent or by_id[a.parent].own_hist is None:  # not a sibling pair: sum both
                out.update({nd.id: direct(nd) for nd in (a, b) if nd.id in want})
                continue
            small, big = (a, b) if a.n_grad <= b.n_grad else (b, a)
            out[small.id] = direct(small)
            if big.id in want:
                out[big.id] = by_id[big.parent].own_hist - out[small.id]
    for nd in level:  # kept for the children's subtraction; the parents' are no longer needed
        nd.own_hist = out.get(nd.id)
        if nd.parent in by_id:
            by_id[nd.parent].own_hist = None
    return out


def _logloss(y: np.ndarray, margin: np.ndarray) -> float:
    # log(1 + e^m) - y m, stable
    return float(np.mean(np.logaddexp(0.0, margin) - y * margin))
