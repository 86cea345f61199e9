"""Federated (horizontal) binning/WOE/IV: equals pooled IV with the same bins; coordinator sees sums."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedrisk.errors import DataError, FedriskError
from fedrisk.finance.binning import BinningConfig, category_text, fit_feature_bins, is_categorical
from fedrisk.algorithms.horizontal.woe import MAX_DEEPER, horizontal_woe_coordinator, horizontal_woe_party, roundest_in
from fedrisk.finance.woe import WoeEncoder
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork


def _split(X: pd.DataFrame, y: np.ndarray, k: int = 3, seed: int = 0) -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    part = np.random.default_rng(seed).integers(0, k, len(X))
    return {f"bank{i}": (X[part == i].reset_index(drop=True), y[part == i]) for i in range(k)}


def vocabulary(parts) -> dict[str, list[str]]:
    """Every category of the text columns of the pooled rows (the job spec's ``[task] categories``)."""
    pooled = pd.concat([d[0] for d in parts.values()])
    return {c: sorted(set(category_text(pooled[c].dropna()))) for c in pooled.columns if is_categorical(pooled[c])}


def _run(parts, aggregation=None, network=None, categories=None, **coord_kw):
    vocab = vocabulary(parts) if categories is None else categories
    roles = {p: (lambda ch, d=d: horizontal_woe_party(ch, "coord", d[0], d[1], categories=vocab, aggregation=aggregation))
             for p, d in parts.items()}
    roles["coord"] = lambda ch: horizontal_woe_coordinator(ch, list(parts), categories=vocab, aggregation=aggregation,
                                                           **coord_kw)
    return run_roles(roles, network=network)


def _synthetic(n: int = 3000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({
        "income": rng.lognormal(10, 1, n),
        "age": rng.integers(18, 80, n).astype(float),
        "region": rng.choice(["north", "south", "east", "west", "centre"], n),
        "mostly_missing": np.where(rng.random(n) < 0.9, np.nan, rng.normal(size=n)),
    })
    z = -0.5 * np.log(X["income"] / 20000) + 0.02 * (40 - X["age"]) + (X["region"] == "south") * 0.7
    y = (rng.random(n) < 1 / (1 + np.exp(-(z - 1)))).astype(int)
    return X, y


def test_roundest_in():
    assert roundest_in(5.9, 6.2) == 6
    assert roundest_in(0.12345, 0.1236) == 0.1236 or roundest_in(0.12345, 0.1236) == 0.1235
    assert 1234.5 < roundest_in(1234.5, 1234.6) <= 1234.6
    assert roundest_in(-3.2, -2.7) == -3
    assert roundest_in(1.0, 1.0) == 1.0


def test_federated_iv_equals_pooled_iv_synthetic():
    X, y = _synthetic()
    out = _run(_split(X, y))
    res = out["coord"]
    pooled = WoeEncoder().fit_bins(X, y, {f: w.bins for f, w in res.woe.items()})
    for f in X.columns:
        assert res.iv[f] == pytest.approx(pooled.iv_[f], abs=1e-9), f
        assert np.allclose(res.woe[f].woe, pooled.woe_[f].woe, atol=1e-9)
    # parties got the same model and a per-party report on their own rows
    for p in ("bank0", "bank1", "bank2"):
        assert out[p].iv == pytest.approx(res.iv)
        assert out[p].local["selection"]["party"] == p
    # federated quantile edges are close to the pooled equal-frequency ones
    assert res.woe["income"].bins.n_bins >= 3
    assert res.selection["party"] == "federation" and "income" in res.selection["selected"]


def test_federated_iv_equals_pooled_iv_german(german):
    y = (german["creditability"] == "bad").astype(int).to_numpy()
    X = german.drop(columns="creditability")
    res = _run(_split(X, y))["coord"]
    pooled = WoeEncoder().fit_bins(X, y, {f: w.bins for f, w in res.woe.items()})
    assert max(abs(res.iv[f] - pooled.iv_[f]) for f in X.columns) < 1e-9
    # on integer-valued columns the agreed edges snap to the same values as local binning
    local = WoeEncoder().fit(X, y)
    assert res.woe["duration_in_month"].bins.edges.tolist() == local.woe_["duration_in_month"].bins.edges.tolist()
    # text columns: the same bins as single-party binning of the pooled rows (rare levels in "(other)",
    # one bin where the levels' bad rates do not differ), hence the same IV
    text = [f for f in X.columns if is_categorical(X[f])]
    assert len(text) >= 10
    for f in text:
        assert res.woe[f].bins.groups == local.woe_[f].bins.groups, f
        assert res.iv[f] == pytest.approx(local.iv_[f], abs=1e-9), f
    assert any(any("(other)" in g for g in res.woe[f].bins.groups) for f in text)


def test_secure_aggregation_gives_same_result():
    sa_mod = pytest.importorskip("fedrisk.crypto.secure_aggregation")
    X, y = _synthetic(900, seed=3)
    parts = _split(X, y)
    plain = _run(parts, max_corr=None)["coord"]
    secure = _run(parts, aggregation=sa_mod.SecureAggregation(), max_corr=None)["coord"]
    assert secure.iv == pytest.approx(plain.iv, abs=1e-9)


def test_coordinator_sees_only_aggregates_and_ledger():
    X, y = _synthetic(600, seed=4)
    parts = _split(X, y)
    net = InMemoryNetwork(["coord", *parts], capture=True)
    _run(parts, network=net)
    n_rows = {len(d[0]) for d in parts.values()}
    for env in net["coord"].captured:
        assert env.kind in ("public-parameter", "model"), env.kind  # PlainAggregation submits as "model"
        body = env.body
        if isinstance(body, np.ndarray):
            assert body.shape[0] not in n_rows  # no per-row vector ever reaches the coordinator
    kinds = {e["kind"] for p in parts for e in net[p].ledger.entries}
    assert kinds <= {"public-parameter", "model"}


def test_schema_mismatch_refused():
    X, y = _synthetic(300)
    parts = _split(X, y)
    parts["bank1"] = (parts["bank1"][0].drop(columns=["age"]), parts["bank1"][1])
    with pytest.raises(FedriskError, match="same schema"):
        _run(parts)


def test_an_extra_column_at_one_bank_is_named_in_one_line():
    # the line names the column and the bank, not both full schemas (which hid it among 20 names)
    X, y = _synthetic(300)
    parts = _split(X, y)
    parts["bank2"] = (parts["bank2"][0].assign(branch_code=1.0), parts["bank2"][1])
    with pytest.raises(DataError, match=r"only at 'bank2': \['branch_code'\]") as e:
        _run(parts)
    msg = str(e.value)
    assert "\n" not in msg and "exclude" in msg and "age" not in msg


def test_category_only_at_one_party_and_constant_feature():
    X, y = _synthetic(600, seed=5)
    X["const"] = 1.0
    parts = _split(X, y)
    b0 = parts["bank0"][0].copy()
    b0.loc[:5, "region"] = "islands"
    parts["bank0"] = (b0, parts["bank0"][1])
    res = _run(parts, config=BinningConfig(max_bins=3))["coord"]
    assert any("islands" in g for g in res.woe["region"].bins.groups)
    assert res.woe["region"].bins.n_bins <= 3
    assert res.iv["const"] == 0.0


def _assert_pooled_bins(res, X, y, cols=None):
    """Every pooled row falls in the bin single-party binning of the pooled rows puts it in (same
    number of bins, same counts), and the IV is the pooled one."""
    local = WoeEncoder().fit(X, y)
    for f in cols or X.columns:
        x = X[f].to_numpy(dtype=float)
        x = x[~np.isnan(x)]
        fed, pooled = res.woe[f].bins, local.woe_[f].bins
        moved = int(np.sum(np.searchsorted(fed.edges, x, side="left") != np.searchsorted(pooled.edges, x, side="left")))
        assert fed.n_bins == pooled.n_bins and moved == 0, (f, fed.edges.tolist(), pooled.edges.tolist(), moved)
        assert res.iv[f] == pytest.approx(local.iv_[f], abs=1e-9), f
    return local


def test_columns_crowded_into_a_sliver_of_their_range_get_the_pooled_bins():
    """A 1e9 outlier stretches an amount's power-of-two range far past its rows, a ``YYYYMMDD`` date
    spans 0.05 % of its range, ``1e12 + noise`` less still: two grid levels placed no quantile
    inside such a column (1-2 bins; IV 0.11 / 0.06 / 0 where pooled binning gives 0.21 / 0.10 /
    0.59). Deeper sub-cell rounds cut the cells holding a target quantile again, so the
    federation's bins are those of pooled local binning; a tie mass (half the rows at 0) stays
    one value."""
    rng = np.random.default_rng(0)
    n = 4000
    amt = rng.lognormal(8, 1.5, n)
    amt[:8] = 1e9
    X = pd.DataFrame({"amount": amt, "date": 20230101.0 + rng.integers(0, 365, n),
                      "offset": 1e12 + rng.normal(0, 1e6, n),
                      "zeros": np.where(rng.random(n) < 0.5, 0.0, rng.lognormal(5, 2, n))})
    z = 0.5 * np.log(amt) - 0.004 * (X["date"] - 20230101) + (X["offset"] - 1e12) / 1e6 + 0.2 * np.log1p(X["zeros"]) - 3
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    order = np.argsort(amt)  # non-IID: banks by amount, one of 30 rows
    X, y = X.iloc[order].reset_index(drop=True), y[order]
    parts = {"small": (X.iloc[:30].reset_index(drop=True), y[:30]),
             "bank1": (X.iloc[30:2000].reset_index(drop=True), y[30:2000]),
             "bank2": (X.iloc[2000:].reset_index(drop=True), y[2000:])}
    net = InMemoryNetwork([*parts, "coord"], capture=True)
    res = _run(parts, network=net, max_corr=None)["coord"]
    same_bins = WoeEncoder().fit_bins(X, y, {f: w.bins for f, w in res.woe.items()})
    for f in X.columns:
        assert res.iv[f] == pytest.approx(same_bins.iv_[f], abs=1e-9), f
    local = _assert_pooled_bins(res, X, y)
    # dates are whole days: their edges are the pooled quantiles themselves, not a number between two days
    assert res.woe["date"].bins.edges.tolist() == local.woe_["date"].bins.edges.tolist()
    rounds = {e.tag for e in net["coord"].captured if ".sub" in e.tag}
    levels = {t.split(".")[-1] for t in rounds}  # the sub-cell levels the coordinator received
    assert len(levels) >= 2, levels  # deeper rounds ran
    assert len(levels) <= 1 + MAX_DEEPER, levels


def test_heavy_tailed_integer_and_tie_columns_over_non_iid_banks_get_the_pooled_bins():
    """Single-party binning of the pooled rows, exactly: every row in the same bin, the same IV.

    The first version put each edge at the roundest number of the sub-cell holding its quantile and
    stopped cutting at a tenth of a prebin's rows, so edges moved rows across them: here 6 of these
    7 columns were binned differently (amounts in cents: 5 bins against 6, IV 0.0021 against 0.0048,
    5,696 rows moved; the lognormal column 306 rows), and 15 of default credit's 23. The edges stay
    round numbers, never a customer's value."""
    rng = np.random.default_rng(3)
    n = 6000
    X = pd.DataFrame({"pareto": (rng.pareto(1.5, n) + 1) * 1000, "pareto_wild": rng.pareto(0.8, n),
                      "lognormal": rng.lognormal(10, 2, n), "student": rng.standard_t(2, n),
                      "ints": rng.integers(0, 40, n).astype(float),
                      "zero_mass": np.where(rng.random(n) < 0.3, 0.0, rng.exponential(5, n)),
                      "cents": np.round(rng.lognormal(6, 1, n), 2)})
    X.loc[rng.random(n) < 0.05, "student"] = np.nan
    z = (0.3 * np.log(X["pareto"]) - 0.2 * np.log1p(X["pareto_wild"]) + 0.1 * np.log(X["lognormal"])
         + 0.1 * X["student"].clip(-5, 5).fillna(0) + 0.02 * X["ints"] - 3)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    order = np.argsort(X["pareto"].to_numpy())  # non-IID: banks by amount
    X, y = X.iloc[order].reset_index(drop=True), y[order]
    cut = [0, 700, 3500, n]
    parts = {f"bank{i}": (X.iloc[cut[i]:cut[i + 1]].reset_index(drop=True), y[cut[i]:cut[i + 1]]) for i in range(3)}
    net = InMemoryNetwork([*parts, "coord"], capture=True)
    res = _run(parts, network=net, max_corr=None)["coord"]
    local = _assert_pooled_bins(res, X, y)
    assert res.woe["ints"].bins.edges.tolist() == local.woe_["ints"].bins.edges.tolist()
    values = set(X.to_numpy().ravel().tolist())
    for f in X.columns:
        for e in res.woe[f].bins.edges:
            # round: at most 6 significant digits in these columns, and not a pooled row's value
            # unless the column is whole numbers or cents (then a level is the natural edge)
            assert float(f"{e:.6g}") == e, (f, e)
            assert e not in values or f in ("ints", "cents", "zero_mass"), (f, e)
    levels = {e.tag.split(".")[1] for e in net["coord"].captured if e.tag.startswith("hwoe.sub")}
    assert len(levels) <= 1 + MAX_DEEPER, levels


def test_default_credit_columns_get_the_pooled_bins(shared_data):
    """The shared default-credit banks' 23 columns: the pooled rows' bins (the first version moved
    rows in 15 of them; one column's IV was 0.047 against 0.414)."""
    frames = [pd.read_csv(shared_data / f) for f in ("default_credit_homo_guest.csv", "default_credit_homo_host_1.csv",
                                                     "default_credit_homo_host_2.csv")]
    parts = {f"bank{i}": (d.drop(columns=["id", "y"]), d["y"].to_numpy(dtype=int)) for i, d in enumerate(frames)}
    pooled = pd.concat(frames, ignore_index=True)
    res = _run(parts, max_corr=None)["coord"]
    _assert_pooled_bins(res, pooled.drop(columns=["id", "y"]), pooled["y"].to_numpy(dtype=int))


def test_integer_and_plain_columns_cost_at_most_two_deeper_rounds():
    """Ages are ties: the sub-cell holding a target keeps all its rows when cut again, and the
    cutting stops after that one try (then one round checks the whole-number edges); a lognormal
    income is placed by the first levels."""
    X, y = _synthetic()
    parts = _split(X[["income", "age"]], y)
    net = InMemoryNetwork([*parts, "coord"], capture=True)
    res = _run(parts, network=net, max_corr=None)["coord"]
    tags = {e.tag.split(".")[1] for e in net["coord"].captured if e.tag.startswith("hwoe.sub")}
    assert tags <= {"sub", "sub1", "sub2"}, tags
    _assert_pooled_bins(res, X[["income", "age"]], y)


def test_a_many_level_code_is_not_fitted_level_by_level_and_equals_pooled():
    """A random 150-level branch code on 6,000 rows: every level has >= min_category_count rows, so
    binning level by level (sorted by each level's own bad rate) gave IV ~0.1 of pure noise; now the
    categories' bad rates must differ (chi-square) first: one bin, IV 0. An informative 40-level code
    keeps its grouping. Both equal single-party binning of the pooled rows."""
    rng = np.random.default_rng(7)
    n = 6000
    X, y = _synthetic(n, seed=7)
    X["branch"] = [f"B{k:03d}" for k in rng.integers(0, 150, n)]
    region = rng.integers(0, 40, n)
    X["segment"] = [f"S{k:02d}" for k in region]
    y = np.where(rng.random(n) < 0.15 * (region % 4 == 0), 1, y)  # every 4th segment defaults more
    res = _run(_split(X, y))["coord"]
    cfg = BinningConfig()
    for f in ("branch", "segment"):
        local = fit_feature_bins(X[f], y, f, config=cfg)
        assert res.woe[f].bins.groups == local.groups, f
        pooled = WoeEncoder().fit_bins(X, y, {f: local})
        assert res.iv[f] == pytest.approx(pooled.iv_[f], abs=1e-9)
    assert res.woe["branch"].bins.n_bins == 1 and res.iv["branch"] == 0.0
    assert res.woe["segment"].bins.n_bins >= 2 and res.iv["segment"] > 0.05
    # level by level (the old rule: no minimum count, no test) fits the noise
    old = fit_feature_bins(X["branch"], y, "branch", config=BinningConfig(min_category_count=1, category_pvalue=1.0))
    assert WoeEncoder().fit_bins(X, y, {"branch": old}).iv_["branch"] > 0.05


def test_interval_requests_as_arrays_are_checked_like_lists():
    """The edge check sends thousands of intervals as an (m, 2) float64 array; a bank checks it as
    it checks a list of pairs: finite, ordered, within the per-message count bound."""
    from fedrisk.algorithms.horizontal.woe import _checked_cells, _slices
    from fedrisk.errors import ProtocolError

    good = np.array([[0.5, 2.0], [2.0, 2.0]])
    assert _checked_cells("bank", "coord", "t", {"cells": 1}, {"x": good}, ["x"]) == 1
    for bad in (np.array([[1.0, np.nan]]), np.array([[3.0, 2.0]]), np.array([1.0, 2.0]),
                np.array([[1, 2]]), np.zeros((1, 3))):
        with pytest.raises(ProtocolError, match="not pairs of finite numbers"):
            _checked_cells("bank", "coord", "t", {"cells": 1}, {"x": bad}, ["x"])
    with pytest.raises(ProtocolError, match="more than"):
        _checked_cells("bank", "coord", "t", {"cells": 65536}, {"x": np.zeros((2048, 2))}, ["x"])
    # each interval (a, b] gets exactly the sorted values inside it
    v = np.sort(np.array([0.5, 1.0, 1.0, 2.0, 3.0]))
    assert [(lo, hi) for _, lo, hi in _slices(v, good)] == [(1, 4), (4, 4)]
    assert _slices(v, []) == []


def test_rare_default_federated_bins_have_monotone_smoothed_woe():
    """18 defaults over three banks: the coordinator's merge on pooled counts keeps the smoothed WOE monotonic
    next to bins without defaults, and the pooled encoder on those bins gives the same WOE; the noise figures are
    single-party binning's of the pooled rows (the permutation null of the binning, from the pooled prebin counts
    at the coordinator)."""
    from tests.finance.test_binning import _monotone, _rare_defaults

    x, y = _rare_defaults(3)
    X = pd.DataFrame({"x": x})
    res = _run(_split(X, y))["coord"]
    w = res.woe["x"]
    k = w.bins.n_bins
    assert _monotone(w.woe[:k])
    pooled = WoeEncoder().fit_bins(X, y, {"x": w.bins}).woe_["x"]
    np.testing.assert_allclose(w.woe, pooled.woe, atol=1e-12)
    single = WoeEncoder().fit(X, y).woe_["x"]
    np.testing.assert_array_equal(w.null.goods, single.null.goods)
    np.testing.assert_array_equal(w.null.bads, single.null.bads)
    fed, one = w.significance(), single.significance()
    assert fed["iv_null"] == one["iv_null"] == "permutation"
    assert fed["iv_p_value"] == one["iv_p_value"] and fed["iv_noise_95"] == one["iv_noise_95"]


def test_tied_neighbours_are_one_federated_bin_as_in_the_pooled_binning():
    """Neighbouring levels with exactly equal bad rates over three banks: the coordinator merges them on the
    pooled counts, as single-party binning of the pooled rows does; the WOE is strictly monotonic."""
    from tests.finance.test_binning import _strictly_monotone, tied_rows

    X, y = tied_rows(1)
    res = _run(_split(X, y))["coord"]
    local = WoeEncoder().fit(X, y)
    assert res.woe["v"].bins.edges.tolist() == local.woe_["v"].bins.edges.tolist() == [1.0, 2.0]
    assert res.woe["c"].bins.groups == local.woe_["c"].bins.groups == [["a", "b"], ["c"], ["d"]]
    for f in X.columns:
        w = res.woe[f]
        np.testing.assert_allclose(w.woe, local.woe_[f].woe, atol=1e-12)
        assert _strictly_monotone(w.woe[:w.bins.n_bins].tolist()), (f, w.woe)
