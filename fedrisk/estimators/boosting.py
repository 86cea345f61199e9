"""``SecureBoost``: gradient-boosted trees across a label holder and feature holders."""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from fedrisk.estimators.base import FederatedClassifier, stored_classes
from fedrisk.estimators.federation import Federation
from fedrisk.estimators.linear import _score_parts, _vertical_parts

__all__ = ["SecureBoost"]


class SecureBoost(FederatedClassifier):
    """SecureBoost: XGBoost-style boosted trees across a federation, shaped like scikit-learn's.

    ``fit(fed)`` on a horizontal federation runs task ``horizontal.gbdt`` where this build has it
    (banks' histograms securely summed, the coordinator finds splits; one global model). On a
    vertical one it runs task ``vertical.secureboost``: rows are aligned by ECDH-PSI, the label holder
    encrypts packed (gradient, hessian) pairs under its Okamoto-Uchiyama (or Paillier) key, each
    feature holder returns encrypted histogram sums of its own bins, and each split's threshold
    stays with the party that owns the feature. The settings are the task's declared ``[task]``
    settings (``fedrisk.tasks.boosting_params.BoostingParams`` shared by both kinds, plus each
    kind's own), defaults included.

    Parameters
    ----------
    {parameters}

    Attributes
    ----------
    feature_importances_ : ndarray of shape (n_features_in_,)
        Total split gain per feature, normalised to sum 1 (the label holder's features, then each
        feature holder's, from each party's own model file).
    feature_names_in_ : ndarray of str
    n_features_in_ : int
    n_estimators_ : int
        Trees kept (fewer than ``n_trees`` with early stopping).
    files_ : dict of str to dict
        ``model.json`` (label holder) and ``model-<party>.json`` (each feature holder), as the CLI writes.
    metrics_ : dict
        The run's ``metrics.json`` (training rows).
    ledger_ : pandas.DataFrame
        Every message every party sent during ``fit``.

    Notes
    -----
    What each party learns — vertical: PSI reveals the intersection to both sides. The label holder learns
    the tree structure, every leaf weight, which party owns each split and, per split on a
    feature holder's feature, the encrypted-then-decrypted histogram sums of that feature's bins
    (not the bin edges or which customer is in which bin); it alone receives scores. A feature
    holder learns only ciphertexts of (g, h), which of the current node's rows go left at its own
    splits (the instance space it is asked to split) and its own thresholds. See
    :mod:`fedrisk.algorithms.vertical.secureboost` for the message flow.
    Horizontal: the coordinator learns only the federation's sums (per feature bin of ``g`` and
    ``h``, the pooled counts) under secure aggregation — never a bank's own histogram — and from
    them every split and leaf; every bank learns the cut points and the global trees. See
    :mod:`fedrisk.algorithms.horizontal.gbdt`.
    """

    #: ``horizontal.gbdt`` (same setting names) trains the banks' tree model where that task exists
    _TASKS: ClassVar[dict[str, str]] = {"vertical": "vertical.secureboost", "horizontal": "horizontal.gbdt"}


    def _learn(self, files: dict[str, dict]) -> "SecureBoost":
        """Learned state from the model files the task wrote (or ``fr.load`` read)."""
        self.classes_ = stored_classes(files)  # the user's label coding, when the files store it
        if files.get("model.json", {}).get("format") == "fedrisk.gbdt":
            return self._learn_horizontal(files["model.json"])
        self.files_ = _vertical_parts(files, "fedrisk.vertical.secureboost")
        parts = list(self.files_.values())
        names, gain = [], []
        clash = len({f for d in parts for f in d["features"]}) < sum(len(d["features"]) for d in parts)
        for d in parts:
            imp = d.get("importance") or {}
            # the label holder's file keys importance by owner; a feature holder's is its own only
            own = imp.get(d["party"], {}) if not str(d["format"]).endswith(".part") else imp
            for f in d["features"]:
                names.append(f"{d['party']}:{f}" if clash else f)
                gain.append(float((own.get(f) or {}).get("gain", 0.0)))
        g = np.asarray(gain)
        self.feature_names_in_ = np.array(names, dtype=object)
        self.feature_importances_ = g / g.sum() if g.sum() > 0 else g
        self.n_features_in_ = len(names)
        self.n_estimators_ = len(parts[0]["trees"])
        return self

    def _learn_horizontal(self, doc: dict) -> "SecureBoost":
        """A ``horizontal.gbdt`` model: one global file every bank holds."""
        self.files_ = {"model.json": doc}
        names = list(doc["features"])
        gain = np.array([float((doc.get("importance") or {}).get(f, {}).get("gain", 0.0)) for f in names])
        self.feature_names_in_ = np.array(names, dtype=object)
        self.feature_importances_ = gain / gain.sum() if gain.sum() > 0 else gain
        self.n_features_in_ = len(names)
        self.n_estimators_ = len(doc["trees"])
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Default probabilities, shape (n, 2).

        Vertical model: ``X`` is a vertical Federation; scoring runs the federated tree-walking
        protocol (each feature holder answers only its own splits; only the label holder gets
        scores, in its row order; rows not at every party are NaN). Horizontal model: ``X`` is a
        DataFrame with the model's feature columns (NaN allowed: each split learned its side);
        scoring is local.
        """
        files = self._model_files()
        doc = files.get("model.json", {})
        if doc.get("format") == "fedrisk.gbdt":
            from fedrisk.model_files import score_gbdt

            return self._proba(score_gbdt(doc, self._horizontal_matrix(doc, X)))
        return self._proba(_score_parts(self, files, X))

    def _horizontal_matrix(self, doc: dict, X: Any, who: str = "SecureBoost.predict_proba") -> np.ndarray:
        """The rows of DataFrame ``X`` as the horizontal tree model's feature matrix, as ``fedrisk predict`` builds it;
        ``who``: the method named in errors."""
        from fedrisk.errors import ConfigError

        if isinstance(X, Federation):
            raise ConfigError("a horizontal tree model scores a DataFrame locally: pass the rows, e.g. holdout")
        M = self._frame_matrix(X, list(doc["features"]), who, allow_nan=True, doc=doc)
        fill = doc.get("imputation")
        if fill:  # trained with missing = "mean": blanks get the federation's pooled means, as in `fedrisk predict`
            from fedrisk.algorithms.horizontal.standardisation import fill_missing

            M = fill_missing(M, np.array([fill[f] for f in doc["features"]], dtype=np.float64))
        return M

    def explain(self, X: Any):
        """Score and reason codes of each row: the columns ``fedrisk predict`` writes.

        ``score`` (P(default)), ``reason_1..k`` and ``contribution_1..k`` (the log-odds each reason
        added, exact TreeSHAP). Horizontal model: ``X`` a DataFrame (local; every feature by name).
        Vertical: ``X`` a vertical Federation (federated; the label holder's features by name, each
        partner's as one aggregated reason; rows not at every party are empty).
        """
        files = self._model_files()
        doc = files.get("model.json", {})
        if doc.get("format") == "fedrisk.gbdt":
            from fedrisk.estimators.linear import _indexed
            from fedrisk.model_files import score_gbdt
            from fedrisk.runtime.predict import gbdt_predictions

            M = self._horizontal_matrix(doc, X, "SecureBoost.explain")
            return _indexed(gbdt_predictions(doc, M, score_gbdt(doc, M)), X)
        return _score_parts(self, files, X, detail=True)

