"""The logistic model every horizontal LR solver produces, and the loss they all minimise.

Objective (one definition for FedAvg and Newton): the MEAN log-loss over the pooled rows on the
federation-wide standardised features, plus ``0.5 * l2 * ||w||^2`` on the coefficients (the
intercept is not penalised). On the same standardised rows this is scikit-learn's
``LogisticRegression(C=1 / (l2 * n_pooled))``, whose objective is
``C * sum(log-loss) + 0.5 * ||w||^2`` (divide by ``C * n_pooled``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedrisk.errors import ProtocolError
from fedrisk.transport import expect

__all__ = ["LogisticModel", "sigmoid", "mean_log_loss", "sklearn_C"]


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function, written with tanh so that it never overflows."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def mean_log_loss(Xs: np.ndarray, y: np.ndarray, w: np.ndarray, b: float) -> float:
    """Mean of ``log(1 + e^z) - y z`` with ``z = Xs w + b``, computed stably."""
    z = Xs @ w + b
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def sklearn_C(l2: float, n_pooled: int) -> float:
    """scikit-learn's ``C`` for fedrisk's ``l2`` on ``n_pooled`` rows: ``1 / (l2 * n_pooled)`` (inf for 0)."""
    return float("inf") if l2 == 0 else 1.0 / (l2 * n_pooled)


@dataclass
class LogisticModel:
    """A logistic model in the standardised space, with the agreed scaler."""

    feature_names: list[str]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    history: list[dict] = field(default_factory=list)
    #: features with zero variance across the federation: their weight stays 0
    constant_features: list[str] = field(default_factory=list)
    #: coordinator only: contributors per round and dropped banks (see ``dropouts.Roster.summary``)
    membership: dict = field(default_factory=dict)

    def record_round(self, r: int, msg: dict) -> None:
        """Keep the coordinator's report on round ``r - 1`` (mean loss, contributors) in ``history``."""
        if msg.get("loss") is not None:
            loss = msg["loss"]
            if not expect.real(loss):
                raise ProtocolError(f"round {r}: the coordinator's loss of the previous round is a "
                                    f"{type(loss).__name__}, not a number; refused")
            rec = {"round": r - 1, "loss": float(loss)}
            if isinstance(msg.get("contributors"), list):
                # names of the job's banks: anything longer is not one (and must not fill the model file)
                rec["contributors"] = [str(b)[:128] for b in msg["contributors"][:10_000]]
            self.history.append(rec)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean) / self.scale) @ self.coef + self.intercept

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return sigmoid(self.decision_function(X))

    def raw_coefficients(self) -> tuple[np.ndarray, float]:
        """Coefficients on the original feature scale: what a risk analyst reads."""
        coef = self.coef / self.scale
        return coef, float(self.intercept - np.sum(coef * self.mean))
