"""``missing = "mean"`` in horizontal LR: empty cells get the POOLED mean of the observed values.

Before, each bank filled its blanks with its own column means, so on non-IID banks (different
missing rates, different means) the federation trained on other data than pooled mean imputation.
The reference is scikit-learn on the pooled rows filled with the pooled observed mean
(``SimpleImputer(strategy="mean")``), standardised by ``StandardScaler``, with
``C = 1 / (l2 * n_pooled)`` (see ``test_newton_lr.py``). The counts and sums travel through the
standardisation's own secure sum: the capture test checks what the coordinator receives.
"""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.impute import SimpleImputer

from fedrisk.algorithms.horizontal.aggregation import PlainAggregation
from fedrisk.algorithms.horizontal.fedavg_lr import FedAvgConfig
from fedrisk.algorithms.horizontal.fedavg_lr import run_bank as fedavg_bank, run_coordinator as fedavg_coordinator
from fedrisk.algorithms.horizontal.newton_lr import NewtonConfig
from fedrisk.algorithms.horizontal.standardisation import scaler_sensitivities
from fedrisk.crypto.secure_aggregation import SecureAggregation
from fedrisk.errors import DataError
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork
from tests.algorithms.horizontal.test_newton_lr import federate, max_diff, pooled_reference

D = 4
NAMES = [f"x{j}" for j in range(D)]


def non_iid_banks(seed: int = 0, sizes=(900, 400, 60)) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Banks whose columns differ in mean (and scale: one is an amount near 1e6) and in missing rate
    (0 %, 40 %, 70 % of x0), with blanks more likely among defaulters at one bank (not at random)."""
    rng = np.random.default_rng(seed)
    w = np.array([0.8, -0.6, 0.4, 0.5])
    out = {}
    for i, n in enumerate(sizes):
        X = rng.normal(loc=[2.0 * i, -i, 0.5 * i, 0.0], scale=[1.0, 1.0 + i, 1.0, 1.0], size=(n, D))
        X[:, 3] = 1e6 * np.exp(0.5 * X[:, 3] + 0.7 * i)  # an amount: lognormal, bank-dependent level
        z = X[:, :3] @ w[:3] + w[3] * (np.log(X[:, 3]) - 13.8) - 0.5 - 0.8 * i
        y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
        rate = [0.0, 0.4, 0.7][i]
        X[rng.random(n) < rate, 0] = np.nan
        X[(rng.random(n) < 0.3 * i) & (y == 1), 1] = np.nan  # not at random: blank x1 among bank i's defaulters
        X[rng.random(n) < 0.1 * i, 3] = np.nan
        out[f"b{i}"] = (X, y)
    return out


def pooled_mean_reference(banks, l2):
    X = np.vstack([X for X, _ in banks.values()])
    y = np.concatenate([y for _, y in banks.values()])
    filled = SimpleImputer(strategy="mean").fit_transform(X)
    return pooled_reference(filled, y, l2), filled, y


def local_mean_reference(banks, l2):
    """What the old code trained on: each bank's own means."""
    X = np.vstack([SimpleImputer(strategy="mean").fit_transform(X) for X, _ in banks.values()])
    y = np.concatenate([y for _, y in banks.values()])
    return pooled_reference(X, y, l2)


def test_newton_with_blanks_at_non_iid_banks_equals_pooled_mean_imputation():
    banks = non_iid_banks()
    cfg = NewtonConfig(pooled_mean=True)
    res, _ = federate(banks, NAMES, cfg, SecureAggregation())
    m = res["coordinator"]
    for b in banks:
        np.testing.assert_array_equal(res[b].coef, m.coef)
    (coef, intercept, scaler), filled, _ = pooled_mean_reference(banks, cfg.l2)
    observed = np.vstack([X for X, _ in banks.values()])
    np.testing.assert_allclose(m.mean, np.nanmean(observed, axis=0), rtol=1e-6)
    np.testing.assert_allclose(m.scale, scaler.scale_, rtol=1e-5)
    assert max_diff(m, coef, intercept) <= 1e-4
    # and the data is hard enough that each bank's own means would be a different model
    old_coef, old_intercept, _ = local_mean_reference(banks, cfg.l2)
    assert max(np.max(np.abs(old_coef - coef)), abs(old_intercept - intercept)) > 0.05


def test_fedavg_fills_with_the_pooled_mean_too():
    banks = non_iid_banks(1)
    cfg = FedAvgConfig(rounds=1, pooled_mean=True)
    net = InMemoryNetwork([*banks, "coordinator"])
    roles = {b: (lambda X, y: lambda ch: fedavg_bank(ch, "coordinator", X, y, NAMES, cfg, SecureAggregation()))(X, y)
             for b, (X, y) in banks.items()}
    roles["coordinator"] = lambda ch: fedavg_coordinator(ch, list(banks), cfg, SecureAggregation())
    res = run_roles(roles, network=net)
    (_, _, scaler), _, _ = pooled_mean_reference(banks, cfg.l2)
    np.testing.assert_allclose(res["coordinator"].mean, scaler.mean_, rtol=1e-6)
    np.testing.assert_allclose(res["coordinator"].scale, scaler.scale_, rtol=1e-5)


def test_the_coordinator_receives_the_counts_only_masked_and_learns_only_pooled_sums():
    banks = non_iid_banks(2)
    _, net = federate(banks, NAMES, NewtonConfig(pooled_mean=True, rounds=2), SecureAggregation(), capture=True)
    got = [e for e in net["coordinator"].captured if e.tag.startswith("hlr.sum")]
    assert got and {e.kind for e in got} <= {"public-parameter", "ciphertext", "masked", "plaintext-by-design"}
    for e in got:  # no float vector of [n, sums, counts] ever arrives in the clear
        assert not (isinstance(e.body, np.ndarray) and e.body.dtype == np.float64 and e.body.size == 1 + 2 * D)
    counts = {b: (~np.isnan(X)).sum(0) for b, (X, _) in banks.items()}
    masked = [e.body for e in got if isinstance(e.body, np.ndarray) and e.body.size == 1 + 2 * D]
    for body in masked:  # the masked words are not any bank's counts
        for c in counts.values():
            assert not np.array_equal(np.asarray(body[1 + D:], dtype=np.float64), c.astype(np.float64))
    # what the layout is, seen with plain sums: [n_k, sum x/s over observed cells, observed counts]
    _, plain = federate(banks, NAMES, NewtonConfig(pooled_mean=True, rounds=2), PlainAggregation(), capture=True)
    seen = {e.sender: e.body for e in plain["coordinator"].captured if e.tag == "hlr.sum"}
    for b, (X, _) in banks.items():
        assert seen[b][0] == len(X)
        np.testing.assert_array_equal(seen[b][1 + D:], counts[b])


def test_without_pooled_mean_a_blank_is_refused_and_the_sum_keeps_its_old_layout():
    banks = non_iid_banks(3)
    with pytest.raises(DataError, match="missing = 'mean'"):
        federate(banks, NAMES, NewtonConfig(), PlainAggregation())
    clean = {b: (np.nan_to_num(X, nan=1.0), y) for b, (X, y) in banks.items()}
    _, plain = federate(clean, NAMES, NewtonConfig(rounds=2), PlainAggregation(), capture=True)
    assert {e.body.size for e in plain["coordinator"].captured if e.tag == "hlr.sum"} == {1 + D}
    # private runs: a row adds at most 1 to each count, so the sum vector's sensitivity grows, not the mechanism count
    assert scaler_sensitivities(D, True)[1] == pytest.approx(np.sqrt(1 + 2 * D))
    assert scaler_sensitivities(D)[1] == pytest.approx(np.sqrt(1 + D))


def test_a_column_blank_at_every_bank_is_one_clear_error():
    banks = non_iid_banks(4)
    for X, _ in banks.values():
        X[:, 2] = np.nan
    with pytest.raises(DataError, match=r"\['x2'\] are empty at every bank"):
        federate(banks, NAMES, NewtonConfig(pooled_mean=True), SecureAggregation())


def test_a_private_run_does_not_fail_on_a_noise_draw_for_a_rarely_observed_column():
    """Noisy counts can round below 1 for a column observed in a few cells: floored, mean kept in range."""
    from fedrisk.algorithms.horizontal.standardisation import _observed_mean

    s = np.array([4.0, 4.0])
    mean = _observed_mean(["rare", "common"], np.array([3.0, 50.0]), np.array([-2.4, 100.0]), s, noisy=True)
    assert mean[0] == 4.0 and mean[1] == pytest.approx(2.0)  # floored at 1, clipped to the agreed range
    with pytest.raises(DataError, match=r"\['rare'\] are empty at every bank"):  # exact counts: empty is empty
        _observed_mean(["rare", "common"], np.array([0.0, 50.0]), np.array([0.0, 100.0]), s, noisy=False)


def test_a_column_blank_at_one_bank_only_is_filled_from_the_others():
    banks = non_iid_banks(5)
    banks["b2"][0][:, 2] = np.nan
    cfg = NewtonConfig(pooled_mean=True)
    res, _ = federate(banks, NAMES, cfg, SecureAggregation())
    (coef, intercept, _), _, _ = pooled_mean_reference(banks, cfg.l2)
    assert max_diff(res["coordinator"], coef, intercept) <= 1e-4


def test_private_runs_noise_the_counts_like_the_other_sums_and_spend_no_extra_mechanism():
    """Under [privacy] the [n, sums, counts] vector is one Gaussian mechanism of L2 sensitivity
    sqrt(1 + 2d): the noise the coordinator's total carries is the accountant's, and the plan's
    mechanism count is the one without blanks (3 standardisation sums + the Newton steps)."""
    from fedrisk.algorithms.horizontal.newton_lr import private_mechanisms
    from fedrisk.crypto.dp import plan_privacy
    from tests.algorithms.horizontal.test_newton_lr_privacy import COORD, Recording, banks_data
    from fedrisk.algorithms.horizontal.newton_lr import run_bank, run_coordinator

    d = 12
    banks = banks_data(4, d=d)
    rng = np.random.default_rng(4)
    for i, (X, _) in enumerate(banks.values()):
        X[rng.random(X.shape) < 0.1 * (i + 1)] = np.nan
    cfg = NewtonConfig(privacy_rounds=2, pooled_mean=True)
    plan = plan_privacy(private_mechanisms(cfg), epsilon=4.0, delta=1e-5)
    agg = Recording()
    net = InMemoryNetwork([*banks, COORD], recv_timeout=60.0, capture=True)
    names = [f"x{j}" for j in range(d)]
    roles = {b: (lambda b: lambda ch: run_bank(ch, COORD, banks[b][0], banks[b][1], names, cfg, agg, privacy=plan,
                                               n_banks=len(banks)))(b) for b in banks}
    roles[COORD] = lambda ch: run_coordinator(ch, list(banks), cfg, agg, privacy=plan)
    model = run_roles(roles, network=net)[COORD]
    assert model.privacy["mechanisms_planned"] == 3 + 2 and model.privacy["epsilon"] <= 4.0
    s = np.asarray(next(e.body for e in net["bank1"].captured if e.tag == "hlr.range")["s"])
    exact = 0
    for X, _ in banks.values():
        Xc = np.clip(X, -s, s)
        exact = exact + np.concatenate([[len(X)], np.nansum(Xc / s, axis=0), (~np.isnan(X)).sum(0)])
    z = (agg.totals["hlr.sum"] - exact) / (plan.noise_multiplier * np.sqrt(1 + 2 * d) * np.sqrt(len(banks)))
    assert len(z) == 1 + 2 * d
    # 25 standard normals: bounds at ~5 sigma (the mean's sd is 0.2; chi-square(24) for the sd), so an
    # honest run fails about once in a million; the old ones (0.5, [0.6, 1.5]) failed ~1.5 % of runs
    assert 0.4 < float(np.std(z)) < 1.8 and abs(float(np.mean(z))) < 1.0
    # the noisy pooled means are still near the observed ones (thousands of rows per column)
    observed = np.nanmean(np.vstack([X for X, _ in banks.values()]), axis=0)
    assert np.all(np.abs(model.mean - observed) <= 0.05 * s + 0.2)


# ---------------------------------------------------------------------------------------------
# horizontal.gbdt under missing = "mean": the same pooled-mean sums, alone, before the bins
# ---------------------------------------------------------------------------------------------
def gbdt_federate(banks, params, agg, pooled_mean=True, privacy=None, capture=False):
    from fedrisk.algorithms.horizontal.gbdt import run_bank as gb_bank, run_coordinator as gb_coordinator

    net = InMemoryNetwork([*banks, "coordinator"], capture=capture, recv_timeout=60.0)
    roles = {b: (lambda X, y: lambda ch: gb_bank(ch, "coordinator", X, y, NAMES, params, agg, n_banks=len(banks),
                                                 pooled_mean=pooled_mean, privacy=privacy))(X, y)
             for b, (X, y) in banks.items()}
    roles["coordinator"] = lambda ch: gb_coordinator(ch, list(banks), params, agg, pooled_mean=pooled_mean,
                                                     privacy=privacy)
    return run_roles(roles, network=net), net


def same_trees(a, b, atol=1e-5):
    """Same splits (feature, bin, missing side, children) and leaf weights up to fixed-point noise."""
    key = ("feature_index", "bin", "missing_left", "left", "right")
    if len(a) != len(b):
        return False
    for ta, tb in zip(a, b):
        if len(ta["nodes"]) != len(tb["nodes"]):
            return False
        for na, nb in zip(ta["nodes"], tb["nodes"]):
            if ("leaf" in na) != ("leaf" in nb):
                return False
            if "leaf" in na and abs(na["leaf"] - nb["leaf"]) > atol:
                return False
            if "leaf" not in na and tuple(na[k] for k in key) != tuple(nb[k] for k in key):
                return False
    return True


def test_gbdt_fills_blanks_with_the_pooled_mean_and_equals_the_pooled_booster():
    """The federated trees on banks with blanks are the trees of the same federation on the pooled
    mean-filled rows (exactly: same bins, same splits), and the filled rows' booster is close to
    pooled XGBoost on the pooled rows filled with the pooled mean; each bank's own means differ."""
    from fedrisk.algorithms.horizontal.gbdt import GbdtParams, planned_aggregations
    from fedrisk.crypto.secagg_oneshot import OneShotSessionAggregation

    banks = non_iid_banks(6, sizes=(1500, 900, 400))
    params = GbdtParams(n_trees=8, max_depth=3, learning_rate=0.3, max_bin=32)
    res, _ = gbdt_federate(banks, params, OneShotSessionAggregation(8, dropout_timeout=5.0))
    m = res["coordinator"]
    observed = np.vstack([X for X, _ in banks.values()])
    means = np.nanmean(observed, axis=0)
    np.testing.assert_allclose([m.imputation[f] for f in NAMES], means, rtol=1e-6)
    for b in banks:  # every bank holds the same model, fill values included
        assert res[b].trees == m.trees and res[b].imputation == m.imputation
    # the two pooled-mean sums (and the bins' zoom / refine rounds)
    assert m.rounds == planned_aggregations(params) + 2 + m.binning["zoom_rounds"] + m.binning["refine_rounds"]
    assert not any(m.has_missing)  # nothing is left blank after filling
    fill = np.array([m.imputation[f] for f in NAMES])
    filled = {b: (np.where(np.isnan(X), fill, X), y) for b, (X, y) in banks.items()}
    ref, _ = gbdt_federate(filled, params, PlainAggregation(), pooled_mean=False)
    assert ref["coordinator"].cuts == m.cuts
    assert same_trees(ref["coordinator"].trees, m.trees)
    # each bank's own means: other rows, other trees
    local = {b: (SimpleImputer(strategy="mean").fit_transform(X), y) for b, (X, y) in banks.items()}
    old, _ = gbdt_federate(local, params, PlainAggregation(), pooled_mean=False)
    assert not same_trees(old["coordinator"].trees, m.trees)
    xgb = pytest.importorskip("xgboost")
    test = non_iid_banks(7, sizes=(3000, 2000, 1000))
    Xt = np.vstack([X for X, _ in test.values()])
    yt = np.concatenate([y for _, y in test.values()])
    Xt_filled = np.where(np.isnan(Xt), means, Xt)
    X, y = np.vstack([X for X, _ in filled.values()]), np.concatenate([y for _, y in filled.values()])
    booster = xgb.XGBClassifier(n_estimators=8, max_depth=3, learning_rate=0.3, max_bin=32, tree_method="hist",
                                n_jobs=1).fit(X, y)
    from fedrisk.finance.metrics import auc

    a_fed, a_xgb = auc(yt, m.predict_proba(Xt_filled)), auc(yt, booster.predict_proba(Xt_filled)[:, 1])
    assert abs(a_fed - a_xgb) < 0.01, (a_fed, a_xgb)


def test_gbdt_pooled_mean_sums_reach_the_coordinator_masked():
    from fedrisk.algorithms.horizontal.gbdt import GbdtParams

    banks = non_iid_banks(8)
    params = GbdtParams(n_trees=1, max_depth=2, max_bin=16)
    _, net = gbdt_federate(banks, params, SecureAggregation(), capture=True)
    got = [e for e in net["coordinator"].captured if e.tag.startswith("hgb.mean")]
    assert {e.tag.split(".sa")[0] for e in got} >= {"hgb.mean.magnitude", "hgb.mean.sum"}
    assert {e.kind for e in got} <= {"public-parameter", "ciphertext", "masked", "plaintext-by-design"}
    for e in got:
        assert not (isinstance(e.body, np.ndarray) and e.body.dtype == np.float64 and e.body.size == 1 + 2 * D)


def test_private_gbdt_pooled_means_are_two_accounted_gaussian_mechanisms():
    """Under [privacy] the pooled-mean rounds of horizontal.gbdt are noised like the LR
    standardisation's (magnitude sketch: sensitivity sqrt(d); [n, sum x/s, counts]: sqrt(1 + 2d)) and
    the plan counts them: two more mechanisms, the run's spent epsilon within the budget. The noise in
    the opened sum is the accountant's; the noisy means stay near the observed ones; the model stores
    them and every bank holds the same."""
    from fedrisk.algorithms.horizontal.gbdt import GbdtParams, planned_aggregations
    from fedrisk.crypto.dp import plan_privacy
    from tests.algorithms.horizontal.test_newton_lr_privacy import Recording

    banks = non_iid_banks(9, sizes=(3000, 2500, 2000))
    params = GbdtParams(n_trees=2, max_depth=2, max_bin=16)
    planned = planned_aggregations(params, private=True, pooled_mean=True)
    assert planned == planned_aggregations(params, private=True) + 2
    plan = plan_privacy(planned, epsilon=8.0, delta=1e-5)
    agg = Recording()
    res, net = gbdt_federate(banks, params, agg, privacy=plan, capture=True)
    m = res["coordinator"]
    assert m.privacy["mechanisms_planned"] == planned and m.privacy["mechanisms_run"] <= planned
    assert m.privacy["epsilon"] <= 8.0 + 1e-9
    assert all(res[b].imputation == m.imputation for b in banks)
    s = np.asarray(next(e.body for e in net["b0"].captured if e.tag == "hgb.mean.range")["s"])
    exact = 0
    for X, _ in banks.values():
        Xc = np.clip(X, -s, s)
        exact = exact + np.concatenate([[len(X)], np.nansum(Xc / s, axis=0), (~np.isnan(X)).sum(0)])
    z = (agg.totals["hgb.mean.sum"] - exact) / (plan.noise_multiplier * np.sqrt(1 + 2 * D))
    z = z / np.sqrt(len(banks))  # plain sums: each bank adds the whole noise (no secure-aggregation threshold)
    assert len(z) == 1 + 2 * D and np.any(z != 0)  # noised
    assert float(np.max(np.abs(z))) < 5.0
    # and not too little: the RMS of 1 + 2d standard normals is within [0.3, 2.5] but for ~1e-5 of runs
    # (1/100 of the calibrated noise gives ~0.01)
    assert 0.3 < float(np.sqrt(np.mean(z ** 2))) < 2.5, z
    observed = np.nanmean(np.vstack([X for X, _ in banks.values()]), axis=0)
    fill = np.array([m.imputation[f] for f in NAMES])
    assert np.all(np.abs(fill - observed) <= 0.1 * np.maximum(np.abs(observed), 1.0)), (fill, observed)  # ~8 sigma


def test_private_gbdt_range_test_expects_the_noise_the_opened_sum_carries(monkeypatch):
    """The coordinator takes an exponent as occupied above so many noise standard deviations that an
    empty one passes in at most DP_FALSE_BIN of runs; that holds only if its sigma is the noise the
    opened sum really carries. Each bank adds 1/t of the calibrated variance, so a sum of n banks
    carries sqrt(n / t) times the calibrated std (sqrt(3) here: plain sums, t = 1). With the
    calibrated std alone the test sat at 2.9 real sigma: 27 runs in 1000 took a phantom exponent
    (up to 2^60) as the range, and the pooled mean drowned in its noise (fill -1.0e4 for 1.08)."""
    from fedrisk.algorithms.horizontal import standardisation
    from fedrisk.algorithms.horizontal.gbdt import GbdtParams, planned_aggregations
    from fedrisk.crypto.dp import plan_privacy
    from tests.algorithms.horizontal.test_newton_lr_privacy import Recording

    seen = []
    real = standardisation.private_ranges
    monkeypatch.setattr(standardisation, "private_ranges", lambda c, sigma: seen.append(sigma) or real(c, sigma))
    banks = non_iid_banks(10, sizes=(3000, 2500, 2000))
    params = GbdtParams(n_trees=1, max_depth=2, max_bin=16)
    plan = plan_privacy(planned_aggregations(params, private=True, pooled_mean=True), epsilon=8.0, delta=1e-5)
    agg = Recording()
    gbdt_federate(banks, params, agg, privacy=plan)
    exact = sum(standardisation.magnitude_counts(X).ravel() for X, _ in banks.values())
    noise = agg.totals["hgb.mean.magnitude"] - exact
    assert len(seen) == 1 and noise.size == D * standardisation.EXPONENT_BINS
    # 496 draws: the sample std is within 15 % of the true one but for ~1e-6 of runs
    assert 0.85 < float(np.std(noise)) / seen[0] < 1.15, (float(np.std(noise)), seen[0])
