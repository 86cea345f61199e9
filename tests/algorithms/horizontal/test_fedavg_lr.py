import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from fedrisk.algorithms.horizontal.aggregation import PlainAggregation
from fedrisk.algorithms.horizontal.fedavg_lr import FedAvgConfig, FederatedLogisticRegression, run_bank, run_coordinator
from fedrisk.errors import DataError
from fedrisk.finance.metrics import auc
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork


def synthetic_banks(seed=0, sizes=(400, 300, 500), d=5):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d)
    banks = {}
    for i, n in enumerate(sizes):
        X = rng.normal(loc=i * 0.3, scale=1 + i, size=(n, d))
        y = (rng.random(n) < 1 / (1 + np.exp(-(X @ w) / (1 + i)))).astype(float)
        banks[f"b{i}"] = (X, y)
    return banks


def federate(banks, cfg, names=None, capture=False, agg=None):
    net = InMemoryNetwork([*banks, "coordinator"], capture=capture)
    names = names or {b: [f"x{j}" for j in range(X.shape[1])] for b, (X, _) in banks.items()}
    roles = {b: (lambda X, y, nm: lambda ch: run_bank(ch, "coordinator", X, y, nm, cfg, agg))(X, y, names[b])
             for b, (X, y) in banks.items()}
    roles["coordinator"] = lambda ch: run_coordinator(ch, list(banks), cfg, agg)
    return run_roles(roles, network=net), net


def test_federated_standardisation_equals_pooled():
    banks = synthetic_banks()
    res, _ = federate(banks, FedAvgConfig(rounds=1))
    pooled = np.vstack([X for X, _ in banks.values()])
    m = res["coordinator"]
    np.testing.assert_allclose(m.mean, pooled.mean(0), rtol=1e-10)
    np.testing.assert_allclose(m.scale, pooled.std(0), rtol=1e-8)
    # every bank ends with the identical global model
    for b in banks:
        np.testing.assert_array_equal(res[b].coef, m.coef)


def test_close_to_pooled_logistic_regression_and_deterministic():
    banks = synthetic_banks(1)
    cfg = FedAvgConfig(rounds=40, local_epochs=2, batch_size=32, learning_rate=0.1)
    res, _ = federate(banks, cfg)
    res2, _ = federate(banks, cfg)
    np.testing.assert_array_equal(res["coordinator"].coef, res2["coordinator"].coef)
    X = np.vstack([X for X, _ in banks.values()])
    y = np.concatenate([y for _, y in banks.values()])
    ref = LogisticRegression(C=1e6, max_iter=1000).fit(X, y)
    p_fed = res["coordinator"].predict_proba(X)
    assert abs(auc(y, p_fed) - auc(y, ref.predict_proba(X)[:, 1])) < 0.005
    # the raw-scale coefficients are what a pooled model would have
    coef_raw, _ = res["coordinator"].raw_coefficients()
    assert np.corrcoef(coef_raw, ref.coef_[0])[0, 1] > 0.99


def test_fedprox_term_keeps_local_models_near_the_global_one():
    banks = synthetic_banks(2)
    far, _ = federate(banks, FedAvgConfig(rounds=2, local_epochs=5, mu=0.0))
    near, _ = federate(banks, FedAvgConfig(rounds=2, local_epochs=5, mu=10.0))
    assert np.linalg.norm(near["coordinator"].coef) < np.linalg.norm(far["coordinator"].coef)


def test_plain_aggregation_coordinator_sees_updates_only_never_rows():
    banks = synthetic_banks(3)
    _, net = federate(banks, FedAvgConfig(rounds=3), capture=True, agg=PlainAggregation())
    received = net["coordinator"].captured
    assert {e.tag.split(".r")[0] for e in received} == {"hlr.schema", "hlr.magnitude", "hlr.sum", "hlr.var", "hlr.update"}
    for e in received:
        if isinstance(e.body, np.ndarray):
            # vectors of statistics of fixed sizes, never anything shaped like the banks' rows
            assert e.body.ndim == 1 and e.body.size in {5 * 124, 1 + 5, 5, 5 + 3}


def test_raw_amounts_survive_secure_aggregation_standardisation():
    from fedrisk.crypto.secure_aggregation import SecureAggregation

    rng = np.random.default_rng(7)
    banks = {}
    for i, n in enumerate((3000, 2000, 4000)):
        limit = rng.lognormal(12, 1, n)            # credit limits around 160,000, tails into millions
        X = np.column_stack([limit, rng.normal(0.3, 0.01, n), rng.integers(0, 3, n).astype(float)])
        y = (rng.random(n) < 1 / (1 + np.exp(-(np.log(limit) - 12)))).astype(float)
        banks[f"b{i}"] = (X, y)
    res, _ = federate(banks, FedAvgConfig(rounds=2), names={b: ["limit", "rate", "count"] for b in banks},
                      agg=SecureAggregation())
    pooled = np.vstack([X for X, _ in banks.values()])
    np.testing.assert_allclose(res["coordinator"].mean, pooled.mean(0), rtol=1e-6)
    np.testing.assert_allclose(res["coordinator"].scale, pooled.std(0), rtol=1e-4)


@pytest.mark.parametrize("other, message", [
    (["x0", "x1", "x2", "x3"], r"different feature counts .*exclude = \[...\] in \[parties.b0\]"),
    (["x1", "x0", "x2", "x3", "x4"], "different order"),
    (["x0", "x1", "x2", "x3", "income"], "different feature names"),
])
def test_banks_with_different_schemas_are_refused(other, message):
    banks = synthetic_banks(4)
    names = {b: [f"x{j}" for j in range(5)] for b in banks}
    names["b2"] = other
    banks["b2"] = (banks["b2"][0][:, :len(other)], banks["b2"][1])
    with pytest.raises(DataError, match=message):
        federate(banks, FedAvgConfig(rounds=1), names=names)


def test_resume_from_checkpoint_continues_the_round_count():
    banks = synthetic_banks(5)
    cfg = FedAvgConfig(rounds=6)
    full, _ = federate(banks, cfg)
    states = {}
    net = InMemoryNetwork([*banks, "coordinator"])
    roles = {b: (lambda X, y: lambda ch: run_bank(ch, "coordinator", X, y, [f"x{j}" for j in range(5)], FedAvgConfig(rounds=3)))(X, y)
             for b, (X, y) in banks.items()}
    roles["coordinator"] = lambda ch: run_coordinator(ch, list(banks), FedAvgConfig(rounds=3),
                                                      checkpoint=lambda r, s: states.__setitem__(r, s))
    run_roles(roles, network=net)
    roles = {b: (lambda X, y: lambda ch: run_bank(ch, "coordinator", X, y, [f"x{j}" for j in range(5)], cfg))(X, y)
             for b, (X, y) in banks.items()}
    roles["coordinator"] = lambda ch: run_coordinator(ch, list(banks), cfg, start=(3, states[3]["w"]))
    resumed = run_roles(roles)
    np.testing.assert_allclose(resumed["coordinator"].coef, full["coordinator"].coef, rtol=1e-12)
    assert [h["round"] for h in resumed["coordinator"].history] == [4, 5, 6]


def test_sklearn_shaped_estimator_for_a_bank():
    banks = synthetic_banks(6)
    est = {b: FederatedLogisticRegression(rounds=5, aggregation=PlainAggregation()) for b in banks}
    roles = {b: (lambda X, y, e: lambda ch: e.fit(ch, X, y))(X, y, est[b]) for b, (X, y) in banks.items()}
    roles["coordinator"] = lambda ch: run_coordinator(ch, list(banks), FedAvgConfig(rounds=5))
    run_roles(roles)
    X, _ = banks["b0"]
    p = est["b0"].predict_proba(X)
    assert p.shape == (len(X), 2) and np.allclose(p.sum(1), 1)
    np.testing.assert_allclose(X @ est["b0"].coef_ + est["b0"].intercept_,
                               np.log(p[:, 1] / p[:, 0]), rtol=1e-6, atol=1e-9)


def test_shared_default_credit_quality(shared_data):
    files = {"bank1": "default_credit_homo_guest.csv", "bank2": "default_credit_homo_host_1.csv",
             "bank3": "default_credit_homo_host_2.csv"}
    frames = {b: pd.read_csv(shared_data / f) for b, f in files.items()}
    test = pd.read_csv(shared_data / "default_credit_homo_test.csv")
    feats = [c for c in test.columns if c not in ("id", "y")]
    banks = {b: (f[feats].to_numpy(), f["y"].to_numpy(float)) for b, f in frames.items()}
    res, _ = federate(banks, FedAvgConfig(rounds=20, learning_rate=0.1, lr_decay=0.95), names={b: feats for b in banks})
    pooled = pd.concat(frames.values())
    ref = LogisticRegression(max_iter=2000).fit(pooled[feats], pooled["y"])
    fed_auc = auc(test["y"], res["coordinator"].predict_proba(test[feats].to_numpy()))
    ref_auc = auc(test["y"], ref.predict_proba(test[feats])[:, 1])
    assert fed_auc >= ref_auc - 0.005, (fed_auc, ref_auc)
