"""``Scorecard``: a points scorecard (federated WOE + logistic regression + points scaling)."""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from fedrisk.errors import ConfigError
from fedrisk.estimators.base import FederatedClassifier, _refuse_duplicate_columns, stored_classes
from fedrisk.estimators.federation import Federation
from fedrisk.estimators.linear import _indexed, _score_parts, _vertical_parts

__all__ = ["Scorecard"]


class Scorecard(FederatedClassifier):
    """Federated points scorecard, shaped like a scikit-learn classifier.

    ``fit(fed)`` runs ``horizontal.scorecard`` (federated WOE, the ``horizontal.lr`` solver on the WOE values, one
    scorecard every bank holds whole) or ``vertical.scorecard`` (each party bins its own features,
    vertical LR on the WOE columns, each party holds its own part of the points table, the label
    holder the base points). Settings are the tasks' declared ``[task]`` settings; ``None`` takes
    the declared default of the kind the federation runs.

    Parameters
    ----------
    {parameters}

    Attributes
    ----------
    files_ : dict of str to dict
        ``scorecard.json`` (horizontal) or ``scorecard-<party>.json`` per party (vertical), as the CLI writes.
    features_ : list of str
        The scorecard's features (vertical: every party's, label holder's first).
    table_ : pandas.DataFrame
        The points table (vertical: every party's rows, with a ``party`` column).
    base_points_ : float
    metrics_ : dict
    ledger_ : pandas.DataFrame

    Notes
    -----
    What each party learns — horizontal: that of federated WOE
    (:mod:`fedrisk.algorithms.horizontal.woe`) and horizontal LR (the coordinator sees only sums
    under secure aggregation) plus the final scorecard, which every bank holds; text columns need
    ``categories={column: [...]}`` (public; no other category value leaves a bank). Vertical
    (:mod:`fedrisk.algorithms.vertical.scorecard`): the label holder learns, per feature holder
    feature, rows and bads per pooled prebin (not edges, categories or which customer is in which
    bin) and every feature holder's partial points per scored row (by design: it adds them up and
    explains the score); feature holders learn the WOE of their own bins (each covering at least
    the release rule's rows, goods and bads) and nothing at scoring.
    """

    _TASKS: ClassVar[dict[str, str]] = {"horizontal": "horizontal.scorecard", "vertical": "vertical.scorecard"}


    def _learn(self, files: dict[str, dict]) -> "Scorecard":
        """Learned state from the scorecard files the task wrote (or ``fr.load`` read)."""
        import pandas as pd

        self.classes_ = stored_classes(files)  # the user's label coding, when the files store it
        if "scorecard.json" in files:
            card = files["scorecard.json"]
            self.files_ = {"scorecard.json": card}
            self.features_ = list(card["features"])
            self.table_ = pd.DataFrame(card["table"])
            self.base_points_ = float(card["base_points"])
        else:
            self.files_ = _vertical_parts(files, "fedrisk.vertical.scorecard")
            parts = list(self.files_.values())
            self.features_ = [f for d in parts for f in d["features"]]
            self.table_ = pd.DataFrame([{"party": d["party"], **r} for d in parts for r in d["table"]])
            # the label holder holds the base points (a connected feature holder has none)
            self.base_points_ = float(parts[0].get("base_points", float("nan")))
        self.feature_names_in_ = np.array(self.features_, dtype=object)
        self.n_features_in_ = len(self.features_)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Default probabilities (the odds each applicant's points stand for), shape (n, 2).

        Horizontal: ``X`` is a DataFrame with the scorecard's raw feature columns (local). Vertical:
        a vertical Federation of the rows to score (federated; only the label holder gets scores).
        """
        files = self._model_files()
        if "scorecard.json" in files:
            if isinstance(X, Federation):
                raise ConfigError("a horizontal scorecard scores a DataFrame locally: pass the rows")
            return self._proba(self._points(X, "Scorecard.predict_proba")[1])
        return self._proba(_score_parts(self, files, X))

    def score(self, X: Any, y: Any = None, sample_weight: Any = None):
        """scikit-learn's ``score(X, y)``: the accuracy of :meth:`predict` on ``X`` against ``y``.

        Without ``y`` it returns :meth:`points` (``(points, probability)``), what it returned before
        the estimators became scikit-learn classifiers.
        """
        if y is None:
            return self.points(X)
        return super().score(X, y, sample_weight=sample_weight)

    def points(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(points, default probability)`` of each row: ``X`` a DataFrame (horizontal scorecard, local) or
        a vertical Federation (the parties add their points federatedly; only the label holder gets the totals;
        rows not at every party are NaN)."""
        return self._points(X, "Scorecard.points")

    def _points(self, X: Any, who: str) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`points`, its warnings naming ``who`` (the method the notebook called)."""
        from fedrisk.finance.scorecard import Scorecard as _Card

        files = self._model_files()
        if "scorecard.json" not in files:
            table = self.explain(X)
            return table["points"].to_numpy(dtype=np.float64), table["probability"].to_numpy(dtype=np.float64)
        from fedrisk.runtime.predict import warn_blank_columns, warn_unseen_bins

        _refuse_duplicate_columns(X, files["scorecard.json"]["features"], who)
        X = self._with_na_values(X)
        warn_unseen_bins(_Card.from_dict(files["scorecard.json"]).bins_, X, who)  # as `fedrisk predict` and explain
        warn_blank_columns(X, files["scorecard.json"]["features"], "predict")  # a broken feed, not one applicant
        return _Card.score_saved(files["scorecard.json"], X)

    def explain(self, X: Any) -> "pd.DataFrame":
        """Points, probability and reason codes of each row, the columns ``fedrisk predict`` writes.

        ``points, probability, reason_1..k, points_lost_1..k`` (``k`` = the fit's ``n_reasons``), one row
        per row of ``X`` in its order: a DataFrame for a horizontal scorecard (local), or a vertical
        Federation (federated scoring; a partner's features are one aggregated reason unless it opted
        in to name them, as in ``fedrisk predict``; rows not at every party are empty).
        """
        files = self._model_files()
        if "scorecard.json" in files:
            from fedrisk.runtime.predict import scorecard_predictions

            if isinstance(X, Federation):
                raise ConfigError("a horizontal scorecard scores a DataFrame locally: pass the rows")
            _refuse_duplicate_columns(X, files["scorecard.json"]["features"], "Scorecard.explain")
            return _indexed(scorecard_predictions(files["scorecard.json"], self._with_na_values(X),
                                                  who="Scorecard.explain"), X)
        return _score_parts(self, files, X, detail=True)

