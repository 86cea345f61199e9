"""Tests for fedrisk.finance.binning."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrisk.errors import ConfigError, DataError
from fedrisk.finance.binning import (
    BinningConfig,
    FeatureBins,
    fit_bins,
    fit_feature_bins,
    merge_bins,
    quantile_edges,
)


def _bad_rates(fb, x, y):
    idx = fb.assign(x)
    return [y[idx == i].mean() for i in range(fb.n_bins) if (idx == i).any()]


def test_feature_bins_assign_numeric_right_closed_and_missing():
    fb = FeatureBins("x", "numeric", edges=np.array([1.0, 5.0]))
    assert fb.assign([0, 1, 1.5, 5, 6, np.nan, None]).tolist() == [0, 0, 1, 1, 2, 3, 3]
    assert fb.labels() == ["<= 1", "(1, 5]", "> 5", "missing"]
    assert FeatureBins.from_dict(fb.to_dict()).edges.tolist() == [1.0, 5.0]


def test_feature_bins_categorical_unseen_goes_to_missing():
    fb = FeatureBins("c", "categorical", groups=[["a", "b"], ["c"]])
    assert fb.assign(["a", "c", "zzz", None, ""]).tolist() == [0, 1, 2, 2, 2]


def test_numeric_bins_reject_text():
    fb = FeatureBins("x", "numeric", edges=np.array([1.0]))
    with pytest.raises(DataError, match="non-numeric"):
        fb.assign(["1", "abc"])


def test_quantile_edges_few_values_and_equal_frequency():
    assert quantile_edges(np.array([1, 2, 2, 3, 3, 3]), 10).tolist() == [1, 2]
    e = quantile_edges(np.arange(1000, dtype=float), 4)
    assert e.tolist() == [249, 499, 749]
    assert quantile_edges(np.array([np.nan, np.nan]), 5).size == 0


def test_monotonic_merge_makes_bad_rate_monotonic():
    rng = np.random.default_rng(0)
    x = rng.normal(size=5000)
    y = (rng.random(5000) < 1 / (1 + np.exp(-(x + 0.3 * np.sin(6 * x))))).astype(int)
    fb = fit_feature_bins(x, y, "x", config=BinningConfig(max_bins=8, n_prebins=30))
    r = _bad_rates(fb, x, y)
    assert fb.n_bins <= 8
    assert all(a <= b for a, b in zip(r, r[1:])) or all(a >= b for a, b in zip(r, r[1:]))


def test_decreasing_trend_detected():
    x = np.arange(1000, dtype=float)
    y = (x < 300).astype(int)
    fb = fit_feature_bins(x, y, "x")
    r = _bad_rates(fb, x, y)
    assert r[0] == 1.0 and all(a >= b for a, b in zip(r, r[1:]))


def test_quantile_method_keeps_prebins():
    x = np.arange(1000, dtype=float)
    fb = fit_feature_bins(x, np.r_[np.zeros(500), np.ones(500)], "x", config=BinningConfig("quantile", n_prebins=5, max_bins=10))
    assert fb.n_bins == 5


def test_min_bin_frac_respected():
    rng = np.random.default_rng(1)
    x = rng.exponential(size=2000)
    y = (rng.random(2000) < 0.2 + 0.1 * (x > 1)).astype(int)
    fb = fit_feature_bins(x, y, "x", config=BinningConfig(min_bin_frac=0.1))
    sizes = np.bincount(fb.assign(x), minlength=fb.n_bins + 1)[:-1]
    assert sizes.min() >= 0.1 * 2000 or fb.n_bins == 1


def test_single_value_and_all_missing():
    y = np.array([0, 1] * 50)
    fb = fit_feature_bins(np.full(100, 7.0), y, "const")
    assert fb.n_bins == 1 and fb.assign([7.0]).tolist() == [0]
    fb2 = fit_feature_bins([np.nan] * 100, y, "empty")
    assert fb2.assign([np.nan, 3.0]).tolist()[0] == fb2.n_bins
    fb3 = fit_feature_bins([None] * 100, y, "empty_text", kind="categorical")
    assert fb3.n_bins == 1 and fb3.assign([None]).tolist() == [1]


def test_more_categories_than_bins():
    rng = np.random.default_rng(2)
    cats = np.array([f"c{i:02d}" for i in range(40)])
    x = cats[rng.integers(0, 40, 4000)]
    rate = {c: i / 50 for i, c in enumerate(cats)}
    y = (rng.random(4000) < np.vectorize(rate.get)(x)).astype(int)
    fb = fit_feature_bins(x, y, "cat", config=BinningConfig(max_bins=5))
    assert fb.kind == "categorical" and fb.n_bins <= 5
    assert sorted(c for g in fb.groups for c in g) == sorted(cats)
    r = _bad_rates(fb, pd.Series(x), y)
    assert all(a <= b for a, b in zip(r, r[1:]))


def test_mixed_column_inferred_categorical_and_forced():
    X = pd.DataFrame({"a": ["1", "2", "x", None] * 25, "b": [1, 2, 3, 4] * 25})
    y = np.array([0, 1, 0, 1] * 25)
    bins = fit_bins(X, y, categorical=["b"])
    assert bins["a"].kind == "categorical" and bins["b"].kind == "categorical"
    with pytest.raises(DataError, match="not in the data"):
        fit_bins(X, y, features=["zz"])


def test_config_validation():
    with pytest.raises(ConfigError):
        BinningConfig(method="optimal")
    with pytest.raises(ConfigError):
        BinningConfig(max_bins=0)
    with pytest.raises(ConfigError):
        merge_bins([1, 2], [1, 2], max_bins=2, trend="sideways")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=25), st.integers(1, 8))
def test_merge_bins_partitions_prebins(counts, max_bins):
    g = [a for a, _ in counts]
    b = [c for _, c in counts]
    groups = merge_bins(g, b, max_bins=max_bins, min_bin_frac=0.05)
    flat = [i for grp in groups for i in grp]
    assert flat == list(range(len(counts)))  # consecutive, complete, ordered
    assert len(groups) <= max(max_bins, 1) or sum(g) + sum(b) == 0


def test_german_categorical(german):
    y = (german["creditability"] == "bad").astype(int)
    bins = fit_bins(german.drop(columns="creditability"), y)
    assert bins["purpose"].kind == "categorical" and bins["duration_in_month"].kind == "numeric"
    assert all(fb.n_bins <= 6 for fb in bins.values())


def test_categorical_codes_as_floats_or_padded_text_find_their_bin():
    """Integer codes bin as "1".."4"; at scoring a blank cell turns the column into floats (4.0) and
    exports pad text (" 2 "): both landed in the missing bin, silently."""
    import pandas as pd

    from fedrisk.finance.binning import fit_feature_bins

    rng = np.random.default_rng(0)
    x = pd.Series(rng.integers(1, 5, 400))
    y = (rng.random(400) < 0.1 * x).astype(int)
    bins = fit_feature_bins(x, y, "rate", kind="categorical")
    expect = bins.assign(pd.Series([1, 2, 3, 4]))
    assert bins.assign(pd.Series([1.0, 2.0, 3.0, 4.0, np.nan])).tolist() == [*expect.tolist(), bins.n_bins]
    assert bins.assign(pd.Series(["1", " 2", "3 ", "4"])).tolist() == expect.tolist()
    # training on the float form (a bank whose column had a blank) gives the same categories
    again = fit_feature_bins(pd.Series(np.where(np.arange(400) == 0, np.nan, x.astype(float))), y, "rate",
                             kind="categorical")
    assert sorted(c for g in again.groups for c in g) == ["1", "2", "3", "4"]


def test_rare_categories_pool_into_other_which_takes_unseen_values():
    from fedrisk.finance.binning import OTHER, FeatureBins, pool_rare_categories

    pre = pool_rare_categories(["a", "b", "c", "d"], [50, 3, 40, 1], 20)
    assert pre == [["a"], ["c"], ["b", "d", OTHER]]
    fb = FeatureBins("x", "categorical", groups=pre)
    assert fb.assign(pd.Series(["a", "d", "never seen", None, ""])).tolist() == [0, 2, 2, 3, 3]
    # without an "(other)" group an unseen value still goes to the missing bin
    assert FeatureBins("x", "categorical", groups=[["a"]]).assign(pd.Series(["zz"])).tolist() == [1]
    from fedrisk.data.categorical import OTHER as ENCODER_OTHER

    assert OTHER == ENCODER_OTHER


def test_the_category_test_is_calibrated_under_no_relation():
    """Categories unrelated to the label pass the chi-square test at about the significance asked."""
    from fedrisk.finance.binning import categories_differ, class_counts

    rng = np.random.default_rng(0)
    p = []
    for _ in range(300):
        codes = rng.integers(0, 60, 3000)
        y = (rng.random(3000) < 0.2).astype(float)
        g, b = class_counts(codes, y, 60)
        p.append(categories_differ(g, b))
    p = np.array(p)
    assert 0.02 < (p < 0.1).mean() < 0.2 and (p < 0.01).mean() < 0.03
    assert categories_differ(np.array([100.0, 100.0]), np.array([10.0, 40.0])) < 1e-3
    assert categories_differ(np.array([5.0]), np.array([1.0])) == 1.0


def test_the_category_test_is_calibrated_when_expected_bads_per_category_are_below_one():
    """300 categories of 20 rows at a 1 % bad rate (0.2 expected bads a cell): the asymptotic chi-square
    test rejected too often (0.020 at p = 0.01 on a reviewer's 1,000 tables; 0.014 and 0.056 at 0.01 and 0.05 on
    these); the Monte Carlo test on the fixed margins used for such sparse tables rejects at most at the nominal
    rate (discrete counts make it a little conservative), and keeps its power."""
    from fedrisk.finance.binning import categories_differ

    rng = np.random.default_rng(0)
    n = np.full(300, 20.0)
    p = np.array([categories_differ(n - b, b) for b in rng.binomial(20, 0.01, size=(1000, 300)).astype(float)])
    rates = [(p <= a).mean() for a in (0.01, 0.05, 0.1)]  # asymptotic on these tables: 0.014, 0.056, 0.107
    assert rates[0] <= 0.012 and rates[1] <= 0.05 and 0.05 < rates[2] <= 0.1, rates
    # the same function of the counts whatever their order (federated and pooled list categories differently)
    b = rng.binomial(20, 0.01, 300).astype(float)
    perm = rng.permutation(300)
    assert categories_differ(n - b, b) == categories_differ((n - b)[perm], b[perm])
    # a real difference in a sparse table is still found: 30 of 300 categories at 10 % bad
    b = np.concatenate([rng.binomial(20, 0.1, 30), rng.binomial(20, 0.005, 270)]).astype(float)
    assert categories_differ(n - b, b) < 1e-3


def test_a_placeholder_in_a_numeric_bin_names_na_values():
    """A scorecard scoring "?" in a numeric column said only "check the file's schema"; a placeholder for no value
    is the usual cause, so the line names the setting that declares it missing."""
    bins = FeatureBins("amt", "numeric", edges=np.array([1.0, 2.0]))
    with pytest.raises(DataError, match=r"column 'amt' .* such as '\?'.*na_values.*--na-values '\?'"):
        bins.assign(pd.Series(["1.5", "?", "3"]))


@pytest.mark.parametrize("cells, said", [
    (["1,5", "0,0", "3"], "decimal commas (e.g. '1,5'): read the file with decimal = ','"),
    (["1.5", "$1,200.00", "3"], "written for display (e.g. '$1,200.00'"),
    (["1.5", "12.5%", "3"], "written for display (e.g. '12.5%'"),
])
def test_decimal_commas_or_display_numbers_in_a_numeric_bin_are_not_called_placeholders(cells, said):
    """`fedrisk predict` of a scorecard on a ';' file without --decimal said: "holds non-numeric values such as '0,0'
    ... if it is a placeholder for no value, declare it missing (--na-values '0,0')" -- following that, every zero
    would score in the missing bin. The line now names the dialect (or the display format) and not na_values."""
    bins = FeatureBins("amt", "numeric", edges=np.array([1.0, 2.0]))
    with pytest.raises(DataError) as info:
        bins.assign(pd.Series(cells))
    msg = str(info.value)
    assert "'amt'" in msg and said in msg and "na-values" not in msg and "na_values" not in msg, msg


def _rare_defaults(seed: int, n: int = 3000, bads: int = 18, noise: float = 1.2) -> tuple[np.ndarray, np.ndarray]:
    """One informative feature, ``bads`` defaults among ``n`` rows (the rare-default scorecard's shape)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = np.zeros(n)
    y[np.argsort(-(x + rng.normal(0, noise, n)))[:bads]] = 1
    return x, y


def _monotone(v: np.ndarray) -> bool:
    d = np.diff(v)
    return bool((d >= -1e-12).all() or (d <= 1e-12).all())


def test_monotonic_bins_keep_the_smoothed_woe_monotonic_next_to_bins_without_defaults():
    """18 defaults in 3,000 rows: a bin without bads gets WOE from 0.5 added to its counts, which pulled it
    below its neighbour's (points 18, 18, 81, -23, -61 on a "monotonic" feature); now such neighbours merge."""
    from fedrisk.finance.woe import WoeEncoder

    broken = 0
    for seed in range(8):
        x, y = _rare_defaults(seed)
        w = WoeEncoder().fit(pd.DataFrame({"x": x}), y).woe_["x"]
        k = w.bins.n_bins
        assert _monotone(w.woe[:k]), (seed, w.bads[:k], w.goods[:k], w.woe[:k])  # the scored WOE
        assert _monotone(w.bads[:k] / (w.goods[:k] + w.bads[:k]))  # and still the raw bad rate
        assert k >= 2
        broken += bool(((w.bads[:k] == 0) | (w.goods[:k] == 0)).any())
    assert broken  # (bins without defaults do occur on this data: the case is exercised)


def test_the_smoothed_monotone_merge_changes_nothing_where_every_bin_holds_both_classes():
    """Prebins with goods and bads everywhere: the result is that of the raw bad-rate merge (smoothing off)."""
    rng = np.random.default_rng(5)
    for _ in range(50):
        n = rng.integers(50, 400, size=20).astype(float)
        rate = np.clip(np.sort(rng.uniform(0.02, 0.4, 20)) + rng.normal(0, 0.05, 20), 0.01, 0.9)
        b = np.maximum(1.0, np.round(n * rate))
        g = n - b
        for trend in ("auto", "increasing", "decreasing"):
            assert merge_bins(g, b, max_bins=6, min_bin_frac=0.05, trend=trend) == \
                merge_bins(g, b, max_bins=6, min_bin_frac=0.05, trend=trend, smoothing=0.0)


def _scored_rates(goods, bads, groups, smoothing: float = 0.5) -> list:
    """Exact smoothed bad rate of every final bin: the WOE the scorecard scores is a decreasing function of it
    (the same totals for every bin of a feature), so equal rates are equal WOE and equal points."""
    from fractions import Fraction

    out = []
    for grp in groups:
        g, b = Fraction(float(np.sum(np.asarray(goods)[grp]))), Fraction(float(np.sum(np.asarray(bads)[grp])))
        if g == 0 or b == 0:
            g, b = g + Fraction(smoothing), b + Fraction(smoothing)
        out.append(b / (g + b))
    return out


def _strictly_monotone(v) -> bool:
    d = [b - a for a, b in zip(v, v[1:])]
    return all(x > 0 for x in d) or all(x < 0 for x in d)


def test_adjacent_bins_with_exactly_equal_bad_rates_become_one_bin():
    """Two neighbours at 10 % (10 of 100 and 11 of 110) are one bin to the model but cost a scorecard row: merged.
    A near tie (10 of 101 next to 10 of 100) is a real, if small, difference and stays two bins."""
    assert merge_bins([90, 99, 80, 70], [10, 11, 20, 30], max_bins=6) == [[0, 1], [2], [3]]
    assert merge_bins([70, 80, 99, 90], [30, 20, 11, 10], max_bins=6) == [[0], [1], [2, 3]]  # decreasing
    assert merge_bins([91, 90, 80, 70], [10, 10, 20, 30], max_bins=6) == [[0], [1], [2], [3]]
    # the quantile method does not merge on bad rates at all
    assert merge_bins([90, 99, 80], [10, 11, 20], max_bins=6, monotonic=False) == [[0], [1], [2]]


def test_neighbours_without_defaults_and_the_same_smoothed_woe_become_one_bin():
    """Two bins of 40 rows without a default: both get WOE from 0.5 added to their counts, the same WOE (the
    "-57, -57" points of the rare-default scorecard); one bin of 80 rows instead. With ``smoothing = 0`` the
    raw rates (0 and 0) are what the merge compares, and they are equal too."""
    g, b = [40, 40, 35, 30], [0, 0, 5, 10]
    for smoothing in (0.5, 0.0):
        assert merge_bins(g, b, max_bins=6, smoothing=smoothing) == [[0, 1], [2], [3]], smoothing
    # zero-default bins of different sizes have different smoothed WOE: in order, they stay apart
    assert merge_bins([80, 40, 35, 30], [0, 0, 5, 10], max_bins=6) == [[0], [1], [2], [3]]


def test_monotonic_bins_are_strictly_monotonic_in_the_scored_woe():
    """Seeded prebin counts built to tie (bad rates from a few values, sizes in steps of 20, rare defaults):
    every monotonic merge -- numeric (each trend) and categorical -- ends strictly monotonic in the exact
    smoothed bad rate, i.e. no two neighbours share a WOE."""
    from fedrisk.finance.binning import group_categories

    rng = np.random.default_rng(11)
    tied = 0
    for _ in range(150):
        k = int(rng.integers(2, 16))
        n = 20.0 * rng.integers(1, 6, size=k)
        rate = rng.choice([0.0, 0.05, 0.1, 0.2, 0.5], size=k)
        if rng.random() < 0.5:
            rate = np.sort(rate)
        b = np.round(n * rate)
        g = n - b
        if rng.random() < 0.3:
            b = np.minimum(b, rng.integers(0, 2, size=k))  # rare defaults: bins without any
            g = n - b
        raw = [b[i] / n[i] for i in range(k)]
        tied += any(x == y for x, y in zip(raw, raw[1:]))
        for trend in ("auto", "increasing", "decreasing"):
            groups = merge_bins(g, b, max_bins=6, min_bin_frac=0.05, trend=trend)
            assert [i for grp in groups for i in grp] == list(range(k))
            assert _strictly_monotone(_scored_rates(g, b, groups)) or len(groups) == 1, (trend, g, b, groups)
        cfg = BinningConfig(max_bins=6, min_category_count=1)
        groups = group_categories([[f"c{i}"] for i in range(k)], g, b, cfg)
        assert sorted(i for grp in groups for i in grp) == list(range(k))
        assert _strictly_monotone(_scored_rates(g, b, groups)) or len(groups) == 1, (g, b, groups)
    assert tied > 25  # (neighbouring prebins with equal rates are common here: the case is exercised)


def test_categories_with_equal_bad_rates_get_one_bin_and_one_row_of_points():
    """Single-party WoeEncoder and scorecard: categories ``a`` and ``b`` both default at exactly 10 %; they were
    two bins with the same WOE and the same points. Now one bin, and every scorecard row has its own points."""
    from fedrisk.finance.scorecard import Scorecard
    from fedrisk.finance.woe import WoeEncoder

    x = np.array(["a"] * 100 + ["b"] * 200 + ["c"] * 100)
    y = np.zeros(400)
    y[:10] = y[100:120] = y[300:330] = 1
    X = pd.DataFrame({"c": x})
    enc = WoeEncoder().fit(X, y)
    w = enc.woe_["c"]
    assert w.bins.groups == [["a", "b"], ["c"]]
    assert w.goods[:2].tolist() == [270, 70] and w.bads[:2].tolist() == [30, 30]
    card = Scorecard().fit(enc, [1.0], -2.0)
    pts = card.points_["c"][:w.bins.n_bins]
    assert len(set(pts.tolist())) == len(pts), pts


def tied_rows(seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """800 rows, shuffled, whose numeric ``v`` and text ``c`` have neighbouring levels with exactly equal bad
    rates (``v`` 0 and 1, ``c`` a and b: 10 %), as integer codes and small categoricals often do. Shared with
    the horizontal and vertical tests, which must bin them as single-party binning does."""
    levels = [(0, "a", 300, 30), (1, "b", 150, 15), (2, "c", 200, 40), (3, "d", 150, 45)]
    v = np.concatenate([np.full(n, lv, dtype=float) for lv, _, n, _ in levels])
    c = np.concatenate([np.full(n, lc, dtype=object) for _, lc, n, _ in levels])
    y = np.concatenate([np.r_[np.ones(k), np.zeros(n - k)] for _, _, n, k in levels])
    order = np.random.default_rng(seed).permutation(len(y))
    return pd.DataFrame({"v": v[order], "c": c[order]}), y[order].astype(int)


def test_tied_levels_of_a_code_get_one_bin_single_party():
    from fedrisk.finance.woe import WoeEncoder

    X, y = tied_rows()
    enc = WoeEncoder().fit(X, y)
    assert enc.woe_["v"].bins.edges.tolist() == [1.0, 2.0]
    assert enc.woe_["c"].bins.groups == [["a", "b"], ["c"], ["d"]]
    for f in X.columns:
        w = enc.woe_[f]
        assert _strictly_monotone(w.woe[:w.bins.n_bins].tolist()), (f, w.woe)
