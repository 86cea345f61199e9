"""Points scorecard from a logistic regression on WOE features; scoring and reason codes.

Scaling
-------
With ``odds`` = good:bad odds, the score is ``offset + factor * ln(odds)`` where
``factor = pdo / ln 2`` and ``offset = base_score - factor * ln(base_odds)``: the score is
``base_score`` at odds ``base_odds`` and every ``pdo`` points double the odds.

A logistic regression fitted on WOE values for ``y = 1`` (bad) gives
``ln(bad odds) = b0 + sum_j b_j * WOE_j``, hence

    score = (offset - factor * b0)  +  sum_j ( -factor * b_j * WOE_j(bin) )
            ^ base points              ^ points of the applicant's bin of feature j

Each bin's points are rounded to integers (``round_points=True``); the base points are rounded
too, so the total is an integer. Reason codes for an applicant are the features where their bin
scores furthest below the best bin of that feature ("points lost").
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from fedrisk.errors import ConfigError, DataError
from fedrisk.finance.woe import FeatureWoe, require_columns

if TYPE_CHECKING:  # only annotations here: the encoder's module imports scikit-learn (~2 s per process)
    from fedrisk.finance.woe_encoder import WoeEncoder

__all__ = ["Scorecard", "top_reasons", "reason_text", "reason_columns"]


def top_reasons(lost: np.ndarray, n: int, tol: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` largest points lost per row: ``(column index, points lost)``, ``-1`` / NaN past the last.

    A column where the applicant loses nothing (``lost <= tol``) is never a reason, so a row at
    the best bin everywhere has no reason at all. Ties keep column order (stable sort), so the
    same inputs always give the same reasons.

    Parameters
    ----------
    lost : ndarray of shape (n_rows, n_columns)
        Points lost per row and candidate reason (best points − the applicant's points).
    n : int
        Reasons per row.

    Returns
    -------
    (ndarray of int, ndarray of float), each of shape (n_rows, n)
    """
    lost = np.asarray(lost, dtype=float)
    if lost.ndim != 2:  # (an empty batch is already (0, n_columns): numpy cannot infer -1 from 0 rows)
        lost = lost.reshape(len(lost), -1)
    k = min(n, lost.shape[1])
    idx = np.full((lost.shape[0], n), -1, dtype=np.int64)
    val = np.full((lost.shape[0], n), np.nan)
    if k == 0 or lost.shape[0] == 0:
        return idx, val
    order = np.argsort(-lost, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(lost, order, axis=1)
    keep = top > tol
    idx[:, :k] = np.where(keep, order, -1)
    val[:, :k] = np.where(keep, top, np.nan)
    return idx, val


def reason_text(feature: str, label: str | None) -> str:
    """How a reason reads in a file: ``"feature = bin"``, or the name alone for an aggregated reason."""
    return f"{feature} = {label}" if label is not None else str(feature)


def reason_columns(reasons: list[list[dict[str, Any]]], n: int) -> dict[str, list[Any]]:
    """``reason_1..reason_n`` then ``points_lost_1..points_lost_n`` columns from per-row reason lists.

    Rows with fewer reasons (or none: best bin everywhere, or not scored) get empty cells.
    """
    cols: dict[str, list[Any]] = {f"reason_{k}": [] for k in range(1, n + 1)}
    cols.update({f"points_lost_{k}": [] for k in range(1, n + 1)})
    for rs in reasons:
        for k in range(n):
            r = rs[k] if k < len(rs) else None
            cols[f"reason_{k + 1}"].append(reason_text(r["feature"], r.get("label")) if r else None)
            cols[f"points_lost_{k + 1}"].append(float(r["points_lost"]) if r else None)
    return cols


class Scorecard:
    """Points table for a WOE logistic regression.

    Parameters
    ----------
    base_score : float, default 600
        Score at ``base_odds``.
    base_odds : float, default 50
        Good:bad odds that score ``base_score``.
    pdo : float, default 20
        Points to double the odds (must be > 0).
    round_points : bool, default True
        Round each bin's points and the base points to integers.

    Attributes
    ----------
    features_ : list of str
        Features in the scorecard (non-zero coefficient).
    base_points_ : float
        Points every applicant starts with.
    points_ : dict of str to ndarray
        Points per bin (missing bin last) for every feature.
    table_ : list of dict
        The points table: ``feature``, ``bin``, ``label``, ``woe``, ``coef``, ``points``.
    """

    def __init__(self, base_score: float = 600.0, base_odds: float = 50.0, pdo: float = 20.0,
                 round_points: bool = True) -> None:
        self.base_score = base_score
        self.base_odds = base_odds
        self.pdo = pdo
        self.round_points = round_points

    @property
    def factor(self) -> float:
        """Points per unit of log-odds (``pdo / ln 2``)."""
        return self.pdo / math.log(2)

    @property
    def offset(self) -> float:
        """Score at log-odds 0 (even odds)."""
        return self.base_score - self.factor * math.log(self.base_odds)

    def _check(self) -> None:
        if not (isinstance(self.pdo, (int, float)) and self.pdo > 0 and math.isfinite(self.pdo)):
            raise ConfigError(f"scorecard pdo (points to double the odds) must be > 0, got {self.pdo!r}")
        if not (isinstance(self.base_odds, (int, float)) and self.base_odds > 0 and math.isfinite(self.base_odds)):
            raise ConfigError(f"scorecard base_odds must be > 0 (good:bad odds, e.g. 50), got {self.base_odds!r}")

    def fit(self, encoder: WoeEncoder, coef: Sequence[float], intercept: float,
            features: Sequence[str] | None = None) -> "Scorecard":
        """Build the points table.

        Parameters
        ----------
        encoder : WoeEncoder
            Fitted encoder holding every feature's bins and WOE.
        coef : sequence of float
            Logistic-regression coefficients on the WOE features (model of ``y = 1`` = bad),
            in the order of ``features``.
        intercept : float
            The regression intercept.
        features : sequence of str, optional
            Feature order of ``coef``; default ``encoder.features_``.

        Returns
        -------
        Scorecard
            ``self``.
        """
        self._check()
        encoder._check_fitted()
        feats = list(features) if features is not None else list(encoder.features_)
        c = np.asarray(coef, dtype=float).ravel()
        if c.shape[0] != len(feats):
            raise ConfigError(f"{c.shape[0]} coefficients for {len(feats)} features; pass features= in the model's order")
        unknown = [f for f in feats if f not in encoder.woe_]
        if unknown:
            raise ConfigError(f"features {unknown} are not in the WOE encoder")
        base = self.offset - self.factor * float(np.asarray(intercept).ravel()[0])
        self.base_points_ = float(round(base)) if self.round_points else base
        self.encoder_ = encoder
        self.bins_ = {f: encoder.woe_[f].bins for f in feats}
        self.features_ = [f for f, b in zip(feats, c) if b != 0.0]
        self.coef_ = {f: float(b) for f, b in zip(feats, c) if b != 0.0}
        self.points_ = {}
        self.table_ = []
        for f in self.features_:
            fw = encoder.woe_[f]
            pts = -self.factor * self.coef_[f] * fw.woe
            if self.round_points:
                pts = np.round(pts) + 0.0  # no "-0" points
            self.points_[f] = pts
            for i, lab in enumerate(fw.bins.labels()):
                self.table_.append({"feature": f, "bin": i, "label": lab, "n": int(fw.goods[i] + fw.bads[i]),
                                    "woe": float(fw.woe[i]), "coef": self.coef_[f], "points": float(pts[i])})
        return self

    @classmethod
    def from_logistic(cls, encoder: WoeEncoder, model: Any, features: Sequence[str] | None = None,
                      **params: Any) -> "Scorecard":
        """Convenience: build from a fitted scikit-learn ``LogisticRegression`` on WOE columns."""
        return cls(**params).fit(encoder, np.ravel(model.coef_), float(np.ravel(model.intercept_)[0]), features)

    def _check_fitted(self) -> None:
        if not hasattr(self, "points_"):
            raise ConfigError("Scorecard is not fitted; call fit(encoder, coef, intercept) first")

    def points(self, X: pd.DataFrame) -> pd.DataFrame:
        """Points of every applicant per feature (columns = scorecard features).

        Raises
        ------
        DataError
            Scorecard columns missing from ``X`` or holding values of the wrong type.
        """
        self._check_fitted()
        if not isinstance(X, pd.DataFrame):
            raise DataError("score data must be a pandas DataFrame with the scorecard's columns")
        require_columns(X, self.features_)
        return pd.DataFrame({f: self.points_[f][self.bins_[f].assign(X[f])] for f in self.features_},
                            index=X.index)

    def score(self, X: pd.DataFrame) -> np.ndarray:
        """Total score per applicant (higher = safer)."""
        return self.base_points_ + self.points(X).sum(axis=1).to_numpy()

    def probability(self, scores: Any) -> np.ndarray:
        """Default probability implied by a score (inverse of the scaling; rounding ignored)."""
        s = np.asarray(scores, dtype=float)
        log_odds_good = (s - self.offset) / self.factor
        return 1.0 / (1.0 + np.exp(log_odds_good))

    def reason_codes(self, X: pd.DataFrame, n: int = 3) -> list[list[dict[str, Any]]]:
        """Top ``n`` reasons per applicant: the features costing the most points.

        Points lost on a feature = best bin's points − the applicant's bin's points. Features
        where nothing is lost are not reasons.

        Returns
        -------
        list of list of dict
            Per applicant: ``feature``, ``label`` (their bin), ``points``, ``points_lost``.
        """
        pts = self.points(X)
        best = np.array([float(self.points_[f].max()) for f in self.features_])
        lost = best[None, :] - pts.to_numpy()
        bins = {f: self.bins_[f].assign(X[f]) for f in self.features_}
        labels = {f: self.bins_[f].labels() for f in self.features_}
        idx, val = top_reasons(lost, n)
        out = []
        for r in range(len(X)):
            row = []
            for j, v in zip(idx[r], val[r]):
                if j < 0:
                    break
                f = self.features_[j]
                row.append({"feature": f, "label": labels[f][bins[f][r]], "points": float(pts.iat[r, j]),
                            "points_lost": float(v)})
            out.append(row)
        return out

    @classmethod
    def from_dict(cls, card: dict[str, Any]) -> "Scorecard":
        """A fitted scorecard back from :meth:`to_dict` output (a ``scorecard.json``), ready to score.

        Only the saved bins and points table are used, so new applicants are scored anywhere
        without the training data. Raises :class:`DataError` for an incomplete file.
        """
        try:
            sc = cls(float(card["base_score"]), float(card["base_odds"]), float(card["pdo"]),
                     bool(card.get("round_points", True)))
            sc.features_ = [str(f) for f in card["features"]]
            sc.base_points_ = float(card["base_points"])
            sc.table_ = list(card["table"])
            sc.bins_ = {f: FeatureWoe.from_dict(card["bins"][f]).bins for f in sc.features_}
            sc._saved_bins = {f: card["bins"][f] for f in sc.features_}
            sc.points_ = {}
            for f in sc.features_:
                rows = sorted((r for r in sc.table_ if r["feature"] == f), key=lambda r: r["bin"])
                sc.points_[f] = np.array([r["points"] for r in rows], dtype=float)
                if len(sc.points_[f]) != sc.bins_[f].n_bins + 1:
                    raise ValueError(f"{f}: {len(sc.points_[f])} points rows for {sc.bins_[f].n_bins + 1} bins")
            sc.coef_ = {f: float(v) for f, v in (card.get("coef") or {}).items() if f in sc.bins_}
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"scorecard file is incomplete or malformed ({e}); re-train or re-export it") from None
        return sc

    @staticmethod
    def score_saved(card: dict[str, Any], X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Score applicants with a saved scorecard (:meth:`to_dict` output): ``(points, probability)``.

        Uses only the saved bins and points table, so a scorecard file can score new applicants
        anywhere without the training data. Raises :class:`DataError` for missing columns.
        """
        sc = Scorecard.from_dict(card)
        total = sc.score(X)
        return total, sc.probability(total)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able scorecard (parameters, base points and the points table)."""
        self._check_fitted()
        return {"base_score": self.base_score, "base_odds": self.base_odds, "pdo": self.pdo, "round_points": self.round_points,
                "base_points": self.base_points_, "features": self.features_, "table": self.table_,
                "bins": ({f: self.encoder_.woe_[f].to_dict() for f in self.features_} if hasattr(self, "encoder_")
                         else self._saved_bins)}

    def summary(self) -> str:
        """Plain-text points table, one line per bin."""
        self._check_fitted()
        lines = [f"Scorecard: base score {self.base_score:g} at odds {self.base_odds:g}:1, PDO {self.pdo:g}",
                 f"{'base points':<60} {self.base_points_:>7.0f}"]
        for r in self.table_:
            if r["n"] == 0 and r["label"] == "missing":
                continue
            lines.append(f"  {r['feature'][:28]:<28} {r['label'][:30]:<30} {r['points']:>7.0f}")
        return "\n".join(lines)

