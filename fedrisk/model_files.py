"""Model files: JSON with a published schema, never pickle.

A horizontal logistic model is one file every bank can hold::

    {"format": "fedrisk.lr", "version": 1 or 2, "task": "horizontal.lr", "job": "...",
     "features": [names...], "mean": [...], "scale": [...],   # agreed standardisation
     "coef": [...], "intercept": b,                            # on standardised features
     "coef_raw": [...], "intercept_raw": b0,                   # on the original scale
     "history": [{"round", "loss", ...}], "created": "ISO time",
     "imputation": {feature: federation mean},                 # version 2 only
     "privacy": {"epsilon", "delta", ...}}                     # a job under [privacy] only

Scoring: ``p = sigmoid(((x - mean) / scale) @ coef + intercept)``.

A horizontal tree model (``horizontal.gbdt``) is likewise one global file::

    {"format": "fedrisk.gbdt", "version": 1 or 2, "task", "job", "features": [names...],
     "base_score": margin0, "trees": [{"nodes": [...]}], "cuts": [[...] per feature],
     "has_missing": [...], "importance": {feature: {"splits", "gain"}}, "history", "best_iteration",
     "privacy": null or {"epsilon", "delta", ...}, "created",
     "imputation": {feature: mean}}                            # version 2 only

Version 2 of ``fedrisk.gbdt`` is a file with ``imputation`` (a job with ``missing = "mean"``: blanks
are filled with the federation's means before the trees are walked). A reader that ignored that
field would route blanks down the trees' missing-value branches and score silently differently,
so such a file says version 2 and a file without it stays version 1, readable by every release.
``fedrisk.lr`` follows the same rule: a reader ignoring its ``imputation`` would refuse rows with
blanks that the model was meant to fill (or, in code that fills by itself, fill them with other
values). Horizontal LR files written before this rule say version 1 and may carry ``imputation``;
they are still read as they were written (with their fill values). A version-2 file of any of
these formats without a non-empty ``imputation`` is damaged and refused in one line.
The vertical model files (``fedrisk.vertical.lr``, ``fedrisk.vertical.secureboost`` and their
``.part`` files) follow the same rule (:func:`imputation_version`): their ``imputation`` holds the
training means a party fills its blanks with at scoring; a reader ignoring it would fill with the
scoring batch's own means (or route blanks down missing branches) and score silently differently.
:func:`load_model` refuses a version newer than it reads (:data:`NEWEST_VERSION`) in one line.
(Releases before this check existed read any version: a version-2 file needs a reader from this
release on. A release that reads ``fedrisk.lr`` up to version 1 refuses a version-2 horizontal LR
file in one line instead of scoring it without its fill values.)

``nodes`` in id order: ``{"id", "feature", "feature_index", "threshold", "missing_left", "left",
"right", "gain", "cover"}`` or a leaf ``{"id", "leaf", "cover"}``. A row goes left when
``x < threshold`` (a missing ``x`` when ``missing_left``); ``p = sigmoid(base_score + sum of the
leaves reached)``. Vertical models are one file per
party (each holds only its own features' part) and are scored federatedly, see
:mod:`fedrisk.runtime.inference`.

Loading validates before anything is scored (issue 12 item 10: a file with ``scale = 0`` used to
give NaN scores reported as "scored 199 rows"): the fields a format scores with must have the
right types and lengths and be finite, scales positive (:func:`validate_model`). Every model file
written through :func:`~fedrisk.runtime.context.write_json` carries ``"digest": {"sha256": ...}``
over its canonical JSON, and :func:`load_model` refuses a file whose digest does not match. The
digest catches corruption and careless edits; it is not a signature (whoever can rewrite the file
can rewrite the digest), so model files still belong in a folder only their owner can write.
"""
from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from fedrisk.errors import ConfigError, DataError
from fedrisk.runtime.context import write_json

__all__ = ["save_lr_model", "save_gbdt_model", "load_model", "score_lr", "score_gbdt", "validate_model", "model_digest",
           "seal_model", "NEWEST_VERSION", "IMPUTATION_FORMATS", "imputation_version"]

_DIGEST = "digest"
#: The newest version of each format written here that this release reads (see the module docstring).
NEWEST_VERSION = {"fedrisk.lr": 2, "fedrisk.gbdt": 2,
                  **{f"fedrisk.vertical.{kind}{part}": 2 for kind in ("lr", "secureboost") for part in ("", ".part")}}
#: formats whose version 2 means "carries ``imputation``" (:func:`imputation_version`)
IMPUTATION_FORMATS = frozenset({"fedrisk.lr", "fedrisk.gbdt", "fedrisk.vertical.lr", "fedrisk.vertical.lr.part",
                                "fedrisk.vertical.secureboost", "fedrisk.vertical.secureboost.part"})


def imputation_version(body: dict[str, Any]) -> int:
    """A model file's version: 2 when it carries training means to fill blanks with (``imputation``), else 1.

    Only when the file needs it, so a file without means stays readable by older releases (module docstring).
    """
    return 2 if body.get("imputation") else 1


def model_digest(model: dict[str, Any]) -> str:
    """SHA-256 of the model's canonical JSON (sorted keys, no ``digest`` field)."""
    body = {k: v for k, v in model.items() if k != _DIGEST}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def seal_model(model: dict[str, Any]) -> dict[str, Any]:
    """``model`` (already plain JSON values) with its ``digest`` field set."""
    return {**{k: v for k, v in model.items() if k != _DIGEST}, _DIGEST: {"sha256": model_digest(model)}}


def _bad(path: Path, msg: str) -> ConfigError:
    return ConfigError(f"model file {path}: {msg}; re-export it from the run directory, or re-train")


def _numbers(path: Path, model: dict[str, Any], key: str, n: int | None, *, positive: bool = False) -> None:
    v = model.get(key)
    if not isinstance(v, list) or (n is not None and len(v) != n):
        raise _bad(path, f"'{key}' must be a list of {n if n is not None else ''} numbers".replace("  ", " "))
    for i, x in enumerate(v):
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise _bad(path, f"'{key}'[{i}] is {x!r}, not a finite number")
        if positive and x <= 0:
            raise _bad(path, f"'{key}'[{i}] is {x!r}; scales must be positive (a zero scale divides by zero)")


def _number(path: Path, model: dict[str, Any], key: str, *, positive: bool = False, nonzero: bool = False) -> None:
    x = model.get(key)
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise _bad(path, f"'{key}' is {x!r}, not a finite number")
    if (positive and x <= 0) or (nonzero and x == 0):
        raise _bad(path, f"'{key}' is {x!r}; it must be {'positive' if positive else 'non-zero'}")


def _features(path: Path, model: dict[str, Any]) -> int:
    f = model.get("features")
    if not isinstance(f, list) or not all(isinstance(x, str) and x for x in f) or len(set(f)) != len(f):
        raise _bad(path, "'features' must be a list of distinct column names")
    return len(f)


def _imputation(path: Path, model: dict[str, Any], fmt: str, version: int) -> None:
    """A file whose version promises fill values (:func:`imputation_version`) must carry them: scoring it without
    them would refuse rows, or route blanks another way, than the model was trained to score them."""
    fill = model.get("imputation")
    if not isinstance(fill, dict) or not fill:
        raise _bad(path, f"format {fmt!r} version {version} promises 'imputation' (the training means blank cells "
                         "are filled with at scoring) but the file has none")
    for name, x in fill.items():
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise _bad(path, f"'imputation'[{name!r}] is {x!r}, not a finite number")


def validate_model(model: Any, path: str | Path = "<model>") -> dict[str, Any]:
    """Check the fields a model's format scores with; raise one :class:`ConfigError` line naming the field.

    Linear models (``fedrisk.lr``, ``fedrisk.vertical.lr`` and its parts): ``features`` distinct
    names; ``mean``, ``scale`` (> 0) and ``coef`` finite, one per feature; ``intercept`` finite
    where the format scores with it. Scorecards: finite base points and points, positive odds,
    non-zero PDO, bins for every feature. Other ``fedrisk.*`` formats: ``version`` an integer
    (their own loaders check the rest).
    """
    path = Path(path)
    if not isinstance(model, dict) or not str(model.get("format", "")).startswith("fedrisk."):
        raise ConfigError(f"model file {path} is not a fedrisk model (no 'format': 'fedrisk.*' field)")
    fmt = model["format"]
    version = model.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise _bad(path, f"'version' is {version!r}, not an integer")
    if version > NEWEST_VERSION.get(fmt, version):
        raise ConfigError(f"model file {path}: format {fmt!r} version {version} was written by a newer fedrisk "
                          f"(this one reads up to version {NEWEST_VERSION[fmt]}); score it with that release or newer")
    if fmt in IMPUTATION_FORMATS and version >= 2:
        _imputation(path, model, fmt, version)
    if fmt in ("fedrisk.lr", "fedrisk.vertical.lr", "fedrisk.vertical.lr.part"):
        n = _features(path, model)
        for key in ("mean", "scale", "coef"):
            _numbers(path, model, key, n, positive=key == "scale")
        if fmt != "fedrisk.vertical.lr.part":
            _number(path, model, "intercept")
    elif fmt == "fedrisk.scorecard":
        feats = model.get("features")
        _features(path, model)
        for key in ("base_points", "base_score"):
            _number(path, model, key)
        _number(path, model, "base_odds", positive=True)
        _number(path, model, "pdo", nonzero=True)
        table, bins = model.get("table"), model.get("bins")
        if not isinstance(table, list) or not all(isinstance(r, dict) for r in table):
            raise _bad(path, "'table' must be a list of rows")
        for i, r in enumerate(table):
            p = r.get("points")
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p):
                raise _bad(path, f"'table'[{i}].points is {p!r}, not a finite number")
        if not isinstance(bins, dict) or any(f not in bins for f in feats):
            raise _bad(path, "'bins' must hold the bins of every feature")
    elif fmt == "fedrisk.gbdt":
        n = _features(path, model)
        _number(path, model, "base_score")
        trees, cuts = model.get("trees"), model.get("cuts")
        if not isinstance(trees, list) or not all(isinstance(tr, dict) and isinstance(tr.get("nodes"), list) for tr in trees):
            raise _bad(path, "'trees' must be a list of {'nodes': [...]}")
        if not isinstance(cuts, list) or len(cuts) != n:
            raise _bad(path, f"'cuts' must hold the bin edges of each of the {n} features")
    return model


def save_lr_model(path: Path, model: Any, task: str, job: str, categories: dict | None = None,
                  imputation: dict[str, float] | None = None, classes: list | None = None,
                  privacy: dict | None = None) -> Path:
    """Write a :class:`~fedrisk.algorithms.horizontal.fedavg_lr.LogisticModel` as JSON.

    ``categories``: the agreed category encoders of a job with text columns (one-hot features
    ``name=level``), so ``fedrisk predict`` encodes new rows the same way. ``imputation``: the
    value ``fedrisk predict`` fills each column's blank cells with (a job in which a bank trained
    with ``missing = "mean"``). ``classes``: ``[non-default, default]`` in the users' label coding
    (omitted for 0/1 labels; files without it read as ``[0, 1]``). ``privacy``: the accountant's summary of a
    job under ``[privacy]`` (the budget spent), kept with the model as a GBDT model keeps it, because the
    evaluation's metrics.json exists only in a job with test rows."""
    coef_raw, intercept_raw = model.raw_coefficients()
    return write_json(path, {
        # version 2 when scoring must fill blanks with the federation's means (module docstring)
        "format": "fedrisk.lr", "version": imputation_version({"imputation": imputation}), "task": task, "job": job,
        "features": list(model.feature_names),
        "mean": model.mean, "scale": model.scale,
        "coef": model.coef, "intercept": float(model.intercept),
        "coef_raw": coef_raw, "intercept_raw": intercept_raw,
        "history": model.history,
        **({"categories": categories, "category_encoding": "onehot"} if categories else {}),
        **({"imputation": imputation} if imputation else {}),
        **({"classes": list(classes)} if classes else {}),
        **({"privacy": privacy} if privacy else {}),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })


def save_gbdt_model(path: Path, model: Any, task: str, job: str, categories: dict | None = None,
                    classes: list | None = None) -> Path:
    """Write a :class:`~fedrisk.algorithms.horizontal.gbdt.GbdtModel` as JSON (format ``fedrisk.gbdt``);
    ``categories``: the agreed category encoders (level-code columns); ``classes``: as in :func:`save_lr_model`."""
    body = model.to_json()
    return write_json(path, {"format": "fedrisk.gbdt", "version": imputation_version(body), "task": task, "job": job, **body,
                             **({"categories": categories, "category_encoding": "codes"} if categories else {}),
                             **({"classes": list(classes)} if classes else {}),
                             "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})


def load_model(path: str | Path) -> dict[str, Any]:
    """Read, digest-check (when the file has a digest) and validate a model file."""
    path = Path(path)
    try:
        model = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"model file {path} does not exist") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ConfigError(f"model file {path} is not a fedrisk JSON model: {e}") from None
    if isinstance(model, dict) and _DIGEST in model:
        d = model[_DIGEST]
        want = d.get("sha256") if isinstance(d, dict) else None
        if not isinstance(want, str) or want != model_digest(model):
            raise ConfigError(f"model file {path}: its content does not match its sha256 digest (the file was changed "
                              "or damaged after it was written); use the run directory's original file")
    return validate_model(model, path)


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
