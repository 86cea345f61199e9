"""Horizontal gradient-boosted trees: banks with the same columns grow one XGBoost-style model.

Every bank holds labelled rows of the same features; a coordinator that holds no data drives
the rounds and finds splits on *sums* only. Trees are grown level by level (depth-wise, binary
log-loss, the split gain and leaf weights of :mod:`fedrisk.algorithms.vertical.tree`), so the
federation learns the trees a pooled booster would grow on the same bins. ``agg`` is the job's
:class:`~fedrisk.algorithms.horizontal.aggregation.Aggregation`: secure aggregation by default
(:mod:`fedrisk.crypto.secure_aggregation`, masked, dropout-tolerant), so the coordinator opens
only the sum over banks of every vector below.

Message flow (``C`` = coordinator, ``B_k`` = bank ``k``)
---------------------------------------------------------
==  ======  =====================  ==================  ===============================================
#   dir.    tag                    kind                payload
==  ======  =====================  ==================  ===============================================
1   B -> C  ``hgb.schema``         public-parameter    feature names and monotone directions (must be
                                                       equal at every bank)
    C -> B  ``hgb.schema.ok``      control             agreed, or the difference
1b  B -> C  ``hgb.mean.*`` (agg)   masked              only under ``missing = "mean"``: an exponent sketch,
                                                       then [rows, sum x/s, non-missing count] per
                                                       feature (:func:`~fedrisk.algorithms.horizontal.
                                                       standardisation.mean_bank`)
    C -> B  ``hgb.mean.*``         aggregate           the range (``.range``), then the pooled observed
                                                       means every bank fills its blanks with (``.mean``)
2   B -> C  ``hgb.bins.*`` (agg)   masked              counts of the bank's values on a common grid
                                                       and [training rows, sum of y] (see
                                                       :mod:`fedrisk.algorithms.horizontal.federated_bins`)
    C -> B  ``hgb.bins.grid/cuts`` aggregate           grid range, then the agreed cut points (or, up
                                                       to 3 + 3 times without ``[privacy]``, a zoom request:
                                                       finer cells over a narrow column's occupied span,
                                                       e.g. birth years, or sub-cells of the cells around
                                                       the cuts' rank targets (refine), answered by
                                                       ``hgb.bins.zoomR``; the cuts are then XGBoost's
                                                       ``hist`` cuts of the pooled values)
    C -> B  ``hgb.start``          aggregate           base score (log-odds of the pooled default
                                                       rate), number of trees planned
3   C -> B  ``hgb.p<s>``           model               step ``s`` of the plan: the split decisions of
                                                       the last level (node, feature, bin, missing
                                                       side, children), which nodes to build, whether
                                                       a tree starts, restarts, ends (its nodes with
                                                       leaf weights) or training stops
    B -> C  ``hgb.a<s>`` (agg)     masked              for every node to build, the bank's sums of
                                                       ``g`` and ``h`` per (feature, bin); at a tree's
                                                       root also the previous tree's [training loss,
                                                       rows, validation loss, rows]
4   C -> B  ``hgb.model``          model               kept trees, best iteration, feature importance,
                                                       history, the coordinator's timings, privacy spent
==  ======  =====================  ==================  ===============================================

One aggregation per tree level (with ``[privacy]`` one more per tree for the leaf totals): every
node to build at a level is in the same vector, and only
the smaller child (by hessian sum) of each split is built — the coordinator gets its sibling as
parent minus child. 30 trees of depth 3 take 2 + 90 + 1 aggregations (plus the bins' zoom / refine rounds,
at most 3 + 3, counted in ``GbdtModel.binning``). Each bank checks that its
sums fit the fixed-point ring for the number of banks before anything is sent.

The task (:mod:`fedrisk.tasks.horizontal_gbdt`) uses
:class:`~fedrisk.crypto.secagg_oneshot.OneShotSessionAggregation` in session mode: a level then
costs one masked vector per bank and one plan per bank (the plain-aggregation message count),
because this trainer recovers from a dropout by restarting the tree and needs no in-round
unmasking of a survivors' sum (Bonawitz's reveal round trip). The coordinator opens exactly the
sum over the tree's banks, as before; with a bank missing it opens nothing (the sum is void, the
banks are told to ``abandon`` the session with the ``reset`` plan, the next sum sets up afresh).

What each participant learns
----------------------------
* **The coordinator** learns the feature names, the federation's counts on the binning grid (finer
  around the cut points: the refine rounds of :mod:`~fedrisk.algorithms.horizontal.federated_bins`), the
  pooled row count and default count, and per built node the *federation's* sums of ``g`` and
  ``h`` per (feature, bin) — from which it derives every split, leaf weight and the pooled
  training/validation loss. It never receives a bank's own histogram, count, row or value (a
  capture test checks that every vector it receives from a bank is masked), and with secure
  aggregation it learns which banks dropped out of a round. With ``[privacy]`` every sum it
  opens carries Gaussian noise (see below).
* Under ``missing = "mean"`` the coordinator also opens the pooled exponent sketch, sums and
  non-missing counts of every feature (never a bank's), and every participant learns the pooled means.
* **A bank** learns the cut points, the base score, and each tree as it is built (the global model
  every bank receives anyway); it never sees another bank's data or sums.

Monotone constraints (``monotone = {x = 1}`` in each bank's table, the same at every bank):
the coordinator applies XGBoost's rule while it finds splits and leaf weights (see
:mod:`fedrisk.algorithms.vertical.tree`); the directions are part of the shared schema.

Categorical columns (``categorical`` argument: level codes of levels the banks agreed first, see
:mod:`fedrisk.algorithms.horizontal.category_levels`): the schema adds each such column's level
count (public: the levels come from the job spec); every level is a bin of its own, and the
coordinator splits them by partitions with XGBoost's ``enable_categorical`` rule
(:func:`~fedrisk.algorithms.vertical.tree.best_categorical_split`), never by thresholds. A
partition split travels as a 7th element of the split entry (the level codes going left) and is
stored as ``"categories_left"`` in the node. The coordinator learns nothing beyond the summed
histograms it sees anyway (a categorical column's bins are its levels).

Differential privacy (``privacy`` argument, :mod:`fedrisk.crypto.dp`): gradients are clipped to
``|g| <= c_g = min(1, clip)`` and ``h <= c_h = min(1/4, clip)`` (log-loss already satisfies
``|g| < 1``, ``h <= 1/4``), a row changes one built node's histogram of one level by at most
``sqrt(d (c_g^2 + c_h^2))`` in L2 (plus 2 for the clipped loss sums at a root), the binning
counts by ``sqrt(d)`` (+2), and every bank adds its share of ``N(0, (noise_multiplier x
sensitivity)^2)`` to each vector before it is masked. The accountant composes every aggregation
the run may make (binning 2 + ``n_trees x (max_depth + 1)`` levels and leaf rounds + 1 loss round,
+ 2 under ``missing = "mean"``: the pooled-mean magnitude sketch, sensitivity ``sqrt(d)``, and the
``[n, sum x/s, non-missing counts]`` vector of rows clipped to the agreed ``[-s, s]``, sensitivity
``sqrt(1 + 2d)``, as in :mod:`~fedrisk.algorithms.horizontal.standardisation`; the means are
post-processing of those two noisy sums);
node totals are the mean of a node's ``d`` per-feature totals, and leaf weights come from a
leaf round of sensitivity ``sqrt(c_g^2 + c_h^2)`` rather than from a prefix sum of noisy bins.
Splits, leaves, derived siblings and early stopping are post-processing of the noisy sums.

Dropouts: a bank that drops out of a level's aggregation leaves the sums; since a sibling
derived from a parent summed over other banks would be wrong, the coordinator then restarts the
current tree from its root with the remaining banks (margins of earlier trees are unaffected),
tells the dropped bank at its next plan step (``{"stop", "excluded"}``, kind control) and still
sends it the final model. Later aggregations ask only the banks still in, with the threshold
fixed at the start from *all* banks (the secure-aggregation majority rule), so a dropout never
lowers the bar; with ``[privacy]`` a restart that would exceed the planned number of noisy sums
stops the job instead. What a restart reveals: the restarted root is summed over the survivors
while the first attempt's root (or, in Bonawitz mode, a level) was summed over all banks, on the
same gradients, so the difference is the dropped bank's root histogram of that tree. Secure
aggregation cannot hide the difference of two sums it releases; ``[privacy]`` bounds it (both
sums are noised and counted by the accountant). A bank that must not risk this should not leave
mid-tree.
"""
from __future__ import annotations

import copy
import math
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from fedrisk.algorithms.boosting_params import BoostingParams
from fedrisk.algorithms.horizontal.aggregation import AggregateResult, Aggregation, PlainAggregation
from fedrisk.algorithms.horizontal.federated_bins import (bank_agree_bins, binner_from_cuts, checked_binner,
                                                          coordinator_agree_bins)
from fedrisk.algorithms.horizontal.standardisation import fill_missing, mean_bank, mean_coordinator, schema_difference
from fedrisk.algorithms.phase_timer import PhaseTimer
from fedrisk.algorithms.vertical.binning import QuantileBinner
from fedrisk.algorithms.vertical.tree import (
    check_boosting_settings,
    UNBOUNDED,
    best_split,
    check_monotone,
    child_bounds,
    goes_left,
    leaf_weight,
    logloss_grad_hess,
    best_categorical_split,
    sigmoid,
)
from fedrisk.crypto.dp import (BankNoise, PrivacyPlan, add_distributed_noise, min_contributors, noise_rng,
                               released_noise_std)
from fedrisk.crypto.secagg_oneshot import IncompleteRound
from fedrisk.errors import ConfigError, CryptoError, DataError, ProtocolError, TransportError
from fedrisk.transport.channel import Channel
from fedrisk.transport.safe_text import safe_text
from fedrisk.transport import expect

__all__ = ["GbdtParams", "GbdtModel", "run_bank", "run_coordinator", "planned_aggregations", "TAG_PREFIXES",
           "predict_margin"]

TAG_PREFIXES = ("hgb.",)
#: per-row log-loss is clipped here (and divided by it) when differential privacy is on
LOSS_CLIP = 4.0
#: tree restarts after dropouts before the coordinator gives up on a tree
MAX_RESTARTS = 3


@dataclass(frozen=True)
class GbdtParams(BoostingParams):
    """Hyper-parameters of horizontal boosting: the names and meanings of ``vertical.secureboost``.

    Tree-growth settings (``n_trees``, ``max_depth``, ...): see
    :class:`~fedrisk.algorithms.boosting_params.BoostingParams`. Below: the ones whose meaning
    depends on rows being split across banks, and the seed.

    Parameters
    ----------
    max_bin : int
        Quantile bins per feature, agreed federatedly.
    subsample : float
        Fraction of each bank's training rows used for each tree (drawn by the bank).
    validation_fraction : float
        Fraction of each bank's rows held out for early stopping (0 = none).
    early_stopping_rounds : int
        Stop when the pooled validation log-loss has not improved for this many trees (0 = off).
    seed : int
        Seeds subsampling and the validation split (each bank mixes in its name).
    """

    seed: int = 0

    def __post_init__(self) -> None:
        check_boosting_settings(self, "horizontal.gbdt")


def planned_aggregations(params: GbdtParams, private: bool = False, pooled_mean: bool = False) -> int:
    """Aggregations a run makes at most: 2 pooled-mean rounds under ``missing = "mean"``, 2 binning
    rounds, one per tree level (plus one for the leaf totals with differential privacy), one final
    loss round. Dropout restarts add rounds, and so do bin zoom and refine rounds (at most
    ``federated_bins.MAX_ZOOM + MAX_REFINE``, never under ``[privacy]``; counted in
    ``GbdtModel.binning``); with ``[privacy]`` the coordinator refuses any beyond this count."""
    return 2 * int(pooled_mean) + 2 + params.n_trees * (params.max_depth + int(private)) + 1


@dataclass
class GbdtModel:
    """The global model, the same at every participant.

    ``trees[t]["nodes"]`` in id order: an internal node is ``{"id", "feature" (name),
    "feature_index", "bin", "threshold", "missing_left", "left", "right", "gain", "cover"}`` (a row
    goes left when ``x < threshold``, or when ``x`` is missing and ``missing_left``); a leaf is
    ``{"id", "leaf", "cover"}`` with the weight (learning rate included).
    """

    features: list[str]
    base_score: float
    trees: list[dict]
    cuts: list[list[float]]
    has_missing: list[bool]
    importance: dict[str, dict] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    best_iteration: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    rounds: int = 0
    privacy: dict | None = None
    #: ``missing = "mean"``: the pooled observed mean each feature's blanks were filled with (train and predict)
    imputation: dict[str, float] | None = None
    #: how the bins were agreed (``grid_cells``, ``occupied_cells``, ``zoom_rounds``, ``refine_rounds``): the
    #: extra aggregations beyond :func:`planned_aggregations` are its zoom and refine rounds (not saved)
    binning: dict[str, int] = field(default_factory=dict)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return predict_margin(self.base_score, self.trees, np.asarray(X, dtype=np.float64))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return sigmoid(self.decision_function(X))

    def to_json(self) -> dict:
        return {"features": self.features, "base_score": self.base_score, "trees": self.trees, "cuts": self.cuts,
                "has_missing": self.has_missing, "importance": self.importance, "history": self.history,
                "best_iteration": self.best_iteration, "privacy": self.privacy,
                **({"imputation": self.imputation} if self.imputation else {})}


def predict_margin(base: float, trees: Sequence[dict], X: np.ndarray) -> np.ndarray:
    """``base + sum of leaf weights`` for raw rows ``X`` (columns in the model's feature order)."""
    margin = np.full(len(X), float(base))
    for tree in trees:
        nodes = tree["nodes"]
        at = np.zeros(len(X), dtype=np.int64)
        for nd in nodes:  # nodes are in breadth-first id order: parents before children
            if "leaf" in nd:
                continue
            here = at == nd["id"]
            if not here.any():
                continue
            col = X[here, nd["feature_index"]]
            if "categories_left" in nd:  # a categorical split: these level codes go left
                left = np.isin(col, nd["categories_left"])
            else:
                left = col < nd["threshold"]
                if nd.get("missing_left"):
                    left |= np.isnan(col)
            at[here] = np.where(left, nd["left"], nd["right"])
        leaves = np.array([nd.get("leaf", 0.0) for nd in nodes])
        margin += leaves[at]
    return margin


def _min_contributors(agg: Aggregation, n_banks: int) -> int:
    """The fewest banks whose vectors can be in a released sum (each adds 1/t of the DP noise)."""
    return min_contributors(agg, n_banks)


def _sensitivities(d: int, clip: float | None) -> tuple[float, float]:
    """L2 sensitivity of a level's histogram vector (without and with the root's loss entries)."""
    c = 1.0 if clip is None else float(clip)
    cg, ch = min(1.0, c), min(0.25, c)
    base = d * (cg * cg + ch * ch)
    return math.sqrt(base), math.sqrt(base + 2.0)


# ---------------------------------------------------------------------------------------------
# Bank
# ---------------------------------------------------------------------------------------------
def run_bank(channel: Channel, coordinator: str, X: np.ndarray, y: np.ndarray, feature_names: Sequence[str],
             params: GbdtParams, aggregation: Aggregation | None = None, privacy: PrivacyPlan | None = None,
             n_banks: int | None = None, monotone: dict[str, int] | None = None,
             categorical: dict[str, int] | None = None, rejoining: bool = False,
             pooled_mean: bool = False) -> GbdtModel:
    """A bank's side of training. Returns the global model (identical at every bank).

    Parameters
    ----------
    X, y : numpy.ndarray
        This bank's training rows (NaN allowed in ``X``: missing values get their own bin).
    n_banks : int, optional
        Banks in the federation (for the fixed-point bound and the DP noise share); default: the
        channel's peers minus the coordinator.
    monotone : dict, optional
        Feature name -> +1 / -1 (XGBoost's monotone constraints); every bank must declare the same.
    categorical : dict, optional
        Feature name -> number of levels, for columns of agreed level codes ``0..k-1`` (see
        :mod:`fedrisk.algorithms.horizontal.category_levels`): one bin per level and partition
        splits (:func:`~fedrisk.algorithms.vertical.tree.best_categorical_split`).
    pooled_mean : bool
        ``missing = "mean"`` (the same at every participant): before the bins, the banks agree the pooled
        mean of each feature's observed values (``hgb.mean.*``, :func:`~fedrisk.algorithms.horizontal.
        standardisation.mean_bank`) and fill their blanks with it, as pooled mean imputation would.
    """
    agg = aggregation or PlainAggregation()
    me = channel.me
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, d = X.shape
    if n == 0:
        raise DataError(f"bank {me!r}: no training rows")
    if not np.all((y == 0) | (y == 1)):
        raise DataError(f"bank {me!r}: the label must be 0/1 for binary log-loss")
    inf = np.flatnonzero(np.isinf(X).any(axis=0))
    if inf.size:
        name = feature_names[int(inf[0])] if len(feature_names) == d else f"#{int(inf[0])}"
        raise DataError(f"bank {me!r}: column {name!r} has infinite values; horizontal.gbdt bins finite values and "
                        f"blanks only: leave those cells empty (missing) or cap them")
    n_banks = n_banks or max(1, len([p for p in channel.peers if p != coordinator]))
    ph = PhaseTimer()
    rng = np.random.default_rng([params.seed, zlib.crc32(me.encode())])
    val = np.zeros(n, dtype=bool)
    if params.validation_fraction > 0 and n > 1:
        val[rng.choice(n, size=max(1, int(round(params.validation_fraction * n))), replace=False)] = True
    train = np.flatnonzero(~val)
    t_contrib = _min_contributors(agg, n_banks)
    noise = noise_rng() if privacy is not None else None
    frac_bits = getattr(agg, "frac_bits", None)

    def submit(tag: str, vec: np.ndarray, sensitivity: float) -> None:
        if privacy is not None:
            vec = add_distributed_noise(vec, sensitivity, privacy.noise_multiplier, t_contrib, noise)
        if frac_bits is not None and vec.size:
            from fedrisk.crypto import ring64

            limit = ring64.max_abs_value(frac_bits, n_banks)
            big = float(np.max(np.abs(vec)))
            if big > limit:
                raise CryptoError(f"bank {me!r}: a sum for {tag!r} reaches {big:.4g}, beyond the fixed-point ring's "
                                  f"limit {limit:.4g} for {n_banks} banks at {frac_bits} fractional bits; nothing was "
                                  f"sent. Lower security.frac_bits or split the bank's rows")
        with ph("aggregation"):
            agg.submit(channel, coordinator, tag, vec)

    mono = check_monotone(monotone, list(feature_names), f"bank {me!r}")
    schema: dict[str, Any] = {"features": list(feature_names), "n_features": d}
    if mono.any():
        schema["monotone"] = mono.tolist()
    cat_idx = _categorical_index(categorical, list(feature_names), f"bank {me!r}")
    if cat_idx:
        schema["categorical"] = {str(feature_names[f]): k for f, k in cat_idx.items()}
    cpu0 = time.process_time()
    fill = None
    if rejoining:  # rejoin hook: taken back at a tree boundary (the agreed bins, base score, trees, step)
        start = channel.recv(coordinator, "hgb.rejoin")
        fill = start.get("fill")
        if fill is not None:
            X = fill_missing(X, np.asarray(fill, dtype=np.float64))
        cuts = start.get("cuts") if isinstance(start, dict) else None
        if not isinstance(cuts, list) or len(cuts) != d:
            raise ProtocolError(f"bank {me!r}: the coordinator's rejoin message (hgb.rejoin) has no cut points for "
                                f"{d} features")
        # (a categorical column's cuts are its levels, set again from the bank's own level count)
        cuts = [[] if f in cat_idx else c for f, c in enumerate(cuts)]
        binner = checked_binner(f"bank {me!r}", cuts, start.get("has_missing"), params.max_bin)
        binner = _with_category_bins(binner, cat_idx)
        bins = binner.transform(X)
    else:
        channel.send(coordinator, "hgb.schema", schema, kind="public-parameter")
        verdict = channel.recv(coordinator, "hgb.schema.ok")
        if not isinstance(verdict, dict) or not verdict.get("ok"):
            why = verdict.get("reason") if isinstance(verdict, dict) else None
            raise DataError(safe_text(why, 1000) if isinstance(why, str) and why else
                            "the coordinator refused this bank's feature schema (hgb.schema.ok)")
        if pooled_mean:
            # under [privacy] both sums carry this bank's noise share (mean_bank clips its own copy of
            # the rows to the agreed range for them); the trees see the unclipped rows, filled
            mean_noise = BankNoise(privacy, t_contrib) if privacy is not None else None
            with ph("aggregation"):
                fill, _, _ = mean_bank(channel, coordinator, X, agg, prefix="hgb.mean", pooled_mean=True,
                                       noise=mean_noise)
            X = fill_missing(X, fill)
        with ph("binning"):
            binner = bank_agree_bins(channel, coordinator, X[train], np.array([len(train), float(y[train].sum())]), submit,
                                     max_bin=params.max_bin, private=privacy is not None)
            binner = _with_category_bins(binner, cat_idx)
            bins = binner.transform(X)
        start = channel.recv(coordinator, "hgb.start")
    base = start.get("base_score") if isinstance(start, dict) else None
    if not expect.real(base, finite=True):
        raise ProtocolError(f"bank {me!r}: the coordinator's start message (hgb.start) has no finite base score")
    base = float(base)
    missing = binner.missing_bins()
    nb = binner.n_bins_
    max_b = int(nb.max()) if nb.size else 1
    valid = np.arange(max_b)[None, :] < nb[:, None]  # (d, max_b) bins that exist
    cell = bins.astype(np.int64) + (np.arange(d, dtype=np.int64) * max_b)[None, :]
    s_hist, s_root = _sensitivities(d, privacy.clip if privacy is not None else None)
    s_leaf = _sensitivities(1, privacy.clip if privacy is not None else None)[0]
    clip = privacy.clip if privacy is not None else None
    margin = np.full(n, base)
    g = h = used = None
    node_of = np.zeros(n, dtype=np.int64)
    prev_losses = None
    step = 0
    prepare = getattr(agg, "prepare", None)
    abandon = getattr(agg, "abandon", None)
    if rejoining:
        step = int(start["step"])
    while True:
        plan = channel.recv(coordinator, f"hgb.p{step}")
        _check_plan(plan, nb, f"bank {me!r}: plan step {step} from the coordinator")
        for nodes in (plan.get("resume_trees") or []) + ((start.pop("resume_trees", None) or []) if rejoining else []):
            # resume / rejoin hook: the trees built before a restart, or before this bank came back
            _check_plan({"tree_done": nodes}, nb, f"bank {me!r}: a resumed tree from the coordinator")
            margin += _route_bins(nodes, bins, missing)
        if plan.get("tree_done") is not None:
            with ph("routing"):
                leaf_of = _route_bins(plan["tree_done"], bins, missing)
                margin += leaf_of
                prev_losses = _losses(y, margin, train, val, dp=privacy is not None)
        if plan.get("stop"):
            # (with "excluded": this bank missed a sum and is out of training; the model follows)
            break
        if plan.get("new_tree"):
            t = int(plan["tree"])
            g, h = logloss_grad_hess(y, margin)
            if clip is not None:
                g, h = np.clip(g, -min(1.0, clip), min(1.0, clip)), np.minimum(h, min(0.25, clip))
            r = np.random.default_rng([params.seed, t, zlib.crc32(me.encode())])
            used = train if params.subsample >= 1 else np.sort(
                r.choice(train, size=max(1, int(round(params.subsample * len(train)))), replace=False))
        if plan.get("reset") and abandon is not None:
            abandon(channel)  # the coordinator ended the aggregation session with the failed round
        if plan.get("new_tree") or plan.get("reset"):
            node_of[:] = 0
        for sp in plan.get("splits", []):
            node, f, b, ml, lid, rid = sp[:6]
            here = node_of == node
            if len(sp) == 7:  # a categorical partition split: these levels go left
                left = np.isin(bins[here, f], sp[6])
            else:
                left = goes_left(bins[here, f], int(b), bool(ml), int(missing[f]))
            node_of[here] = np.where(left, lid, rid)
        build = [int(x) for x in plan.get("build", [])]
        tag = plan.get("tag")
        if tag is None:
            step += 1
            continue
        leaves = plan.get("leaves")
        if g is None and (build or leaves):  # a resumed job's final loss-only sum needs no gradients
            raise ProtocolError(f"bank {me!r}: plan step {step} from the coordinator asks for sums before any tree "
                                f"was started (hgb.p{step}); refusing it")
        with ph("histogram"):
            parts = [_node_histograms(cell, g, h, used, node_of, build, d * max_b, valid)] if build else []
            root = bool(plan.get("losses"))
            if root:
                parts.append(prev_losses if prev_losses is not None else np.zeros(4))
            if leaves:
                parts.append(_leaf_totals(g, h, used, node_of, [int(x) for x in leaves]))
            vec = np.concatenate(parts) if parts else np.zeros(0)
        submit(tag, vec, s_leaf if leaves else s_root if root else s_hist)
        step += 1
        if prepare is not None and plan.get("next_tag"):
            # the next aggregation's keys travel while the coordinator finds this level's splits
            prepare(channel, coordinator, plan["next_tag"])
    ph.t["train_cpu_s"] = time.process_time() - cpu0  # this process's CPU (one bank per process)
    msg = channel.recv(coordinator, "hgb.model")
    model = _model_from_message(msg, list(feature_names), binner, base)
    if fill is not None:
        model.imputation = dict(zip(map(str, feature_names), map(float, fill)))
    model.phases = {f"bank_{k}": round(v, 4) for k, v in ph.t.items()} | model.phases
    return model


#: most histogram cells one plan step may ask a bank for (8 bytes each: the codec's frame limit)
_MAX_PLAN_COUNTS = 64 << 20


def _check_plan(plan: Any, nb: np.ndarray, what: str) -> None:
    """Refuse a plan step whose fields a bank would otherwise index with blindly."""
    d = len(nb)

    def ok_split(f: Any, b: Any) -> bool:
        return expect.whole(f) and 0 <= f < d and expect.whole(b) and 0 <= b < nb[f]

    def ok_cats(f: Any, cats: Any) -> bool:
        return (expect.whole(f) and 0 <= f < d and isinstance(cats, list)
                and all(expect.whole(c) and 0 <= c < nb[f] for c in cats))

    good = isinstance(plan, dict)
    if good:
        for sp in plan.get("splits", []) or []:
            good &= (isinstance(sp, list) and len(sp) in (6, 7) and all(expect.whole(v) and v >= 0 for v in sp[:6])
                     and ok_split(sp[1], sp[2]) and (len(sp) == 6 or ok_cats(sp[1], sp[6])))
        good &= isinstance(plan.get("splits", []), list)
        for key in ("build", "leaves"):
            v = plan.get(key, [])
            good &= isinstance(v, list) and all(expect.whole(x) and x >= 0 for x in v)
        # the histograms asked for must fit one message (a crafted list of nodes would exhaust memory): the
        # cells sent (valid bins only) within the frame limit, the dense work array within 4x that
        n_build = len(plan.get("build", [])) if isinstance(plan.get("build", []), list) else _MAX_PLAN_COUNTS
        widest = int(nb.max()) if len(nb) else 1
        good &= (n_build * 2 * max(1, int(nb.sum())) <= _MAX_PLAN_COUNTS
                 and n_build * 2 * d * max(1, widest) <= 4 * _MAX_PLAN_COUNTS)
        if plan.get("new_tree"):
            good &= expect.whole(plan.get("tree")) and plan["tree"] >= 0
        good &= plan.get("tag") is None or isinstance(plan.get("tag"), str)
        tree = plan.get("tree_done")
        if tree is not None:
            good &= isinstance(tree, list) and all(
                isinstance(nd, dict) and expect.whole(nd.get("id")) and 0 <= nd["id"] < len(tree) and (
                    (isinstance(nd.get("leaf"), (int, float)) and math.isfinite(nd["leaf"])) if "leaf" in nd else
                    (ok_cats(nd.get("feature_index"), nd["categories_left"]) if "categories_left" in nd
                     else ok_split(nd.get("feature_index"), nd.get("bin")))
                    and expect.whole(nd.get("left")) and expect.whole(nd.get("right"))
                    and nd["id"] < nd["left"] < len(tree) and nd["id"] < nd["right"] < len(tree))
                for nd in tree)
    if not good:
        raise ProtocolError(f"{what} is malformed; refusing it")


def _losses(y: np.ndarray, margin: np.ndarray, train: np.ndarray, val: np.ndarray, dp: bool) -> np.ndarray:
    """[training log-loss sum, rows, validation log-loss sum, rows]; under DP clipped and scaled to [0, 1]."""
    loss = np.logaddexp(0.0, margin) - y * margin
    if dp:
        loss = np.minimum(loss, LOSS_CLIP) / LOSS_CLIP
    return np.array([loss[train].sum(), len(train), loss[val].sum(), int(val.sum())], dtype=np.float64)


def _leaf_totals(g: np.ndarray, h: np.ndarray, used: np.ndarray, node_of: np.ndarray, leaves: list[int]) -> np.ndarray:
    """[sum g, sum h] of the used rows in each leaf, in ``leaves`` order."""
    size = int(max(node_of.max(), max(leaves))) + 1
    sg = np.bincount(node_of[used], weights=g[used], minlength=size)
    sh = np.bincount(node_of[used], weights=h[used], minlength=size)
    return np.column_stack([sg[leaves], sh[leaves]]).ravel()


def _node_histograms(cell: np.ndarray, g: np.ndarray, h: np.ndarray, used: np.ndarray, node_of: np.ndarray,
                     build: list[int], per_node_cells: int, valid: np.ndarray) -> np.ndarray:
    """Sums of ``g``, ``h`` per (node of ``build``, feature, existing bin), flattened in that order.

    ``cell[i, f] = f * max_b + bin`` is precomputed once per bank, so a level costs one gather
    and two ``bincount`` passes over (rows of the built nodes) x features.
    """
    lookup = np.full(int(max(node_of.max(), max(build))) + 1, -1, dtype=np.int64)
    lookup[build] = np.arange(len(build))
    slot = lookup[node_of[used]]
    keep = slot >= 0
    rows, slot = used[keep], slot[keep]
    k, d = len(build), cell.shape[1]
    idx = (cell[rows] + (slot * per_node_cells)[:, None]).ravel()
    size = k * per_node_cells
    hg = np.bincount(idx, weights=np.broadcast_to(g[rows][:, None], (len(rows), d)).ravel(), minlength=size)
    hh = np.bincount(idx, weights=np.broadcast_to(h[rows][:, None], (len(rows), d)).ravel(), minlength=size)
    hg, hh = hg.reshape(k, d, -1), hh.reshape(k, d, -1)
    return np.stack([hg[:, valid], hh[:, valid]], axis=-1).ravel()


def _route_bins(nodes: list, bins: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """Leaf weight of every row of one finished tree, routed on the agreed bins."""
    at = np.zeros(len(bins), dtype=np.int64)
    weights = np.zeros(len(nodes))
    for nd in nodes:
        if "leaf" in nd:
            weights[nd["id"]] = float(nd["leaf"])
            continue
        here = at == nd["id"]
        f = int(nd["feature_index"])
        if "categories_left" in nd:
            left = np.isin(bins[here, f], nd["categories_left"])
        else:
            left = goes_left(bins[here, f], int(nd["bin"]), bool(nd.get("missing_left")), int(missing[f]))
        at[here] = np.where(left, nd["left"], nd["right"])
    return weights[at]


def _categorical_index(categorical: dict[str, int] | None, names: list[str], who: str) -> dict[int, int]:
    """Feature index -> level count of the categorical columns."""
    out = {}
    for name, k in (categorical or {}).items():
        if name not in names:
            raise DataError(f"{who}: categorical column {name!r} is not one of the features")
        if not 1 <= int(k) <= 255:
            raise DataError(f"{who}: categorical column {name!r} has {k} levels; trees take 1 to 255")
        out[names.index(name)] = int(k)
    return out


def _with_category_bins(binner: QuantileBinner, cat_idx: dict[int, int]) -> QuantileBinner:
    """The agreed binner with one bin per level for categorical columns (codes ``0..k-1``, never missing)."""
    if not cat_idx:
        return binner
    cuts = [np.asarray(c, dtype=np.float64) for c in binner.cuts_]
    has_missing = np.asarray(binner.has_missing_, dtype=bool).copy()
    for f, k in cat_idx.items():
        cuts[f] = np.arange(k - 1, dtype=np.float64) + 0.5
        has_missing[f] = False
    return binner_from_cuts(binner.max_bin, cuts, has_missing)


def _model_from_message(msg: Any, names: list[str], binner: QuantileBinner, base: float) -> GbdtModel:
    if not isinstance(msg, dict) or not isinstance(msg.get("trees"), list):
        raise ProtocolError("the coordinator's final model is malformed")
    return GbdtModel(names, base, msg["trees"], [c.tolist() for c in binner.cuts_], binner.has_missing_.tolist(),
                     dict(msg.get("importance") or {}), list(msg.get("history") or []), int(msg.get("best_iteration", 0)),
                     dict(msg.get("phases") or {}), int(msg.get("rounds", 0)), msg.get("privacy"),
                     binning={str(k): int(v) for k, v in (msg.get("binning") or {}).items() if expect.whole(v)})


# ---------------------------------------------------------------------------------------------
# Coordinator
# ---------------------------------------------------------------------------------------------
class _ConcurrentSends:
    """The coordinator's channel with ``send`` handed to a small pool of sender threads.

    Messages are matched by ``(sender, tag)`` at the receiver, so their arrival order does not
    matter; a failed delivery is raised at the next ``send``/``recv``/``flush`` (the protocol then
    fails as it would have on the spot). Everything else is the wrapped channel's.
    """

    def __init__(self, inner: Channel, workers: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._inner = inner
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=f"{inner.me}-send")
        self._pending: list = []
        self._error: BaseException | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _reap(self, wait: bool = False) -> None:
        keep = []
        for f in self._pending:
            if wait or f.done():
                e = f.exception()
                if e is not None and self._error is None:
                    self._error = e
            else:
                keep.append(f)
        self._pending = keep
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def send(self, to: str, tag: str, obj: Any, *, kind: str) -> int:
        self._reap()
        self._pending.append(self._pool.submit(self._inner.send, to, tag, obj, kind=kind))
        return 0

    def send_tolerant(self, to: str, tag: str, obj: Any, kind: str, on_fail: Callable[[str], None]) -> None:
        """Queue a send whose transport failure only calls ``on_fail(to)`` (the bank is gone)."""
        def attempt() -> None:
            try:
                self._inner.send(to, tag, obj, kind=kind)
            except TransportError:
                on_fail(to)

        self._reap()
        self._pending.append(self._pool.submit(attempt))

    def recv(self, frm: str, tag: str, timeout: float | None = None) -> Any:
        self._reap()
        return self._inner.recv(frm, tag, timeout)

    def broadcast(self, to, tag: str, obj: Any, *, kind: str) -> int:
        for p in to:
            self.send(p, tag, obj, kind=kind)
        return 0

    def flush(self) -> None:
        """Wait for every queued send; raise the first failure."""
        try:
            self._reap(wait=True)
        finally:
            self._pool.shutdown(wait=True)


class _Level:
    """Nodes of the current level: totals and (derived or summed) histograms, by node id."""

    def __init__(self) -> None:
        self.G: dict[int, float] = {}
        self.H: dict[int, float] = {}
        self.hist: dict[int, np.ndarray] = {}


def run_coordinator(channel: Channel, banks: Sequence[str], params: GbdtParams, aggregation: Aggregation | None = None,
                    privacy: PrivacyPlan | None = None, on_tree: Callable[[int, dict], None] | None = None,
                    log: Callable[[str], None] | None = None, start: dict | None = None,
                    checkpoint: Callable[[int, dict], None] | None = None,
                    admit: Callable[[str, int], bool] | None = None, pooled_mean: bool = False) -> GbdtModel:
    """The coordinator's side: agree bins, then grow every tree on secure sums; returns the model.

    ``pooled_mean``: first agree the pooled means the banks fill blanks with (see :func:`run_bank`);
    under ``privacy`` two noisy sums of the plan (``planned_aggregations(..., pooled_mean=True)``).

    Resume hooks (the runtime owns the files): ``checkpoint(t, state)`` after tree ``t``; ``start``
    is such a state: the bins are agreed again (the same without DP), the banks get the earlier
    trees in the first plan (``resume_trees``) and the job goes on from tree ``t``.
    """
    agg = aggregation or PlainAggregation()
    banks = sorted(banks)
    tp = params.tree
    ph = PhaseTimer()
    t_start, cpu_start = time.perf_counter(), time.process_time()
    rounds = 0
    say = log or (lambda s: None)
    reachable = set(banks)

    # every send of the coordinator (its own plans and secure aggregation's steps) leaves on a
    # sender thread: a broadcast to n banks costs one round trip instead of n in a row
    channel = _ConcurrentSends(channel, 2 * len(banks))
    # the bins need every bank: one that dies before they are agreed stops the job within the
    # dropout timeout (named), not after the whole receive timeout
    channel.watch(banks, send_timeout=float(getattr(agg, "dropout_timeout", 10.0)))

    def send_all(tag: str, obj: Any, kind: str, to: Sequence[str] | None = None) -> None:
        with ph("network"):
            for b in (banks if to is None else to):
                if b in reachable:
                    channel.send_tolerant(b, tag, obj, kind, on_fail=unreachable)

    def unreachable(b: str) -> None:
        reachable.discard(b)
        say(f"bank {b!r} cannot be reached any more; continuing without it")

    if getattr(agg, "threshold", False) is None:
        # the threshold of *all* banks, fixed now: later rounds aggregate over the banks still in
        # (asking a dropped bank every round would cost a timeout each), and must not let a
        # shrunken list lower the bar (the banks would refuse it anyway)
        from fedrisk.crypto.secure_aggregation import default_threshold

        agg = copy.copy(agg)
        agg.threshold = default_threshold(len(banks))

    def collect(tag: str, length: int, over: Sequence[str] | None = None):
        nonlocal rounds
        if privacy is not None and rounds + 1 > privacy.mechanisms:
            raise ProtocolError(f"aggregation {rounds + 1} would exceed the {privacy.mechanisms} noisy sums the privacy "
                                f"budget (epsilon = {privacy.epsilon:.3g}) was calibrated for (dropout restarts); stopping")
        rounds += 1
        with ph("aggregation"):
            try:
                res = agg.collect(channel, sorted(over) if over is not None else banks, tag, length)
            except IncompleteRound as e:
                # one-shot masking: a missing bank voids the whole sum (no survivor sum exists)
                res = AggregateResult(None, e.contributors)
        return res

    def collect_all(tag: str, length: int) -> np.ndarray:
        res = collect(tag, length)
        missing = sorted(set(banks) - set(res.contributors))
        if missing or res.total is None:
            raise ProtocolError(f"banks {missing} dropped out while the federation agreed its bins ({tag}); "
                                f"restart the job when they are back")
        return res.total

    # 1. schema (the training clock starts once every bank has loaded its data and said so)
    schemas = {b: channel.recv(b, "hgb.schema") for b in banks}
    t_start, cpu_start = time.perf_counter(), time.process_time()
    names = schemas[banks[0]].get("features") if isinstance(schemas[banks[0]], dict) else None
    reason = None
    for b in banks[1:]:
        other = schemas[b].get("features") if isinstance(schemas[b], dict) else None
        if other != names:
            if isinstance(names, list) and isinstance(other, list) and len(names) == len(other) \
                    and set(map(str, names)) == set(map(str, other)):  # the message horizontal.lr gives
                reason = schema_difference(banks[0], [str(n) for n in names], b, [str(n) for n in other])
                break
            only_a = sorted(set(names or []) - set(other or []))[:5]
            only_b = sorted(set(other or []) - set(names or []))[:5]
            reason = (f"banks {banks[0]!r} and {b!r} have different feature columns (only at {banks[0]!r}: {only_a}, "
                      f"only at {b!r}: {only_b}); every bank must list the same columns")
            break
    monos = {b: schemas[b].get("monotone") if isinstance(schemas[b], dict) else None for b in banks}
    if reason is None and len({str(m) for m in monos.values()}) > 1:
        reason = ("the banks declare different monotone constraints "
                  "(" + ", ".join(f"{b}: {monos[b] or 'none'}" for b in banks) + "); every bank must set the same monotone table")
    cats = {b: (schemas[b].get("categorical") if isinstance(schemas[b], dict) else None) or {} for b in banks}
    if reason is None and len({str(sorted(c.items())) for c in cats.values()}) > 1:
        reason = "the banks encode different categorical columns or level counts; every bank must use the agreed levels"
    send_all("hgb.schema.ok", {"ok": reason is None, "reason": reason or ""}, "control")
    if reason:
        raise DataError(reason)
    d = len(names)
    mono = np.asarray(monos[banks[0]] or [0] * d, dtype=np.int64)
    if mono.shape != (d,) or not np.all(np.isin(mono, (-1, 0, 1))):
        raise ProtocolError("the banks' monotone directions are not one of -1, 0, 1 per feature")
    mono_arg = mono if mono.any() else None
    cat_idx = _categorical_index(cats[banks[0]], list(names), "coordinator")
    bounds: dict[int, tuple[float, float]] = {}  # node -> weight bounds (monotone constraints only)

    # 2. bins and base score
    clip = privacy.clip if privacy is not None else None

    def noise_std(sensitivity: float) -> float:
        # the noise an opened sum of every bank carries (each adds 1/t of the calibrated variance):
        # the tests "occupied above k sigma" of the ranges and the bins are calibrated against it
        return 0.0 if privacy is None else released_noise_std(privacy.noise_multiplier, sensitivity, len(banks),
                                                              _min_contributors(agg, len(banks)))

    fill = None
    if pooled_mean:
        # two sums (the magnitude sketch, then [n, sum x/s, non-missing counts]); under [privacy] two
        # Gaussian mechanisms of the plan (planned_aggregations(..., pooled_mean=True)), opened noisy
        fill, _, _ = mean_coordinator(channel, banks, agg, list(names), prefix="hgb.mean", pooled_mean=True,
                                      collect=collect_all, noise_std=noise_std if privacy is not None else None)
    with ph("binning"):
        binner, extra, bin_info = coordinator_agree_bins(channel, banks, d, 2, params.max_bin, collect_all, noise_std)
        binner = _with_category_bins(binner, cat_idx)
    n_rows, n_pos = float(extra[0]), float(extra[1])
    # every bank took part in the bins; from here on a bank that dies or is cut off is that bank's
    # dropout (sends to it fail within the dropout timeout, receives from it at once), not the job's
    channel.tolerate_dropouts(banks, send_timeout=float(getattr(agg, "dropout_timeout", 10.0)))
    if n_rows < 2:
        raise ProtocolError("the banks' pooled training row count is below 2; nothing to train on")
    rate = float(np.clip(n_pos / n_rows, 1e-6, 1 - 1e-6))
    if privacy is None and not 0 < n_pos < n_rows:
        raise DataError("the pooled training rows hold only one class; both defaults and non-defaults are needed")
    base = float(np.log(rate / (1 - rate)))
    send_all("hgb.start", {"base_score": base, "n_trees": params.n_trees}, "aggregate")
    nb = binner.n_bins_
    missing = binner.missing_bins()
    max_b = int(nb.max()) if nb.size else 1
    valid = np.arange(max_b)[None, :] < nb[:, None]
    per_node = 2 * int(nb.sum())
    nb_thresholds = nb.copy()  # categorical columns split by partitions only, never by thresholds
    nb_thresholds[list(cat_idx)] = 1
    s_hist, s_root = _sensitivities(d, clip)
    loss_scale = LOSS_CLIP if privacy is not None else 1.0

    step = 0
    trees: list[dict] = []
    history: list[dict] = []
    best_loss, best_it = np.inf, 0
    members = set(banks)
    pending: dict[str, Any] = {"new_tree": True, "tree": 0}
    stop = False

    def plan(msg: dict) -> None:
        nonlocal step
        send_all(f"hgb.p{step}", msg, "model", to=sorted(members))
        step += 1

    def record_losses(t_done: int, losses: np.ndarray) -> bool:
        """History of tree ``t_done`` (1-based); True when early stopping says stop."""
        nonlocal best_loss, best_it
        tr_sum, tr_n, va_sum, va_n = losses
        rec: dict[str, Any] = {"tree": t_done, "train_loss": float(tr_sum * loss_scale / max(tr_n, 1.0))}
        stop_now = False
        if params.validation_fraction > 0 and va_n > 0.5:
            rec["val_loss"] = float(va_sum * loss_scale / max(va_n, 1.0))
            if rec["val_loss"] < best_loss - 1e-9:
                best_loss, best_it = rec["val_loss"], t_done
            elif params.early_stopping_rounds and t_done - best_it >= params.early_stopping_rounds:
                stop_now = True
        else:
            best_it = t_done
        rec["banks"] = len(members)
        rec["contributors"] = sorted(members)  # who is in this tree's sums (log and metrics.json)
        history.append(rec)
        if on_tree is not None:
            on_tree(t_done, rec)
        return stop_now

    def dropped_out(got: set[str]) -> None:
        """Banks left the current tree's sums: they are out of training, the tree starts over."""
        nonlocal members, restarts
        say(f"tree {t + 1}: banks {sorted(members - got)} dropped out; restarting the tree with {sorted(got)}")
        # a bank left out of a sum is out of training: told so at its next step, it waits
        # for the final model instead of contributing to sums its absence made inconsistent
        send_all(f"hgb.p{step}", {"stop": True, "excluded": True}, "control", to=sorted(members - got))
        members = got
        restarts += 1
        if restarts > MAX_RESTARTS:
            raise ProtocolError(f"tree {t + 1}: the banks in the sums changed {restarts} times; "
                                f"the federation is unstable, stopping")

    def _private_leaves(tree_nodes: list[dict], splits_msg: list[list]) -> set[str] | None:
        """Under DP, leaf totals from one more small sum (sensitivity sqrt(c_g^2 + c_h^2), not a
        prefix sum over many noisy bins): one noisy (G, H) pair per leaf."""
        leaves = [nd["id"] for nd in tree_nodes if "leaf" in nd]
        tag = f"hgb.a{step}"
        plan({"tree": t, "splits": splits_msg, "build": [], "leaves": leaves, "tag": tag, "losses": False,
              "next_tag": f"hgb.a{step + 1}"})
        res = collect(tag, 2 * len(leaves), members)
        if res.total is None or set(res.contributors) != members:
            return set(res.contributors)
        tot = res.total.reshape(-1, 2)
        for node, (G, H) in zip(leaves, tot):
            H = max(float(H), 0.0)
            tree_nodes[node] = {"id": node, "leaf": leaf_weight(float(G), H, tp, bounds.get(node, UNBOUNDED)), "cover": H}
        return None

    t = 0
    if start is not None:  # resume hook: the coordinator's state after tree start["t"]
        trees, history, best_loss, best_it, t, rounds = (start[k] for k in (
            "trees", "history", "best_loss", "best_it", "t", "rounds"))
        pending = {"resume_trees": [tr["nodes"] for tr in trees[:-1]], "tree_done": trees[-1]["nodes"],
                   "new_tree": True, "tree": t}
    while t < params.n_trees and not stop:
        for b in sorted(set(banks) - members) if admit is not None and privacy is None else []:
            if admit(b, t):  # rejoin hook: a dropped bank that restarted comes back at this tree boundary
                channel.mark_up(b)
                members.add(b)
                reachable.add(b)
                send_all("hgb.rejoin", {"cuts": [c.tolist() for c in binner.cuts_], "has_missing": binner.has_missing_,
                                        "base_score": base, "n_trees": params.n_trees, "step": step,
                                        "resume_trees": [tr["nodes"] for tr in trees[:-1]],
                                        **({"fill": fill} if fill is not None else {})}, "model", to=[b])
                say(f"tree {t + 1}: bank {b!r} rejoined; continuing with {sorted(members)}")
        restarts = 0
        tree_nodes: list[dict] = [{"id": 0}]
        bounds.clear()  # (children get theirs when created, so a restart needs no reset)
        level_ids = [0]
        prev = _Level()
        depth = 0
        build = [0]
        derive: list[tuple[int, int, int]] = []
        splits_msg: list[list] = []
        first = True
        losses_done = False
        while True:
            tag = f"hgb.a{step}"
            msg = dict(pending) if first else {}
            pending = {}
            msg.update({"tree": t, "splits": splits_msg, "build": build, "tag": tag, "losses": depth == 0})
            msg["next_tag"] = f"hgb.a{step + 1}"
            plan(msg)
            first = False
            length = len(build) * per_node + (4 if depth == 0 else 0)
            res = collect(tag, length, members)
            got = set(res.contributors)
            total = res.total
            void = total is None  # one-shot masking: nothing opened, the level is asked again
            if depth == 0 and not void:
                losses = total[len(build) * per_node:]
                if t > 0 and not losses_done:
                    losses_done = True
                    if record_losses(t, losses):
                        stop = True
                        break
                total = total[:len(build) * per_node]
            if got != members or void:
                dropped_out(got)
                if depth > 0 or void:
                    tree_nodes, level_ids, prev, depth, build, derive, splits_msg = [{"id": 0}], [0], _Level(), 0, [0], [], []
                    pending = {"reset": True}
                    first = True
                    continue
            with ph("split_finding"):
                cur = _Level()
                for k, node in enumerate(build):
                    flat = total[k * per_node:(k + 1) * per_node].reshape(-1, 2)
                    hist = np.zeros((d, max_b, 2))
                    hist[valid] = flat
                    cur.hist[node] = hist
                for node, sib, parent in derive:
                    cur.hist[node] = prev.hist[parent] - cur.hist[sib]
                if depth == 0:
                    sums = cur.hist[0].sum(axis=1)  # (d, 2): every feature's total; averaged
                    prev.G[0], prev.H[0] = float(sums[:, 0].mean()), float(max(sums[:, 1].mean(), 0.0))
                for node in level_ids:
                    cur.G[node], cur.H[node] = prev.G[node], prev.H[node]
                if privacy is not None:
                    # a node's own histogram holds d noisy estimates of its totals; their mean is far
                    # less noisy than the parent's prefix sum over many noisy bins
                    for node, hist in cur.hist.items():
                        tot = hist.sum(axis=1)
                        cur.G[node], cur.H[node] = float(tot[:, 0].mean()), float(max(tot[:, 1].mean(), 0.0))
                decided: dict[int, tuple] = {}
                for node in level_ids:
                    if node not in cur.hist or cur.H[node] < 2 * tp.min_child_weight:
                        continue
                    s = best_split(cur.hist[node], nb_thresholds, cur.G[node], cur.H[node], tp, missing, mono_arg,
                                   bounds.get(node, UNBOUNDED))
                    for f, k in cat_idx.items():
                        c = best_categorical_split(cur.hist[node][f], k, cur.G[node], cur.H[node], tp)
                        if c is not None and (s is None or c[0] > s[0] + 1e-12):
                            s = (c[0], f, 0, c[2], c[3], False, c[1])
                    if s is not None:
                        decided[node] = s
                splits_msg = []
                new_ids: list[int] = []
                nxt = _Level()
                for node in level_ids:
                    if node not in decided:
                        continue
                    gain, f, b, GL, HL, ml = decided[node][:6]
                    left_cats = decided[node][6] if len(decided[node]) == 7 else None
                    lid, rid = len(tree_nodes), len(tree_nodes) + 1
                    if left_cats is not None:
                        tree_nodes[node] = {"id": node, "feature": names[f], "feature_index": int(f),
                                            "categories_left": [int(c) for c in left_cats],
                                            "left": lid, "right": rid, "gain": float(gain), "cover": cur.H[node]}
                    else:
                        tree_nodes[node] = {"id": node, "feature": names[f], "feature_index": int(f), "bin": int(b),
                                            "threshold": binner.threshold(f, b), "missing_left": bool(ml),
                                            "left": lid, "right": rid, "gain": float(gain), "cover": cur.H[node]}
                    tree_nodes += [{"id": lid}, {"id": rid}]
                    # (under DP noisy sums may dip below 0; a hessian sum never does)
                    nxt.G[lid], nxt.H[lid] = GL, max(HL, 0.0)
                    nxt.G[rid], nxt.H[rid] = cur.G[node] - GL, max(cur.H[node] - HL, 0.0)
                    if mono_arg is not None:
                        bounds[lid], bounds[rid] = child_bounds(bounds.get(node, UNBOUNDED), int(mono[f]), GL, HL,
                                                                cur.G[node] - GL, cur.H[node] - HL, tp)
                    splits_msg.append([node, int(f), int(b), int(ml), lid, rid]
                                      + ([[int(c) for c in left_cats]] if left_cats is not None else []))
                    new_ids += [lid, rid]
                # leaves of this level (not split) keep their totals
                for node in level_ids:
                    if node not in decided:
                        tree_nodes[node] = {"id": node, "leaf": leaf_weight(cur.G[node], cur.H[node], tp,
                                                                            bounds.get(node, UNBOUNDED)),
                                            "cover": cur.H[node]}
                depth += 1
                want = [nd for nd in new_ids if depth < tp.max_depth and nxt.H[nd] >= 2 * tp.min_child_weight]
                build, derive = [], []
                wanted = set(want)
                for i in range(0, len(new_ids), 2):
                    a, b2 = new_ids[i], new_ids[i + 1]
                    if a in wanted or b2 in wanted:
                        small, big = (a, b2) if nxt.H[a] <= nxt.H[b2] else (b2, a)
                        build.append(small)
                        if big in wanted:
                            derive.append((big, small, [n for n in level_ids if n in decided][i // 2]))
                nxt.hist = cur.hist
            if not build:
                for node in new_ids:
                    tree_nodes[node] = {"id": node, "leaf": leaf_weight(nxt.G[node], nxt.H[node], tp,
                                                                        bounds.get(node, UNBOUNDED)), "cover": nxt.H[node]}
                if privacy is not None:
                    got = _private_leaves(tree_nodes, splits_msg)
                    if got is not None:
                        dropped_out(got)
                        tree_nodes, level_ids, prev, depth, build, derive, splits_msg = [{"id": 0}], [0], _Level(), 0, [0], [], []
                        pending = {"reset": True}
                        first = True
                        continue
                break
            prev = nxt
            level_ids = new_ids
        if stop:
            break
        trees.append({"nodes": tree_nodes})
        pending = {"tree_done": tree_nodes, "new_tree": True, "tree": t + 1}
        t += 1
        if checkpoint is not None:
            checkpoint(t, {"t": t, "trees": trees, "history": history, "best_loss": best_loss, "best_it": best_it,
                           "rounds": rounds})
    if not stop:
        # the last tree's losses: one small aggregation
        tag = f"hgb.a{step}"
        plan({**pending, "new_tree": False, "build": [], "tag": tag, "losses": True, "splits": []})
        res = collect(tag, 4, members)
        if res.total is not None:
            record_losses(t, res.total)
        else:
            say(f"banks {sorted(members - set(res.contributors))} dropped out of the last loss sum; its history entry is left out")
        pending = {}
    plan({**({k: v for k, v in pending.items() if k == "tree_done"}), "stop": True})
    kept = trees[:best_it] if best_it else trees
    importance = _importance(kept)
    phases = {k: round(v, 4) for k, v in ph.t.items()}
    phases["train_s"] = round(time.perf_counter() - t_start, 4)
    phases["train_cpu_s"] = round(time.process_time() - cpu_start, 4)
    priv = privacy.summary(rounds) if privacy is not None else None
    model = GbdtModel(names, base, kept, [c.tolist() for c in binner.cuts_], binner.has_missing_.tolist(), importance,
                      history, best_it or len(trees), phases, rounds, priv,
                      dict(zip(map(str, names), map(float, fill))) if fill is not None else None, dict(bin_info))
    send_all("hgb.model", {"trees": kept, "importance": importance, "history": history,
                           "best_iteration": model.best_iteration, "phases": phases, "rounds": rounds,
                           "privacy": priv, "binning": bin_info}, "model")
    channel.flush()
    return model


def _importance(trees: list[dict]) -> dict[str, dict]:
    """Split counts and total gain per feature over the kept trees (XGBoost's "weight" and "total_gain")."""
    out: dict[str, dict] = {}
    for tr in trees:
        for nd in tr["nodes"]:
            if "feature" in nd:
                b = out.setdefault(nd["feature"], {"splits": 0, "gain": 0.0})
                b["splits"] += 1
                b["gain"] += float(nd["gain"])
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["gain"]))
