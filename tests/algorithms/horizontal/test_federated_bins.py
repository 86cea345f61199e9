"""Federated bin edges on columns whose spread is small next to their magnitude (birth years,
``YYYYMMDD`` dates): the relative grid alone put them in one to three bins; the zoom rounds give
them the bins pooled XGBoost gives them, and the model its AUC."""
import numpy as np
import pytest

from fedrisk.algorithms.horizontal.aggregation import PlainAggregation
from fedrisk.algorithms.horizontal.federated_bins import MAX_REFINE, MAX_ZOOM
from fedrisk.algorithms.horizontal.gbdt import GbdtParams, planned_aggregations
from fedrisk.crypto.secagg_oneshot import OneShotSessionAggregation
from fedrisk.finance.metrics import auc
from tests.algorithms.horizontal.test_gbdt import COORD, federate, pooled


def _years_and_dates(seed: int, sizes=(1500, 1000, 1200)):
    rng = np.random.default_rng(seed)
    banks = {}
    for i, n in enumerate(sizes):
        year = rng.integers(1940, 2006, n).astype(float)
        date = 20230101.0 + rng.integers(0, 365, n)
        amount = rng.lognormal(8, 1, n)
        z = -1 + 0.08 * (year - 1975) - 0.003 * (date - 20230101) + 0.3 * np.log(amount / 3000)
        y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
        banks[f"bank{i + 1}"] = (np.column_stack([year, date, amount]), y)
    return banks


@pytest.mark.parametrize("secure", [False, True])
def test_narrow_columns_get_their_bins_and_the_model_matches_pooled_xgboost(secure):
    xgb = pytest.importorskip("xgboost")
    banks = _years_and_dates(0)
    Xt, yt = _years_and_dates(1, sizes=(3000,))["bank1"]
    params = GbdtParams(n_trees=20, max_depth=3, learning_rate=0.3, max_bin=32)
    agg = OneShotSessionAggregation(64, dropout_timeout=5.0) if secure else PlainAggregation()
    model = federate(banks, params, agg)[0][COORD]
    # birth year: 66 distinct values, date: 365, amount: continuous -- each gets its 31 cuts
    assert [len(c) for c in model.cuts] == [31, 31, 31]
    X, y = pooled(banks)
    ref = xgb.XGBClassifier(n_estimators=20, max_depth=3, learning_rate=0.3, max_bin=32, tree_method="hist",
                            n_jobs=1).fit(X, y)
    a_fed, a_xgb = auc(yt, model.predict_proba(Xt)), auc(yt, ref.predict_proba(Xt)[:, 1])
    assert a_fed > a_xgb - 0.01, (a_fed, a_xgb)
    assert model.importance["x1"]["splits"] > 0  # the date column is usable at all
    # the date column (365 days near 2e7) needs a zoom and the amounts a refine round; each is one extra sum
    zooms, refines = model.binning["zoom_rounds"], model.binning["refine_rounds"]
    assert zooms >= 1 and refines >= 1, model.binning
    assert model.rounds == planned_aggregations(params) + zooms + refines


def test_discrete_and_constant_columns_need_no_zoom_or_stop_at_the_zoom_budget():
    rng = np.random.default_rng(3)
    banks = {}
    for i, n in enumerate((400, 300)):
        X = np.column_stack([rng.integers(0, 2, n), rng.integers(-2, 4, n), rng.normal(size=n), np.full(n, 7.0)])
        banks[f"bank{i + 1}"] = (X.astype(float), (rng.random(n) < 0.3).astype(float))
    params = GbdtParams(n_trees=2, max_depth=2, max_bin=16)
    model = federate(banks, params)[0][COORD]
    assert [len(c) for c in model.cuts] == [1, 5, 15, 0]
    # the constant column keeps every row in one cell, which looks like a very narrow column
    # (1e12 + noise, below) until the zoom budget is spent: MAX_ZOOM extra sums, no more
    assert model.binning["zoom_rounds"] == MAX_ZOOM
    assert model.rounds == planned_aggregations(params) + MAX_ZOOM + model.binning["refine_rounds"]


def test_a_column_narrower_than_one_zoom_cell_zooms_again():
    """``1e12 + noise of 1e6`` (and its negative): one fine cell (1.6 % relative width), and after
    the first zoom still one cell (1.6e7 wide); the zoom used to stop there, leaving the column no
    cut at all (AUC 0.682 against pooled XGBoost's 0.812 on 15,000 rows). It now zooms into the
    occupied cell again and the columns get their 31 cuts."""
    xgb = pytest.importorskip("xgboost")

    def make(seed, n):
        rng = np.random.default_rng(seed)
        off, neg = 1e12 + rng.normal(0, 1e6, n), -1e12 - rng.normal(0, 1e6, n)
        z = (off - 1e12) / 1e6 + 0.7 * (neg + 1e12) / 1e6 - 1.5
        return np.column_stack([off, neg]), (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)

    X, y = make(0, 3000)
    Xt, yt = make(1, 20000)
    banks = {"bank1": (X[:30], y[:30]), "bank2": (X[30:1800], y[30:1800]), "bank3": (X[1800:], y[1800:])}
    params = GbdtParams(n_trees=10, max_depth=3, learning_rate=0.3, max_bin=32)
    model = federate(banks, params)[0][COORD]
    assert [len(c) for c in model.cuts] == [31, 31]
    assert model.rounds <= planned_aggregations(params) + MAX_ZOOM + MAX_REFINE
    ref = xgb.XGBClassifier(n_estimators=10, max_depth=3, learning_rate=0.3, max_bin=32, tree_method="hist",
                            n_jobs=1).fit(*pooled(banks))
    a_fed, a_xgb = auc(yt, model.predict_proba(Xt)), auc(yt, ref.predict_proba(Xt)[:, 1])
    assert a_fed > a_xgb - 0.01, (a_fed, a_xgb)


def test_zoom_counts_reach_the_coordinator_masked_only():
    """The zoom rounds' counts go through the same secure aggregation as the other bin counts: what
    the coordinator receives from a bank for them is masked ring elements, never its counts."""
    banks = _years_and_dates(2, sizes=(300, 200))
    params = GbdtParams(n_trees=1, max_depth=1, max_bin=16)
    res, net, _ = federate(banks, params, OneShotSessionAggregation(64, dropout_timeout=5.0), capture=True)
    assert res[COORD].rounds > planned_aggregations(params)  # a zoom ran
    zoom = [e for e in net[COORD].captured if "zoom" in e.tag and e.sender in banks]
    assert zoom and all(e.kind in ("masked", "public-parameter") for e in zoom)
    assert any(isinstance(e.body, np.ndarray) for e in zoom)
    for e in zoom:
        if isinstance(e.body, np.ndarray):
            assert e.kind == "masked" and e.body.dtype == np.uint64
    # the coordinator's requests name only public grid parameters
    asked = [e for c in banks for e in net[c].captured if e.sender == COORD and e.tag == "hgb.bins.cuts"]
    assert asked and set(asked[0].body["zoom"]) == {"features", "lo", "hi", "cells"}


def _mixed_columns(rng, n, i):
    """Heavy-tailed amounts, a t(2) score, rounded values, a balance with a point mass at 0 and an
    integer column with 300 levels, shifted per bank; float32 values, as XGBoost reads them."""
    X = np.column_stack([rng.lognormal(8 + i, 1.5, n), rng.standard_t(2, n) * (1 + i), rng.normal(i, 1, n).round(2),
                         np.where(rng.random(n) < 0.4, 0.0, rng.lognormal(5, 2, n)), rng.integers(0, 300, n)])
    return X.astype(np.float32).astype(np.float64)


def test_cuts_and_model_are_pooled_xgboosts_where_its_sketch_is_exact():
    """XGBoost's ``hist`` cuts come from a quantile summary it prunes three times; up to twice its
    sketch's limit (1026 values at max_bin 32) the summary is exact before the prunes, so its cuts
    are a function of the pooled values alone. The federated cuts then split the pooled rows
    exactly as XGBoost's do on every kind of column, and the federated model is pooled XGBoost's.
    (Before the refine rounds the cuts were cell edges of a 1.6 %-relative grid.)"""
    xgb = pytest.importorskip("xgboost")
    rng = np.random.default_rng(11)
    banks = {}
    for i, n in enumerate((500, 330, 170)):
        X = _mixed_columns(rng, n, i)
        z = 0.5 * np.log(X[:, 0]) - 4.5 + 0.3 * np.clip(X[:, 1], -5, 5) + 0.2 * np.log1p(X[:, 3]) - 0.003 * X[:, 4]
        banks[f"bank{i + 1}"] = (X, (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float))
    params = GbdtParams(n_trees=10, max_depth=3, learning_rate=0.3, max_bin=32)
    model = federate(banks, params, OneShotSessionAggregation(64, dropout_timeout=5.0))[0][COORD]
    X, y = pooled(banks)
    ptr, vals = xgb.QuantileDMatrix(X, y, max_bin=32).get_quantile_cut()
    for f in range(X.shape[1]):
        theirs = vals[ptr[f] + 1:ptr[f + 1] - 1]  # without XGBoost's lower bound and its sentinel above the max
        s = np.sort(X[:, f])
        assert np.searchsorted(s, model.cuts[f]).tolist() == np.searchsorted(s, theirs).tolist(), f
    assert model.binning["refine_rounds"] >= 1, model.binning  # the grid alone does not give XGBoost's cuts
    ref = xgb.XGBClassifier(n_estimators=10, max_depth=3, learning_rate=0.3, max_bin=32, tree_method="hist",
                            n_jobs=1).fit(X, y)
    np.testing.assert_allclose(model.predict_proba(X), ref.predict_proba(X)[:, 1], atol=1e-5)


def test_refine_requests_are_public_grid_parameters_and_counts_stay_inside_the_cell():
    """A refine round asks for counts on sub-cells of cells the coordinator already saw occupied; a
    bank counts only its rows inside each cell (rows outside are not folded into the end sub-cells)
    and refuses a request too large to hold."""
    from fedrisk.algorithms.horizontal.federated_bins import _zoom_counts
    from fedrisk.errors import ProtocolError

    X = np.array([[0.5], [1.5], [1.75], [3.0], [np.nan]])
    got = _zoom_counts(X, {"features": [0], "lo": [1.0], "hi": [2.0], "cells": 4, "inside": True}, "bank1")
    assert got.tolist() == [0, 0, 1, 1]  # 0.5 and 3.0 lie outside [1, 2)
    # many disjoint cells of a feature (counted in one pass) and overlapping ones (one by one) agree
    rng = np.random.default_rng(0)
    Y = np.column_stack([rng.lognormal(0, 2, 500), rng.normal(size=500)])
    lo = np.sort(rng.uniform(-1, 5, 40))
    req = {"features": [0] * 39 + [1] * 3, "lo": [*lo[:-1], -1.0, -0.5, 0.2],
           "hi": [*(lo[:-1] + np.diff(lo) * 0.9), 0.0, 0.5, 1.0], "cells": 8, "inside": True}
    one_by_one = [np.bincount(np.clip(np.floor((c - a) / (b - a) * 8).astype(int), 0, 7), minlength=8)
                  for f, a, b in zip(req["features"], req["lo"], req["hi"])
                  for c in [Y[(Y[:, f] >= a) & (Y[:, f] < b), f]]]
    assert _zoom_counts(Y, req, "bank1").tolist() == np.concatenate(one_by_one).tolist()
    span = _zoom_counts(X, {"features": [0], "lo": [1.0], "hi": [2.0], "cells": 4}, "bank1")
    assert span.tolist() == [1, 0, 1, 2]  # a span zoom clips (its span holds every row)
    with pytest.raises(ProtocolError, match="zoom request is malformed"):
        _zoom_counts(X, {"features": [0] * 70, "lo": [1.0] * 70, "hi": [2.0] * 70, "cells": 65536}, "bank1")
    with pytest.raises(ProtocolError, match="zoom request is malformed"):
        _zoom_counts(X, {"features": [0], "lo": [1.0], "hi": [2.0], "cells": 4, "inside": "yes"}, "bank1")


def test_columns_with_missing_values_get_xgboosts_cuts_and_model():
    """XGBoost spends no bin on missing values: a column with blanks gets ``max_bin`` value bins
    (its cuts are the cut rule on the present values) and missing rows go to no bin. The federation
    once cut such a column into ``max_bin - 1`` value bins, which moved every cut: probabilities
    differed from pooled XGBoost's by up to 0.30 on two columns with 20 % and 10 % blanks."""
    xgb = pytest.importorskip("xgboost")
    rng = np.random.default_rng(4)
    banks = {}
    for i, n in enumerate((400, 300, 200)):
        e = rng.normal(size=(n, 2))
        e[rng.random(n) < 0.2, 0] = np.nan
        e[rng.random(n) < 0.1, 1] = np.nan
        z = np.nan_to_num(e[:, 0], nan=1.0) - 0.5 * np.nan_to_num(e[:, 1])
        banks[f"b{i}"] = (e.astype(np.float32).astype(np.float64), (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float))
    X, y = pooled(banks)
    model = federate(banks, GbdtParams(n_trees=10, max_depth=3, learning_rate=0.3, max_bin=32))[0][COORD]
    ptr, vals = xgb.QuantileDMatrix(X, y, max_bin=32).get_quantile_cut()
    for f in range(X.shape[1]):
        s = np.sort(X[~np.isnan(X[:, f]), f])
        theirs = vals[ptr[f] + 1:ptr[f + 1] - 1]
        assert len(model.cuts[f]) == len(theirs) == 31, f
        assert np.searchsorted(s, model.cuts[f]).tolist() == np.searchsorted(s, theirs).tolist(), f
    ref = xgb.XGBClassifier(n_estimators=10, max_depth=3, learning_rate=0.3, max_bin=32, tree_method="hist",
                            n_jobs=1).fit(X, y)
    np.testing.assert_allclose(model.predict_proba(X), ref.predict_proba(X)[:, 1], atol=1e-5)


def test_max_bin_256_with_missing_values_bins_past_255():
    """At ``max_bin = 256`` a column with blanks has 256 value bins and its missing bin is index
    256: bin codes must be wider than ``uint8`` (they wrapped to 0, the first value bin)."""
    rng = np.random.default_rng(5)
    banks = {}
    for i, n in enumerate((500, 400)):
        x = rng.normal(size=(n, 1))
        x[rng.random(n) < 0.3, 0] = np.nan
        y = np.where(np.isnan(x[:, 0]), rng.random(n) < 0.9, rng.random(n) < 0.1).astype(float)
        banks[f"b{i}"] = (x, y)
    model = federate(banks, GbdtParams(n_trees=3, max_depth=1, learning_rate=0.5, max_bin=256))[0][COORD]
    assert len(model.cuts[0]) == 255 and model.has_missing == [True]
    X, y = pooled(banks)
    p = model.predict_proba(X)
    nan = np.isnan(X[:, 0])
    assert p[nan].min() > 0.7 and p[~nan].max() < 0.3  # the split on missingness was found and routes right


def test_a_bank_counts_values_on_an_edge_in_the_sub_cell_the_coordinator_places_them():
    """A refined cell's counts land in sub-cells whose edges the coordinator computes as
    ``a + (b - a) k / 64``; the bank once located values by ``floor((x - a) / (b - a) 64)``, which
    put about a fifth of the values lying on an edge or one ulp below it one sub-cell off."""
    from fedrisk.algorithms.horizontal.federated_bins import REFINE_CELLS, _spliced, _zoom_counts
    rng = np.random.default_rng(0)
    r, wrong, total = REFINE_CELLS, 0, 0
    for _ in range(300):
        a = rng.normal() * 10.0 ** rng.integers(-5, 6)
        b = a + abs(rng.normal()) * 10.0 ** rng.integers(-8, 3)
        if not b > a:
            continue
        # the coordinator's edges of the refined cell: splice it into a one-cell grid [a, b)
        _, edges = _spliced(np.zeros(1), np.array([a, b]), np.array([0]), np.zeros((1, r)))
        v = np.concatenate([edges[:-1], np.nextafter(edges[1:], -np.inf)])
        v = v[(v >= a) & (v < b)]
        want = np.bincount(np.searchsorted(edges, v, side="right") - 1, minlength=r)
        got = _zoom_counts(v[:, None], {"features": np.array([0]), "lo": np.array([a]), "hi": np.array([b]),
                                        "cells": r, "inside": True}, "bank1")
        wrong += int(np.abs(got - want).sum()) // 2
        total += v.size
    assert total > 20000 and wrong == 0, f"{wrong} of {total} values counted in another sub-cell"


def test_supported_magnitudes_get_xgboosts_cuts_and_the_documented_limits_hold():
    """Columns from 1e-17 to 1e18 in size get pooled XGBoost's partition; past the documented range
    (module docstring) a column of values around 1e24 or 1e-20 gets no cuts -- and no warning or
    crash (a span zoom's cast once overflowed there)."""
    xgb = pytest.importorskip("xgboost")
    import warnings

    rng = np.random.default_rng(5)
    inside, outside = [1e-17, 1e-9, 1e12, 1e18], [1e-20, 1e24]
    banks = {f"b{i}": (np.column_stack([s * rng.lognormal(0, 1, n) for s in inside + outside])
                       .astype(np.float32).astype(np.float64), (rng.random(n) < .3).astype(float))
             for i, n in enumerate((300, 200, 100))}
    X, y = pooled(banks)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        model = federate(banks, GbdtParams(n_trees=1, max_depth=1, max_bin=32))[0][COORD]
    ptr, vals = xgb.QuantileDMatrix(X, y, max_bin=32).get_quantile_cut()
    for f in range(len(inside)):
        s, theirs = np.sort(X[:, f]), vals[ptr[f] + 1:ptr[f + 1] - 1]
        assert np.searchsorted(s, model.cuts[f]).tolist() == np.searchsorted(s, theirs).tolist(), inside[f]
    assert [len(model.cuts[f]) for f in range(len(inside), X.shape[1])] == [0, 0]


def test_received_cut_points_are_checked_against_the_banks_own_max_bin():
    """The final cuts and a rejoin's cuts pass one check (a rejoining bank once took any list)."""
    from fedrisk.algorithms.horizontal.federated_bins import checked_binner
    from fedrisk.errors import ProtocolError

    b = checked_binner("bank 'b1'", [[0.5, 1.5], []], np.array([True, False]), 32)
    assert b.n_bins_.tolist() == [4, 1] and b.missing_bins().tolist() == [3, -1]
    with pytest.raises(ProtocolError, match="feature 0 are not a list of fewer than 32"):
        checked_binner("bank 'b1'", [np.arange(40.0).tolist(), []], [False, False], 32)
    with pytest.raises(ProtocolError, match="not finite and rising"):
        checked_binner("bank 'b1'", [[1.0, 0.5]], [False], 32)
    with pytest.raises(ProtocolError, match="missing-bin flags"):
        checked_binner("bank 'b1'", [[1.0]], [1], 32)
