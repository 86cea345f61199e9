"""Separable training rows with ``l2 = 0``: the penalised optimum is at infinity.

A feature that leaks the label (a collections flag recorded after the default) makes the rows separable.
With ``l2 = 0`` the federated L-BFGS (exact solver, any number of holders) used to take ever longer steps
for 84 iterations and then die on ``OverflowError: (34, 'Numerical result out of range')`` -- a traceback
naming nothing the user can change. Every party now stops at the same iteration with one line saying why
and what to do; with ``l2 > 0`` the same rows still converge to the finite optimum."""
from __future__ import annotations

import numpy as np
import pytest

from fedrisk.algorithms.vertical.hetero_lr import HeteroLRConfig, lbfgs, sigmoid
from fedrisk.errors import DataError


def _separable(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = (X[:, 0] > 0).astype(float)  # column 0 decides the label: a leak
    return np.c_[X, np.ones(n)], y


def _fit(l2: float):
    X, y = _separable()
    n, k = X.shape
    cfg = HeteroLRConfig(l2=l2, solver="exact", max_iter=200)

    def gradient(it, w, tol):
        return X.T @ (sigmoid(X @ w) - y) / n + l2 * w

    Minv = np.linalg.inv(X.T @ X / (4 * n) + l2 * np.eye(k) + 1e-9 * np.eye(k))
    return lbfgs(gradient, lambda tag, v: np.asarray(v, dtype=float), k, Minv, cfg)


def test_separable_rows_without_a_penalty_stop_with_one_clear_line():
    with pytest.raises(DataError) as info:
        _fit(0.0)
    msg = str(info.value)
    assert "\n" not in msg and "separable" in msg and "l2" in msg and "leak" in msg, msg


def test_the_same_rows_with_a_penalty_converge():
    from sklearn.linear_model import LogisticRegression

    X, y = _separable()
    w, hist = _fit(1e-3)
    sk = LogisticRegression(C=1.0 / (1e-3 * len(y)), fit_intercept=False, tol=1e-12, max_iter=10000).fit(X, y)
    assert np.abs(w - sk.coef_[0]).max() < 1e-3 and len(hist) < 200


def test_two_near_copies_of_a_feature_still_reach_the_unpenalised_optimum():
    """Not separation: x2 = x1 + 1e-4 noise has a finite unpenalised optimum near (-104, +104), which the
    divergence check must let through (a bound of 100 refused it at iteration 3)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    n = 5000
    x1 = rng.normal(size=n)
    x2 = x1 + 1e-4 * rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-0.8 * x1))).astype(float)
    Z = np.c_[x1, x2]
    X = np.c_[(Z - Z.mean(0)) / Z.std(0), np.ones(n)]
    cfg = HeteroLRConfig(l2=0.0, solver="exact", max_iter=300)
    Minv = np.linalg.inv(X.T @ X / (4 * n) + 1e-10 * np.eye(3))
    w, _ = lbfgs(lambda it, w, tol: X.T @ (sigmoid(X @ w) - y) / n, lambda t, v: np.asarray(v, dtype=float),
                 3, Minv, cfg)
    sk = LogisticRegression(C=np.inf, fit_intercept=False, tol=1e-12, max_iter=100000).fit(X, y)
    assert np.max(np.abs(sk.coef_[0][:2])) > 100  # really beyond the old bound
    assert np.allclose(w, sk.coef_[0], rtol=1e-2, atol=0.5)
