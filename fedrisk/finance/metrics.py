"""Credit-risk evaluation metrics: AUC, KS, Gini, lift, PSI, Brier, calibration, confusion.

Conventions
-----------
* ``y`` is the binary target with ``1`` = bad (default) and ``0`` = good.
* ``score`` / ``p`` is higher-is-riskier (a predicted default probability, or any score ordered
  the same way). Rank metrics (AUC, KS, Gini, lift) only use the order; Brier, calibration and
  confusion need probabilities in ``[0, 1]``.
* Everything is vectorised numpy; ties are handled exactly (AUC with ties is the Mann–Whitney
  statistic, i.e. a tied bad/good pair counts one half; KS is evaluated only at distinct score
  thresholds so tied rows are never split).

Sample weights
--------------
Every metric but :func:`characteristic_stability` (which takes counts already) accepts
``sample_weight`` (two of them for :func:`population_stability_index`): frequency / sampling weights,
a row of weight ``w`` counting as ``w`` copies of itself. A development sample keeping every default
and one good in ten is evaluated with weight 10 on its goods to give the population's AUC, KS, lift and
calibration; a validator may weight by exposure. With integer weights every figure equals that of the
rows repeated ``w`` times (a row of weight 0 is left out); without weights the results are exactly
those of the unweighted code. Counts (``n``, ``bads``, ``tp``, ...) become sums of weights; the row
counts stay beside them. Equal-count groups (lift, calibration, PSI bins) become equal-weight groups,
cut on cumulative weight. What measures sampling noise (``auc_se``, ``small_sample``, ``chance_psi``)
uses Kish's effective sample size ``(sum w)^2 / sum w^2`` per class: the noise comes from the rows
drawn, not from the copies they stand for.

Every function returns plain Python floats / lists / dicts so the result of :func:`evaluate` can
be written with ``json.dumps`` directly.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from fedrisk.errors import DataError

__all__ = [
    "auc",
    "ks",
    "ks_curve",
    "gini",
    "lift_table",
    "population_stability_index",
    "characteristic_stability",
    "chance_psi",
    "psi_band",
    "brier",
    "calibration_table",
    "confusion",
    "evaluate",
    "auc_uncertainty",
    "quantile",
    "PSI_EPSILON",
]

#: Proportion given to a bin that is empty in one sample, so PSI stays finite (see
#: :func:`population_stability_index`).
PSI_EPSILON = 1e-4


# -- input checks ------------------------------------------------------------------------------
def _coding_error(values: list[Any]) -> DataError:
    """The one-line error for labels that are not 0/1, with the mapping to apply."""
    shown = sorted({str(v) for v in values})[:5]
    example = f"y == {values[-1]!r}" if values else "y == <default value>"
    return DataError(f"y must be binary 0/1 (1 = bad); found values {shown}: pass (y == <the value meaning "
                     f"default>).astype(int), e.g. {example}")


def _as_arrays(y: Any, score: Any, *, name: str = "score", need_both: bool = True) -> tuple[np.ndarray, np.ndarray]:
    try:
        y_arr = np.asarray(y, dtype=float).ravel()
    except (TypeError, ValueError):  # text labels such as "good"/"bad"
        raw = [v for v in np.asarray(y, dtype=object).ravel() if v is not None and v == v]
        raise _coding_error(sorted({str(v) for v in raw}, key=lambda v: (v.lower() in ("bad", "default"), v))) from None
    s_arr = np.asarray(score, dtype=float).ravel()
    if y_arr.shape[0] != s_arr.shape[0]:
        raise DataError(
            f"y has {y_arr.shape[0]} rows but {name} has {s_arr.shape[0]}; pass one {name} per labelled row"
        )
    if y_arr.shape[0] == 0:
        raise DataError("y is empty; metrics need at least one good and one bad row")
    if np.isnan(y_arr).any():
        raise DataError("y contains missing values; drop unlabelled rows before evaluating")
    if not np.isin(y_arr, (0.0, 1.0)).all():
        found = np.unique(y_arr).tolist()
        raise _coding_error([int(v) if float(v).is_integer() else v for v in found])
    if np.isinf(s_arr).any():
        raise DataError(f"{name} contains infinite values; score every row with a finite value before evaluating")
    if np.isnan(s_arr).any():
        # typically a split model's test rows whose id is absent at a feature holder: they cannot be scored
        k = int(np.isnan(s_arr).sum())
        raise DataError(f"{name} is NaN in {k} of {s_arr.shape[0]} rows (not scored: e.g. ids absent at a feature "
                        f"holder); evaluate the scored rows: ok = ~np.isnan({name}), then pass y[ok] and {name}[ok]")
    if need_both:
        n_bad = int(y_arr.sum())
        if n_bad == 0 or n_bad == y_arr.shape[0]:
            only = "bad (1)" if n_bad else "good (0)"
            raise DataError(
                f"y has only one class (all {y_arr.shape[0]} rows are {only}); "
                "AUC/KS need both goods and bads — use a larger or stratified sample"
            )
    return y_arr, s_arr


def _check_probabilities(p: np.ndarray) -> None:
    if (p < 0).any() or (p > 1).any():
        raise DataError(
            f"probabilities must lie in [0, 1]; found min {p.min():.4g}, max {p.max():.4g}. "
            "Pass predicted default probabilities, not raw scores or points"
        )


def _as_weights(sample_weight: Any, n: int, name: str = "sample_weight", rows: str = "y") -> np.ndarray | None:
    """``sample_weight`` as a float array of ``n`` finite non-negative values, not all zero (``None`` stays ``None``)."""
    if sample_weight is None:
        return None
    try:
        w = np.asarray(sample_weight, dtype=float).ravel()
    except (TypeError, ValueError):
        raise DataError(f"{name} must be numbers (one non-negative weight per row); found text or other values") from None
    if w.shape[0] != n:
        raise DataError(f"{name} has {w.shape[0]} values but {rows} has {n} rows; pass one weight per row")
    bad = ~np.isfinite(w)
    if bad.any():
        raise DataError(f"{name} is NaN or infinite in {int(bad.sum())} of {n} rows; give every row a finite "
                        "weight (0 leaves a row out)")
    if (w < 0).any():
        raise DataError(f"{name} is negative in {int((w < 0).sum())} of {n} rows (smallest {w.min():.4g}); weights "
                        "count rows (a weight w is w copies of the row): use 0 or more")
    if not (w > 0).any():
        raise DataError(f"{name} is 0 in all {n} rows; at least one row needs a positive weight")
    return w


def _weighted_arrays(y: Any, score: Any, sample_weight: Any, *, name: str = "score", need_both: bool = True
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """:func:`_as_arrays` plus the checked weights; rows of weight 0 are dropped (0 copies of a row).

    Without weights it is :func:`_as_arrays` with ``None`` for the weights, so the unweighted code runs as before.
    """
    if sample_weight is None:
        return (*_as_arrays(y, score, name=name, need_both=need_both), None)
    y_arr, s_arr = _as_arrays(y, score, name=name, need_both=False)
    w = _as_weights(sample_weight, y_arr.shape[0])
    keep = w > 0
    if not keep.all():
        y_arr, s_arr, w = y_arr[keep], s_arr[keep], w[keep]
    if need_both:
        n_bad = int(np.sum(y_arr))
        if n_bad == 0 or n_bad == y_arr.shape[0]:
            only = "bad (1)" if n_bad else "good (0)"
            raise DataError(f"the {y_arr.shape[0]} rows of positive sample_weight are all {only}; AUC/KS need both "
                            "goods and bads of positive weight")
    return y_arr, s_arr, w


def _effective_n(w: np.ndarray) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2``: the rows' worth of information in weighted rows."""
    return float(np.sum(w) ** 2 / np.sum(w * w)) if w.size else 0.0


def _threshold_counts(y: np.ndarray, score: np.ndarray, w: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct thresholds (descending) and cumulative bads / goods with ``score >= threshold`` (weight sums with ``w``)."""
    order = np.argsort(-score, kind="mergesort")
    s_sorted = score[order]
    y_sorted = y[order]
    # last index of every run of equal scores: a threshold never splits tied rows
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.shape[0] - 1]
    if w is None:
        cum_bad = np.cumsum(y_sorted)[last]
        cum_good = (last + 1) - cum_bad
    else:
        w_sorted = w[order]
        cum_bad = np.cumsum(w_sorted * y_sorted)[last]
        cum_good = np.cumsum(w_sorted * (1.0 - y_sorted))[last]
    return s_sorted[last], cum_bad, cum_good


def _weighted_auc(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> float:
    """Weighted Mann–Whitney AUC: ``sum w_i w_j ([s_i > s_j] + [s_i == s_j] / 2)`` over bad i, good j, normalised.

    Summed per distinct score (bads there times the goods below, plus half the goods tied with them). With integer
    weights every term is an exact half-integer, so the AUC is bit-identical to the mid-rank AUC of the repeated rows.
    """
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted, w_sorted = s[order], y[order], w[order]
    starts = np.r_[0, np.nonzero(np.diff(s_sorted))[0] + 1]
    bads = np.add.reduceat(w_sorted * y_sorted, starts)
    goods = np.add.reduceat(w_sorted * (1.0 - y_sorted), starts)
    goods_below = np.r_[np.cumsum(goods[::-1])[::-1][1:], 0.0]  # descending order: the goods after each score
    u = np.sum(bads * goods_below) + 0.5 * np.sum(bads * goods)
    return float(u / (np.sum(bads) * np.sum(goods)))


def _equal_count_groups(s_sorted: np.ndarray, n_bins: int, w_sorted: np.ndarray | None = None) -> np.ndarray:
    """Group (0, 1, ...) of each row of a sorted score: equal-count cuts that never split tied scores.

    Row ``i`` of ``n`` would fall in group ``i * n_bins // n``; a run of equal scores takes the group of
    its first row, so a cut inside the run moves to its end. Without this the rows of a tie straddling a
    cut were shared out by their order in the file, and the same applicants in another order gave other
    bad counts per group (a scorecard has few distinct totals, so most cuts fall in a tie). Groups left
    empty by a long run are dropped and the rest numbered consecutively.

    With weights ``w_sorted`` the groups hold (nearly) equal weight: a row whose predecessors weigh ``c`` of the
    total ``W`` falls in group ``floor(c * n_bins / W)`` -- the group its first copy would take among the rows
    repeated ``w`` times, so integer weights give the groups of the repeated rows exactly.
    """
    n = s_sorted.shape[0]
    starts = np.r_[True, s_sorted[1:] != s_sorted[:-1]]
    run_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    if w_sorted is None:
        group = (run_start * int(n_bins)) // n
    else:
        cum = np.cumsum(w_sorted)
        before = np.r_[0.0, cum[:-1]]
        group = np.floor(before[run_start] * int(n_bins) / cum[-1]).astype(np.int64)
    return np.unique(group, return_inverse=True)[1].astype(np.int64)


# -- rank metrics ------------------------------------------------------------------------------
def auc(y: Any, score: Any, sample_weight: Any = None) -> float:
    """Area under the ROC curve (probability a random bad scores above a random good).

    Parameters
    ----------
    y : array-like of {0, 1}
        Target, 1 = bad.
    score : array-like of float
        Higher means riskier.
    sample_weight : array-like of float, optional
        Frequency / sampling weight per row (``w`` = ``w`` copies of the row; 0 leaves it out).

    Returns
    -------
    float
        AUC in ``[0, 1]``.

    Raises
    ------
    DataError
        Lengths differ, ``y`` is not binary, only one class is present, or a weight is invalid.

    Notes
    -----
    Computed as the Mann–Whitney U statistic from mid-ranks, so a tied bad/good pair counts 1/2;
    this equals the trapezoidal area under the ROC curve (``sklearn.metrics.roc_auc_score``).
    With weights a bad/good pair counts ``w_bad * w_good`` (half that when tied): the same as
    ``roc_auc_score(..., sample_weight=...)``.
    """
    y_arr, s_arr, w = _weighted_arrays(y, score, sample_weight)
    if w is not None:
        return _weighted_auc(y_arr, s_arr, w)
    n_bad = y_arr.sum()
    n_good = y_arr.shape[0] - n_bad
    order = np.argsort(s_arr, kind="mergesort")
    s_sorted = s_arr[order]
    # mid-ranks (1-based) for ties
    starts = np.r_[0, np.nonzero(np.diff(s_sorted))[0] + 1]
    ends = np.r_[starts[1:], s_sorted.shape[0]]
    mid = (starts + ends + 1) / 2.0
    ranks = np.empty_like(s_arr)
    ranks[order] = np.repeat(mid, ends - starts)
    u = ranks[y_arr == 1].sum() - n_bad * (n_bad + 1) / 2.0
    return float(u / (n_bad * n_good))


def gini(y: Any, score: Any, sample_weight: Any = None) -> float:
    """Gini coefficient (accuracy ratio) ``2 * AUC - 1``.

    Parameters
    ----------
    y : array-like of {0, 1}
        Target, 1 = bad.
    score : array-like of float
        Higher means riskier.
    sample_weight : array-like of float, optional
        Frequency / sampling weight per row (``w`` = ``w`` copies of the row; 0 leaves it out).

    Returns
    -------
    float
        Gini in ``[-1, 1]``.
    """
    return 2.0 * auc(y, score, sample_weight) - 1.0


def ks_curve(y: Any, score: Any, sample_weight: Any = None) -> dict[str, Any]:
    """Kolmogorov–Smirnov curve: cumulative bad and good rates by score threshold.

    Parameters
    ----------
    y : array-like of {0, 1}
        Target, 1 = bad.
    score : array-like of float
        Higher means riskier.
    sample_weight : array-like of float, optional
        Frequency / sampling weight per row (``w`` = ``w`` copies of the row; 0 leaves it out).

    Returns
    -------
    dict
        ``thresholds`` (descending distinct scores), ``cum_bad_rate`` and ``cum_good_rate``
        (fraction of all bads / goods with ``score >= threshold``), each a numpy array starting
        with a leading point at rate 0 (threshold ``+inf``); ``ks`` the maximum of
        ``cum_bad_rate - cum_good_rate`` and ``ks_score`` the threshold where it peaks.

    Notes
    -----
    ``cum_bad_rate`` is the ROC true-positive rate and ``cum_good_rate`` the false-positive rate,
    so ``ks == max(tpr - fpr)`` of ``sklearn.metrics.roc_curve``. With weights the rates are shares
    of the bads' and goods' weight (the weighted ECDFs); rows of weight 0 add no threshold.
    """
    y_arr, s_arr, w = _weighted_arrays(y, score, sample_weight)
    thr, cum_bad, cum_good = _threshold_counts(y_arr, s_arr, w)
    bad_rate = np.r_[0.0, cum_bad / cum_bad[-1]]
    good_rate = np.r_[0.0, cum_good / cum_good[-1]]
    thresholds = np.r_[np.inf, thr]
    gap = bad_rate - good_rate
    # index 0 is the +inf start point; if no threshold beats it (KS 0) report the top score
    i = max(int(np.argmax(gap)), 1)
    return {
        "thresholds": thresholds,
        "cum_bad_rate": bad_rate,
        "cum_good_rate": good_rate,
        "ks": float(gap.max()),
        "ks_score": float(thresholds[i]),
    }


def ks(y: Any, score: Any, sample_weight: Any = None) -> float:
    """KS statistic: the largest gap between the cumulative bad and good rates.

    Parameters
    ----------
    y : array-like of {0, 1}
        Target, 1 = bad.
    score : array-like of float
        Higher means riskier.
    sample_weight : array-like of float, optional
        Frequency / sampling weight per row (``w`` = ``w`` copies of the row; 0 leaves it out).

    Returns
    -------
    float
        KS in ``[0, 1]``.
    """
    return ks_curve(y, score, sample_weight)["ks"]


def lift_table(y: Any, score: Any, n_bins: int = 10, sample_weight: Any = None) -> list[dict[str, Any]]:
    """Lift / gains table by score quantile, riskiest group first.

    Parameters
    ----------
    y : array-like of {0, 1}
        Target, 1 = bad.
    score : array-like of float
        Higher means riskier.
    n_bins : int, default 10
        Number of groups (10 = deciles).
    sample_weight : array-like of float, optional
        Frequency / sampling weight per row (``w`` = ``w`` copies of the row; 0 leaves it out).

    Returns
    -------
    list of dict
        One row per group: ``decile`` (1 = riskiest), ``n``, ``bads``, ``bad_rate``, ``lift``
        (group bad rate / overall bad rate), ``cum_gain`` (share of all bads captured up to and
        including this group), ``min_score`` and ``max_score``. With weights ``n`` and ``bads`` are
        sums of weights (floats) and ``rows`` counts the group's rows.

    Notes
    -----
    Rows are sorted by descending score and cut into ``n_bins`` groups of (nearly) equal size, except
    that tied scores are never split: a run of equal scores goes whole into the group where it starts
    (see :func:`_equal_count_groups`), so the table does not depend on the rows' order. With heavy ties
    (a scorecard's few point totals) groups differ in size, and a score held by more than a group's
    share of rows leaves fewer than ``n_bins`` groups. With weights the groups hold (nearly) equal
    weight, cut on the cumulative weight (see :func:`_equal_count_groups`).
    """
    if int(n_bins) < 1:
        raise DataError(f"n_bins must be at least 1, got {n_bins}")
    y_arr, s_arr, w = _weighted_arrays(y, score, sample_weight)
    if w is not None:
        return _weighted_lift(y_arr, s_arr, w, int(n_bins))
    n = y_arr.shape[0]
    n_bins = min(int(n_bins), n)
    order = np.argsort(-s_arr, kind="mergesort")
    y_sorted, s_sorted = y_arr[order], s_arr[order]
    group = _equal_count_groups(s_sorted, n_bins)
    n_bins = int(group.max()) + 1
    counts = np.bincount(group, minlength=n_bins)
    bads = np.bincount(group, weights=y_sorted, minlength=n_bins)
    total_bad = y_arr.sum()
    overall = total_bad / n
    cum = np.cumsum(bads) / total_bad
    edges = np.r_[0, np.cumsum(counts)]
    rows = []
    for g in range(n_bins):
        rate = bads[g] / counts[g]
        rows.append(
            {
                "decile": g + 1,
                "n": int(counts[g]),
                "bads": int(bads[g]),
                "bad_rate": float(rate),
                "lift": float(rate / overall),
                "cum_gain": float(cum[g]),
                "min_score": float(s_sorted[edges[g + 1] - 1]),
                "max_score": float(s_sorted[edges[g]]),
            }
        )
    return rows


def _weight_groups(y: np.ndarray, s: np.ndarray, w: np.ndarray, n_bins: int, *, riskiest_first: bool
                   ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Rows sorted by ``s`` (descending for lift, ascending for calibration) and cut into equal-weight groups:
    the sorted scores, each group's first row (``edges``, one past the last at the end), and per group its
    ``rows``, ``weight``, weighted ``bads`` and weighted sum of scores ``s``."""
    order = np.argsort(-s if riskiest_first else s, kind="mergesort")
    y_s, s_s, w_s = y[order], s[order], w[order]
    group = _equal_count_groups(s_s, n_bins, w_s)
    k = int(group.max()) + 1
    sums = {"rows": np.bincount(group, minlength=k), "weight": np.bincount(group, weights=w_s, minlength=k),
            "bads": np.bincount(group, weights=w_s * y_s, minlength=k),
            "s": np.bincount(group, weights=w_s * s_s, minlength=k)}
    return s_s, np.r_[0, np.cumsum(sums["rows"])], sums


def _weighted_lift(y: np.ndarray, s: np.ndarray, w: np.ndarray, n_bins: int) -> list[dict[str, Any]]:
    """:func:`lift_table` on weighted rows: equal-weight groups; ``n``/``bads`` are weight sums, ``rows`` row counts."""
    s_sorted, edges, g = _weight_groups(y, s, w, n_bins, riskiest_first=True)
    total_bad = np.sum(w * y)
    overall = total_bad / np.sum(w)
    cum = np.cumsum(g["bads"]) / total_bad
    out = []
    for k in range(len(g["rows"])):
        rate = g["bads"][k] / g["weight"][k]
        out.append({"decile": k + 1, "n": float(g["weight"][k]), "rows": int(g["rows"][k]), "bads": float(g["bads"][k]),
                    "bad_rate": float(rate), "lift": float(rate / overall), "cum_gain": float(cum[k]),
                    "min_score": float(s_sorted[edges[k + 1] - 1]), "max_score": float(s_sorted[edges[k]])})
    return out


# -- stability ---------------------------------------------------------------------------------
def psi_band(psi: float) -> str:
    """Conventional reading of a PSI value: ``stable`` < 0.1 ≤ ``watch`` ≤ 0.25 < ``shift``."""
    if psi < 0.1:
        return "stable"
    if psi <= 0.25:
        return "watch"
    return "shift"


def population_stability_index(expected_scores: Any, actual_scores: Any, n_bins: int = 10, *,
                               expected_weight: Any = None, actual_weight: Any = None) -> dict[str, Any]:
    """Population stability index between a reference (expected) and a new (actual) sample.

    Parameters
    ----------
    expected_scores : array-like of float
        Reference scores (e.g. training / development sample).
    actual_scores : array-like of float
        Scores to compare (e.g. test or recent applications).
    n_bins : int, default 10
        Number of quantile bins cut on the expected sample.
    expected_weight, actual_weight : array-like of float, optional
        Frequency / sampling weight per row of each sample (``w`` = ``w`` copies; 0 leaves a row out).
        A stratified development sample must be weighted back to its population, or its score
        distribution -- rich in defaults -- shows a "shift" against the applications it stands for.

    Returns
    -------
    dict
        ``psi`` (float), ``band`` (``"stable"`` < 0.1, ``"watch"`` 0.1–0.25, ``"shift"`` > 0.25),
        ``n_expected``, ``n_actual`` and ``bins``: one dict per bin with ``lower``, ``upper``,
        ``expected_n``, ``actual_n``, ``expected_pct``, ``actual_pct`` and ``psi`` (the bin's
        contribution); ``empty_bins`` (``{"expected": k, "actual": k}``: bins of each sample floored at
        :data:`PSI_EPSILON`); ``chance_psi`` (:func:`chance_psi`: what sampling alone gives at these sizes)
        and, when that reaches the "watch" threshold, ``small_sample``: a sentence saying the band
        cannot be read (the report shows it).

    Notes
    -----
    ``PSI = sum((a_i - e_i) * ln(a_i / e_i))`` over bins, with ``e_i``/``a_i`` the proportions.
    Bin edges are the expected sample's quantiles; duplicate edges (heavy ties) are merged, so
    fewer than ``n_bins`` bins may result. The outer bins are open (``-inf``/``+inf``) so every
    actual score falls in a bin. An empty bin's proportion is replaced by
    :data:`PSI_EPSILON` (1e-4) before the logarithm — otherwise a single empty bin makes PSI
    infinite; the reported ``expected_pct``/``actual_pct`` are the unsmoothed values.

    With weights the proportions are shares of weight and the bin edges are the expected sample's
    weighted quantiles: numpy's linear quantiles of the rows repeated ``w`` times (the convention of
    Hmisc's ``wtd.quantile`` for frequency weights), so integer weights give exactly the PSI of the
    repeated rows. That interpolation is the one place where the weights' scale matters: edges move by
    at most one unit of weight, so give weights on the scale of row counts (inverse sampling rates, or
    normalised to mean 1), not fractions of a total of 1. ``n_expected``/``n_actual`` and the bins'
    ``expected_n``/``actual_n`` are then sums of weights, ``weighted`` holds the row counts, and
    ``chance_psi`` uses the Kish effective sample sizes.
    """
    if int(n_bins) < 1:
        raise DataError(f"n_bins must be at least 1, got {n_bins}")
    e = np.asarray(expected_scores, dtype=float).ravel()
    a = np.asarray(actual_scores, dtype=float).ravel()
    for name, arr in (("expected_scores", e), ("actual_scores", a)):
        if arr.shape[0] == 0:
            raise DataError(f"{name} is empty; PSI needs scores from both samples")
        if not np.isfinite(arr).all():
            raise DataError(f"{name} contains NaN or infinite values; score every row first")
    if expected_weight is not None or actual_weight is not None:
        return _weighted_psi(e, a, int(n_bins), expected_weight, actual_weight)
    inner, e_n, a_n, contrib = _psi_bins(e, a, n_bins)
    edges = np.r_[-np.inf, inner, np.inf]
    k = inner.shape[0] + 1
    e_pct = e_n / e_n.sum()
    a_pct = a_n / a_n.sum()
    psi = float(contrib.sum())
    bins = [
        {
            "lower": float(edges[i]),
            "upper": float(edges[i + 1]),
            "expected_n": int(e_n[i]),
            "actual_n": int(a_n[i]),
            "expected_pct": float(e_pct[i]),
            "actual_pct": float(a_pct[i]),
            "psi": float(contrib[i]),
        }
        for i in range(k)
    ]
    out = {"psi": psi, "band": psi_band(psi), "n_expected": int(e.shape[0]), "n_actual": int(a.shape[0]), "bins": bins,
           # bins whose proportion was floored at PSI_EPSILON: then the PSI's size depends on that floor
           "empty_bins": {"expected": int((e_n == 0).sum()), "actual": int((a_n == 0).sum())}}
    # the bins actually used: tied quantiles (a score of few values) merge bins, and a bin the expected sample
    # leaves empty (above its top value) adds nothing by chance
    used = max(int((e_n > 0).sum()), 1)
    noise = chance_psi(used, e.shape[0], a.shape[0])
    out["chance_psi"] = noise
    if noise >= 0.1:  # the "watch" threshold: the band cannot be read on samples this small
        out["small_sample"] = (f"with {a.shape[0]:,} actual and {e.shape[0]:,} expected rows in {used} bins, two samples "
                               f"of one population give a PSI of about {noise:.2f} by chance alone, so the band is not "
                               "reliable; compare more rows (or fewer bins)")
    return out


def _weighted_quantile(x_sorted: np.ndarray, w_sorted: np.ndarray, q: np.ndarray) -> np.ndarray:
    """numpy's ``linear`` quantile of the rows repeated ``w`` times, without repeating them.

    The virtual position ``(W - 1) * q`` counts copies (``W`` the total weight, at least 0); the copies at
    positions ``floor`` and ``floor + 1`` are found on the cumulative weight and interpolated with numpy's own
    formula, so integer weights give ``np.quantile(np.repeat(x, w), q)`` bit for bit.
    """
    cum = np.cumsum(w_sorted)
    h = np.maximum((cum[-1] - 1) * q, 0.0)
    lo = np.floor(h)
    gamma = h - lo
    last = x_sorted.shape[0] - 1
    # the copy at position j belongs to the first row whose cumulative weight exceeds j
    a = x_sorted[np.minimum(np.searchsorted(cum, lo, side="right"), last)]
    b = x_sorted[np.minimum(np.searchsorted(cum, lo + 1, side="right"), last)]
    top = h >= cum[-1] - 1  # numpy takes the largest value from there on
    a, b = np.where(top, x_sorted[last], a), np.where(top, x_sorted[last], b)
    diff = b - a
    return np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)


def quantile(x: Any, q: Any, sample_weight: Any = None) -> np.ndarray:
    """numpy's ``linear`` quantiles of ``x``; with weights, those of the rows repeated ``w`` times.

    The quantiles weighted PSI bins are cut at (see :func:`population_stability_index` on the weights' scale),
    for tables that describe a weighted sample the same way (the report's score percentiles).
    """
    x = np.asarray(x, dtype=float).ravel()
    w = _as_weights(sample_weight, x.shape[0], rows="x")
    if w is None:
        return np.quantile(x, q)
    keep = w > 0
    order = np.argsort(x[keep], kind="mergesort")
    return _weighted_quantile(x[keep][order], w[keep][order], np.asarray(q, dtype=float))


def _weighted_psi(e: np.ndarray, a: np.ndarray, n_bins: int, expected_weight: Any, actual_weight: Any
                  ) -> dict[str, Any]:
    """:func:`population_stability_index` with weights on either sample (the other counts 1 per row)."""
    we = _as_weights(expected_weight, e.shape[0], "expected_weight", "expected_scores") if expected_weight is not None \
        else np.ones(e.shape[0])
    wa = _as_weights(actual_weight, a.shape[0], "actual_weight", "actual_scores") if actual_weight is not None \
        else np.ones(a.shape[0])
    e, we = e[we > 0], we[we > 0]
    a, wa = a[wa > 0], wa[wa > 0]
    order = np.argsort(e, kind="mergesort")
    inner = np.unique(_weighted_quantile(e[order], we[order], np.linspace(0, 1, n_bins + 1)[1:-1]))
    k = inner.shape[0] + 1
    e_n = np.bincount(np.searchsorted(inner, e, side="left"), weights=we, minlength=k)
    a_n = np.bincount(np.searchsorted(inner, a, side="left"), weights=wa, minlength=k)
    e_pct, a_pct = e_n / e_n.sum(), a_n / a_n.sum()
    e_s, a_s = np.where(e_n == 0, PSI_EPSILON, e_pct), np.where(a_n == 0, PSI_EPSILON, a_pct)
    contrib = (a_s - e_s) * np.log(a_s / e_s)
    psi = float(contrib.sum())
    edges = np.r_[-np.inf, inner, np.inf]
    bins = [{"lower": float(edges[i]), "upper": float(edges[i + 1]), "expected_n": float(e_n[i]),
             "actual_n": float(a_n[i]), "expected_pct": float(e_pct[i]), "actual_pct": float(a_pct[i]),
             "psi": float(contrib[i])} for i in range(k)]
    eff_e, eff_a = _effective_n(we), _effective_n(wa)
    out = {"psi": psi, "band": psi_band(psi), "n_expected": float(we.sum()), "n_actual": float(wa.sum()), "bins": bins,
           "empty_bins": {"expected": int((e_n == 0).sum()), "actual": int((a_n == 0).sum())},
           "weighted": {"expected_rows": int(e.shape[0]), "actual_rows": int(a.shape[0]),
                        "effective_expected": eff_e, "effective_actual": eff_a}}
    used = max(int((e_n > 0).sum()), 1)
    # sampling noise comes from the rows drawn: Kish's effective sizes, not the sums of weights
    n_e, n_a = max(int(round(eff_e)), 1), max(int(round(eff_a)), 1)
    noise = chance_psi(used, n_e, n_a)
    out["chance_psi"] = noise
    if noise >= 0.1:
        out["small_sample"] = (f"with an effective {n_a:,} actual and {n_e:,} expected rows (Kish, of the weighted rows) "
                               f"in {used} bins, two samples of one population give a PSI of about {noise:.2f} by "
                               "chance alone, so the band is not reliable; compare more rows (or fewer bins)")
    return out


def characteristic_stability(expected_counts: Any, actual_counts: Any) -> dict[str, Any]:
    """Characteristic stability index (CSI) of one feature: the PSI of its rows' shares over the model's own bins.

    A scorecard is monitored feature by feature as well as on its score: the shares of a new batch's rows in
    each bin of a feature against the training rows' shares (``sum((a_i - e_i) * ln(a_i / e_i))``, an empty
    bin's share floored at :data:`PSI_EPSILON` as in :func:`population_stability_index`; the same bands).

    Parameters
    ----------
    expected_counts, actual_counts : array-like of int
        Rows per bin (missing bin included) of the training rows and of the batch, in the same bin order.

    Returns
    -------
    dict
        ``csi``, ``band`` and ``chance_csi`` (:func:`chance_psi` over the bins the training rows fill: what two
        samples of these sizes from one population reach by chance; a CSI not well above it says nothing).
    """
    e_n, a_n = np.asarray(expected_counts, dtype=float), np.asarray(actual_counts, dtype=float)
    if e_n.shape != a_n.shape or e_n.sum() <= 0 or a_n.sum() <= 0:
        raise DataError("characteristic stability needs the rows per bin of both samples, over the same bins")
    e_s = np.where(e_n == 0, PSI_EPSILON, e_n / e_n.sum())
    a_s = np.where(a_n == 0, PSI_EPSILON, a_n / a_n.sum())
    csi = float(((a_s - e_s) * np.log(a_s / e_s)).sum())
    return {"csi": csi, "band": psi_band(csi),
            "chance_csi": chance_psi(max(int((e_n > 0).sum()), 1), int(e_n.sum()), int(a_n.sum()))}


def _psi_bins(e: np.ndarray, a: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Inner edges (the expected sample's quantiles), counts per right-closed bin, and each bin's PSI term."""
    inner = np.unique(np.quantile(e, np.linspace(0, 1, int(n_bins) + 1)[1:-1]))
    k = inner.shape[0] + 1
    # right-closed bins (lower, upper]: np.searchsorted side="left" on inner edges
    e_n = np.bincount(np.searchsorted(inner, e, side="left"), minlength=k)
    a_n = np.bincount(np.searchsorted(inner, a, side="left"), minlength=k)
    e_s = np.where(e_n == 0, PSI_EPSILON, e_n / e_n.sum())
    a_s = np.where(a_n == 0, PSI_EPSILON, a_n / a_n.sum())
    return inner, e_n, a_n, (a_s - e_s) * np.log(a_s / e_s)


#: the most rows per side :func:`chance_psi` simulates
PSI_SIM_ROWS = 5_000


def chance_psi(n_bins: int, n_expected: int, n_actual: int, draws: int = 100) -> float:
    """The PSI two samples of these sizes from one population have on average, by sampling alone.

    For small differences PSI is the chi-square divergence, whose mean is about
    ``(k - 1)(1/n_e + 1/n_a)``; when that is small (< 0.02) it is returned. Smaller samples leave
    bins empty, whose smoothed logarithm the approximation misses, so their PSI is simulated:
    ``draws`` pairs of samples of one continuous population (PSI of continuous scores depends on
    their ranks only), fixed seed, same binning, each side at most :data:`PSI_SIM_ROWS` rows (the
    capping's chi-square excess subtracted). ``n_bins``: the bins the PSI actually used. A PSI not
    well above this says nothing about a shift (10 bins, 200 expected and 5 actual rows: about 3).
    """
    n_e, n_a = max(int(n_expected), 1), max(int(n_actual), 1)
    approx = (int(n_bins) - 1) * (1.0 / n_e + 1.0 / n_a)
    if approx < 0.02:
        return float(approx)
    rng = np.random.default_rng(0)
    # both samples capped (a million-row side cost seconds per call); a capped side is large enough for the
    # chi-square term, so the simulation's extra (k - 1)(1/cap - 1/n) from capping it is taken off again
    m_e, m_a = min(n_e, PSI_SIM_ROWS), min(n_a, PSI_SIM_ROWS)
    excess = (int(n_bins) - 1) * ((1.0 / m_e - 1.0 / n_e) + (1.0 / m_a - 1.0 / n_a))
    sim = np.mean([_psi_bins(rng.random(m_e), rng.random(m_a), n_bins)[3].sum() for _ in range(int(draws))])
    return float(max(sim - excess, approx) if excess else sim)


# -- probability metrics -----------------------------------------------------------------------
def brier(y: Any, p: Any, sample_weight: Any = None) -> float:
    """Brier score: mean squared error of the predicted default probability (weighted mean with weights).

    Parameters
    ----------
    y : array-like of {0, 1}
        Target, 1 = bad.
    p : array-like of float in [0, 1]
        Predicted probability of bad.
    sample_weight : array-like of float, optional
        Frequency / sampling weight per row (``w`` = ``w`` copies of the row; 0 leaves it out).

    Returns
    -------
    float
        Brier score (lower is better; 0.25 is a constant 0.5 guess).
    """
    y_arr, p_arr, w = _weighted_arrays(y, p, sample_weight, name="p", need_both=False)
    _check_probabilities(p_arr)
    if w is not None:
        return float(np.average((p_arr - y_arr) ** 2, weights=w))
    return float(np.mean((p_arr - y_arr) ** 2))


def calibration_table(y: Any, p: Any, n_bins: int = 10, sample_weight: Any = None) -> list[dict[str, Any]]:
    """Predicted vs observed default rate by predicted-probability quantile.

    Parameters
    ----------
    y : array-like of {0, 1}
        Target, 1 = bad.
    p : array-like of float in [0, 1]
        Predicted probability of bad.
    n_bins : int, default 10
        Number of groups of (nearly) equal size, lowest predicted risk first; tied probabilities are
        never split (as in :func:`lift_table`), so heavy ties give unequal or fewer groups.
    sample_weight : array-like of float, optional
        Frequency / sampling weight per row (``w`` = ``w`` copies of the row; 0 leaves it out).
        Groups then hold (nearly) equal weight, cut on the cumulative weight.

    Returns
    -------
    list of dict
        ``bin`` (1-based), ``n``, ``bads``, ``mean_predicted``, ``observed_rate``,
        ``min_p``, ``max_p``. With weights ``n``/``bads`` are weight sums, ``rows`` the row count,
        and the mean and rate are weighted.

    Notes
    -----
    Equal-count bins (rather than fixed ``[0, 0.1)``… intervals) because default probabilities
    are concentrated at the low end; fixed intervals would leave most bins empty.
    """
    if int(n_bins) < 1:
        raise DataError(f"n_bins must be at least 1, got {n_bins}")
    y_arr, p_arr, w = _weighted_arrays(y, p, sample_weight, name="p", need_both=False)
    _check_probabilities(p_arr)
    if w is not None:
        return _weighted_calibration(y_arr, p_arr, w, int(n_bins))
    n = y_arr.shape[0]
    n_bins = min(int(n_bins), n)
    order = np.argsort(p_arr, kind="mergesort")
    y_s, p_s = y_arr[order], p_arr[order]
    group = _equal_count_groups(p_s, n_bins)
    n_bins = int(group.max()) + 1
    counts = np.bincount(group, minlength=n_bins)
    bads = np.bincount(group, weights=y_s, minlength=n_bins)
    psum = np.bincount(group, weights=p_s, minlength=n_bins)
    edges = np.r_[0, np.cumsum(counts)]
    return [
        {
            "bin": g + 1,
            "n": int(counts[g]),
            "bads": int(bads[g]),
            "mean_predicted": float(psum[g] / counts[g]),
            "observed_rate": float(bads[g] / counts[g]),
            "min_p": float(p_s[edges[g]]),
            "max_p": float(p_s[edges[g + 1] - 1]),
        }
        for g in range(n_bins)
    ]


def _weighted_calibration(y: np.ndarray, p: np.ndarray, w: np.ndarray, n_bins: int) -> list[dict[str, Any]]:
    """:func:`calibration_table` on weighted rows: equal-weight bins, weighted means and rates."""
    p_s, edges, g = _weight_groups(y, p, w, n_bins, riskiest_first=False)
    return [{"bin": k + 1, "n": float(g["weight"][k]), "rows": int(g["rows"][k]), "bads": float(g["bads"][k]),
             "mean_predicted": float(g["s"][k] / g["weight"][k]), "observed_rate": float(g["bads"][k] / g["weight"][k]),
             "min_p": float(p_s[edges[k]]), "max_p": float(p_s[edges[k + 1] - 1])} for k in range(len(g["rows"]))]


def confusion(y: Any, p: Any, threshold: float = 0.5, sample_weight: Any = None) -> dict[str, Any]:
    """Confusion matrix and derived rates when rows with ``p >= threshold`` are flagged bad.

    Parameters
    ----------
    y : array-like of {0, 1}
        Target, 1 = bad.
    p : array-like of float
        Predicted probability (or score) of bad.
    threshold : float, default 0.5
        Rows with ``p >= threshold`` are predicted bad.
    sample_weight : array-like of float, optional
        Frequency / sampling weight per row (``w`` = ``w`` copies of the row; 0 leaves it out).

    Returns
    -------
    dict
        ``threshold``, ``tp``, ``fp``, ``tn``, ``fn``, ``accuracy``, ``precision``, ``recall``
        (bad capture rate), ``specificity``, ``f1``. A rate whose denominator is zero is 0.0.
        With weights the four counts are sums of weights (floats) and ``rows`` the row count.
    """
    y_arr, p_arr, w = _weighted_arrays(y, p, sample_weight, name="p", need_both=False)
    pred = p_arr >= threshold
    pos = y_arr == 1
    if w is None:
        tp = int(np.sum(pred & pos))
        fp = int(np.sum(pred & ~pos))
        fn = int(np.sum(~pred & pos))
        tn = int(np.sum(~pred & ~pos))
    else:
        tp, fp = float(np.sum(w[pred & pos])), float(np.sum(w[pred & ~pos]))
        fn, tn = float(np.sum(w[~pred & pos])), float(np.sum(w[~pred & ~pos]))

    def _div(a: float, b: float) -> float:
        return float(a / b) if b else 0.0

    precision = _div(tp, tp + fp)
    recall = _div(tp, tp + fn)
    out = {
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "accuracy": _div(tp + tn, tp + fp + tn + fn),
        "precision": precision,
        "recall": recall,
        "specificity": _div(tn, tn + fp),
        "f1": _div(2 * precision * recall, precision + recall),
    }
    if w is not None:
        out["rows"] = int(y_arr.shape[0])
    return out


def evaluate(y: Any, p: Any, *, n_bins: int = 10, threshold: float = 0.5, sample_weight: Any = None) -> dict[str, Any]:
    """All evaluation figures for one scored sample, as one JSON-able dict.

    Parameters
    ----------
    y : array-like of {0, 1}
        Target, 1 = bad.
    p : array-like of float in [0, 1]
        Predicted probability of bad.
    n_bins : int, default 10
        Groups for the lift and calibration tables.
    threshold : float, default 0.5
        Cut-off for the confusion matrix.
    sample_weight : array-like of float, optional
        Frequency / sampling weight per row (``w`` = ``w`` copies of the row; 0 leaves it out).

    Returns
    -------
    dict
        ``n``, ``positives``, ``bad_rate``, ``auc``, ``ks``, ``ks_score``, ``gini``, ``brier``,
        ``lift`` (list, see :func:`lift_table`), ``calibration`` (list, see
        :func:`calibration_table`), ``confusion`` (dict, see :func:`confusion`), ``auc_se``
        and, with few rows of a class, ``small_sample`` (see :func:`auc_uncertainty`).
        With weights every figure is weighted, ``n`` and ``positives`` are sums of weights, and
        ``weighted`` says so: ``rows`` and ``bad_rows`` (rows of positive weight), ``zero_weight_rows``,
        and the Kish effective counts ``effective_bads`` / ``effective_goods`` that ``auc_se`` and
        ``small_sample`` use (the sampling noise comes from the rows drawn, not from their weights).

    Raises
    ------
    DataError
        Lengths differ, ``y`` has one class, ``p`` is outside ``[0, 1]``, or a weight is invalid.
    """
    if sample_weight is not None:
        return _evaluate_weighted(y, p, n_bins, threshold, sample_weight)
    y_arr, p_arr = _as_arrays(y, p, name="p")
    _check_probabilities(p_arr)
    curve = ks_curve(y_arr, p_arr)
    a = auc(y_arr, p_arr)
    out = {
        "n": int(y_arr.shape[0]),
        "positives": int(y_arr.sum()),
        "bad_rate": float(y_arr.mean()),
        "auc": a,
        "ks": curve["ks"],
        "ks_score": curve["ks_score"],
        "gini": 2.0 * a - 1.0,
        "brier": brier(y_arr, p_arr),
        "lift": lift_table(y_arr, p_arr, n_bins),
        "calibration": calibration_table(y_arr, p_arr, n_bins),
        "confusion": confusion(y_arr, p_arr, threshold),
    }
    out.update(auc_uncertainty(a, int(y_arr.sum()), int(y_arr.shape[0] - y_arr.sum())))
    return out


def _evaluate_weighted(y: Any, p: Any, n_bins: int, threshold: float, sample_weight: Any) -> dict[str, Any]:
    """:func:`evaluate` with weights: the same figures from the weighted functions, and the ``weighted`` block."""
    if int(n_bins) < 1:
        raise DataError(f"n_bins must be at least 1, got {n_bins}")
    y_all, _ = _as_arrays(y, p, name="p", need_both=False)
    y_arr, p_arr, w = _weighted_arrays(y, p, sample_weight, name="p")
    _check_probabilities(p_arr)
    curve = ks_curve(y_arr, p_arr, w)
    a = _weighted_auc(y_arr, p_arr, w)
    bad = y_arr == 1
    total, w_bad = float(np.sum(w)), float(np.sum(w[bad]))
    eff_bad, eff_good = _effective_n(w[bad]), _effective_n(w[~bad])
    out = {
        "n": total,
        "positives": w_bad,
        "bad_rate": w_bad / total,
        "auc": a,
        "ks": curve["ks"],
        "ks_score": curve["ks_score"],
        "gini": 2.0 * a - 1.0,
        "brier": brier(y_arr, p_arr, w),
        "lift": _weighted_lift(y_arr, p_arr, w, int(n_bins)),
        "calibration": _weighted_calibration(y_arr, p_arr, w, int(n_bins)),
        "confusion": confusion(y_arr, p_arr, threshold, w),
        "weighted": {"rows": int(y_arr.shape[0]), "bad_rows": int(bad.sum()),
                     "zero_weight_rows": int(y_all.shape[0] - y_arr.shape[0]),
                     "effective_bads": eff_bad, "effective_goods": eff_good},
    }
    # Hanley-McNeil on the effective counts: 1,000 goods of weight 10 carry the noise of 1,000 rows, not 10,000
    out.update(auc_uncertainty(a, max(int(round(eff_bad)), 1), max(int(round(eff_good)), 1)))
    return out


#: fewer rows than this in either class and an evaluation block says its AUC and KS are not reliable
MIN_CLASS_ROWS = 30


def auc_uncertainty(a: float, n_pos: int, n_neg: int) -> dict[str, Any]:
    """The AUC's standard error (Hanley & McNeil, 1982) and, with few rows of a class, why it matters.

    A rare-default portfolio's test rows may hold a handful of defaults; its AUC is then one draw
    from a wide range (two defaults: each one's rank moves the AUC by half), and a report that
    shows "AUC 0.995" alone invites a decision the data cannot support. Returns ``auc_se`` and,
    under :data:`MIN_CLASS_ROWS` rows of either class, ``small_sample``: a sentence the runtime logs
    and the report shows, as :func:`population_stability_index` does for the PSI band.
    """
    q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    out: dict[str, Any] = {"auc_se": float(np.sqrt(max(var, 0.0)))}
    if min(n_pos, n_neg) < MIN_CLASS_ROWS:
        few = (f"{n_pos:,} default{'' if n_pos == 1 else 's'}" if n_pos < n_neg
               else f"{n_neg:,} non-default{'' if n_neg == 1 else 's'}")
        out["small_sample"] = (f"with {few} in these rows the AUC's standard error is about {out['auc_se']:.2f} "
                               "(Hanley-McNeil; larger still for a weaker model), and KS moves as much: too few to "
                               f"compare or sign off models; evaluate on at least {MIN_CLASS_ROWS} of each class")
    return out
