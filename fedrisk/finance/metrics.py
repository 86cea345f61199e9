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


def _threshold_counts(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct thresholds (descending) and cumulative bads / goods with ``score >= threshold``."""
    order = np.argsort(-score, kind="mergesort")
    s_sorted = score[order]
    y_sorted = y[order]
    # last index of every run of equal scores: a threshold never splits tied rows
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.shape[0] - 1]
    cum_bad = np.cumsum(y_sorted)[last]
    cum_good = (last + 1) - cum_bad
    return s_sorted[last], cum_bad, cum_good


def _equal_count_groups(s_sorted: np.ndarray, n_bins: int) -> np.ndarray:
    """Group (0, 1, ...) of each row of a sorted score: equal-count cuts that never split tied scores.

    Row ``i`` of ``n`` would fall in group ``i * n_bins // n``; a run of equal scores takes the group of
    its first row, so a cut inside the run moves to its end. Without this the rows of a tie straddling a
    cut were shared out by their order in the file, and the same applicants in another order gave other
    bad counts per group (a scorecard has few distinct totals, so most cuts fall in a tie). Groups left
    empty by a long run are dropped and the rest numbered consecutively.
    """
    n = s_sorted.shape[0]
    starts = np.r_[True, s_sorted[1:] != s_sorted[:-1]]
    run_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    group = (run_start * int(n_bins)) // n
    return np.unique(group, return_inverse=True)[1].astype(np.int64)


# -- rank metrics ------------------------------------------------------------------------------
def auc(y: Any, score: Any) -> float:
    """Area under the ROC curve (probability a random bad scores above a random good).

    Parameters
    ----------
    y : array-like of {0, 1}
        Target, 1 = bad.
    score : array-like of float
        Higher means riskier.

    Returns
    -------
    float
        AUC in ``[0, 1]``.

    Raises
    ------
    DataError
        Lengths differ, ``y`` is not binary, or only one class is present.

    Notes
    -----
    Computed as the Mann–Whitney U statistic from mid-ranks, so a tied bad/good pair counts 1/2;
    this equals the trapezoidal area under the ROC curve (``sklearn.metrics.roc_auc_score``).
    """
    y_arr, s_arr = _as_arrays(y, score)
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


def gini(y: Any, score: Any) -> float:
    """Gini coefficient (accuracy ratio) ``2 * AUC - 1``.

    Parameters
    ----------
    y : array-like of {0, 1}
        Target, 1 = bad.
    score : array-like of float
        Higher means riskier.

    Returns
    -------
    float
        Gini in ``[-1, 1]``.
    """
    return 2.0 * auc(y, score) - 1.0


def ks_curve(y: Any, score: Any) -> dict[str, Any]:
    """Kolmogorov–Smirnov curve: cumulative bad and good rates by score threshold.

    Parameters
    ----------
    y : array-like of {0, 1}
        Target, 1 = bad.
    score : array-like of float
        Higher means riskier.

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
    so ``ks == max(tpr - fpr)`` of ``sklearn.metrics.roc_curve``.
    """
    y_arr, s_arr = _as_arrays(y, score)
    thr, cum_bad, cum_good = _threshold_counts(y_arr, s_arr)
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


def ks(y: Any, score: Any) -> float:
    """KS statistic: the largest gap between the cumulative bad and good rates.

    Parameters
    ----------
    y : array-like of {0, 1}
        Target, 1 = bad.
    score : array-like of float
        Higher means riskier.

    Returns
    -------
    float
        KS in ``[0, 1]``.
    """
    return ks_curve(y, score)["ks"]


def lift_table(y: Any, score: Any, n_bins: int = 10) -> list[dict[str, Any]]:
    """Lift / gains table by score quantile, riskiest group first.

    Parameters
    ----------
    y : array-like of {0, 1}
        Target, 1 = bad.
    score : array-like of float
        Higher means riskier.
    n_bins : int, default 10
        Number of groups (10 = deciles).

    Returns
    -------
    list of dict
        One row per group: ``decile`` (1 = riskiest), ``n``, ``bads``, ``bad_rate``, ``lift``
        (group bad rate / overall bad rate), ``cum_gain`` (share of all bads captured up to and
        including this group), ``min_score`` and ``max_score``.

    Notes
    -----
    Rows are sorted by descending score and cut into ``n_bins`` groups of (nearly) equal size, except
    that tied scores are never split: a run of equal scores goes whole into the group where it starts
    (see :func:`_equal_count_groups`), so the table does not depend on the rows' order. With heavy ties
    (a scorecard's few point totals) groups differ in size, and a score held by more than a group's
    share of rows leaves fewer than ``n_bins`` groups.
    """
    if int(n_bins) < 1:
        raise DataError(f"n_bins must be at least 1, got {n_bins}")
    y_arr, s_arr = _as_arrays(y, score)
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


# -- stability ---------------------------------------------------------------------------------
def psi_band(psi: float) -> str:
    """Conventional reading of a PSI value: ``stable`` < 0.1 ≤ ``watch`` ≤ 0.25 < ``shift``."""
    if psi < 0.1:
        return "stable"
    if psi <= 0.25:
        return "watch"
    return "shift"


def population_stability_index(expected_scores: Any, actual_scores: Any, n_bins: int = 10) -> dict[str, Any]:
    """Population stability index between a reference (expected) and a new (actual) sample.

    Parameters
    ----------
    expected_scores : array-like of float
        Reference scores (e.g. training / development sample).
    actual_scores : array-like of float
        Scores to compare (e.g. test or recent applications).
    n_bins : int, default 10
        Number of quantile bins cut on the expected sample.

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
def brier(y: Any, p: Any) -> float:
    """Brier score: mean squared error of the predicted default probability.

    Parameters
    ----------
    y : array-like of {0, 1}
        Target, 1 = bad.
    p : array-like of float in [0, 1]
        Predicted probability of bad.

    Returns
    -------
    float
        Brier score (lower is better; 0.25 is a constant 0.5 guess).
    """
    y_arr, p_arr = _as_arrays(y, p, name="p", need_both=False)
    _check_probabilities(p_arr)
    return float(np.mean((p_arr - y_arr) ** 2))


def calibration_table(y: Any, p: Any, n_bins: int = 10) -> list[dict[str, Any]]:
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

    Returns
    -------
    list of dict
        ``bin`` (1-based), ``n``, ``bads``, ``mean_predicted``, ``observed_rate``,
        ``min_p``, ``max_p``.

    Notes
    -----
    Equal-count bins (rather than fixed ``[0, 0.1)``… intervals) because default probabilities
    are concentrated at the low end; fixed intervals would leave most bins empty.
    """
    if int(n_bins) < 1:
        raise DataError(f"n_bins must be at least 1, got {n_bins}")
    y_arr, p_arr = _as_arrays(y, p, name="p", need_both=False)
    _check_probabilities(p_arr)
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


def confusion(y: Any, p: Any, threshold: float = 0.5) -> dict[str, Any]:
    """Confusion matrix and derived rates when rows with ``p >= threshold`` are flagged bad.

    Parameters
    ----------
    y : array-like of {0, 1}
        Target, 1 = bad.
    p : array-like of float
        Predicted probability (or score) of bad.
    threshold : float, default 0.5
        Rows with ``p >= threshold`` are predicted bad.

    Returns
    -------
    dict
        ``threshold``, ``tp``, ``fp``, ``tn``, ``fn``, ``accuracy``, ``precision``, ``recall``
        (bad capture rate), ``specificity``, ``f1``. A rate whose denominator is zero is 0.0.
    """
    y_arr, p_arr = _as_arrays(y, p, name="p", need_both=False)
    pred = p_arr >= threshold
    pos = y_arr == 1
    tp = int(np.sum(pred & pos))
    fp = int(np.sum(pred & ~pos))
    fn = int(np.sum(~pred & pos))
    tn = int(np.sum(~pred & ~pos))

    def _div(a: float, b: float) -> float:
        return float(a / b) if b else 0.0

    precision = _div(tp, tp + fp)
    recall = _div(tp, tp + fn)
    return {
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


def evaluate(y: Any, p: Any, *, n_bins: int = 10, threshold: float = 0.5) -> dict[str, Any]:
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

    Returns
    -------
    dict
        ``n``, ``positives``, ``bad_rate``, ``auc``, ``ks``, ``ks_score``, ``gini``, ``brier``,
        ``lift`` (list, see :func:`lift_table`), ``calibration`` (list, see
        :func:`calibration_table`), ``confusion`` (dict, see :func:`confusion`), ``auc_se``
        and, with few rows of a class, ``small_sample`` (see :func:`auc_uncertainty`).

    Raises
    ------
    DataError
        Lengths differ, ``y`` has one class, or ``p`` is outside ``[0, 1]``.
    """
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
