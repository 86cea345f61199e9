"""Horizontal federated logistic regression by FedAvg (McMahan et al. 2017) with a FedProx option: APPROXIMATE.

``solver = "fedavg"`` of ``horizontal.lr``. Local SGD on non-IID or heavy-tailed banks converges to
a point that is not the pooled optimum (the issue that made :mod:`~fedrisk.algorithms.horizontal.newton_lr`
the default measured 0.05 AUC lost on skewed banks); keep it for many parties or very wide data,
where sending a (d+1)x(d+1) Hessian per round is too much.

Banks hold the same features about different customers; a coordinator that holds no data
orchestrates. Message flow (``agg`` = the injected :class:`Aggregation`; secure by default, so
the coordinator sees only sums)::

    1. bank_k      -> coordinator : hlr.schema          feature names              (public-parameter)
       coordinator -> bank_k      : hlr.schema.ok       names agreed, or abort     (control)
    2. the standardisation agreement of :mod:`~fedrisk.algorithms.horizontal.standardisation`
       (hlr.magnitude, hlr.range, hlr.sum, hlr.mean, hlr.var, hlr.scaler)
    3. for round r = 1..R:
       (a dropped bank that restarted may rejoin here: coordinator -> bank hlr.rejoin, the scaler
       and the round, kind aggregate; see :mod:`~fedrisk.algorithms.horizontal.dropouts`)
       coordinator -> bank_k      : hlr.global.rR       w_global, done flag, previous round's
                                                        contributors (model)
       bank_k      -> coordinator : hlr.update.rR via agg  [n_k * w_k, n_k, n_k * loss_k(w_global)]
       coordinator               : w_global = sum(n_k w_k) / sum(n_k); stop when the relative
                                    change falls below ``tol`` or after R rounds
    4. coordinator -> bank_k      : hlr.global.rR with done = True (the final model)

What each participant learns: a bank learns the global scaler and each round's global model
(by design). The coordinator learns the feature names, the totals (sum of counts, sums, sums of
squares, weighted updates, weighted losses) and, under plain aggregation only, each bank's
individual update. No row ever leaves a bank.

Standardisation is agreed federatedly (:mod:`~fedrisk.algorithms.horizontal.standardisation`) so
that one learning rate suits every feature and the global model is the same as if the pooled data
had been standardised.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, Sequence

import zlib

import numpy as np

from fedrisk.algorithms.horizontal.aggregation import Aggregation, PlainAggregation, prepare_round
from fedrisk.algorithms.horizontal.dropouts import agreed_roster, rejoin_scaler
from fedrisk.algorithms.horizontal.logistic import LogisticModel, mean_log_loss, sigmoid
from fedrisk.algorithms.horizontal.standardisation import agree_bank, agree_coordinator, fill_missing
from fedrisk.errors import DataError, ProtocolError
from fedrisk.transport.channel import Channel

__all__ = ["FedAvgConfig", "LogisticModel", "run_bank", "run_coordinator", "FederatedLogisticRegression", "TAG_PREFIXES"]

TAG_PREFIXES = ("hlr.",)


@dataclass(frozen=True)
class FedAvgConfig:
    """Hyper-parameters of horizontal LR. ``l2`` multiplies ``0.5 * ||w||^2`` added to the mean log-loss."""

    rounds: int = 20
    local_epochs: int = 1
    batch_size: int = 64
    learning_rate: float = 0.1
    lr_decay: float = 1.0
    l2: float = 1e-4
    mu: float = 0.0
    tol: float = 1e-6
    seed: int = 0
    #: empty cells get the pooled observed mean (``missing = "mean"``; see the standardisation module)
    pooled_mean: bool = False


def _local_train(Xs: np.ndarray, y: np.ndarray, w0: np.ndarray, b0: float, cfg: FedAvgConfig, lr: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Mini-batch SGD on the local log-loss + L2 + FedProx proximal term around (w0, b0)."""
    w, b = w0.copy(), b0
    n = len(y)
    bs = max(1, min(cfg.batch_size, n))
    for _ in range(cfg.local_epochs):
        order = rng.permutation(n)
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            xb, yb = Xs[idx], y[idx]
            err = sigmoid(xb @ w + b) - yb
            gw = xb.T @ err / len(idx) + cfg.l2 * w + cfg.mu * (w - w0)
            gb = err.mean() + cfg.mu * (b - b0)
            w -= lr * gw
            b -= lr * gb
    return w, b


def run_bank(channel: Channel, coordinator: str, X: np.ndarray, y: np.ndarray, feature_names: Sequence[str],
             cfg: FedAvgConfig, aggregation: Aggregation | None = None,
             on_round: Callable[[int, LogisticModel], None] | None = None, rejoining: bool = False) -> LogisticModel:
    """A bank's side of FedAvg. Returns the final global model (identical at every bank).

    ``rejoining``: this bank was taken back mid-job; the scaler comes in ``hlr.rejoin``."""
    agg = aggregation or PlainAggregation()
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, d = X.shape
    if n == 0:
        raise DataError(f"{channel.me}: no training rows")
    scaler = rejoin_scaler(channel, coordinator, d) if rejoining else agree_bank(channel, coordinator, X, feature_names,
                                                                              agg, pooled_mean=cfg.pooled_mean)
    mean, scale = scaler["mean"], scaler["scale"]
    X = fill_missing(X, mean)
    Xs = (X - mean) / scale
    model = LogisticModel(list(feature_names), mean, scale, np.zeros(d), 0.0)
    r = int(scaler.get("first_round", 1)) - 1
    while True:
        r += 1
        msg = channel.recv(coordinator, f"hlr.global.r{r}")
        w_global = np.asarray(msg["w"], dtype=np.float64)
        model.coef, model.intercept = w_global[:d].copy(), float(w_global[d])
        model.record_round(r, msg)
        if on_round is not None:
            on_round(r, model)
        if msg["done"]:
            return model
        tag = f"hlr.update.r{r}"
        prepare_round(agg, channel, coordinator, tag)
        loss = mean_log_loss(Xs, y, model.coef, model.intercept)
        rng = np.random.default_rng([cfg.seed, r, zlib.crc32(channel.me.encode())])
        lr = float(msg["lr"])
        w, b = _local_train(Xs, y, model.coef, model.intercept, cfg, lr, rng)
        agg.submit(channel, coordinator, tag, np.concatenate([n * w, [n * b, n, n * loss]]))


def run_coordinator(channel: Channel, banks: Sequence[str], cfg: FedAvgConfig, aggregation: Aggregation | None = None,
                    on_round: Callable[[int, dict], None] | None = None,
                    start: tuple[int, np.ndarray] | None = None,
                    checkpoint: Callable[[int, dict], None] | None = None,
                    log: Callable[[str], None] | None = None,
                    admit: Callable[[str, int], bool] | None = None) -> LogisticModel:
    """The coordinator's side: agree the schema and scaler, then average updates each round.

    ``start = (round, w)`` resumes from a checkpoint written by ``checkpoint(round, state)``.
    A bank that drops out after the agreement leaves this and every later round
    (:class:`~fedrisk.algorithms.horizontal.dropouts.Roster`; ``log`` gets one line each); the
    average is over each round's contributors.
    """
    banks = list(banks)
    first, w, resumed = 1, None, {}
    if start is not None:  # (round, state written by checkpoint) or, from older checkpoints, (round, w)
        resumed = start[1] if isinstance(start[1], dict) else {"w": start[1]}
        first, w = start[0] + 1, np.asarray(resumed["w"], dtype=np.float64)
    agg, roster, st = agreed_roster(channel, banks, aggregation or PlainAggregation(),
                                    lambda a: agree_coordinator(channel, banks, a, extra={"first_round": first},
                                                                pooled_mean=cfg.pooled_mean), log=log)
    names, mean, scale, constant = st.feature_names, st.mean, st.scale, st.constant_features
    d = len(names)
    if w is None:
        w = np.zeros(d + 1)
    elif w.shape != (d + 1,):
        raise ProtocolError(f"checkpoint has {w.shape[0] - 1} features but the banks have {d}; delete the checkpoint")
    history: list[dict] = []
    lr = cfg.learning_rate * cfg.lr_decay ** (first - 1)
    r = first
    done = bool(resumed.get("done", False))
    last_loss = resumed.get("last_loss")
    history = list(resumed.get("history", []))
    while True:
        done = done or r > cfg.rounds
        if not done:  # a dropped bank that came back is taken back here (see newton_lr)
            roster.readmit(r, admit, {"mean": st.mean, "scale": st.scale})
        # the previous round's contributors ride along, so the evaluation holder's metrics list them
        roster.broadcast(r, f"hlr.global.r{r}", {"w": w, "done": done, "lr": lr, "loss": last_loss,
                                                 "contributors": history[-1]["contributors"] if history else None},
                         kind="model")
        if done:
            break
        roster.require(r)
        res = agg.collect(channel, roster.active, f"hlr.update.r{r}", d + 3)
        roster.record(r, res)
        tot = res.total
        n_round = tot[d + 1]
        if n_round <= 0:
            raise ProtocolError(f"round {r}: the aggregate sample count is {n_round}; no bank contributed")
        w_new = tot[:d + 1] / n_round
        loss = float(tot[d + 2] / n_round)
        change = float(np.linalg.norm(w_new - w) / max(np.linalg.norm(w), np.linalg.norm(w_new), 1e-12))
        w, last_loss = w_new, loss
        rec = {"round": r, "loss": loss, "change": change, "banks": len(res.contributors), "lr": lr,
               "contributors": list(res.contributors)}
        history.append(rec)
        if checkpoint is not None:
            checkpoint(r, {"w": w, "history": history, "last_loss": last_loss, "done": change < cfg.tol})
        if on_round is not None:
            on_round(r, rec)
        if change < cfg.tol:
            done = True
        lr *= cfg.lr_decay
        r += 1
    roster.finish()
    return LogisticModel(names, mean, scale, w[:d].copy(), float(w[d]), history, constant,
                         membership=roster.summary())


class FederatedLogisticRegression:
    """scikit-learn-shaped estimator for one bank of a horizontal federation.

    ``fit(channel, X, y)`` runs the bank's side of FedAvg against ``coordinator`` and fills
    ``coef_``, ``intercept_``, ``mean_``, ``scale_``; ``predict_proba`` then scores locally.
    """

    def __init__(self, rounds: int = 20, local_epochs: int = 1, batch_size: int = 64, learning_rate: float = 0.1,
                 lr_decay: float = 1.0, l2: float = 1e-4, mu: float = 0.0, tol: float = 1e-6, seed: int = 0,
                 coordinator: str = "coordinator", aggregation: Aggregation | None = None,
                 pooled_mean: bool = False) -> None:
        self.rounds = rounds
        self.local_epochs = local_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.lr_decay = lr_decay
        self.l2 = l2
        self.mu = mu
        self.tol = tol
        self.seed = seed
        self.coordinator = coordinator
        self.aggregation = aggregation
        self.pooled_mean = pooled_mean

    def _config(self) -> FedAvgConfig:
        return FedAvgConfig(**{f.name: getattr(self, f.name) for f in fields(FedAvgConfig)})

    def fit(self, channel: Channel, X: np.ndarray, y: np.ndarray, feature_names: Sequence[str] | None = None):
        names = list(feature_names) if feature_names is not None else [f"x{i}" for i in range(np.shape(X)[1])]
        self.model_ = run_bank(channel, self.coordinator, X, y, names, self._config(), self.aggregation)
        self.coef_, self.intercept_ = self.model_.raw_coefficients()
        self.mean_, self.scale_ = self.model_.mean, self.model_.scale
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = self.model_.predict_proba(np.asarray(X, dtype=np.float64))
        return np.column_stack([1 - p, p])
