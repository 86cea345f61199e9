"""Tests for fedrisk.finance.metrics against scikit-learn and hand-computed cases."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import brier_score_loss, roc_auc_score, roc_curve

from fedrisk.errors import DataError
from fedrisk.finance import metrics as m


def _sample(n: int = 500, seed: int = 0, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.2 * y - 0.6)))
    if ties:
        p = np.round(p, 1)
    return y, p


# -- hand-computed cases -----------------------------------------------------------------------
def test_auc_hand_computed_with_ties():
    # pairs (bad, good): bads {0.8, 0.5}, goods {0.5, 0.2}
    # 0.8>0.5 (1), 0.8>0.2 (1), 0.5=0.5 (1/2), 0.5>0.2 (1) -> 3.5 / 4
    y = [1, 1, 0, 0]
    s = [0.8, 0.5, 0.5, 0.2]
    assert m.auc(y, s) == pytest.approx(0.875)
    assert m.gini(y, s) == pytest.approx(0.75)


def test_auc_perfect_and_reversed():
    assert m.auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert m.auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert m.auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5


def test_ks_hand_computed():
    # thresholds 0.9: bad 1/2 good 0 -> .5 ; 0.7: bad 1/2 good 1/3 ; 0.6: 2/2, 1/3 -> .667 ; ...
    y = [1, 0, 1, 0, 0]
    s = [0.9, 0.7, 0.6, 0.3, 0.1]
    c = m.ks_curve(y, s)
    assert c["ks"] == pytest.approx(2 / 3)
    assert c["ks_score"] == pytest.approx(0.6)
    assert c["cum_bad_rate"][0] == 0 and c["cum_bad_rate"][-1] == 1
    assert c["cum_good_rate"][-1] == 1


def test_ks_does_not_split_ties():
    # all scores tied: the only thresholds are +inf and 0.5 -> KS 0
    assert m.ks([1, 0, 1, 0], [0.5] * 4) == 0.0
    # reversed ordering gives KS 0 and a finite ks_score
    c = m.ks_curve([0, 1], [0.9, 0.1])
    assert c["ks"] == 0.0 and np.isfinite(c["ks_score"])


def test_lift_table_hand_computed():
    y = [1, 1, 0, 1, 0, 0, 0, 0, 0, 0]
    s = np.arange(10, 0, -1) / 10  # already descending
    rows = m.lift_table(y, s, n_bins=5)
    assert [r["n"] for r in rows] == [2] * 5
    assert [r["bads"] for r in rows] == [2, 1, 0, 0, 0]
    assert rows[0]["bad_rate"] == 1.0
    assert rows[0]["lift"] == pytest.approx(1.0 / 0.3)
    assert [r["cum_gain"] for r in rows] == pytest.approx([2 / 3, 1, 1, 1, 1])
    assert rows[0]["decile"] == 1 and rows[0]["max_score"] == 1.0


def test_brier_calibration_confusion_hand():
    y = [1, 0, 1, 0]
    p = [0.9, 0.2, 0.4, 0.6]
    assert m.brier(y, p) == pytest.approx((0.01 + 0.04 + 0.36 + 0.36) / 4)
    c = m.confusion(y, p, 0.5)
    assert (c["tp"], c["fp"], c["tn"], c["fn"]) == (1, 1, 1, 1)
    assert c["precision"] == 0.5 and c["recall"] == 0.5 and c["accuracy"] == 0.5
    cal = m.calibration_table(y, p, n_bins=2)
    assert [r["n"] for r in cal] == [2, 2]
    assert cal[0]["mean_predicted"] == pytest.approx(0.3)  # 0.2, 0.4
    assert cal[0]["observed_rate"] == 0.5
    assert cal[1]["mean_predicted"] == pytest.approx(0.75)


def test_confusion_zero_denominators():
    c = m.confusion([0, 0], [0.1, 0.2])
    assert c["precision"] == 0.0 and c["recall"] == 0.0 and c["f1"] == 0.0


# -- against scikit-learn ----------------------------------------------------------------------
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_sklearn(seed, ties):
    y, p = _sample(seed=seed, ties=ties)
    assert m.auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, p)
    assert m.ks(y, p) == pytest.approx(np.max(tpr - fpr), abs=1e-12)
    assert m.brier(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    c = m.ks_curve(y, p)
    # our curve is the ROC curve at every distinct threshold: sklearn's points are a subset
    ours = {(round(a, 12), round(b, 12)) for a, b in zip(c["cum_good_rate"], c["cum_bad_rate"])}
    assert all((round(a, 12), round(b, 12)) in ours for a, b in zip(fpr, tpr))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1), st.integers(0, 6)), min_size=2, max_size=40).filter(
        lambda xs: len({a for a, _ in xs}) == 2
    )
)
def test_auc_ks_property_heavy_ties(rows):
    y = np.array([a for a, _ in rows])
    s = np.array([b for _, b in rows], dtype=float)
    assert m.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, s)
    assert m.ks(y, s) == pytest.approx(max(0.0, np.max(tpr - fpr)), abs=1e-12)


# -- PSI ---------------------------------------------------------------------------------------
def test_psi_identical_is_zero_and_bands():
    rng = np.random.default_rng(3)
    e = rng.normal(size=5000)
    r = m.population_stability_index(e, e)
    assert r["psi"] == pytest.approx(0.0, abs=1e-12)
    assert r["band"] == "stable"
    assert len(r["bins"]) == 10
    assert sum(b["expected_n"] for b in r["bins"]) == 5000
    assert m.population_stability_index(e, rng.normal(0.5, 1, 5000))["band"] in ("watch", "shift")
    assert m.population_stability_index(e, rng.normal(2, 1, 5000))["band"] == "shift"
    assert m.psi_band(0.05) == "stable" and m.psi_band(0.2) == "watch" and m.psi_band(0.3) == "shift"


def test_psi_hand_computed_and_empty_bin_smoothing():
    e = np.array([1, 2, 3, 4], dtype=float)
    a = np.array([1, 1, 1, 4], dtype=float)
    r = m.population_stability_index(e, a, n_bins=2)
    # inner edge = median 2.5; expected 2/2, actual 3/1
    exp = (0.75 - 0.5) * np.log(0.75 / 0.5) + (0.25 - 0.5) * np.log(0.25 / 0.5)
    assert r["psi"] == pytest.approx(exp)
    # every actual score in the first bin: second bin smoothed with PSI_EPSILON, finite result
    r2 = m.population_stability_index(e, [0.0, 0.0], n_bins=2)
    assert np.isfinite(r2["psi"]) and r2["band"] == "shift"
    assert r2["bins"][1]["actual_pct"] == 0.0


def test_psi_duplicate_edges_merged():
    e = np.r_[np.zeros(90), np.arange(10)]
    r = m.population_stability_index(e, e, n_bins=10)
    assert len(r["bins"]) < 10 and r["psi"] == pytest.approx(0.0)


# -- evaluate and errors -----------------------------------------------------------------------
def test_evaluate_is_json_able_and_complete():
    y, p = _sample()
    out = m.evaluate(y, p)
    for k in ("n", "positives", "auc", "ks", "ks_score", "gini", "brier", "lift", "calibration", "confusion"):
        assert k in out
    assert out["gini"] == pytest.approx(2 * out["auc"] - 1)
    json.loads(json.dumps(out, allow_nan=False))


def test_an_auc_from_a_handful_of_defaults_says_how_uncertain_it_is():
    """A 0.6 %-default federation's test rows held 2 defaults and metrics.json said AUC 0.995, nothing else.
    With so few of one class the AUC is one of a wide range of values the same model gives on another
    sample; the block says so with the Hanley-McNeil standard error (checked here against its formula and
    against the spread of the AUC over resampled test sets of that size)."""
    rng = np.random.default_rng(5)
    n_pos, n_neg = 6, 900
    y = np.r_[np.ones(n_pos), np.zeros(n_neg)]
    p = 1 / (1 + np.exp(-(np.r_[rng.normal(1.0, 1, n_pos), rng.normal(0, 1, n_neg)] - 4)))
    out = m.evaluate(y, p)
    a = out["auc"]
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = np.sqrt((a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg))
    assert out["auc_se"] == pytest.approx(se)
    # the same model on 400 other test samples of the same size: the AUC's spread is of that order
    aucs = [m.auc(y, 1 / (1 + np.exp(-(np.r_[rng.normal(1.0, 1, n_pos), rng.normal(0, 1, n_neg)] - 4))))
            for _ in range(400)]
    assert 0.6 < np.std(aucs) / se < 1.6
    assert "6 defaults" in out["small_sample"] and f"{se:.2f}" in out["small_sample"]
    json.loads(json.dumps(out, allow_nan=False))
    big = m.evaluate(*_sample())
    assert "small_sample" not in big and big["auc_se"] < 0.05


@pytest.mark.parametrize("fn", [m.auc, m.ks, m.gini, m.evaluate, m.lift_table])
def test_one_class_raises(fn):
    with pytest.raises(DataError, match="only one class"):
        fn([0, 0, 0], [0.1, 0.2, 0.3])


@pytest.mark.parametrize("fn", [m.auc, m.ks, m.brier, m.evaluate, m.confusion, m.calibration_table])
def test_length_mismatch_raises(fn):
    with pytest.raises(DataError, match="rows"):
        fn([0, 1, 0], [0.1, 0.2])


def test_bad_inputs():
    with pytest.raises(DataError, match="binary"):
        m.auc([0, 2], [0.1, 0.2])
    with pytest.raises(DataError, match="NaN"):
        m.auc([0, 1], [0.1, np.nan])
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        m.brier([0, 1], [0.1, 3.0])
    with pytest.raises(DataError, match="empty"):
        m.population_stability_index([], [1.0])


# -- against independent computations (scipy / pandas), continuous scores -----------------------
@pytest.mark.parametrize("seed", [0, 5])
def test_ks_gini_lift_psi_against_independent_computation(seed):
    import pandas as pd
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(seed)
    n = 5000
    y = (rng.random(n) < 0.2).astype(int)
    s = rng.normal(size=n) + 0.9 * y  # continuous: no ties, so every definition agrees
    # KS: the two-sample Kolmogorov-Smirnov statistic between bads' and goods' score distributions
    assert m.ks(y, s) == pytest.approx(ks_2samp(s[y == 1], s[y == 0]).statistic, abs=1e-12)
    # Gini: Somers' D from pairwise comparisons on a subsample (O(n^2) brute force)
    sub = rng.choice(n, 600, replace=False)
    yb, sb = y[sub], s[sub]
    diff = np.sign(sb[yb == 1][:, None] - sb[yb == 0][None, :])
    assert m.gini(yb, sb) == pytest.approx(diff.mean(), abs=1e-12)
    # lift: pandas qcut deciles of the score, riskiest first
    dec = pd.qcut(-s, 10, labels=False)
    ref = pd.DataFrame({"y": y, "d": dec}).groupby("d")["y"].agg(["size", "sum"])
    ours = m.lift_table(y, s)
    assert [r["n"] for r in ours] == ref["size"].tolist()
    np.testing.assert_allclose([r["lift"] for r in ours], (ref["sum"] / ref["size"] / y.mean()).to_numpy(), rtol=1e-12)
    np.testing.assert_allclose([r["cum_gain"] for r in ours], (ref["sum"].cumsum() / y.sum()).to_numpy(), rtol=1e-12)
    # PSI: deciles of the expected sample by pandas, the textbook formula
    e, a = s[:3000], s[3000:] + 0.2
    cuts = pd.qcut(e, 10, retbins=True)[1]
    cuts[0], cuts[-1] = -np.inf, np.inf
    pe = pd.Series(pd.cut(e, cuts)).value_counts(normalize=True, sort=False).sort_index().to_numpy()
    pa = pd.Series(pd.cut(a, cuts)).value_counts(normalize=True, sort=False).sort_index().to_numpy()
    assert m.population_stability_index(e, a)["psi"] == pytest.approx(float(np.sum((pa - pe) * np.log(pa / pe))), rel=1e-9)


@pytest.mark.parametrize("labels", [["good", "bad", "good", "bad"], [1, 2, 1, 2]])
def test_labels_in_another_coding_are_one_clear_error(labels):
    """Text labels ("good"/"bad") used to raise numpy's bare ValueError; 1/2 labels a generic message.
    Both now say how to map them to 0/1."""
    import pandas as pd

    for y in (labels, pd.Series(labels)):
        with pytest.raises(DataError, match=r"y must be binary 0/1 .*y == "):
            m.auc(y, [0.1, 0.9, 0.2, 0.8])


def test_unscored_rows_are_counted_with_the_way_to_evaluate_the_rest():
    """A split model leaves NaN where a test id is absent at a feature holder (the README's
    ``fr.metrics.auc(test.y, p)`` then failed with "score every row before evaluating", which
    cannot be done); the message counts them and says how to evaluate the scored rows."""
    y = np.array([0, 1, 0, 1, 0])
    p = np.array([0.1, np.nan, 0.3, 0.8, np.nan])
    with pytest.raises(DataError) as info:
        m.auc(y, p)
    msg = str(info.value)
    assert "2 of 5" in msg and "not scored" in msg and "~np.isnan" in msg and "\n" not in msg, msg
    ok = ~np.isnan(p)
    assert m.auc(y[ok], p[ok]) == 1.0
    with pytest.raises(DataError, match="infinite"):
        m.auc(y, np.array([0.1, np.inf, 0.3, 0.8, 0.2]))


def test_the_report_shows_the_few_defaults_note_beside_the_auc(tmp_path):
    """metrics.json's test block with 3 defaults: the report's data notes carry the sentence."""
    from fedrisk.finance.report import load_run, render_report

    rng = np.random.default_rng(9)
    y = np.r_[np.ones(3), np.zeros(500)]
    p = 1 / (1 + np.exp(-(rng.normal(size=503) + 2 * y - 4)))
    (tmp_path / "metrics.json").write_text(json.dumps({"task": "vertical.lr", "test": m.evaluate(y, p)}))
    html = render_report(load_run(tmp_path))
    assert "test rows: with 3 defaults in these rows the AUC&#x27;s standard error" in html


# -- tied scores (a scorecard has few distinct totals) -------------------------------------------
def test_lift_and_calibration_groups_never_split_tied_scores():
    """Equal-size groups used to cut through a run of tied scores and share it out by row order, so the same
    applicants in another order gave other bad counts per decile (a validator re-sorting by id could not
    reproduce the table). Tied rows now go together into the group where their run starts."""
    import pandas as pd

    rng = np.random.default_rng(3)
    n = 1000
    s = rng.choice(np.linspace(0.05, 0.6, 13), n)  # 13 distinct "point totals"
    y = (rng.random(n) < s).astype(int)
    perm = rng.permutation(n)
    for table, key, desc in ((m.lift_table, "decile", True), (m.calibration_table, "bin", False)):
        rows, again = table(y, s), table(y[perm], s[perm])
        assert rows == again
        # independent: a run of ties takes the group of its first row in an equal-count cut (pandas min-rank)
        rank = pd.Series(-s if desc else s).rank(method="min").to_numpy() - 1
        g = (rank * 10 // n).astype(int)
        ref = pd.DataFrame({"y": y, "g": g}).groupby("g")["y"].agg(["size", "sum"])
        assert [r["n"] for r in rows] == ref["size"].tolist()
        assert [r["bads"] for r in rows] == ref["sum"].tolist()
        assert [r[key] for r in rows] == list(range(1, len(ref) + 1))
    lift = m.lift_table(y, s)
    assert all(a["min_score"] > b["max_score"] for a, b in zip(lift, lift[1:]))  # no score in two groups
    gains = np.cumsum([r["bads"] for r in lift]) / y.sum()
    np.testing.assert_allclose([r["cum_gain"] for r in lift], gains)


def test_a_score_holding_most_rows_makes_fewer_groups_not_empty_ones():
    y = [1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0]
    s = [0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.2, 0.1, 0.1, 0.1]
    rows = m.lift_table(y, s, n_bins=4)
    assert [(r["n"], r["bads"]) for r in rows] == [(8, 2), (1, 1), (3, 0)]
    assert all(np.isfinite(r["lift"]) for r in rows)
    cal = m.calibration_table(y, s, n_bins=4)
    assert [(r["n"], r["bads"]) for r in cal] == [(3, 0), (9, 3)]  # 0.2 opens group 2 of 4; the 0.9 run starts in it


def test_a_single_default_is_named_in_the_singular_with_its_hanley_mcneil_error():
    rng = np.random.default_rng(0)
    y = np.zeros(50)
    y[7] = 1
    s = rng.random(50)
    out = m.evaluate(y, s)
    a = roc_auc_score(y, s)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)  # Hanley & McNeil (1982), eq. 2, with 1 bad and 49 goods
    assert out["auc_se"] == pytest.approx(np.sqrt((a * (1 - a) + 0 * (q1 - a * a) + 48 * (q2 - a * a)) / 49), rel=1e-12)
    assert out["small_sample"].startswith("with 1 default in these rows")


def test_psi_with_a_bin_empty_in_one_sample_is_finite_and_says_it_was_smoothed(tmp_path):
    """An empty bin's proportion is floored at PSI_EPSILON, so PSI stays finite, but then its value depends on that
    floor; the result and the report say how many bins were floored in each sample."""
    import json

    from fedrisk.finance.report import write_report

    rng = np.random.default_rng(4)
    e = rng.random(2000)
    a = rng.random(1000) * 0.55  # the top four deciles of the expected sample get no actual row
    out = m.population_stability_index(e, a)
    edges = np.r_[-np.inf, np.quantile(e, np.linspace(0, 1, 11)[1:-1]), np.inf]
    en = np.histogram(e, edges)[0] / e.size
    an = np.histogram(a, edges)[0] / a.size
    an_s = np.where(an == 0, 1e-4, an)
    assert np.isfinite(out["psi"])
    assert out["psi"] == pytest.approx(float(np.sum((an_s - en) * np.log(an_s / en))), rel=1e-9)
    assert out["empty_bins"] == {"expected": 0, "actual": int((an == 0).sum())} and out["empty_bins"]["actual"] == 4
    (tmp_path / "metrics.json").write_text(json.dumps({"task": "horizontal.lr", "stability": out}))
    html = write_report(tmp_path).read_text()
    assert "4 bins empty in the test sample" in html
    assert "+∞)" in html and "+∞]" not in html  # bins are (lower, upper]; the top one is open
