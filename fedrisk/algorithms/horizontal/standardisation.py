"""Federated agreement on the feature schema and on one standardisation, shared by every horizontal LR solver.

Message flow (``agg`` = the injected :class:`~fedrisk.algorithms.horizontal.aggregation.Aggregation`;
secure by default, so the coordinator sees only sums)::

    bank_k      -> coordinator : hlr.schema           feature names              (public-parameter)
    coordinator -> bank_k      : hlr.schema.ok        names agreed, or abort     (control)
    bank_k      -> coordinator : hlr.magnitude via agg  per feature, counts of floor(log2|x|)
    coordinator -> bank_k      : hlr.range            a power of two s_j >= max |x_j|  (aggregate)
    bank_k      -> coordinator : hlr.sum via agg      [n_k, sum x/s]  (pooled_mean: [n_k, sum x/s, c_k]
                                                      over non-missing cells, c_k = their count per feature)
    coordinator -> bank_k      : hlr.mean             global mean                (aggregate)
    bank_k      -> coordinator : hlr.var via agg      sum ((x - mean)/s)^2
    coordinator -> bank_k      : hlr.scaler           global mean, scale, solver extras  (aggregate)

What each participant learns: a bank learns the pooled mean and standard deviation of every
feature (and the power-of-two range above the pooled maximum |x|). The coordinator learns the
feature names, the pooled row count, per-feature histograms of binary exponents, sums and sums of
squares; under plain aggregation also each bank's own vectors. With ``pooled_mean`` also the
pooled count of non-missing cells per feature (never one bank's, under secure aggregation).

Missing values (``pooled_mean``, the jobs in which a bank loads with ``missing = "mean"``): a bank
keeps its empty cells as NaN. They are left out of the magnitude sketch and of the sums, and the
``hlr.sum`` vector also carries each feature's count of non-missing cells, so ``hlr.mean`` is the
POOLED mean of the observed values, ``sum over banks of sum x / sum over banks of c``. Each bank
then fills its empty cells with that mean (:func:`fill_missing`) before the variance round, so the
scaler is exactly the pooled standardisation of the pooled rows imputed with the pooled mean (the
mean of mean-imputed data is the observed mean). Filling with each bank's own means instead would
train on different data whenever banks' missing rates or means differ. No extra round: the
counts ride in the sum the agreement already makes. ``horizontal.gbdt`` under ``missing = "mean"``
runs the same two sums alone before its bins (:func:`mean_bank` / :func:`mean_coordinator`, tags
``hgb.mean.magnitude``, ``hgb.mean.range``, ``hgb.mean.sum``, ``hgb.mean.mean``).

Why three rounds: masked aggregation sums fixed-point numbers in a 64-bit ring. Raw amounts (a
credit limit of 500,000 squared, times 10^5 customers) would overflow it, so every feature is
first divided by a power of two above its federation-wide magnitude, and the variance is summed
around the global mean (two passes) so that no precision is lost to cancellation. After it every
standardised column has pooled mean 0 and pooled sum of squares ``n_pooled``, which is what bounds
the solvers' later sums (see :mod:`fedrisk.algorithms.horizontal.newton_lr`).

Differential privacy (``noise`` at the banks, ``privacy`` at the coordinator; see
:mod:`fedrisk.crypto.dp`): the three sums are Gaussian mechanisms. One row adds at most one count
per feature to the magnitude sketch (L2 sensitivity ``sqrt(d)``); the banks clip ``x`` to the
agreed ``[-s, s]`` so a row adds at most ``sqrt(1 + d)`` to ``[n, sum x/s]`` (``sqrt(1 + 2d)`` with the
non-missing counts of ``pooled_mean``: a row adds at most 1 to each count, and an empty cell adds
nothing to its sum) and ``4 sqrt(d)`` to the centred squares (a filled cell sits at the mean).
The noise standard deviation is the noise multiplier times the sensitivity, so the accountant's
count of mechanisms is unchanged; the coordinator's noisy count is floored at 1 and the mean
clipped to ``[-s, s]`` (post-processing). The coordinator takes an exponent as occupied only when its noisy count
exceeds :func:`dp_count_threshold` (so many noise standard deviations that, over all ``d`` times
:data:`EXPONENT_BINS` counts, an empty one passes in at most :data:`DP_FALSE_BIN` of runs: at a fixed 3
sigma about one empty bin in two runs passed, and a phantom exponent of 2^30 became the range and
drowned the column), and ``s`` covers all but the largest
:data:`DP_TAIL` of the occupied counts (those values are clipped to ``s``; the maximum itself is
not a low-sensitivity statistic); a noisy variance is floored at ``(s / 32)^2``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from fedrisk.algorithms.horizontal.aggregation import Aggregation
from fedrisk.errors import DataError, ProtocolError
from fedrisk.transport import expect
from fedrisk.transport.channel import Channel
from fedrisk.transport.safe_text import safe_text

__all__ = ["Standardisation", "agree_bank", "agree_coordinator", "collect_all", "fill_missing", "mean_bank",
           "mean_coordinator", "EXPONENT_BINS", "MECHANISMS", "dp_count_threshold", "private_ranges",
           "scaler_sensitivities", "schema_difference"]

#: noisy sums the agreement releases (what a private run's accountant must count)
MECHANISMS = 3
#: private runs: the chance, per run, that noise alone makes some empty exponent bin look occupied
DP_FALSE_BIN = 1e-4
#: private runs: share of the largest |x| clipped to the agreed range
DP_TAIL = 0.005


def dp_count_threshold(d: int, sigma: float) -> float:
    """Noisy exponent counts above this are taken as occupied (private runs; ``sigma`` is the noise std).

    A one-sided Gaussian test at level ``DP_FALSE_BIN / (d * EXPONENT_BINS)`` per count (a union
    bound over every count of the sketch): about 4.9 sigma for three features, 5.6 for a hundred.
    """
    from statistics import NormalDist

    return float(NormalDist().inv_cdf(1.0 - DP_FALSE_BIN / (max(d, 1) * EXPONENT_BINS))) * sigma


def private_ranges(counts: np.ndarray, sigma: float) -> np.ndarray:
    """Per feature, the power of two ``s`` a private run clips to, from the noisy exponent counts ``(d, bins)``.

    ``s`` covers all but the largest :data:`DP_TAIL` of the occupied counts: a high quantile, not the
    maximum (a noisy variance around a maximum far out in the tail would drown, and the maximum
    itself is not a low-sensitivity statistic). A feature with no occupied count keeps ``s = 1``.
    """
    d = counts.shape[0]
    s = np.ones(d)
    floor = dp_count_threshold(d, sigma)
    for j in range(d):
        occupied = np.where(counts[j] > floor, counts[j], 0.0)
        if not occupied.any():
            continue
        above = occupied.sum() - np.cumsum(occupied)
        top = int(np.flatnonzero(above <= DP_TAIL * occupied.sum())[0])
        s[j] = 2.0 ** (top + _EXP_LO + 1)
    return s


def scaler_sensitivities(d: int, pooled_mean: bool = False) -> tuple[float, float, float]:
    """L2 sensitivity of the magnitude sketch, the ``[n, sum x/s]`` vector (with the non-missing counts
    under ``pooled_mean``) and the centred squares."""
    return math.sqrt(d), math.sqrt(1.0 + (2 * d if pooled_mean else d)), 4.0 * math.sqrt(d)


def fill_missing(X: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``X`` with every empty (NaN) cell set to its feature's pooled mean (a copy only when there is one)."""
    gaps = np.isnan(X)
    return np.where(gaps, np.asarray(mean, dtype=np.float64)[None, :], X) if gaps.any() else X

_EXP_LO, _EXP_HI = -60, 64  # binary exponents tracked for the magnitude sketch
EXPONENT_BINS = _EXP_HI - _EXP_LO


@dataclass(frozen=True)
class Standardisation:
    """What the coordinator knows after the agreement."""

    feature_names: list[str]
    mean: np.ndarray
    scale: np.ndarray
    #: features with zero pooled variance (their scale is set to 1; solvers keep their weight 0)
    constant_features: list[str]
    n_pooled: int


def magnitude_counts(X: np.ndarray) -> np.ndarray:
    """Per feature, how many non-zero values have each binary exponent floor(log2 |x|)."""
    a = np.abs(X)
    rows, cols = np.nonzero(a > 0)  # empty (NaN) cells have no magnitude
    e = np.clip(np.floor(np.log2(a[rows, cols])), _EXP_LO, _EXP_HI - 1).astype(np.int64) - _EXP_LO
    return np.bincount(cols * EXPONENT_BINS + e, minlength=X.shape[1] * EXPONENT_BINS).reshape(
        X.shape[1], EXPONENT_BINS).astype(np.float64)


def agree_bank(channel: Channel, coordinator: str, X: np.ndarray, feature_names: Sequence[str],
               agg: Aggregation, noise: Any = None, pooled_mean: bool = False) -> dict[str, Any]:
    """A bank's side of the agreement; returns the ``hlr.scaler`` message (``mean``, ``scale``, extras).

    ``noise`` (a :class:`~fedrisk.crypto.dp.BankNoise`) makes every sum a Gaussian mechanism.
    ``pooled_mean`` (the same at every participant): ``X`` may hold NaN, filled with the pooled mean of
    the observed values; the caller fills its own copy with ``fill_missing(X, scaler["mean"])``.
    Without it a NaN is refused here (it would poison every sum).
    """
    def noisy(v: np.ndarray, sensitivity: float) -> np.ndarray:
        return v if noise is None else noise.add(v, sensitivity)

    sens = scaler_sensitivities(X.shape[1], pooled_mean)
    n = X.shape[0]
    if n == 0:
        raise DataError(f"{channel.me}: no training rows")
    gaps = np.isnan(X)
    if gaps.any() and not pooled_mean:
        raise DataError(f"{channel.me}: training rows have empty cells, but this job fills none (no bank sets "
                        f"missing = 'mean'); set missing = 'mean' or clean them")
    channel.send(coordinator, "hlr.schema", {"features": list(feature_names)}, kind="public-parameter")
    verdict = expect.mapping(channel.recv(coordinator, "hlr.schema.ok"), channel.me, coordinator, "hlr.schema.ok")
    if not expect.flag(verdict, "ok", channel.me, coordinator, "hlr.schema.ok"):
        why = verdict.get("reason")
        raise DataError(safe_text(why, 1000) if isinstance(why, str) and why else "feature schemas differ between banks")
    mean, s, X = mean_bank(channel, coordinator, X, agg, noise=noise, pooled_mean=pooled_mean)
    agg.submit(channel, coordinator, "hlr.var", noisy((((X - mean) / s) ** 2).sum(0), sens[2]))
    scaler = dict(expect.mapping(channel.recv(coordinator, "hlr.scaler"), channel.me, coordinator, "hlr.scaler"))
    d = X.shape[1]
    scaler["mean"] = expect.vector(scaler, "mean", d, channel.me, coordinator, "hlr.scaler")
    scaler["scale"] = expect.vector(scaler, "scale", d, channel.me, coordinator, "hlr.scaler", positive=True)
    return scaler


def mean_bank(channel: Channel, coordinator: str, X: np.ndarray, agg: Aggregation, *, prefix: str = "hlr",
              noise: Any = None, pooled_mean: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bank's side of the pooled-mean rounds (``<prefix>.magnitude``, ``.range``, ``.sum``, ``.mean``).

    Returns ``(mean, s, X)``: the pooled mean, the agreed power-of-two range, and this bank's rows as
    summed (clipped to ``[-s, s]`` under ``noise``) with empty cells filled with the pooled mean.
    The standardisation runs it with prefix ``hlr``; ``horizontal.gbdt`` runs it alone (``hgb.mean``)
    to fill blanks under ``missing = "mean"``.
    """
    sens = scaler_sensitivities(X.shape[1], pooled_mean)

    def noisy(v: np.ndarray, sensitivity: float) -> np.ndarray:
        return v if noise is None else noise.add(v, sensitivity)

    gaps = np.isnan(X)
    agg.submit(channel, coordinator, f"{prefix}.magnitude", noisy(magnitude_counts(X).ravel(), sens[0]))
    d = X.shape[1]
    s = expect.vector(channel.recv(coordinator, f"{prefix}.range"), "s", d, channel.me, coordinator, f"{prefix}.range",
                      positive=True)
    if noise is not None:
        X = np.clip(X, -s, s)  # bounds one row's part of the next two sums
    sums = [[X.shape[0]], np.where(gaps, 0.0, X / s).sum(0)] + ([(~gaps).sum(0)] if pooled_mean else [])
    agg.submit(channel, coordinator, f"{prefix}.sum", noisy(np.concatenate(sums).astype(np.float64), sens[1]))
    mean = expect.vector(channel.recv(coordinator, f"{prefix}.mean"), "mean", d, channel.me, coordinator,
                         f"{prefix}.mean")
    return mean, s, fill_missing(X, mean)


def mean_coordinator(channel: Channel, banks: list[str], agg: Aggregation, names: list[str], *, prefix: str = "hlr",
                     noise_std: Any = None, pooled_mean: bool = False,
                     collect: Callable[[str, int], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """The coordinator's side of :func:`mean_bank`; returns ``(mean, s, pooled row count)``.

    ``collect(tag, length)``: the caller's sum over every bank (a trainer that counts its aggregations);
    default :func:`collect_all`.
    """
    d = len(names)
    if collect is None:
        def collect(tag: str, length: int) -> np.ndarray:
            return collect_all(agg, channel, banks, tag, length)
    counts = collect(f"{prefix}.magnitude", d * EXPONENT_BINS).reshape(d, EXPONENT_BINS)
    if noise_std is not None:
        s = private_ranges(counts, noise_std(scaler_sensitivities(d)[0]))
    else:
        s = np.ones(d)
        for j in range(d):
            nonzero = np.flatnonzero(counts[j] > 0.5)
            if nonzero.size:
                s[j] = 2.0 ** (nonzero[-1] + _EXP_LO + 1)
    channel.broadcast(banks, f"{prefix}.range", {"s": s}, kind="aggregate")
    sums = collect(f"{prefix}.sum", 1 + (2 * d if pooled_mean else d))
    n_total = float(np.rint(sums[0]))
    if n_total <= 0 and noise_std is not None:
        raise ProtocolError(f"the banks' noisy row count is {n_total:.0f}: too few rows for this privacy budget")
    if n_total <= 0:
        raise ProtocolError("the banks' aggregate row count is 0; no bank has training rows")
    mean = sums[1:1 + d] * s / n_total if not pooled_mean else _observed_mean(names, sums[1:1 + d], sums[1 + d:], s,
                                                                              noise_std is not None)
    channel.broadcast(banks, f"{prefix}.mean", {"mean": mean}, kind="aggregate")
    return mean, s, n_total


def agree_coordinator(channel: Channel, banks: Sequence[str], agg: Aggregation,
                      extra: dict[str, Any] | None = None, noise_std: Any = None,
                      pooled_mean: bool = False) -> Standardisation:
    """The coordinator's side; ``extra`` rides along in the ``hlr.scaler`` broadcast (e.g. a resume round).

    ``noise_std(sensitivity)`` (private runs) is the noise standard deviation in a released sum.
    ``pooled_mean``: the banks' sums carry non-missing counts, and the mean is over observed cells.
    """
    banks = list(banks)
    schemas = {b: channel.recv(b, "hlr.schema")["features"] for b in banks}
    ref_bank = banks[0]
    reason = None
    for b in banks[1:]:
        if schemas[b] != schemas[ref_bank]:
            reason = schema_difference(ref_bank, schemas[ref_bank], b, schemas[b])
            break
    channel.broadcast(banks, "hlr.schema.ok", {"ok": reason is None, "reason": reason or ""}, kind="control")
    if reason:
        raise DataError(reason)
    names = list(schemas[ref_bank])
    d = len(names)
    mean, s, n_total = mean_coordinator(channel, banks, agg, names, noise_std=noise_std, pooled_mean=pooled_mean)
    var = collect_all(agg, channel, banks, "hlr.var", d) * s**2 / n_total
    if noise_std is not None:
        var = np.maximum(var, (s / 32.0) ** 2)  # a noisy variance may dip to 0 or below
    scale = np.sqrt(np.maximum(var, 0.0))
    constant = [names[j] for j in np.flatnonzero(scale < 1e-12)]
    scale = np.where(scale < 1e-12, 1.0, scale)  # constant features keep weight 0 in effect
    channel.broadcast(banks, "hlr.scaler", {"mean": mean, "scale": scale, **(extra or {})}, kind="aggregate")
    return Standardisation(names, mean, scale, constant, int(n_total))


def _observed_mean(names: list[str], sums: np.ndarray, counts: np.ndarray, s: np.ndarray, noisy: bool) -> np.ndarray:
    """Pooled mean of the observed cells from the summed ``x/s`` and non-missing counts.

    A feature no bank observed has no mean to fill with: one DataError naming it. A private run cannot
    tell "empty" from "rarely observed" (its counts are noisy, and failing on a noise draw would make
    the job fail at random): it floors the noisy count at 1 and clips the mean to the agreed range
    ``[-s, s]``, which every observed value was clipped to (an empty column then becomes constant).
    """
    counts = np.maximum(np.rint(counts), 1) if noisy else np.rint(counts)
    empty = [names[j] for j in np.flatnonzero(counts < 1)]
    if empty:
        raise DataError(f"feature columns {empty[:5]} are empty at every bank, so "
                        f"there is no mean to fill them with; drop them (exclude = [...]) or fix the exports")
    mean = sums * s / counts
    return np.clip(mean, -s, s) if noisy else mean


def collect_all(agg: Aggregation, channel: Channel, banks: list[str], tag: str, length: int) -> np.ndarray:
    """A sum every bank must be in: the scaler's rounds would otherwise mix different populations."""
    res = agg.collect(channel, banks, tag, length)
    missing = sorted(set(banks) - set(res.contributors))
    if missing:
        raise ProtocolError(f"banks {missing} dropped out while the federation agreed its standardisation ({tag}); "
                            f"restart the job when they are back")
    return res.total


def schema_difference(a: str, fa: list[str], b: str, fb: list[str]) -> str:
    if len(fa) != len(fb):
        extra = sorted(set(fb) - set(fa)) or sorted(set(fa) - set(fb))
        more = b if len(fb) > len(fa) else a
        return (f"banks {a!r} and {b!r} have different feature counts ({len(fa)} vs {len(fb)}; "
                f"differing columns: {extra[:5]}); every bank must have the same columns: drop the extra ones with "
                f"exclude = [...] in [parties.{more}] (or add the missing ones to the other bank's file)")
    if set(fa) == set(fb):
        i = next(i for i, (x, y) in enumerate(zip(fa, fb)) if x != y)
        return (f"banks {a!r} and {b!r} list the same features in a different order "
                f"(position {i}: {fa[i]!r} vs {fb[i]!r}); reorder the columns, or list them in the order of {a!r} as "
                f"features = [...] in [parties.{b}] of the spec")
    only_a, only_b = sorted(set(fa) - set(fb)), sorted(set(fb) - set(fa))
    return (f"banks {a!r} and {b!r} have different feature names: only at {a!r}: {only_a[:5]}, "
            f"only at {b!r}: {only_b[:5]}; rename the columns so every bank uses the same names")
