"""Gradient-boosted tree math shared by SecureBoost's label holder and the plaintext reference.

Everything here is local and plaintext: gradient statistics of binary log-loss, histograms of
``(g, h)`` per bin, the XGBoost split gain and leaf weights, and a level-wise reference booster
(:func:`fit_reference`) on pooled binned data that the federated protocol must reproduce.

Split gain (Chen & Guestrin 2016, as XGBoost computes ``loss_chg``)::

    gain = GL^2 / (HL + lambda) + GR^2 / (HR + lambda) - G^2 / (H + lambda)

A split is allowed when ``HL >= min_child_weight``, ``HR >= min_child_weight`` and
``gain > max(min_split_gain, 1e-6)``. Leaf weight: ``-learning_rate * G / (H + lambda)``.

Missing values: a feature whose last bin holds its missing values (``missing[f] = n_bins[f] - 1``,
see :mod:`fedrisk.algorithms.vertical.binning`) is split like XGBoost's sparsity-aware search
does: every threshold over the present values is tried with the missing bin on the right and on
the left, plus "present left, missing right"; the split records the side (:func:`goes_left`).

Monotone constraints (XGBoost's ``monotone_constraints``): ``monotone[f] = +1`` asks the score to
be non-decreasing in feature ``f`` (bins are ordered by value, so "left" holds the lower values),
``-1`` non-increasing, ``0`` free. As XGBoost does, every node carries bounds ``[lower, upper]``
on its (unshrunk) weight ``-G / (H + lambda)``; child weights are clipped to the node's bounds, the
gain is computed with the clipped weights, a split on a constrained feature whose clipped child
weights go the wrong way is rejected, and its children's bounds meet at the mean of the two child
weights (:func:`child_bounds`); leaf weights are clipped to their bounds (:func:`leaf_weight`).
Any two rows that differ only in a constrained feature then part at a split on it into subtrees
whose weights are ordered, so their scores are too. Without constraints nothing changes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "TreeParams",
    "check_boosting_settings",
    "Split",
    "logloss_grad_hess",
    "sigmoid",
    "histogram",
    "best_split",
    "best_categorical_split",
    "goes_left",
    "leaf_weight",
    "child_bounds",
    "check_monotone",
    "UNBOUNDED",
    "base_score",
    "fit_reference",
    "predict_reference",
]

MIN_GAIN_EPS = 1e-6
#: the weight bounds of a node no monotone split has constrained
UNBOUNDED = (-np.inf, np.inf)


@dataclass(frozen=True)
class TreeParams:
    """The tree-growth hyper-parameters the split search needs."""

    max_depth: int = 3
    learning_rate: float = 0.3
    min_child_weight: float = 1.0
    reg_lambda: float = 1.0
    min_split_gain: float = 0.0


@dataclass
class Split:
    """The best split of one node, as the label holder sees it (``bin`` only for the owner)."""

    gain: float
    party: str
    feature: int
    bin: int
    left_g: float = 0.0
    left_h: float = 0.0


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def logloss_grad_hess(y: np.ndarray, margin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and second derivative of binary log-loss at ``margin``: ``g = p - y``, ``h = p (1 - p)``."""
    p = sigmoid(margin)
    return p - y, p * (1.0 - p)


def base_score(y: np.ndarray) -> float:
    """Initial margin: the log-odds of the training default rate."""
    m = float(np.clip(np.mean(y), 1e-6, 1 - 1e-6))
    return float(np.log(m / (1.0 - m)))


def histogram(bins: np.ndarray, g: np.ndarray, h: np.ndarray, n_bins: int) -> np.ndarray:
    """Sums of ``g`` and ``h`` per (feature, bin): array ``(n_features, n_bins, 2)``.

    ``bins`` is ``(n_rows, n_features)`` (already restricted to the node's rows).
    """
    n, f = bins.shape
    idx = (bins.astype(np.int64) + np.arange(f, dtype=np.int64) * n_bins).ravel()
    out = np.empty((f, n_bins, 2))
    out[:, :, 0] = np.bincount(idx, weights=np.repeat(g, f), minlength=f * n_bins).reshape(f, n_bins)
    out[:, :, 1] = np.bincount(idx, weights=np.repeat(h, f), minlength=f * n_bins).reshape(f, n_bins)
    return out


def column_histogram(bins_t: np.ndarray, rows: np.ndarray, g: np.ndarray, h: np.ndarray, n_bins: int) -> np.ndarray:
    """:func:`histogram` of ``rows`` read from column-major bins ``bins_t`` (``(n_features, n_all_rows)``).

    The same array bit for bit (each bin adds the same values in the same row order), about twice
    as fast on large nodes: one contiguous gather and two ``bincount`` per column, instead of a
    ``(rows x features)`` index and repeated weights.
    """
    f = bins_t.shape[0]
    gr, hr = g[rows], h[rows]
    out = np.empty((f, n_bins, 2))
    for j in range(f):
        col = bins_t[j][rows]
        out[j, :, 0] = np.bincount(col, weights=gr, minlength=n_bins)
        out[j, :, 1] = np.bincount(col, weights=hr, minlength=n_bins)
    return out


def _score(g: np.ndarray, h: np.ndarray, lam: float) -> np.ndarray:
    return g * g / (h + lam)


def _weight(g: np.ndarray, h: np.ndarray, lam: float, lo: float, hi: float) -> np.ndarray:
    """Unshrunk leaf weight ``-g / (h + lambda)`` clipped to ``[lo, hi]`` (0 on an empty side)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(h + lam > 0, -g / np.where(h + lam > 0, h + lam, 1.0), 0.0)
    return np.clip(w, lo, hi)


def _score_at(g: np.ndarray, h: np.ndarray, w: np.ndarray, lam: float) -> np.ndarray:
    """Loss reduction of weight ``w`` (XGBoost's ``CalcGainGivenWeight``); ``g^2/(h+lambda)`` at the optimum."""
    return -(2.0 * g * w + (h + lam) * w * w)


def best_split(hist: np.ndarray, n_bins: np.ndarray, G: float, H: float, params: TreeParams,
               missing: np.ndarray | None = None, monotone: np.ndarray | None = None,
               bounds: tuple[float, float] = UNBOUNDED) -> tuple[float, int, int, float, float, bool] | None:
    """Best ``(gain, feature, bin, GL, HL, missing_left)`` of one party's histogram, or ``None``.

    Parameters
    ----------
    hist : numpy.ndarray
        ``(n_features, max_bins, 2)`` sums of ``(g, h)``; bins past ``n_bins[f]`` are zero.
    n_bins : numpy.ndarray
        Bins actually used per feature; a split after the last bin is not a split.
    G, H : float
        Node totals (the same for every party; taken from the label holder's exact sums).
    missing : numpy.ndarray, optional
        Per feature, the index of its missing bin (always its last bin) or -1; default: none.
        ``missing_left`` says where that bin goes (``False`` for features without one).
    monotone : numpy.ndarray, optional
        Per feature, +1 / -1 / 0 (see the module docstring). When any is non-zero the gains use
        weights clipped to ``bounds`` and splits violating a direction are rejected.
    bounds : tuple of float
        The node's ``[lower, upper]`` bounds on its unshrunk weight (from :func:`child_bounds`).
    """
    if hist.size == 0 or hist.shape[1] < 2:  # no feature with two bins (every column constant): no split
        return None
    lam = params.reg_lambda
    nb = np.asarray(n_bins)[:, None]
    miss = np.full(hist.shape[0], -1, dtype=np.int64) if missing is None else np.asarray(missing, dtype=np.int64)
    has = (miss >= 0)[:, None]
    constrained = monotone is not None and bool(np.any(np.asarray(monotone) != 0))
    mono = np.asarray(monotone, dtype=np.int64)[:, None] if constrained else None
    cum = np.cumsum(hist[:, :-1, :], axis=1)  # left side of "bins 0..k go left"
    k = np.arange(hist.shape[1] - 1)[None, :]
    # missing right: the plain prefix sums; a split needs a present bin on each side, or all
    # present values left and the missing bin right (k = n_bins - 2)
    variants = [(cum[:, :, 0], cum[:, :, 1], k < nb - 1)]
    if has.any():
        mg = np.where(miss >= 0, hist[np.arange(len(miss)), np.maximum(miss, 0), 0], 0.0)[:, None]
        mh = np.where(miss >= 0, hist[np.arange(len(miss)), np.maximum(miss, 0), 1], 0.0)[:, None]
        # missing left: only below the last present bin (else everything goes left)
        variants.append((cum[:, :, 0] + mg, cum[:, :, 1] + mh, has & (k < nb - 2)))
    best = None
    for side, (GL, HL, valid) in enumerate(variants):
        GR, HR = G - GL, H - HL
        ok = (HL >= params.min_child_weight) & (HR >= params.min_child_weight) & valid
        if constrained:
            lo, hi = bounds
            wl, wr = _weight(GL, HL, lam, lo, hi), _weight(GR, HR, lam, lo, hi)
            wp = _weight(np.float64(G), np.float64(H), lam, lo, hi)
            gain = _score_at(GL, HL, wl, lam) + _score_at(GR, HR, wr, lam) - _score_at(G, H, wp, lam)
            ok &= ~(((mono > 0) & (wl > wr)) | ((mono < 0) & (wl < wr)))
        else:
            gain = _score(GL, HL, lam) + _score(GR, HR, lam) - G * G / (H + lam)
        gain = np.where(ok, gain, -np.inf)
        flat = int(np.argmax(gain))
        f, b = divmod(flat, gain.shape[1])
        cand = float(gain[f, b])
        if best is None or cand > best[0] + 1e-12:
            best = (cand, f, b, float(GL[f, b]), float(HL[f, b]), bool(side))
    if not np.isfinite(best[0]) or best[0] <= max(params.min_split_gain, MIN_GAIN_EPS):
        return None
    return best


def goes_left(bins: np.ndarray, bin_index: int, missing_left: bool, missing_bin: int) -> np.ndarray:
    """Which rows of one feature's ``bins`` a split sends left: bins ``0..bin_index``, plus the
    missing bin when ``missing_left`` (``missing_bin`` = -1 when the feature has none)."""
    left = bins <= bin_index
    if missing_left and missing_bin >= 0:
        left |= bins == missing_bin
    return left


def leaf_weight(G: float, H: float, params: TreeParams, bounds: tuple[float, float] = UNBOUNDED) -> float:
    """Shrunk leaf weight ``-learning_rate * G / (H + lambda)``, the unshrunk part clipped to ``bounds``."""
    if bounds == UNBOUNDED:
        return float(-params.learning_rate * G / (H + params.reg_lambda))
    return float(params.learning_rate * _weight(np.float64(G), np.float64(H), params.reg_lambda, *bounds))


def child_bounds(bounds: tuple[float, float], direction: int, GL: float, HL: float, GR: float, HR: float,
                 params: TreeParams) -> tuple[tuple[float, float], tuple[float, float]]:
    """Bounds of the left and right child of a split on a feature of monotone ``direction``.

    Unconstrained splits pass the parent's bounds on; a constrained one splits them at the mean
    of the two (clipped) child weights, left below for +1 and above for -1 (XGBoost's rule).
    """
    if direction == 0:
        return bounds, bounds
    lo, hi = bounds
    lam = params.reg_lambda
    wl = float(_weight(np.float64(GL), np.float64(HL), lam, lo, hi))
    wr = float(_weight(np.float64(GR), np.float64(HR), lam, lo, hi))
    mid = 0.5 * (wl + wr)
    if direction > 0:
        return (lo, mid), (mid, hi)
    return (mid, hi), (lo, mid)


def check_monotone(monotone: dict[str, int] | None, names: list[str], who: str) -> np.ndarray:
    """Per-feature directions (aligned with ``names``) of a ``monotone = {feature = +1/-1}`` table.

    Raises :class:`~fedrisk.errors.ConfigError` (one line) for an unknown feature or a value not
    in {-1, 0, 1}.
    """
    from fedrisk.errors import ConfigError

    out = np.zeros(len(names), dtype=np.int64)
    for feat, d in (monotone or {}).items():
        if feat not in names:
            import difflib

            close = difflib.get_close_matches(feat, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{who}: monotone constraint on {feat!r}, which is not one of this party's features{hint}")
        if isinstance(d, bool) or d not in (-1, 0, 1):
            raise ConfigError(f"{who}: monotone {feat} = {d!r}; use 1 (score rises with it), -1 (falls) or 0")
        out[names.index(feat)] = int(d)
    return out


# ---------------------------------------------------------------------------------------------
# Plaintext reference: the same level-wise growth on pooled bins (tests and benchmarks only)
# ---------------------------------------------------------------------------------------------
@dataclass
class RefTree:
    """Nodes in breadth-first id order: ``(feature, bin, left, right)`` or a leaf weight."""

    feature: list[int] = field(default_factory=list)
    bin: list[int] = field(default_factory=list)
    missing_left: list[bool] = field(default_factory=list)
    left: list[int] = field(default_factory=list)
    right: list[int] = field(default_factory=list)
    weight: list[float] = field(default_factory=list)

    def add(self) -> int:
        for a, v in ((self.feature, -1), (self.bin, -1), (self.missing_left, False), (self.left, -1),
                     (self.right, -1), (self.weight, 0.0)):
            a.append(v)
        return len(self.feature) - 1


def _route(tree: RefTree, bins: np.ndarray, missing: np.ndarray | None = None) -> np.ndarray:
    leaf = np.zeros(len(bins), dtype=np.int64)
    rows = {0: np.arange(len(bins))}
    for node in range(len(tree.feature)):
        r = rows.pop(node, None)
        if r is None:
            continue
        if tree.left[node] < 0:
            leaf[r] = node
            continue
        f = tree.feature[node]
        go_left = goes_left(bins[r, f], tree.bin[node], tree.missing_left[node], -1 if missing is None else int(missing[f]))
        rows[tree.left[node]] = r[go_left]
        rows[tree.right[node]] = r[~go_left]
    return leaf


def fit_reference(bins: np.ndarray, n_bins: np.ndarray, y: np.ndarray, n_trees: int, params: TreeParams,
                  precision: int | None = None, missing: np.ndarray | None = None,
                  monotone: np.ndarray | None = None) -> tuple[float, list[RefTree]]:
    """Level-wise boosting on pooled ``bins``; returns ``(base_score, trees)``.

    ``precision`` rounds ``g`` and ``h`` to that many fractional bits, as SecureBoost does before
    encrypting, so that both grow the same trees. ``missing``: each feature's missing bin or -1.
    ``monotone``: each feature's direction (+1, -1, 0), see the module docstring.
    """
    base = base_score(y)
    margin = np.full(len(y), base)
    max_b = int(np.max(n_bins))
    trees = []
    for _ in range(n_trees):
        g, h = logloss_grad_hess(y, margin)
        if precision is not None:
            s = float(2 ** precision)
            g, h = np.round(g * s) / s, np.round(h * s) / s
        tree = RefTree()
        root = tree.add()
        level = [(root, np.arange(len(y)), UNBOUNDED)]
        for depth in range(params.max_depth + 1):
            nxt = []
            for node, r, bnd in level:
                G, H = float(g[r].sum()), float(h[r].sum())
                s = best_split(histogram(bins[r], g[r], h[r], max_b), n_bins, G, H, params, missing, monotone, bnd) \
                    if depth < params.max_depth else None
                if s is None:
                    tree.weight[node] = leaf_weight(G, H, params, bnd)
                    continue
                _, f, b, GL, HL, miss_left = s
                d = 0 if monotone is None else int(monotone[f])
                bl, br = child_bounds(bnd, d, GL, HL, G - GL, H - HL, params)
                tree.feature[node], tree.bin[node], tree.missing_left[node] = f, b, miss_left
                lft, rgt = tree.add(), tree.add()
                tree.left[node], tree.right[node] = lft, rgt
                go = goes_left(bins[r, f], b, miss_left, -1 if missing is None else int(missing[f]))
                nxt += [(lft, r[go], bl), (rgt, r[~go], br)]
            level = nxt
        margin += np.asarray(tree.weight)[_route(tree, bins, missing)]
        trees.append(tree)
    return base, trees


def predict_reference(base: float, trees: list[RefTree], bins: np.ndarray, missing: np.ndarray | None = None) -> np.ndarray:
    margin = np.full(len(bins), base)
    for t in trees:
        margin += np.asarray(t.weight)[_route(t, bins, missing)]
    return sigmoid(margin)


def check_boosting_settings(cfg, who: str, extra: list[tuple[bool, str]] = ()) -> None:
    """Validate the settings every boosted-tree trainer shares (SecureBoost, horizontal GBDT).

    ``cfg`` has ``n_trees, max_depth, learning_rate, max_bin, min_child_weight, reg_lambda,
    min_split_gain, subsample, validation_fraction, early_stopping_rounds``; ``extra`` adds the
    trainer's own (condition, message) pairs. Raises one :class:`~fedrisk.errors.ConfigError` line
    prefixed with ``who``, so both trainers word the same mistake the same way.
    """
    from fedrisk.errors import ConfigError

    self = cfg
    checks = [
            (isinstance(self.n_trees, int) and 1 <= self.n_trees <= 10000, "n_trees must be an integer in [1, 10000]"),
            (isinstance(self.max_depth, int) and 1 <= self.max_depth <= 16, "max_depth must be an integer in [1, 16]"),
            (0 < self.learning_rate <= 1, "learning_rate must be in (0, 1]"),
            (isinstance(self.max_bin, int) and 2 <= self.max_bin <= 256, "max_bin must be an integer in [2, 256]"),
            (self.min_child_weight >= 0, "min_child_weight must be >= 0"),
            (self.reg_lambda >= 0, "reg_lambda must be >= 0"),
            (self.min_split_gain >= 0, "min_split_gain must be >= 0"),
            (0 < self.subsample <= 1, "subsample must be in (0, 1]"),
            (0 <= self.validation_fraction < 0.5, "validation_fraction must be in [0, 0.5)"),
            (isinstance(self.early_stopping_rounds, int) and self.early_stopping_rounds >= 0,
             "early_stopping_rounds must be an integer >= 0"),
        *extra,
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(f"{who}: {msg}")
    if self.early_stopping_rounds and not self.validation_fraction:
        raise ConfigError(f"{who}: early_stopping_rounds needs validation_fraction > 0 (e.g. 0.1)")


#: XGBoost's default ``max_cat_to_onehot``: below this many categories a split isolates one of them
MAX_CAT_TO_ONEHOT = 4
#: XGBoost's default ``max_cat_threshold``: a partition split sends at most this many levels one way
MAX_CAT_THRESHOLD = 64


def best_categorical_split(hist: np.ndarray, n_levels: int, G: float, H: float, params: TreeParams,
                           max_cat_to_onehot: int = MAX_CAT_TO_ONEHOT) -> tuple[float, list[int], float, float] | None:
    """Best partition of one categorical feature's levels at a node: ``(gain, left levels, GL, HL)``.

    XGBoost's ``enable_categorical`` semantics: with FEWER than ``max_cat_to_onehot`` levels
    (XGBoost's ``UseOneHot`` is ``n < max_cat_to_onehot``: 4 levels already take partitions), each
    level alone against the rest (one-hot style); otherwise the levels are sorted (stably) by the
    leaf weight XGBoost's ``CalcWeight`` gives them, ``-g / (h + lambda)`` or 0 for a level whose
    hessian at this node is below ``min_child_weight`` (absent levels included), and every prefix
    of that order of up to ``max_cat_threshold`` (64) levels from either end is a candidate left set (Fisher's
    grouping: for a convex loss the best two-way partition is one of these prefixes), so one split
    can send any set of categories left, adjacent or not. Gains as for thresholds. Where a level
    sorts decides where rows of a level the node never saw go, so this order is XGBoost's exactly.

    Parameters
    ----------
    hist : numpy.ndarray
        ``(n_bins, 2)`` sums of ``(g, h)`` of the feature, level ``i`` in bin ``i``.
    n_levels : int
        Levels (bins) of the feature.
    """
    lam = params.reg_lambda
    gh = np.asarray(hist, dtype=np.float64)[:n_levels]
    if n_levels < 2:
        return None
    if n_levels < max_cat_to_onehot:
        sets = [[c] for c in range(n_levels)]
        GL = gh[:, 0]
        HL = gh[:, 1]
    else:
        g, h = gh[:, 0], gh[:, 1]
        thin = (h < params.min_child_weight) | (h <= 0)
        w = np.where(thin, 0.0, -g / np.where(thin, 1.0, h + lam)).astype(np.float32)  # XGBoost sorts float weights
        order = np.argsort(w, kind="stable")
        # XGBoost scans the sorted levels from both ends, each scan at most max_cat_threshold levels: left
        # sets of 1..m-1 levels, then of n-m+1..n-1 (the high end's 1..m-1 levels on the right); short first
        m = min(n_levels, MAX_CAT_THRESHOLD)
        sizes = list(range(1, m)) + [k for k in range(max(m, n_levels - m + 1), n_levels)]
        cum = np.cumsum(gh[order], axis=0)[[k - 1 for k in sizes]] if sizes else np.zeros((0, 2))
        sets = [sorted(order[:k].tolist()) for k in sizes]
        if not sets:
            return None
        GL, HL = cum[:, 0], cum[:, 1]
    GR, HR = G - GL, H - HL
    ok = (HL >= params.min_child_weight) & (HR >= params.min_child_weight)
    gain = np.where(ok, _score(GL, HL, lam) + _score(GR, HR, lam) - G * G / (H + lam), -np.inf)
    i = int(np.argmax(gain))
    if not np.isfinite(gain[i]) or gain[i] <= max(params.min_split_gain, MIN_GAIN_EPS):
        return None
    return float(gain[i]), sets[i], float(GL[i]), float(HL[i])
