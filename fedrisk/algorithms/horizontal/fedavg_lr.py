"""Horizontal federated logistic regression: FedAvg (McMahan et al. 2017) with a FedProx option.

Banks hold the same features about different customers; a coordinator that holds no data
orchestrates. Message flow (``agg`` = the injected :class:`Aggregation`; secure by default, so
the coordinator sees only sums)::

    1. bank_k      -> coordinator : hlr.schema          feature names              (public-parameter)
       coordinator -> bank_k      : hlr.schema.ok       names agreed, or abort     (control)
    2. bank_k      -> coordinator : hlr.magnitude via agg  per feature, counts of floor(log2|x|)
       coordinator -> bank_k      : hlr.range           a power of two s_j >= max |x_j|  (aggregate)
       bank_k      -> coordinator : hlr.sum via agg     [n_k, sum x/s]
       coordinator -> bank_k      : hlr.mean            global mean               (aggregate)
       bank_k      -> coordinator : hlr.var via agg     sum ((x - mean)/s)^2
       coordinator -> bank_k      : hlr.scaler          global mean, scale        (aggregate)
    3. for round r = 1..R:
       coordinator -> bank_k      : hlr.global.rR       w_global, done flag        (model)
       bank_k      -> coordinator : hlr.update.rR via agg  [n_k * w_k, n_k, n_k * loss_k(w_global)]
       coordinator               : w_global = sum(n_k w_k) / sum(n_k); stop when the relative
                                    change falls below ``tol`` or after R rounds
    4. coordinator -> bank_k      : hlr.global.rR with done = True (the final model)

What each participant learns: a bank learns the global scaler and each round's global model
(by design). The coordinator learns the feature names, the totals (sum of counts, sums, sums of
squares, weighted updates, weighted losses) and, under plain aggregation only, each bank's
individual update. No row ever leaves a bank.

Standardisation is agreed federatedly so that one learning rate suits every feature and the
global model is the same as if the pooled data had been standardised. It takes three small
aggregation rounds because masked aggregation sums fixed-point numbers in a 64-bit ring: raw
amounts (a credit limit of 500,000 squared, times 10^5 customers) would overflow it, so every
feature is first divided by a power of two above its federation-wide magnitude, and the variance is
summed around the global mean (two passes) so that no precision is lost to cancellation.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Callable, Sequence

import zlib

import numpy as np

from fedrisk.algorithms.horizontal.aggregation import Aggregation, PlainAggregation
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

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean) / self.scale) @ self.coef + self.intercept

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return _sigmoid(self.decision_function(X))

    def raw_coefficients(self) -> tuple[np.ndarray, float]:
        """Coefficients on the original feature scale: what a risk analyst reads."""
        coef = self.coef / self.scale
        return coef, float(self.intercept - np.sum(coef * self.mean))


_EXP_LO, _EXP_HI = -60, 64  # binary exponents tracked for the magnitude sketch
_N_EXP = _EXP_HI - _EXP_LO


def _magnitude_counts(X: np.ndarray) -> np.ndarray:
    """Per feature, how many non-zero values have each binary exponent floor(log2 |x|)."""
    a = np.abs(X)
    rows, cols = np.nonzero(a)
    e = np.clip(np.floor(np.log2(a[rows, cols])), _EXP_LO, _EXP_HI - 1).astype(np.int64) - _EXP_LO
    return np.bincount(cols * _N_EXP + e, minlength=X.shape[1] * _N_EXP).reshape(X.shape[1], _N_EXP).astype(np.float64)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _log_loss(Xs: np.ndarray, y: np.ndarray, w: np.ndarray, b: float) -> float:
    z = Xs @ w + b
    # log(1 + e^z) - y z, computed stably
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


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
            err = _sigmoid(xb @ w + b) - yb
            gw = xb.T @ err / len(idx) + cfg.l2 * w + cfg.mu * (w - w0)
            gb = err.mean() + cfg.mu * (b - b0)
            w -= lr * gw
            b -= lr * gb
    return w, b


def run_bank(channel: Channel, coordinator: str, X: np.ndarray, y: np.ndarray, feature_names: Sequence[str],
             cfg: FedAvgConfig, aggregation: Aggregation | None = None,
             on_round: Callable[[int, LogisticModel], None] | None = None) -> LogisticModel:
    """A bank's side of FedAvg. Returns the final global model (identical at every bank)."""
    agg = aggregation or PlainAggregation()
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, d = X.shape
    if n == 0:
        raise DataError(f"{channel.me}: no training rows")
    channel.send(coordinator, "hlr.schema", {"features": list(feature_names)}, kind="public-parameter")
    verdict = channel.recv(coordinator, "hlr.schema.ok")
    if not verdict.get("ok"):
        raise DataError(verdict.get("reason", "feature schemas differ between banks"))
    agg.submit(channel, coordinator, "hlr.magnitude", _magnitude_counts(X).ravel())
    s = np.asarray(channel.recv(coordinator, "hlr.range")["s"])
    agg.submit(channel, coordinator, "hlr.sum", np.concatenate([[n], (X / s).sum(0)]))
    mean = np.asarray(channel.recv(coordinator, "hlr.mean")["mean"])
    agg.submit(channel, coordinator, "hlr.var", (((X - mean) / s) ** 2).sum(0))
    scaler = channel.recv(coordinator, "hlr.scaler")
    mean, scale = np.asarray(scaler["mean"]), np.asarray(scaler["scale"])
    Xs = (X - mean) / scale
    model = LogisticModel(list(feature_names), mean, scale, np.zeros(d), 0.0)
    r = int(scaler.get("first_round", 1)) - 1
    while True:
        r += 1
        msg = channel.recv(coordinator, f"hlr.global.r{r}")
        w_global = np.asarray(msg["w"], dtype=np.float64)
        model.coef, model.intercept = w_global[:d].copy(), float(w_global[d])
        if msg.get("loss") is not None:
            model.history.append({"round": r - 1, "loss": float(msg["loss"])})
        if on_round is not None:
            on_round(r, model)
        if msg["done"]:
            return model
        tag = f"hlr.update.r{r}"
        prepare = getattr(agg, "prepare", None)
        if prepare is not None:
            # masking schemes exchange their per-round keys while the bank trains, not after
            prepare(channel, coordinator, tag)
        loss = _log_loss(Xs, y, model.coef, model.intercept)
        rng = np.random.default_rng([cfg.seed, r, zlib.crc32(channel.me.encode())])
        lr = float(msg["lr"])
        w, b = _local_train(Xs, y, model.coef, model.intercept, cfg, lr, rng)
        agg.submit(channel, coordinator, tag, np.concatenate([n * w, [n * b, n, n * loss]]))


def run_coordinator(channel: Channel, banks: Sequence[str], cfg: FedAvgConfig, aggregation: Aggregation | None = None,
                    on_round: Callable[[int, dict], None] | None = None,
                    start: tuple[int, np.ndarray] | None = None,
                    checkpoint: Callable[[int, dict], None] | None = None) -> LogisticModel:
    """The coordinator's side: agree the schema and scaler, then average updates each round.

    ``start = (round, w)`` resumes from a checkpoint written by ``checkpoint(round, state)``.
    """
    agg = aggregation or PlainAggregation()
    banks = list(banks)
    schemas = {b: channel.recv(b, "hlr.schema")["features"] for b in banks}
    ref_bank = banks[0]
    reason = None
    for b in banks[1:]:
        if schemas[b] != schemas[ref_bank]:
            reason = _schema_difference(ref_bank, schemas[ref_bank], b, schemas[b])
            break
    channel.broadcast(banks, "hlr.schema.ok", {"ok": reason is None, "reason": reason or ""}, kind="control")
    if reason:
        raise DataError(reason)
    names = schemas[ref_bank]
    d = len(names)
    counts = _collect_all(agg, channel, banks, "hlr.magnitude", d * _N_EXP).reshape(d, _N_EXP)
    s = np.ones(d)
    for j in range(d):
        nonzero = np.flatnonzero(np.rint(counts[j]) > 0)
        if nonzero.size:
            s[j] = 2.0 ** (nonzero[-1] + _EXP_LO + 1)
    channel.broadcast(banks, "hlr.range", {"s": s}, kind="aggregate")
    sums = _collect_all(agg, channel, banks, "hlr.sum", 1 + d)
    n_total = float(np.rint(sums[0]))
    if n_total <= 0:
        raise ProtocolError("the banks' aggregate row count is 0; no bank has training rows")
    mean = sums[1:] * s / n_total
    channel.broadcast(banks, "hlr.mean", {"mean": mean}, kind="aggregate")
    var = _collect_all(agg, channel, banks, "hlr.var", d) * s**2 / n_total
    scale = np.sqrt(np.maximum(var, 0.0))
    constant = [names[j] for j in np.flatnonzero(scale < 1e-12)]
    scale = np.where(scale < 1e-12, 1.0, scale)  # constant features keep weight 0 in effect
    w = np.zeros(d + 1)
    first = 1
    if start is not None:
        first, w = start[0] + 1, np.asarray(start[1], dtype=np.float64)
        if w.shape != (d + 1,):
            raise ProtocolError(f"checkpoint has {w.shape[0] - 1} features but the banks have {d}; delete the checkpoint")
    channel.broadcast(banks, "hlr.scaler", {"mean": mean, "scale": scale, "first_round": first},
                      kind="aggregate")
    history: list[dict] = []
    lr = cfg.learning_rate * cfg.lr_decay ** (first - 1)
    r = first
    done = False
    last_loss = None
    while True:
        done = done or r > cfg.rounds
        channel.broadcast(banks, f"hlr.global.r{r}", {"w": w, "done": done, "lr": lr, "loss": last_loss}, kind="model")
        if done:
            break
        res = agg.collect(channel, banks, f"hlr.update.r{r}", d + 3)
        tot = res.total
        n_round = tot[d + 1]
        if n_round <= 0:
            raise ProtocolError(f"round {r}: the aggregate sample count is {n_round}; no bank contributed")
        w_new = tot[:d + 1] / n_round
        loss = float(tot[d + 2] / n_round)
        change = float(np.linalg.norm(w_new - w) / max(np.linalg.norm(w), np.linalg.norm(w_new), 1e-12))
        w, last_loss = w_new, loss
        rec = {"round": r, "loss": loss, "change": change, "banks": len(res.contributors), "lr": lr}
        history.append(rec)
        if checkpoint is not None:
            checkpoint(r, {"w": w, "history": history})
        if on_round is not None:
            on_round(r, rec)
        if change < cfg.tol:
            done = True
        lr *= cfg.lr_decay
        r += 1
    return LogisticModel(names, mean, scale, w[:d].copy(), float(w[d]), history, constant)


def _collect_all(agg: Aggregation, channel: Channel, banks: list[str], tag: str, length: int) -> np.ndarray:
    """A sum every bank must be in: the scaler's rounds would otherwise mix different populations."""
    res = agg.collect(channel, banks, tag, length)
    missing = sorted(set(banks) - set(res.contributors))
    if missing:
        raise ProtocolError(f"banks {missing} dropped out while the federation agreed its standardisation ({tag}); "
                            f"restart the job when they are back")
    return res.total


def _schema_difference(a: str, fa: list[str], b: str, fb: list[str]) -> str:
    if len(fa) != len(fb):
        extra = sorted(set(fb) - set(fa)) or sorted(set(fa) - set(fb))
        return (f"banks {a!r} and {b!r} have different feature counts ({len(fa)} vs {len(fb)}; "
                f"differing columns: {extra[:5]}); every bank must have the same columns")
    if set(fa) == set(fb):
        i = next(i for i, (x, y) in enumerate(zip(fa, fb)) if x != y)
        return (f"banks {a!r} and {b!r} list the same features in a different order "
                f"(position {i}: {fa[i]!r} vs {fb[i]!r}); reorder the columns or set features = [...] in the spec")
    only_a, only_b = sorted(set(fa) - set(fb)), sorted(set(fb) - set(fa))
    return (f"banks {a!r} and {b!r} have different feature names: only at {a!r}: {only_a[:5]}, "
            f"only at {b!r}: {only_b[:5]}; rename the columns so every bank uses the same names")


class FederatedLogisticRegression:
    """scikit-learn-shaped estimator for one bank of a horizontal federation.

    ``fit(channel, X, y)`` runs the bank's side of FedAvg against ``coordinator`` and fills
    ``coef_``, ``intercept_``, ``mean_``, ``scale_``; ``predict_proba`` then scores locally.
    """

    def __init__(self, rounds: int = 20, local_epochs: int = 1, batch_size: int = 64, learning_rate: float = 0.1,
                 lr_decay: float = 1.0, l2: float = 1e-4, mu: float = 0.0, tol: float = 1e-6, seed: int = 0,
                 coordinator: str = "coordinator", aggregation: Aggregation | None = None) -> None:
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
