"""Vertical LR protocol: same result as the plaintext reference, and nobody receives plaintext it should not."""
from __future__ import annotations

import numpy as np
import pytest

from fedrisk.algorithms.vertical.hetero_lr import (HeteroLRConfig, _batches, _rows, plan_chunks, score, sigmoid,
                                                   train)
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork

PARTIES = ["lender", "payco", "bureau"]


def _data(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 9))
    w = rng.normal(size=9)
    y = (rng.random(n) < sigmoid(X @ w - 0.5)).astype(np.int8)
    return {"lender": X[:, :4], "payco": X[:, 4:7], "bureau": X[:, 7:]}, y


def _reference(parts, y, cfg):
    """Plaintext emulation of exactly the same updates (what a trusted party would compute)."""
    A = np.hstack([parts["lender"], np.ones((len(y), 1))])
    H = [parts["payco"], parts["bureau"]]
    n = len(y)
    tr, _ = plan_chunks(n, cfg)
    wg, wh = np.zeros(A.shape[1]), [np.zeros(h.shape[1]) for h in H]
    pen = np.r_[np.ones(A.shape[1] - 1), 0.0]
    for e in range(cfg.epochs):
        lr = cfg.learning_rate * cfg.lr_decay ** e
        for ch in _batches(tr, e, cfg):
            r = _rows(ch, n)
            d = (sigmoid(A[r] @ wg) - y[r] + 0.25 * sum(h[r] @ w for h, w in zip(H, wh))) / len(r)
            wg = wg - lr * (A[r].T @ d + cfg.l2 * pen * wg)
            wh = [w - lr * (h[r].T @ d + cfg.l2 * w) for h, w in zip(H, wh)]
    return wg, wh


@pytest.fixture(scope="module")
def trained():
    parts, y = _data()
    cfg = HeteroLRConfig(epochs=3, batch_size=1024, early_stopping_rounds=0, validation_fraction=0.1)
    net = InMemoryNetwork(PARTIES, capture=True, tag_prefixes=("vlr.",))
    res = run_roles({p: (lambda p: lambda ch: train(ch, "lender", PARTIES[1:], parts[p], y if p == "lender" else None,
                                                     cfg))(p) for p in PARTIES}, network=net)
    return parts, y, cfg, net, res


def test_three_parties_match_plaintext_reference(trained):
    parts, y, cfg, net, res = trained
    wg, wh = _reference(parts, y, cfg)
    assert np.allclose(np.r_[res["lender"].coef, res["lender"].intercept], wg, atol=2e-3)
    assert np.allclose(res["payco"].coef, wh[0], atol=2e-3)
    assert np.allclose(res["bureau"].coef, wh[1], atol=2e-3)
    assert res["lender"].history[-1]["val_loss"] < res["lender"].history[0]["val_loss"] + 1e-9
    # every outbound message is in the ledger
    for p in PARTIES:
        assert len(net[p].ledger.entries) == sum(1 for q in PARTIES if q != p for e in net[q].captured if e.sender == p)


def _floats(obj):
    if isinstance(obj, np.ndarray) and obj.dtype.kind == "f":
        yield obj.ravel()
    elif isinstance(obj, float):
        yield np.array([obj])
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _floats(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _floats(v)


def test_training_messages_hold_no_plaintext(trained):
    parts, y, cfg, net, res = trained
    allowed = {"ciphertext", "public-parameter", "aggregate", "control"}
    for p in PARTIES:
        for env in net[p].captured:
            assert env.kind in allowed, (p, env.tag, env.kind)
            assert env.tag.startswith(("vlr.key", "vlr.matrix", "vlr.x.", "vlr.v.", "vlr.vl.", "vlr.ctl."))
            # no float arrays at all during training: only ciphertext bytes and (per epoch) one loss scalar
            vals = list(_floats(env.body))
            assert sum(v.size for v in vals) <= 1, (p, env.tag)
            if env.tag.startswith("vlr.x.") and env.body is not None:
                assert all(isinstance(c, bytes) for c in env.body)
                raw = b"".join(env.body)
                for q, X in parts.items():
                    if q != p:
                        assert X[:3].astype(np.float64).tobytes()[:16] not in raw
        labels = y.astype(np.float64).tobytes()[:64]
        for env in net[p].captured:
            if isinstance(env.body, list):
                assert all(labels not in b for g in env.body for b in (g if isinstance(g, list) else [g])
                           if isinstance(b, bytes))


def test_scoring_label_holder_only_and_masked_partials():
    rng = np.random.default_rng(3)
    u = {p: rng.normal(size=50) for p in PARTIES}
    net = InMemoryNetwork(PARTIES, capture=True, tag_prefixes=("vlr.",))
    res = run_roles({p: (lambda p: lambda ch: score(ch, "lender", PARTIES[1:], u[p]))(p) for p in PARTIES}, network=net)
    assert np.allclose(res["lender"], sigmoid(u["lender"] + u["payco"] + u["bureau"]), atol=1e-9)
    assert res["payco"] is None and res["bureau"] is None
    got = {e.sender: e.body for e in net["lender"].captured if e.tag.endswith(".partial")}
    for h in ("payco", "bureau"):
        assert np.abs(got[h] - u[h]).min() > 1.0  # masked: far from the partial score
    assert not any(e.tag.endswith(".partial") for q in ("payco", "bureau") for e in net[q].captured)
