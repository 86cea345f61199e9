"""SecureBoost's feature holder (host): bins, encrypted histograms, its own thresholds.

Its flow, in :meth:`SecureBoostFeatureHolder.fit`: ``sb.setup`` in (checked against the job
spec), ``sb.bins`` out; per tree the gradient rows and ciphertext chunks in (the root histogram
summed chunk by chunk), then per level the plan in, the histograms out, the winners in and the
masks out; at the end the importance in and this party's timings out. See
:mod:`fedrisk.algorithms.vertical.secureboost`.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import numpy as np

from fedrisk.algorithms.vertical.binning import QuantileBinner
from fedrisk.algorithms.vertical.secureboost.histograms import (
    _candidate_groupings,
    _LevelPlan,
    _strides,
    RootCells,
    RootSums,
    level_histograms,
)
from fedrisk.algorithms.vertical.secureboost.categorical import bin_values, code_top
from fedrisk.algorithms.vertical.secureboost.messages import _int_array, _pack_bits, _Phases, _unpack_bits, peak_rss_mb
from fedrisk.algorithms.vertical.secureboost.models import FeatureHolderModel
from fedrisk.algorithms.vertical.secureboost.params import (
    SecureBoostParams,
    _check_declared_packing,
    _expected_packing,
    _RowSchedule,
)
from fedrisk.algorithms.vertical.tree import check_monotone, goes_left
from fedrisk.errors import ProtocolError
from fedrisk.transport import expect
from fedrisk.transport.channel import Channel


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
            monotone: dict[str, int] | None = None, categorical: Sequence[str] = (),
            start: dict | None = None, checkpoint: Callable[[int, dict], None] | None = None) -> "SecureBoostFeatureHolder":
        """Train with the label holder; ``monotone`` maps some of this party's features to +1/-1.

        Resume hooks as in :meth:`SecureBoostLabelHolder.fit` (this party's own split nodes per tree).

        Only each constrained feature's anonymous index and direction are sent (in ``sb.bins``).
        ``categorical`` names level-code columns: only their anonymous indices are sent, and the
        label holder splits them by partitions of their bins.
        """
        from fedrisk.crypto.additive import public_key_from_wire

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
        is_cat = np.isin(list(feature_names), list(categorical))
        cat_idx = np.flatnonzero(is_cat).astype(np.int64)
        top = code_top(X, is_cat)
        if cat_idx.size:  # level-code columns (anonymous indices): split by partitions of their bins
            bins_msg["categorical"] = cat_idx
        ph.send(ch, lh, "sb.bins", bins_msg, "plaintext-by-design")
        with ph("binning"):
            # local only (nothing is sent): which features to sum together, see _group_cells
            groupings = _candidate_groupings(bins, nb, skip)
            strides = [[_strides(nb, fs) for fs in g] for g in groupings]
        trees: list[dict] = []
        root_cells: RootCells | None = None
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
            rp = _announced_rows(msg, p, packing, pub, who)
            k = rp.rows
            n_ct = -(-len(rows) // k)  # row i travels in ciphertext i // k at position i % k
            n_chunks = msg.get("chunks")
            if not isinstance(n_chunks, int) or not 1 <= n_chunks <= n_ct:
                raise ProtocolError(f"{who} announced {n_chunks!r} gradient chunks for {len(rows)} rows")
            bins_grad = bins[rows]
            if root_cells is None or not np.array_equal(rows, plan_rows):
                # one plan over all the tree's rows (cells over the whole root, not per chunk); the
                # same every tree without subsampling
                with ph("histogram"):
                    root_cells = RootCells.plan(bins_grad, k, skip, offs, per_node, groupings, strides)
                plan_rows = rows.copy()
            root_sums = RootSums(pub, root_cells)
            # the root histogram is summed chunk by chunk as the label holder streams them
            # ciphertexts stay fixed-width bytes here (validated on arrival); only workers make mpz
            w = pub.ciphertext_bytes
            blocks: list[bytes] = []
            n_got = 0
            for c in range(n_chunks):
                part = pub.ciphertext_block_from_wire(ph.recv(ch, lh, f"sb.t{t}.grad.{c}").get("cts"))
                k_cts = len(part) // w
                if n_got + k_cts > n_ct:
                    raise ProtocolError(f"{who} sent more ciphertexts than the {len(rows)} announced rows need")
                with ph("histogram"):
                    root_sums.add(part, n_got)
                blocks.append(part)
                n_got += k_cts
            if n_got != n_ct:
                raise ProtocolError(f"{who} sent {n_got} ciphertexts for {len(rows)} rows ({n_ct} expected)")
            with ph("histogram"):
                root_hist = root_sums.finish()
            del root_sums
            cts = np.frombuffer(b"".join(blocks), dtype=np.uint8).reshape(n_ct, w)
            del blocks
            grad_index = np.full(n, -1, dtype=np.int64)
            grad_index[rows] = np.arange(len(rows))
            min_rows = _min_child_rows(p.min_child_weight)
            node_rows: dict[int, np.ndarray] = {0: np.arange(n)}
            mine: list[dict] = []
            depth = 0
            while True:
                plan = ph.recv(ch, lh, f"sb.t{t}.d{depth}.plan")
                parts, build = _checked_plan(plan, node_rows, who, f"sb.t{t}.d{depth}.plan")
                for node, lid, rid, bits in parts:
                    r = node_rows.pop(node)
                    mask = _unpack_bits(bits, len(r), who)
                    node_rows[lid], node_rows[rid] = r[mask], r[~mask]
                    _check_child_rows(who, node, [grad_index[node_rows[c]] for c in (lid, rid)], min_rows)
                if plan.get("done") or not build:
                    break
                if depth == 0 and build == [0] and root_hist is not None:
                    flat = root_hist
                else:
                    with ph("histogram"):
                        plan = _LevelPlan()
                        count = per_node * len(build)
                        for j, node in enumerate(build):
                            gi = grad_index[node_rows[node]]
                            gi = gi[gi >= 0]
                            for s in range(k):  # one sum per (slot, position): rp.combine aligns them
                                sel = gi[gi % k == s] if k > 1 else gi
                                if len(sel):
                                    plan.add_node(sel // k, bins_grad[sel], skip, offs + j * per_node + s * count,
                                                  groupings, strides)
                        gi_all = np.concatenate(plan.gi) if plan.gi else np.zeros(0, dtype=np.int64)
                        flat = level_histograms(pub, cts[gi_all].tobytes(), plan, count * k)
                with ph("compression"):
                    comp = rp.combine(pub, flat, per_node * len(build))
                ph.send(ch, lh, f"sb.t{t}.d{depth}.hist", {"nodes": np.array(build, dtype=np.int64),
                                                           "cts": pub.ciphertexts_to_wire(comp)}, "ciphertext")
                win = ph.recv(ch, lh, f"sb.t{t}.d{depth}.win")
                won = _int_array(win.get("nodes"), who, "won nodes")
                if won.size:
                    feats = _int_array(win.get("features"), who, "won features")
                    wbins = _int_array(win.get("bins"), who, "won bins")
                    wmiss = _int_array(win.get("missing_left", np.zeros(len(won), dtype=np.int64)), who, "missing sides")
                    wcats = win.get("categories") or [None] * len(won)
                    if len(wcats) != len(won):
                        raise ProtocolError(f"{who} sent {len(wcats)} category lists for {len(won)} won nodes")
                    out_bits = []
                    for node, f, b, ml, cs in zip(won.tolist(), feats.tolist(), wbins.tolist(), wmiss.tolist(), wcats):
                        if not (0 <= f < len(nb) and 0 <= b < nb[f] - 1) or node not in node_rows \
                                or ml not in (0, 1) or (ml and missing[f] < 0):
                            raise ProtocolError(f"{who} chose an impossible split (node {node}, feature {f}, bin {b})")
                        cs = _int_array(cs, who, "won categories") if cs is not None and len(cs) else None
                        if cs is not None:  # a partition split on one of this party's categorical features
                            if f not in cat_idx or cs.min() < 0 or cs.max() >= nb[f]:
                                raise ProtocolError(f"{who} chose an impossible category split (node {node}, feature {f})")
                            out_bits.append(_pack_bits(np.isin(bins[node_rows[node], f], cs)))
                            mine.append({"id": node, "feature": feature_names[f],
                                         "categories_left": bin_values(binner, f, cs.tolist(), top[f])})
                            continue
                        out_bits.append(_pack_bits(goes_left(bins[node_rows[node], f], b, bool(ml), int(missing[f]))))
                        entry = {"id": node, "feature": feature_names[f], "threshold": binner.threshold(f, b)}
                        if ml:
                            entry["missing_left"] = True
                        mine.append(entry)
                    ph.send(ch, lh, f"sb.t{t}.d{depth}.mask", {"nodes": won, "bits": out_bits}, "plaintext-by-design")
                depth += 1
            trees.append({"nodes": mine})
            t += 1
        imp = expect.mapping(ph.recv(ch, lh, "sb.importance"), ch.me, lh, "sb.importance")
        kept = expect.integer(imp, "n_trees", ch.me, lh, "sb.importance", hi=len(trees), default=len(trees))
        cnt = expect.vector(imp, "splits", len(nb), ch.me, lh, "sb.importance")
        gain = expect.vector(imp, "gain", len(nb), ch.me, lh, "sb.importance")
        importance = {feature_names[f]: {"splits": int(cnt[f]), "gain": float(gain[f])}
                      for f in range(len(nb)) if int(cnt[f])}
        ph.t["train_cpu_s"] = time.process_time() - cpu_start
        ph.t["peak_rss_mb"] = peak_rss_mb()
        ph.send(ch, lh, "sb.stats", {k: float(v) for k, v in ph.t.items()}, "metric")
        self.model_ = FeatureHolderModel(list(feature_names), trees[:kept], importance, dict(ph.t))
        return self


def _announced_rows(msg: dict, p: SecureBoostParams, packing: Any, pub: Any, who: str) -> Any:
    """The rows per ciphertext of a tree's announcement, checked against the key and the job.

    Any count the key holds is safe for this party (every cross term it returns is masked, see
    :mod:`.row_packing`); a job that fixes ``rows_per_ciphertext`` gets exactly that.
    """
    from fedrisk.algorithms.vertical.secureboost.row_packing import RowPacking, max_rows

    k = msg.get("rows_per_ciphertext", 1)
    top = max_rows(packing.slot_bits, pub.plaintext_bits)
    if not (isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= top) \
            or (p.rows_per_ciphertext and k != p.rows_per_ciphertext):
        raise ProtocolError(f"{who} announced {k!r} rows per ciphertext; this key holds 1 to {top}"
                            + (f" and the job sets {p.rows_per_ciphertext}" if p.rows_per_ciphertext else "") + "; refusing")
    return RowPacking(packing.slot_bits, k, pub.plaintext_bits)


def _min_child_rows(min_child_weight: float) -> int:
    """Fewest training rows an honest split leaves in a child: every split keeps the hessian sum
    of each child at ``min_child_weight`` or more, and a row's hessian is at most ``1/4``."""
    return max(1, math.ceil(4 * float(min_child_weight) - 1e-9))


def _check_child_rows(who: str, node: int, children: Sequence[np.ndarray], min_rows: int) -> None:
    """Refuse a split leaving fewer training rows in a child than an honest one can.

    Why: a label holder that splits on its own features can cut a node down to one customer; the
    histogram of that node (built, or derived as parent minus sibling) is then that customer's bin
    in every feature of this party. The job's ``min_child_weight`` bounds honest children from
    below (:func:`_min_child_rows`), so a smaller one is a deviation.
    """
    for gi in children:
        got = int((gi >= 0).sum())
        if got < min_rows:
            raise ProtocolError(f"{who} split node {node} into a child of {got} training row(s); the job's "
                                f"min_child_weight leaves at least {min_rows} in an honest split; refusing")


def _is_id(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool) and 0 <= int(x) < 1 << 31


def _checked_plan(plan: Any, node_rows: dict[int, np.ndarray], who: str, tag: str) -> tuple[list, list[int]]:
    """A level plan from the label holder: splits of nodes that exist into new ids, builds of existing nodes.

    A malformed one (a word where a node id belongs, an unknown node) used to end in a KeyError
    or TypeError traceback at this party.
    """
    parts = plan.get("parts", []) if isinstance(plan, dict) else None
    build = plan.get("build", []) if isinstance(plan, dict) else None
    if not isinstance(parts, list) or not isinstance(build, list) or not isinstance(plan.get("done", False), bool):
        raise ProtocolError(f"{who}: the level plan ({tag}) is malformed; refused")
    live = set(node_rows)
    out = []
    for sp in parts:
        if not (isinstance(sp, (list, tuple)) and len(sp) == 4 and all(_is_id(v) for v in sp[:3])):
            raise ProtocolError(f"{who}: a split in the level plan ({tag}) is not (node, left, right, bits); refused")
        node, lid, rid = (int(v) for v in sp[:3])
        if node not in live or lid == rid or {lid, rid} & (live - {node}):
            raise ProtocolError(f"{who}: the level plan ({tag}) splits an unknown node or reuses a node id; refused")
        live = (live - {node}) | {lid, rid}
        out.append((node, lid, rid, sp[3]))
    if not all(_is_id(b) and int(b) in live for b in build) or len(set(map(int, build))) != len(build):
        raise ProtocolError(f"{who}: the level plan ({tag}) asks for histograms of unknown or repeated nodes; refused")
    return out, [int(b) for b in build]
