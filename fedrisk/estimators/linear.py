"""``LogisticRegression``: one estimator name for horizontal (FedAvg) and vertical (split-feature) LR."""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from fedrisk.errors import ConfigError, DataError
from fedrisk.estimators.base import FederatedClassifier, stored_classes
from fedrisk.estimators.federation import Federation

__all__ = ["LogisticRegression"]


class LogisticRegression(FederatedClassifier):
    """Federated logistic regression of the default label, shaped like scikit-learn's.

    ``fit(fed)`` on a horizontal :class:`~fedrisk.Federation` runs task ``horizontal.lr`` (banks
    with the same columns; a coordinator aggregates, securely by default); on a vertical one it
    runs ``vertical.lr`` (a label holder and feature holders, rows aligned by ECDH-PSI, CKKS
    cross-products). The settings below are the tasks' declared ``[task]`` settings; ``None``
    takes the declared default of the kind the federation runs.

    Parameters
    ----------
    {parameters}

    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features_in_)
        Coefficients on the original (unstandardised) feature scale. Vertical: every party's
        part side by side (the notebook simulates all parties; each real party holds only its own).
    intercept_ : ndarray of shape (1,)
    feature_names_in_ : ndarray of str
        Horizontal: the banks' common columns; vertical: the label holder's, then each feature
        holder's (prefixed ``<party>:`` when names clash).
    n_features_in_ : int
    params_ : dict
        The settings the task ran with (set ones plus declared defaults).
    files_ : dict of str to dict
        The model files the CLI writes (``model.json``; vertical also ``model-<party>.json``).
    metrics_ : dict
        The run's ``metrics.json`` (training rows; vertical only).
    ledger_ : pandas.DataFrame
        Every message every participant sent during ``fit``.

    Notes
    -----
    What each party learns — horizontal: every bank learns the global model after each round;
    the coordinator learns only the sum of the banks' updates (secure aggregation; with
    ``Federation.horizontal(..., secure_aggregation=False)`` it sees each bank's update). No row
    leaves a bank. Vertical: PSI reveals the intersection to both sides; each party learns only
    its own coefficients; the label holder learns the intercept and, at scoring, the scores;
    feature holders see only CKKS ciphertexts and shares (see :mod:`fedrisk.algorithms.vertical.hetero_lr`).

    Examples
    --------
    >>> train, test = fr.Federation.vertical({"lender": lender, "payco": payco}).split()  # doctest: +SKIP
    >>> lr = fr.LogisticRegression().fit(train)                                              # doctest: +SKIP
    >>> lr.predict_proba(test)[:, 1]                                                         # doctest: +SKIP
    """

    _TASKS: ClassVar[dict[str, str]] = {"horizontal": "horizontal.lr", "vertical": "vertical.lr"}


    def _learn(self, files: dict[str, dict]) -> "LogisticRegression":
        """Learned state from the model files the task wrote (or ``fr.load`` read)."""
        self.classes_ = stored_classes(files)  # the user's label coding, when the files store it
        if files["model.json"]["format"] == "fedrisk.lr":
            doc = files["model.json"]
            self.files_ = {"model.json": doc}
            self.feature_names_in_ = np.array(doc["features"], dtype=object)
            self.coef_ = np.asarray(doc["coef_raw"], dtype=np.float64).reshape(1, -1)
            self.intercept_ = np.array([float(doc["intercept_raw"])])
        else:
            self.files_ = _vertical_parts(files, "fedrisk.vertical.lr")
            self._set_vertical_coef()
        self.n_features_in_ = len(self.feature_names_in_)
        return self

    def _set_vertical_coef(self) -> None:
        names, coef = [], []
        intercept = 0.0
        parts = list(self.files_.values())
        clash = len({f for d in parts for f in d["features"] + d.get("dropped", [])}) < \
            sum(len(d["features"]) + len(d.get("dropped", [])) for d in parts)
        for d in parts:
            w = np.asarray(d["coef"], dtype=np.float64) / np.asarray(d["scale"], dtype=np.float64)
            intercept -= float(w @ np.asarray(d["mean"], dtype=np.float64))
            if d.get("intercept") is not None:
                intercept += float(d["intercept"])
            own = dict(zip(d["features"], w))
            for f in d["features"] + d.get("dropped", []):
                names.append(f"{d['party']}:{f}" if clash else f)
                coef.append(own.get(f, 0.0))
        self.feature_names_in_ = np.array(names, dtype=object)
        self.coef_ = np.array(coef).reshape(1, -1)
        self.intercept_ = np.array([intercept])

    def predict_proba(self, X: Any) -> np.ndarray:
        """Default probabilities, shape (n, 2): column 1 is P(default).

        Horizontal model: ``X`` is a DataFrame with the model's feature columns (or an array in
        that order); scoring is local. Vertical model: ``X`` is a vertical Federation holding
        each party's rows to score (e.g. the test half of ``fed.split()``); scoring runs the
        federated protocol and returns the scores the label holder receives, in its row order.
        """
        from fedrisk.model_files import score_lr

        files = self._model_files()
        if "model.json" in files and files["model.json"]["format"] == "fedrisk.lr":
            return self._proba(score_lr(files["model.json"], self._horizontal_matrix(files["model.json"], X)))
        return self._proba(_score_parts(self, files, X))

    def _horizontal_matrix(self, doc: dict, X: Any, who: str = "LogisticRegression.predict_proba") -> np.ndarray:
        """The rows of DataFrame ``X`` as the horizontal model's feature matrix, as ``fedrisk predict`` builds it;
        ``who``: the method named in errors."""
        if isinstance(X, Federation):
            raise ConfigError("a horizontal model scores a DataFrame locally: pass the rows, e.g. holdout")
        feats, fill = list(doc["features"]), doc.get("imputation") or {}
        M = self._frame_matrix(X, feats, who, allow_nan=bool(fill), doc=doc)
        if fill:  # trained with missing = "mean": blanks get the federation's means, as in `fedrisk predict`
            M = np.where(np.isnan(M), np.array([fill.get(f, np.nan) for f in feats])[None, :], M)
            if np.isnan(M).any():
                raise DataError(f"{who}: the data has NaN in feature columns the model "
                                "has no fill value for; fill or drop them first")
        return M

    def explain(self, X: Any):
        """Score and reason codes of each row: the columns ``fedrisk predict`` writes.

        ``score`` (P(default)), ``reason_1..k`` (the columns pushing the score up most, a text column's
        dummies summed into it) and ``contribution_1..k`` (the log-odds each added against the
        federation's average applicant; they add up to the row's log-odds minus the average's).
        Horizontal model: ``X`` a DataFrame (local). Vertical: ``X`` a vertical Federation (federated
        scoring, the same messages as ``predict_proba``): the label holder's columns by name, the
        partners' as one aggregated ``partner features (...)`` reason; rows not at every party are empty.
        """
        from fedrisk.model_files import score_lr
        from fedrisk.runtime.predict import lr_predictions

        files = self._model_files()
        if not ("model.json" in files and files["model.json"]["format"] == "fedrisk.lr"):
            return _score_parts(self, files, X, detail=True)
        doc = files["model.json"]
        M = self._horizontal_matrix(doc, X, "LogisticRegression.explain")
        return _indexed(lr_predictions(doc, M, score_lr(doc, M)), X)


def _indexed(table, X: Any):
    """``table`` (one row per row of ``X``) with ``X``'s index when ``X`` is a DataFrame."""
    import pandas as pd

    return table.set_index(X.index) if isinstance(X, pd.DataFrame) else table



def _vertical_parts(files: dict[str, dict], fmt: str) -> dict[str, dict]:
    """The per-party model files of a split model present in ``files``, label holder's first.

    All parts after an in-process fit; only this party's after ``Federation.connect``.
    """
    docs = [d for d in files.values() if str(d.get("format", "")).removesuffix(".part") == fmt]
    if not docs:
        raise ConfigError(f"the run wrote no {fmt!r} model file")
    main = next((d for d in docs if d["format"] == fmt), docs[0])
    return {rel: files[rel] for rel in main["parties"].values() if rel in files}


def _with_fit_na_values(est: Any, fed: Federation) -> Federation:
    """``fed`` with each party's ``na_values`` of the fit where the scoring Federation gives none (a copy:
    the caller's object is left alone), so "?" cells score as the fit read them, as horizontal models do."""
    import copy

    per_party = getattr(est, "party_na_values_", None)
    shared = getattr(est, "na_values_", None) or []  # a loaded model: every party's, from the run's spec
    options = {n: dict(fed.party_options.get(n, {})) for n in set(fed.party_options) | set(fed.parties)}
    for n, opts in options.items():
        na = per_party.get(n) if per_party is not None else shared
        if na and not opts.get("na_values"):
            opts["na_values"] = list(na)
    out = copy.copy(fed)
    out.party_options = {n: o for n, o in options.items() if o}
    return out


def _score_parts(est: Any, files: dict[str, dict], X: Any, detail: bool = False):
    from fedrisk.estimators.engine import score_vertical

    if not isinstance(X, Federation):
        raise ConfigError("this model is split across parties: pass a vertical Federation holding each party's rows "
                          "to score (e.g. the test half of fed.split()), not a single table")
    parts = {d["party"]: d for d in files.values()}
    named = set(next(iter(parts.values())).get("parties") or {})
    if set(parts) != named:
        raise ConfigError(f"this model holds only {sorted(parts)}'s part of {sorted(named)} (Federation.connect): score "
                          "with `fedrisk predict RUN_DIR/model.json NEW.csv --session S --no-spawn` while the partners "
                          "run `fedrisk serve`")
    scores, run = score_vertical(_with_fit_na_values(est, X), parts, detail=detail)
    est._last_scoring = run  # the scoring session's ledger (and captures), for audits and tests
    lh_rows = X.parties.get(str(next(iter(parts.values())).get("label_holder")))
    if detail and lh_rows is not None and len(lh_rows) == len(scores):
        scores.index = lh_rows.index  # one row per label-holder row, in its order: its ids, as horizontal explain
    return scores

