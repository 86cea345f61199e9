"""Model files: JSON with a published schema, never pickle.

A horizontal logistic model is one file every bank can hold::

    {"format": "fedrisk.lr", "version": 1, "task": "horizontal.lr", "job": "...",
     "features": [names...], "mean": [...], "scale": [...],   # agreed standardisation
     "coef": [...], "intercept": b,                            # on standardised features
     "coef_raw": [...], "intercept_raw": b0,                   # on the original scale
     "history": [{"round", "loss", ...}], "created": "ISO time"}

Scoring: ``p = sigmoid(((x - mean) / scale) @ coef + intercept)``.

A horizontal tree model (``horizontal.gbdt``) is likewise one global file::

    {"format": "fedrisk.gbdt", "version": 1, "task", "job", "features": [names...],
     "base_score": margin0, "trees": [{"nodes": [...]}], "cuts": [[...] per feature],
     "has_missing": [...], "importance": {feature: {"splits", "gain"}}, "history", "best_iteration",
     "privacy": null or {"epsilon", "delta", ...}, "created"}

``nodes`` in id order: ``{"id", "feature", "feature_index", "threshold", "missing_left", "left",
"right", "gain", "cover"}`` or a leaf ``{"id", "leaf", "cover"}``. A row goes left when
``x < threshold`` (a missing ``x`` when ``missing_left``); ``p = sigmoid(base_score + sum of the
leaves reached)``. Vertical models are one file per
party (each holds only its own features' part) and are scored federatedly, see
:mod:`fedrisk.runtime.inference`.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from fedrisk.errors import ConfigError, DataError
from fedrisk.runtime.context import write_json

__all__ = ["save_lr_model", "save_gbdt_model", "load_model", "score_lr", "score_gbdt"]


def save_lr_model(path: Path, model: Any, task: str, job: str) -> Path:
    """Write a :class:`~fedrisk.algorithms.horizontal.fedavg_lr.LogisticModel` as JSON."""
    coef_raw, intercept_raw = model.raw_coefficients()
    return write_json(path, {
        "format": "fedrisk.lr", "version": 1, "task": task, "job": job,
        "features": list(model.feature_names),
        "mean": model.mean, "scale": model.scale,
        "coef": model.coef, "intercept": float(model.intercept),
        "coef_raw": coef_raw, "intercept_raw": intercept_raw,
        "history": model.history,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })


def save_gbdt_model(path: Path, model: Any, task: str, job: str) -> Path:
    """Write a :class:`~fedrisk.algorithms.horizontal.gbdt.GbdtModel` as JSON (format ``fedrisk.gbdt``)."""
    return write_json(path, {"format": "fedrisk.gbdt", "version": 1, "task": task, "job": job, **model.to_json(),
                             "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})


def load_model(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        model = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"model file {path} does not exist") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"model file {path} is not a fedrisk JSON model: {e}") from None
    if not isinstance(model, dict) or not str(model.get("format", "")).startswith("fedrisk."):
        raise ConfigError(f"model file {path} is not a fedrisk model (no 'format': 'fedrisk.*' field)")
    return model


def score_lr(model: dict[str, Any], X: np.ndarray) -> np.ndarray:
    """Default probabilities for rows ``X`` whose columns are ``model['features']`` in order."""
    from fedrisk.algorithms.horizontal.fedavg_lr import LogisticModel

    mean, scale, coef = (np.asarray(model[k], dtype=np.float64) for k in ("mean", "scale", "coef"))
    if X.shape[1] != coef.shape[0]:
        raise DataError(f"data has {X.shape[1]} feature columns but the model expects {coef.shape[0]}")
    return LogisticModel(list(model["features"]), mean, scale, coef, float(model["intercept"])).predict_proba(X)


def score_gbdt(model: dict[str, Any], X: np.ndarray) -> np.ndarray:
    """Default probabilities of rows ``X`` (columns ``model['features']`` in order) under a ``fedrisk.gbdt`` model."""
    from fedrisk.algorithms.horizontal.gbdt import predict_margin
    from fedrisk.algorithms.vertical.tree import sigmoid

    d = len(model["features"])
    if X.shape[1] != d:
        raise DataError(f"data has {X.shape[1]} feature columns but the model expects {d}")
    for t, tree in enumerate(model["trees"]):
        for nd in tree.get("nodes", []):
            if "leaf" not in nd and not 0 <= int(nd.get("feature_index", -1)) < d:
                raise ConfigError(f"model tree {t}, node {nd.get('id')}: feature index out of range; the file is damaged")
    return sigmoid(predict_margin(float(model["base_score"]), model["trees"], np.asarray(X, dtype=np.float64)))
