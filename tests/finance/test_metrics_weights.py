"""Sample weights in fedrisk.finance.metrics, against independent references on the same rows.

References: scikit-learn's ``roc_auc_score`` / ``brier_score_loss`` with ``sample_weight``, a KS from
scipy's weighted ECDFs, and the defining property of frequency weights: integer weights give the
metrics of the rows repeated ``w`` times (a weight of 0 leaves the row out).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import ks_2samp
from sklearn.metrics import brier_score_loss, roc_auc_score

from fedrisk.errors import DataError
from fedrisk.finance import metrics as m


def _weighted_sample(n: int = 400, seed: int = 0, ties: bool = True):
    """A stratified development sample: every default kept, one good in ten (weight 10), plus exposure noise."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.3 * y - 1.0)))
    if ties:
        p = np.round(p, 2)
    w = np.where(y == 1, 1.0, 10.0) * rng.uniform(0.5, 2.0, n)
    return y, p, w


# -- independent references --------------------------------------------------------------------
@pytest.mark.parametrize("ties", [False, True])
def test_weighted_auc_and_gini_match_sklearn(ties):
    y, p, w = _weighted_sample(ties=ties)
    ref = roc_auc_score(y, p, sample_weight=w)
    assert m.auc(y, p, sample_weight=w) == pytest.approx(ref, abs=1e-12)
    assert m.gini(y, p, sample_weight=w) == pytest.approx(2 * ref - 1, abs=1e-12)
    # the weights matter: the unweighted AUC of these rows is another number
    assert abs(m.auc(y, p) - ref) > 1e-3


def test_weighted_auc_counts_a_tied_pair_as_half_its_weight():
    # bads {0.8 (w 2), 0.5 (w 1)}, goods {0.5 (w 3), 0.2 (w 1)}:
    # 0.8>0.5: 2*3, 0.8>0.2: 2*1, 0.5=0.5: 1*3/2, 0.5>0.2: 1*1 -> 10.5 of 3*4 = 12
    y, s, w = [1, 1, 0, 0], [0.8, 0.5, 0.5, 0.2], [2, 1, 3, 1]
    assert m.auc(y, s, sample_weight=w) == pytest.approx(10.5 / 12)
    assert roc_auc_score(y, s, sample_weight=w) == pytest.approx(10.5 / 12)


def test_weighted_brier_matches_sklearn():
    y, p, w = _weighted_sample()
    assert m.brier(y, p, sample_weight=w) == pytest.approx(brier_score_loss(y, p, sample_weight=w), rel=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_ks_is_the_largest_gap_of_the_weighted_ecdfs(ties):
    y, p, w = _weighted_sample(seed=3, ties=ties)
    bad, good = y == 1, y == 0
    # weighted ECDFs F(x) = share of the class's weight with score <= x, on every distinct score (numpy);
    # "rate with score >= t" of fedrisk's curve is 1 - F just below t, so KS = max_x F_good(x) - F_bad(x)
    grid = np.unique(p)
    F_bad = np.array([w[bad & (p <= x)].sum() for x in grid]) / w[bad].sum()
    F_good = np.array([w[good & (p <= x)].sum() for x in grid]) / w[good].sum()
    ref = float(np.max(F_good - F_bad))
    curve = m.ks_curve(y, p, sample_weight=w)
    assert curve["ks"] == pytest.approx(ref, abs=1e-12)
    assert m.ks(y, p, sample_weight=w) == curve["ks"]
    assert abs(m.ks(y, p) - ref) > 1e-3  # the weights matter here
    # the threshold where it peaks realises it
    i = int(np.flatnonzero(curve["thresholds"] == curve["ks_score"])[0])
    assert curve["cum_bad_rate"][i] - curve["cum_good_rate"][i] == pytest.approx(ref, abs=1e-12)


def test_weighted_ks_matches_scipy_two_sample_statistic_with_integer_weights():
    rng = np.random.default_rng(5)
    y, p, _ = _weighted_sample(seed=5)
    w = rng.integers(0, 6, y.size)
    bad, good = y == 1, y == 0
    # scipy's two-sample KS on the ECDFs of the repeated rows (two-sided; the model ranks bads higher, so the
    # largest gap is the one-sided one credit KS reports)
    ref = ks_2samp(np.repeat(p[bad], w[bad]), np.repeat(p[good], w[good])).statistic
    assert m.ks(y, p, sample_weight=w) == pytest.approx(ref, abs=1e-12)


# -- frequency weights: integer weights are repeated rows ----------------------------------------
@st.composite
def _rows_with_counts(draw):
    """Labels, heavily tied scores (a scorecard's few totals) and integer weights 0..4, both classes weighted."""
    n = draw(st.integers(4, 40))
    y = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    s = np.array(draw(st.lists(st.integers(0, 6), min_size=n, max_size=n)), dtype=float) / 6
    w = np.array(draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)))
    y[:2], w[:2] = (0, 1), (1, 2)  # at least one good and one bad of positive weight
    return y, s, w


def _same_rows(weighted: list[dict], repeated: list[dict]) -> None:
    """A weighted lift/calibration table equals the repeated rows' one: weight sums for counts, same rates and cuts."""
    assert len(weighted) == len(repeated)
    for a, b in zip(weighted, repeated):
        for key, val in b.items():
            if key in ("mean_predicted",):  # a sum of products vs a sum of copies: rounding only
                assert a[key] == pytest.approx(val, rel=1e-12, abs=1e-15)
            else:
                assert a[key] == val, key


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(_rows_with_counts(), st.integers(1, 7))
def test_integer_weights_give_the_metrics_of_the_repeated_rows(rows, n_bins):
    y, s, w = rows
    yr, sr = np.repeat(y, w), np.repeat(s, w)
    # exact: the weighted sums are the repeated rows' counts, so the same floating-point operations follow
    assert m.auc(y, s, sample_weight=w) == m.auc(yr, sr)
    assert m.gini(y, s, sample_weight=w) == m.gini(yr, sr)
    cw, cr = m.ks_curve(y, s, sample_weight=w), m.ks_curve(yr, sr)
    assert (cw["ks"], cw["ks_score"]) == (cr["ks"], cr["ks_score"])
    np.testing.assert_array_equal(cw["cum_bad_rate"], cr["cum_bad_rate"])
    np.testing.assert_array_equal(cw["thresholds"], cr["thresholds"])
    _same_rows(m.lift_table(y, s, n_bins, sample_weight=w), m.lift_table(yr, sr, n_bins))
    _same_rows(m.calibration_table(y, s, n_bins, sample_weight=w), m.calibration_table(yr, sr, n_bins))
    conf_w, conf_r = m.confusion(y, s, 0.5, sample_weight=w), m.confusion(yr, sr, 0.5)
    assert {k: v for k, v in conf_w.items() if k != "rows"} == conf_r
    assert m.brier(y, s, sample_weight=w) == pytest.approx(m.brier(yr, sr), rel=1e-12, abs=1e-15)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 3)), min_size=2, max_size=40),
       st.lists(st.tuples(st.integers(0, 12), st.integers(0, 3)), min_size=1, max_size=40), st.integers(1, 10))
def test_integer_weights_give_the_psi_of_the_repeated_rows(expected, actual, n_bins):
    e, we = (np.array(v, dtype=float) for v in zip(*expected))
    a, wa = (np.array(v, dtype=float) for v in zip(*actual))
    we[0], wa[0] = 1, 2  # each sample keeps a row
    weighted = m.population_stability_index(e / 3, a / 3, n_bins, expected_weight=we, actual_weight=wa)
    repeated = m.population_stability_index(np.repeat(e, we.astype(int)) / 3, np.repeat(a, wa.astype(int)) / 3, n_bins)
    assert weighted["psi"] == repeated["psi"]
    assert [(b["lower"], b["upper"], b["expected_n"], b["actual_n"]) for b in weighted["bins"]] == \
           [(b["lower"], b["upper"], b["expected_n"], b["actual_n"]) for b in repeated["bins"]]
    assert (weighted["n_expected"], weighted["n_actual"]) == (repeated["n_expected"], repeated["n_actual"])


def test_weighted_quantile_is_numpys_linear_quantile_of_the_repeated_rows():
    rng = np.random.default_rng(2)
    x = np.sort(rng.normal(size=60).round(1))
    w = rng.integers(0, 5, 60).astype(float)
    w[0] = 1
    q = np.linspace(0, 1, 21)
    np.testing.assert_array_equal(m._weighted_quantile(x[w > 0], w[w > 0], q), np.quantile(np.repeat(x, w.astype(int)), q))


# -- without weights, or with equal ones ---------------------------------------------------------
def test_equal_weights_change_nothing_but_the_counts():
    y, p, _ = _weighted_sample(seed=7)
    base = m.evaluate(y, p)
    for c in (1.0, 3.5):
        got = m.evaluate(y, p, sample_weight=np.full(y.size, c))
        for key in ("auc", "ks", "ks_score", "gini", "bad_rate", "auc_se"):
            assert got[key] == pytest.approx(base[key], rel=1e-12), key
        assert got["brier"] == pytest.approx(base["brier"], rel=1e-12)
        assert [r["rows"] for r in got["lift"]] == [r["n"] for r in base["lift"]]
        assert [r["n"] for r in got["lift"]] == pytest.approx([c * r["n"] for r in base["lift"]])
        assert [r["rows"] for r in got["calibration"]] == [r["n"] for r in base["calibration"]]
        assert got["weighted"]["effective_bads"] == pytest.approx(base["positives"])
        assert got.get("small_sample") == base.get("small_sample")
    psi = m.population_stability_index(p[:200], p[200:])
    wpsi = m.population_stability_index(p[:200], p[200:], expected_weight=np.ones(200), actual_weight=np.full(200, 1.0))
    assert wpsi["psi"] == psi["psi"] and wpsi["chance_psi"] == psi["chance_psi"]


def test_zero_weight_rows_are_left_out():
    y, p, w = _weighted_sample(seed=8)
    w[::3] = 0
    keep = w > 0
    got = m.evaluate(y, p, sample_weight=w)
    ref = m.evaluate(y[keep], p[keep], sample_weight=w[keep])
    assert got["auc"] == ref["auc"] and got["lift"] == ref["lift"] and got["calibration"] == ref["calibration"]
    assert got["weighted"]["zero_weight_rows"] == int((~keep).sum())
    assert got["weighted"]["rows"] == int(keep.sum())


def test_weighted_evaluate_is_json_and_says_it_is_weighted():
    y, p, w = _weighted_sample(seed=9)
    out = m.evaluate(y, p, sample_weight=w)
    json.dumps(out)
    assert out["n"] == pytest.approx(w.sum()) and out["positives"] == pytest.approx(w[y == 1].sum())
    assert out["bad_rate"] == pytest.approx(np.average(y, weights=w))
    assert out["weighted"]["rows"] == y.size and out["weighted"]["bad_rows"] == int(y.sum())
    # auc_se uses the effective counts: 10x weights on goods do not make the AUC ten times surer
    eff = out["weighted"]
    assert eff["effective_goods"] < (y == 0).sum()
    assert out["auc_se"] == m.auc_uncertainty(out["auc"], round(eff["effective_bads"]),
                                             round(eff["effective_goods"]))["auc_se"]
    assert "weighted" not in m.evaluate(y, p)


def test_lift_groups_hold_equal_weight_not_equal_rows():
    # 100 rows, riskiest first: 50 of weight 1, then 50 of weight 3 (a down-sampled low-risk segment); total 200,
    # so quintiles hold 40 units each and a row goes where its first unit falls (weight before it // 40):
    # group 1 the top 40 rows; group 2 the next 10 light rows and 10 heavy ones (units 40..79); then heavy rows
    # starting at units 80..119 (14 rows), 120..159 (13), 160..199 (13)
    s = np.linspace(1, 0, 100)
    y = (np.arange(100) % 4 == 0).astype(int)
    w = np.r_[np.ones(50), np.full(50, 3.0)]
    rows = m.lift_table(y, s, 5, sample_weight=w)
    assert [r["n"] for r in rows] == [40.0, 40.0, 42.0, 39.0, 39.0]
    assert [r["rows"] for r in rows] == [40, 20, 14, 13, 13]
    # by rows (unweighted) the same scores make five groups of 20
    assert [r["n"] for r in m.lift_table(y, s, 5)] == [20] * 5


def test_stratified_sample_psi_needs_its_weights():
    # population: 5 % defaults scoring higher; the development sample keeps every default and 1 good in 10
    rng = np.random.default_rng(11)
    y = (rng.random(40_000) < 0.05).astype(int)
    score = rng.normal(size=y.size) + 1.5 * y
    dev = (y == 1) | (rng.random(y.size) < 0.1)
    recent = rng.normal(size=8_000) + 1.5 * (rng.random(8_000) < 0.05)
    raw = m.population_stability_index(score[dev], recent)
    weighted = m.population_stability_index(score[dev], recent, expected_weight=np.where(y[dev] == 1, 1.0, 10.0))
    assert raw["band"] != "stable"  # the default-rich sample looks like a shifted population
    assert weighted["band"] == "stable" and weighted["psi"] < 0.02
    assert weighted["weighted"]["expected_rows"] == int(dev.sum())
    assert weighted["weighted"]["effective_expected"] < dev.sum()


# -- bad weights: one clear line naming the argument ---------------------------------------------
@pytest.mark.parametrize("w, message", [
    ([1, 1, -1, 1], "sample_weight is negative in 1 of 4 rows"),
    ([1, np.nan, 1, 1], "sample_weight is NaN or infinite in 1 of 4 rows"),
    ([1, 1, np.inf, 1], "sample_weight is NaN or infinite in 1 of 4 rows"),
    ([1, 1, 1], "sample_weight has 3 values but y has 4 rows"),
    ([0, 0, 0, 0], "sample_weight is 0 in all 4 rows"),
    (["a", "b", "c", "d"], "sample_weight must be numbers"),
])
@pytest.mark.parametrize("fn", [m.auc, m.gini, m.ks, m.ks_curve, m.brier, m.confusion, m.evaluate,
                                lambda y, p, sample_weight: m.lift_table(y, p, 2, sample_weight=sample_weight),
                                lambda y, p, sample_weight: m.calibration_table(y, p, 2, sample_weight=sample_weight)])
def test_bad_weights_are_one_line_errors(fn, w, message):
    with pytest.raises(DataError, match=message) as err:
        fn([1, 0, 1, 0], [0.9, 0.1, 0.6, 0.4], sample_weight=w)
    assert "\n" not in str(err.value)


def test_weights_leaving_one_class_are_refused_for_rank_metrics():
    with pytest.raises(DataError, match="positive sample_weight are all good"):
        m.auc([1, 0, 0], [0.9, 0.2, 0.1], sample_weight=[0, 1, 1])
    # Brier needs no second class
    assert m.brier([1, 0, 0], [0.9, 0.2, 0.1], sample_weight=[0, 1, 1]) == pytest.approx((0.04 + 0.01) / 2)


def test_bad_psi_weights_name_their_sample():
    with pytest.raises(DataError, match="actual_weight has 2 values but actual_scores has 3 rows"):
        m.population_stability_index([1, 2, 3], [1, 2, 3], actual_weight=[1, 1])
    with pytest.raises(DataError, match="expected_weight is negative"):
        m.population_stability_index([1, 2, 3], [1, 2, 3], expected_weight=[1, -1, 1])
