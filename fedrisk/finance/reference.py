"""Single-party reference models for the report's comparison section ("what would we get alone?").

A federation is worth its cost only if it beats what the evaluating party reaches on its own data.
These functions fit that floor locally — on the rows and columns the evaluating party already
holds, so nothing is sent — and return the same brief metrics as the federated model:

* :func:`logistic_alone` — scikit-learn logistic regression on standardised columns (the floor for
  ``vertical.lr``: the label holder's features only; for ``horizontal.lr``: the evaluation
  holder's own bank only);
* :func:`boosting_alone` — scikit-learn histogram gradient boosting with the federated job's tree
  count, depth and learning rate (the floor for ``vertical.secureboost``).

Notes
-----
The centralised (pooled) ceiling needs every party's rows and cannot be computed inside a real
federation; only the demo, which generated all the data, reports it.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["brief", "logistic_alone", "boosting_alone", "comparison"]


def brief(y: np.ndarray, p: np.ndarray, sample_weight: np.ndarray | None = None) -> dict[str, Any]:
    """``n, auc, ks, gini`` of scores ``p`` on labels ``y`` (the comparison table's columns); with the evaluation's
    ``sample_weight`` weighted like the headline figures (``n`` then the sum of weights)."""
    from fedrisk.finance.metrics import evaluate

    m = evaluate(np.asarray(y), np.asarray(p, dtype=float), sample_weight=sample_weight)
    return {k: m[k] for k in ("n", "auc", "ks", "gini")}


def _two_classes(y: np.ndarray) -> bool:
    """Whether this party's own labels hold both classes: with one class (a bank without a single
    default, say) there is no model of its own to compare with, and the federation still trains."""
    return np.unique(np.asarray(y)).size == 2


def logistic_alone(X_tr: np.ndarray, y_tr: np.ndarray, X_te: np.ndarray, y_te: np.ndarray,
                   l2: float = 1e-4, sample_weight: np.ndarray | None = None) -> dict[str, Any] | None:
    """Logistic regression on this party's own columns; ``None`` when it has no usable column.

    ``sample_weight``: the test rows' evaluation weights. They weight the evaluation only, not the fit: the
    federated model is fitted unweighted too, and the comparison is of the two models on the same figures.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X_tr = np.asarray(X_tr, dtype=float)
    if X_tr.ndim != 2 or X_tr.shape[1] == 0 or np.isnan(X_tr).any() or not _two_classes(y_tr):
        return None
    c = 1.0 / max(l2 * len(y_tr), 1e-12)  # the same penalty per row as the federated solvers
    model = make_pipeline(StandardScaler(), LogisticRegression(C=min(c, 1e6), max_iter=2000))
    model.fit(X_tr, np.asarray(y_tr).astype(int))
    return brief(y_te, model.predict_proba(np.asarray(X_te, dtype=float))[:, 1], sample_weight)


def boosting_alone(X_tr: np.ndarray, y_tr: np.ndarray, X_te: np.ndarray, y_te: np.ndarray, *, n_trees: int,
                   max_depth: int, learning_rate: float, seed: int = 0,
                   sample_weight: np.ndarray | None = None) -> dict[str, Any] | None:
    """Gradient-boosted trees on this party's own columns (missing values allowed); ``sample_weight`` as in
    :func:`logistic_alone` (the evaluation's, not the fit's)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    X_tr = np.asarray(X_tr, dtype=float)
    if X_tr.ndim != 2 or X_tr.shape[1] == 0 or not _two_classes(y_tr):
        return None
    # a column with no value at this party (all blank, kept for the trees) says nothing here, and
    # scikit-learn's binner cannot bin it: leave it out of this party's own floor model
    seen = ~np.all(np.isnan(X_tr), axis=0)
    if not seen.any():
        return None
    X_tr, X_te = X_tr[:, seen], np.asarray(X_te, dtype=float)[:, seen]
    model = HistGradientBoostingClassifier(max_iter=int(n_trees), max_depth=int(max_depth),
                                           learning_rate=float(learning_rate), early_stopping=False,
                                           random_state=seed)
    model.fit(X_tr, np.asarray(y_tr).astype(int))
    return brief(y_te, model.predict_proba(np.asarray(X_te, dtype=float))[:, 1], sample_weight)


def comparison(party: str, y_te: np.ndarray, p_fed: np.ndarray, alone: dict[str, Any] | None,
               sample_weight: np.ndarray | None = None) -> dict[str, Any]:
    """``metrics.json["comparison"]``: the federated model and ``party`` alone on the same test rows (weighted by
    the evaluation's ``sample_weight`` when it has one; ``alone`` must then be weighted alike)."""
    out: dict[str, Any] = {"federated": brief(y_te, p_fed, sample_weight)}
    if sample_weight is not None:
        out["weighted"] = True
    if alone is not None:
        out["local_only"] = {party: alone}
    return out
