"""SecureBoost over the in-memory channel: equals the plaintext reference, three parties, privacy captures."""
from __future__ import annotations

import numpy as np
import pytest

from fedrisk.algorithms.vertical.binning import QuantileBinner
from fedrisk.algorithms.vertical.secureboost import (
    SecureBoostFeatureHolder,
    SecureBoostLabelHolder,
    SecureBoostParams,
    score_feature_holder,
    score_label_holder,
)
from fedrisk.algorithms.vertical.tree import fit_reference, predict_reference
from fedrisk.errors import ConfigError
from fedrisk.finance.metrics import auc
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork
from fedrisk.transport.codec import BigInts

# 1024-bit keys keep the suite fast; production jobs refuse keys below 2048 bits (task Params)
FAST = dict(key_bits=1024, max_bin=16, n_trees=4, max_depth=3)


def make_data(n=1200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 8))
    X[:, 4] = rng.integers(0, 4, n)  # a low-cardinality column, like PAY_x
    z = X[:, 0] + 0.8 * X[:, 5] - 0.6 * X[:, 6] * X[:, 1] + 0.5 * X[:, 4] - 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    return X, y


def train(X_parts, y, params, names=None, capture=False, score_X=None):
    """Train with the label holder on X_parts[0] and one feature holder per other part."""
    names = names or [[f"p{i}_x{j}" for j in range(x.shape[1])] for i, x in enumerate(X_parts)]
    hosts = [f"h{i}" for i in range(1, len(X_parts))]
    score_X = score_X or X_parts

    def lh(ch):
        est = SecureBoostLabelHolder(params).fit(ch, hosts, X_parts[0], y, names[0])
        return est, score_label_holder(ch, est.model_, score_X[0], hosts, tag="t")

    def host(i):
        def role(ch):
            est = SecureBoostFeatureHolder(params).fit(ch, "lh", X_parts[i], names[i])
            score_feature_holder(ch, est.model_, score_X[i], "lh", tag="t")
            return est
        return role

    net = InMemoryNetwork(["lh", *hosts], capture=capture)
    res = run_roles({"lh": lh, **{h: host(i + 1) for i, h in enumerate(hosts)}}, network=net)
    return res, net


def pooled_reference(X_parts, y, params):
    binned = [QuantileBinner(params.max_bin).fit(x) for x in X_parts]
    B = np.column_stack([b.transform(x) for b, x in zip(binned, X_parts)])
    nb = np.concatenate([b.n_bins_ for b in binned])
    miss = np.concatenate([b.missing_bins() for b in binned])
    base, trees = fit_reference(B, nb, y, params.n_trees, params.tree, precision=params.precision, missing=miss)
    return predict_reference(base, trees, B, miss)


def test_two_parties_equal_plaintext_reference():
    X, y = make_data()
    params = SecureBoostParams(**FAST)
    parts = [X[:, :3], X[:, 3:]]
    res, _ = train(parts, y, params)
    est, p = res["lh"]
    ref = pooled_reference(parts, y, params)
    assert np.max(np.abs(p - ref)) < 1e-6
    # scoring by the tree walk equals the training margins
    assert np.allclose(p, 1 / (1 + np.exp(-est.train_margin_)))
    assert auc(y, p) > 0.75


def test_close_to_xgboost_on_small_data():
    xgb = pytest.importorskip("xgboost")
    X, y = make_data(n=3000, seed=1)
    tr, te = np.arange(3000) % 5 != 0, np.arange(3000) % 5 == 0
    params = SecureBoostParams(**{**FAST, "n_trees": 10, "learning_rate": 0.3})
    parts = [X[:, :4], X[:, 4:]]
    res, _ = train([p[tr] for p in parts], y[tr], params, score_X=[p[te] for p in parts])
    fed_auc = auc(y[te], res["lh"][1])
    ref = xgb.XGBClassifier(n_estimators=10, max_depth=3, learning_rate=0.3, max_bin=16, tree_method="hist")
    ref_auc = auc(y[te], ref.fit(X[tr], y[tr]).predict_proba(X[te])[:, 1])
    assert abs(fed_auc - ref_auc) < 0.02, (fed_auc, ref_auc)


def test_three_parties_and_importance():
    X, y = make_data(seed=2)
    params = SecureBoostParams(**FAST)
    parts = [X[:, :2], X[:, 2:5], X[:, 5:]]
    names = [["a", "b"], ["c", "d", "e"], ["f", "g", "h"]]
    res, _ = train(parts, y, params, names=names)
    est, p = res["lh"]
    assert np.max(np.abs(p - pooled_reference(parts, y, params))) < 1e-6
    imp = est.model_.importance
    # the label holder sees its own names and anonymous indices of the others' features
    assert set(imp.get("lh", {})) <= {"a", "b"}
    for h in ("h1", "h2"):
        assert all(k.startswith("f") and k[1:].isdigit() for k in imp.get(h, {}))
    h1, h2 = res["h1"].model_, res["h2"].model_
    assert set(h1.importance) <= {"c", "d", "e"} and set(h2.importance) <= {"f", "g", "h"}
    assert h2.importance, "the strongest features sit at h2; it must have won splits"
    # a feature holder's counts agree with what the label holder saw
    assert sum(v["splits"] for v in h2.importance.values()) == sum(v["splits"] for v in imp["h2"].values())
    for t in h1.trees + h2.trees:
        for nd in t["nodes"]:
            assert set(nd) == {"id", "feature", "threshold"}


def _walk(obj):
    """Every leaf value of a decoded message body."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)
    else:
        yield obj


def test_privacy_captures():
    X, y = make_data(n=600, seed=3)
    params = SecureBoostParams(**{**FAST, "n_trees": 3})
    parts = [X[:, :3], X[:, 3:]]
    res, net = train(parts, y, params, capture=True)
    est = res["lh"][0]
    # --- what the feature holder received: ciphertexts, a public key, row sets, split decisions
    got = net["h1"].captured
    assert {e.kind for e in got} <= {"public-parameter", "ciphertext", "control", "plaintext-by-design", "aggregate"}
    assert any(isinstance(v, BigInts) for e in got for v in _walk(e.body))
    n = len(y)
    for e in got:
        for v in _walk(e.body):
            if isinstance(v, np.ndarray):
                if e.tag == "sb.importance" and v.dtype.kind == "f":
                    continue  # total gain per own feature, by design
                assert v.dtype.kind in "iu", f"{e.tag}: non-integer array {v.dtype}"
                # no label vector: nothing of one value per row made only of 0/1
                assert not (v.size == n and set(np.unique(v)) <= {0, 1}), f"{e.tag} carries a 0/1 vector per row"
            elif isinstance(v, float):
                assert e.tag == "sb.setup", f"{e.tag} carries a plaintext float {v}"
    ciphertexts = [v for e in got if e.kind == "ciphertext" for v in _walk(e.body) if isinstance(v, BigInts)]
    assert sum(len(c) for c in ciphertexts) >= 3 * n  # one packed (g, h) per row and tree, no plaintext
    # --- what the label holder received: no thresholds, cut points or raw values of h1
    host_model = res["h1"].model_
    secret = {float(nd["threshold"]) for t in host_model.trees for nd in t["nodes"]}
    secret |= {float(v) for v in np.unique(parts[1])}
    for e in net["lh"].captured:
        for v in _walk(e.body):
            if isinstance(v, np.ndarray) and v.dtype.kind == "f":
                assert not np.isin(v, list(secret)).any(), f"{e.tag} leaks feature values"
                pytest.fail(f"{e.tag}: the label holder received a float array")
            if isinstance(v, float) and e.tag != "sb.stats":
                assert v not in secret, f"{e.tag} leaks a threshold"
    # nor does the label holder's model hold them
    for t in est.model_.trees:
        for nd in t["nodes"]:
            if nd.get("owner") == "h1":
                assert "threshold" not in nd and "feature" not in nd
    # every message is in the ledgers
    assert net["lh"].ledger.entries and net["h1"].ledger.entries


def test_first_tree_label_holder_only_sends_no_ciphertext_for_it():
    X, y = make_data(n=600, seed=4)
    params = SecureBoostParams(**{**FAST, "n_trees": 2, "first_tree_label_holder_only": True})
    res, net = train([X[:, :3], X[:, 3:]], y, params, capture=True)
    tags = {e.tag for e in net["h1"].captured}
    assert not any(t.startswith("sb.t0.") for t in tags) and "sb.t1.grad.0" in tags
    assert res["h1"].model_.trees[0]["nodes"] == []
    assert all(nd.get("owner") in (None, "lh") for nd in res["lh"][0].model_.trees[0]["nodes"])


def test_subsample_and_early_stopping():
    X, y = make_data(n=1500, seed=5)
    params = SecureBoostParams(**{**FAST, "n_trees": 40, "learning_rate": 1.0, "subsample": 0.7,
                                  "validation_fraction": 0.2, "early_stopping_rounds": 2})
    res, _ = train([X[:, :3], X[:, 3:]], y, params)
    est = res["lh"][0]
    assert est.n_val_ == 300
    assert len(est.model_.history) < 40 and "val_loss" in est.model_.history[0]
    assert len(est.model_.trees) == est.model_.best_iteration == len(res["h1"].model_.trees)


@pytest.mark.parametrize("bad", [
    {"max_depth": 0}, {"learning_rate": 0}, {"max_bin": 1}, {"max_bin": 300}, {"subsample": 0},
    {"subsample": 1.5}, {"min_child_weight": -1}, {"reg_lambda": -0.1}, {"n_trees": 0},
    {"early_stopping_rounds": 3}, {"validation_fraction": 0.6}, {"scheme": "rsa"}, {"precision": 4},
])
def test_bad_parameters_raise_config_error(bad):
    with pytest.raises(ConfigError):
        SecureBoostParams(**bad)


def test_binning_rule_matches_thresholds():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=500), rng.integers(0, 3, 500), np.ones(500)])
    b = QuantileBinner(8).fit(X)
    B = b.transform(X)
    assert list(b.n_bins_) == [8, 3, 1]
    for f in range(2):
        for k in range(b.n_bins_[f] - 1):
            assert np.array_equal(B[:, f] <= k, X[:, f] < b.threshold(f, k))
    with pytest.raises(ConfigError):
        QuantileBinner(1)


def test_paillier_scheme_gives_the_same_trees():
    X, y = make_data(n=500, seed=6)
    params = SecureBoostParams(**{**FAST, "n_trees": 2, "scheme": "paillier"})
    parts = [X[:, :3], X[:, 3:]]
    res, _ = train(parts, y, params)
    assert np.max(np.abs(res["lh"][1] - pooled_reference(parts, y, params))) < 1e-6


def test_compiled_kernel_and_gmpy2_fallback_grow_the_same_trees(monkeypatch):
    """The compiled Montgomery kernels (CRT encryption, histograms, compression) change speed, not
    results: with them switched off the same data gives the same model and scores."""
    from fedrisk.crypto import montgomery

    if not montgomery.AVAILABLE:
        pytest.skip("compiled kernel fedrisk.crypto._montgomery not built: only the fallback exists")
    X, y = make_data(n=5000, seed=7)   # large enough for the threaded/pooled kernels
    params = SecureBoostParams(**{**FAST, "n_trees": 3})
    parts = [X[:, :3], X[:, 3:]]
    fast, _ = train(parts, y, params)
    monkeypatch.setattr(montgomery, "_native", None)
    monkeypatch.setattr(montgomery, "AVAILABLE", False)
    slow, _ = train(parts, y, params)
    assert np.array_equal(fast["lh"][1], slow["lh"][1])
    assert fast["lh"][0].model_.trees == slow["lh"][0].model_.trees


def _with_missing(X, y, seed=0):
    """Blank cells in three columns (two at the feature holder): missingness that carries signal
    and missingness at random. Column 5 raises the default risk, and its blanks are mostly
    non-defaulters, so they belong with its low values: on the left of a split."""
    rng = np.random.default_rng(seed)
    X = X.copy()
    X[(rng.random(len(y)) < 0.4) & (y == 0), 5] = np.nan      # informative, at a feature holder
    X[rng.random(len(y)) < 0.1, 6] = np.nan                    # at random, same party
    X[rng.random(len(y)) < 0.15, 1] = np.nan                   # at the label holder
    return X


@pytest.mark.parametrize("rows", [0, 2])  # 2 rows per ciphertext: the missing bins summed per position too
def test_missing_values_get_their_own_bin_and_a_learned_side(rows):
    X, y = make_data(n=1500, seed=8)
    X = _with_missing(X, y)
    params = SecureBoostParams(**{**FAST, "n_trees": 4, "rows_per_ciphertext": rows})
    parts = [X[:, :3], X[:, 3:]]
    res, _ = train(parts, y, params)
    est, p = res["lh"]
    # the federation grows exactly the pooled sparsity-aware trees, and scoring raw rows with NaN
    # (x < threshold, missing to its learned side) agrees with the binned reference
    assert np.max(np.abs(p - pooled_reference(parts, y, params))) < 1e-6
    assert np.allclose(p, 1 / (1 + np.exp(-est.train_margin_)))
    host_nodes = [nd for t in res["h1"].model_.trees for nd in t["nodes"]]
    assert any(nd.get("missing_left") for nd in host_nodes), "informative missingness should be sent left somewhere"
    lh_nodes = [nd for t in est.model_.trees for nd in t["nodes"] if "threshold" in nd]
    assert all(set(nd) <= {"id", "owner", "left", "right", "gain", "feature", "threshold", "missing_left"} for nd in lh_nodes)


def test_missing_value_binning_and_split_search():
    from fedrisk.algorithms.vertical.tree import TreeParams, best_split, histogram

    rng = np.random.default_rng(1)
    x = rng.normal(size=400)
    x[::5] = np.nan
    b = QuantileBinner(8).fit(np.column_stack([x, rng.normal(size=400)]))
    B = b.transform(np.column_stack([x, rng.normal(size=400)]))
    assert list(b.has_missing_) == [True, False] and b.n_bins_[0] == 8 and list(b.missing_bins()) == [7, -1]
    assert (B[np.isnan(x), 0] == 7).all() and (B[~np.isnan(x), 0] < 7).all()
    assert b.threshold(0, 6) > 1e300          # "every present value left": a split on missingness
    # brute force over (threshold, side) agrees with the vectorised search
    g, h = rng.normal(size=400), rng.uniform(0.05, 0.25, size=400)
    g[np.isnan(x)] += 1.5                      # missing rows lean one way
    tp = TreeParams(min_child_weight=0.5)
    hist = histogram(B, g, h, 8)
    got = best_split(hist, b.n_bins_, g.sum(), h.sum(), tp, b.missing_bins())
    best = None
    for f in range(2):
        for k in range(int(b.n_bins_[f]) - 1):
            for side in (False, True):
                if side and (b.missing_bins()[f] < 0 or k >= b.n_bins_[f] - 2):
                    continue
                left = B[:, f] <= k
                if side:
                    left |= B[:, f] == b.missing_bins()[f]
                GL, HL, G, H = g[left].sum(), h[left].sum(), g.sum(), h.sum()
                if HL < 0.5 or H - HL < 0.5:
                    continue
                gain = GL**2 / (HL + 1) + (G - GL)**2 / (H - HL + 1) - G**2 / (H + 1)
                if best is None or gain > best[0] + 1e-12:
                    best = (gain, f, k, side)
    assert got is not None and (got[1], got[2], got[5]) == best[1:] and abs(got[0] - best[0]) < 1e-9


def test_validation_rows_taking_every_default_are_refused_and_partners_read_a_summary():
    """The task checks every training row, but the label holder's own validation split can still hold
    out the last defaults (rare bads): that error line is the label of rows the feature holder can
    name, so it travels as a label error (summary only), like the task-level one-class checks."""
    from fedrisk.algorithms.vertical.secureboost.params import _RowSchedule
    from fedrisk.errors import DataError, FedriskError
    from fedrisk.runtime.abort_reason import LABELS_SUMMARY, wire_reason

    X, _ = make_data(n=200)
    params = SecureBoostParams(**FAST, validation_fraction=0.2)
    val = _RowSchedule(params, len(X)).val
    y = np.zeros(len(X))
    y[np.flatnonzero(val)[:3]] = 1.0  # both classes among the rows the task sees; bads only in validation
    net = InMemoryNetwork(["lh", "h1"], capture=True)

    def lh(ch):
        SecureBoostLabelHolder(params).fit(ch, ["h1"], X[:, :3], y, ["a", "b", "c"])

    def host(ch):
        SecureBoostFeatureHolder(params).fit(ch, "lh", X[:, 3:], list("defgh"))

    with pytest.raises(FedriskError) as err:
        run_roles({"lh": lh, "h1": host}, network=net)
    assert isinstance(err.value, DataError)
    local = str(err.value)
    assert "only label 0" in local and "validation_fraction" in local  # the label holder's own line
    reason = wire_reason("lh", err.value, ["lh", "h1"])
    received = (net["h1"].mailbox.failure or "") + " ".join(str(e.body) for e in net["h1"].captured)
    assert LABELS_SUMMARY in reason
    for text in (reason, received):
        assert "label 0" not in text and "validation" not in text, text
