"""Differential privacy for horizontal training: clipping, distributed Gaussian noise, accounting.

What is protected. A horizontal trainer releases, round after round, sums over every bank's rows
(histograms of gradients for trees; clipped updates for logistic regression). With a
``[privacy]`` table each released sum is a *Gaussian mechanism*: every row's contribution to the
round's vector has L2 norm at most ``sensitivity`` (by construction or by clipping), and Gaussian
noise of standard deviation ``noise_multiplier * sensitivity`` is in the sum. The privacy loss of
the whole run (add/remove one customer row) is computed by a maintained accountant — Google's
``dp-accounting`` privacy-loss-distribution (PLD) accountant — over every mechanism of the run
(binning rounds, every tree level, loss rounds), never by a hand-written bound.

Who adds the noise. The coordinator must never see a noiseless sum, so the banks add it, each a
share: bank ``k`` adds ``N(0, (noise_multiplier * sensitivity)^2 / t)`` per coordinate, where ``t``
is the smallest number of banks whose vectors can be in a released sum (the secure-aggregation
threshold; 1 without secure aggregation, where every vector is seen on its own). Any ``t``
contributors together carry at least the full variance, so the guarantee survives dropouts.
Noise is drawn from the operating system's randomness (not the job seed): a predictable noise
stream would be no noise at all.

Calibration: every mechanism of a run uses the same ``noise_multiplier``, so the run is the
``K``-fold composition of one Gaussian mechanism. Given ``(epsilon, delta)``,
:func:`plan_privacy` finds the smallest multiplier whose composition the PLD accountant puts at
or below the budget; given ``noise_multiplier`` it reports the epsilon that spends, and refuses
when a stated budget would be exceeded (:class:`~fedrisk.errors.ConfigError` naming the budget
and what it would need).

Notes
-----
Subsampling is not credited (no amplification is claimed). Floating-point Gaussian sampling has
known side channels at the level of single bits (Mironov 2012); the noise is added before the
fixed-point encoding of secure aggregation, which rounds every value to ``2^-24``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from fedrisk.errors import ConfigError

__all__ = ["PrivacyPlan", "plan_privacy", "epsilon_spent", "clip_l2", "clip_rows", "add_distributed_noise", "noise_rng",
           "BankNoise", "min_contributors", "released_noise_std"]

#: smallest noise multiplier accepted: below it the guarantee is vacuous (epsilon in the hundreds per
#: sum) and the PLD accountant's discretisation needs gigabytes; a larger budget gets this much noise
MIN_NOISE_MULTIPLIER = 0.3
#: the accountant's name, as written in metrics and reports
ACCOUNTANT = "dp-accounting PLD (Gaussian mechanisms, add/remove one row)"


@dataclass(frozen=True)
class PrivacyPlan:
    """The noise of a run and the privacy it spends.

    Attributes
    ----------
    noise_multiplier : float
        Noise standard deviation per unit of sensitivity, for every mechanism of the run.
    mechanisms : int
        How many Gaussian mechanisms (released sums) the run composes at most.
    epsilon : float
        Epsilon the PLD accountant gives for all ``mechanisms`` at ``delta``.
    delta : float
    epsilon_budget : float or None
        The budget the spec asked for, if any.
    clip : float or None
        The spec's clip (meaning depends on the trainer; see its docstring).
    """

    noise_multiplier: float
    mechanisms: int
    epsilon: float
    delta: float
    epsilon_budget: float | None = None
    clip: float | None = None

    def spent(self, mechanisms_run: int) -> float:
        """Epsilon of the mechanisms actually run (early stopping runs fewer than planned)."""
        return epsilon_spent(self.noise_multiplier, mechanisms_run, self.delta)

    def summary(self, mechanisms_run: int | None = None) -> dict:
        """What metrics and reports show. ``epsilon`` is the bound over every mechanism the run was
        allowed (how many ran depends on noisy sums, so the smaller figure of the rounds actually
        run, ``epsilon_rounds_run``, is for information only)."""
        run = self.mechanisms if mechanisms_run is None else mechanisms_run
        out = {"epsilon": self.epsilon, "delta": self.delta, "noise_multiplier": self.noise_multiplier,
               "mechanisms_planned": self.mechanisms, "mechanisms_run": run,
               "epsilon_rounds_run": self.spent(run), "accountant": ACCOUNTANT}
        if self.epsilon_budget is not None:
            out["epsilon_budget"] = self.epsilon_budget
        if self.clip is not None:
            out["clip"] = self.clip
        return out


def _accountant():
    try:
        import dp_accounting  # noqa: F401
        from dp_accounting import pld
    except ImportError:  # pragma: no cover - it is a core dependency
        raise ConfigError("differential privacy needs the 'dp-accounting' package: pip install dp-accounting") from None
    return pld.PLDAccountant


@lru_cache(maxsize=256)
def epsilon_spent(noise_multiplier: float, mechanisms: int, delta: float) -> float:
    """Epsilon at ``delta`` of ``mechanisms`` Gaussian mechanisms of ``noise_multiplier``, by the PLD accountant."""
    if mechanisms <= 0:
        return 0.0
    import dp_accounting

    acc = _accountant()()
    acc.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(float(noise_multiplier)), int(mechanisms)))
    return float(acc.get_epsilon(float(delta)))


def plan_privacy(mechanisms: int, *, epsilon: float | None = None, delta: float = 1e-5,
                 noise_multiplier: float | None = None, clip: float | None = None,
                 what: str = "this run") -> PrivacyPlan:
    """Calibrate (or check) the noise of ``mechanisms`` Gaussian mechanisms against a budget.

    Parameters
    ----------
    mechanisms : int
        Released sums of the run at most (the accountant composes this many).
    epsilon, delta : float
        The budget. With ``epsilon`` alone the multiplier is calibrated to it.
    noise_multiplier : float, optional
        A fixed multiplier; with ``epsilon`` too, the run must fit that budget.
    what : str
        How the error message names the run's rounds (e.g. "30 trees x 3 levels + 3 rounds").

    Raises
    ------
    ConfigError
        The budget cannot be met with the given multiplier, or neither was given.
    """
    if not 0 < delta < 1:
        raise ConfigError(f"privacy.delta = {delta} must lie in (0, 1), e.g. 1e-5 (below 1 / number of rows)")
    if epsilon is None and noise_multiplier is None:
        raise ConfigError("the privacy table needs epsilon = ... (with delta) or noise_multiplier = ...")
    if noise_multiplier is not None and noise_multiplier < MIN_NOISE_MULTIPLIER:
        raise ConfigError(f"privacy.noise_multiplier = {noise_multiplier:g} is below {MIN_NOISE_MULTIPLIER}: such noise protects "
                          f"nothing (epsilon in the hundreds); set noise_multiplier >= {MIN_NOISE_MULTIPLIER} or an epsilon budget")
    if noise_multiplier is not None:
        eps = epsilon_spent(float(noise_multiplier), mechanisms, delta)
        if epsilon is not None and eps > epsilon:
            need = _calibrate(mechanisms, epsilon, delta)
            raise ConfigError(
                f"privacy budget epsilon = {epsilon:g} (delta = {delta:g}) cannot be met: {what} ({mechanisms} noisy sums) "
                f"at noise_multiplier = {noise_multiplier:g} spends epsilon = {eps:.3g}; it would need noise_multiplier "
                f">= {need:.4g}, fewer rounds, or a budget of epsilon >= {eps:.3g}")
        return PrivacyPlan(float(noise_multiplier), mechanisms, eps, delta, epsilon, clip)
    if epsilon <= 0 or not math.isfinite(epsilon):
        raise ConfigError(f"privacy.epsilon = {epsilon} must be a positive finite number")
    sigma = _calibrate(mechanisms, epsilon, delta)
    return PrivacyPlan(sigma, mechanisms, epsilon_spent(sigma, mechanisms, delta), delta, epsilon, clip)


@lru_cache(maxsize=64)
def _calibrate(mechanisms: int, epsilon: float, delta: float) -> float:
    """Smallest multiplier (to 1e-4 relative) whose ``mechanisms``-fold composition fits the budget.

    ``K`` Gaussian mechanisms of multiplier ``s`` compose exactly to one of multiplier
    ``s / sqrt(K)``, so the analytic Gaussian calibration (Balle & Wang 2018, in dp-accounting)
    gives the starting point; the PLD accountant then has the last word and the multiplier is
    raised until it agrees the budget holds.
    """
    import dp_accounting

    sigma = float(dp_accounting.get_sigma_gaussian(epsilon, delta)) * math.sqrt(max(1, mechanisms))
    if sigma < MIN_NOISE_MULTIPLIER:
        return MIN_NOISE_MULTIPLIER  # (spends less than the budget; see MIN_NOISE_MULTIPLIER)
    for _ in range(200):
        if epsilon_spent(sigma, mechanisms, delta) <= epsilon:
            return sigma
        sigma *= 1.0001
    raise ConfigError(f"privacy: no noise multiplier found for epsilon = {epsilon:g}, delta = {delta:g}")


def clip_l2(x: np.ndarray, clip: float) -> np.ndarray:
    """Scale ``x`` down to L2 norm ``clip`` if it is longer (per-bank update clipping for LR)."""
    x = np.asarray(x, dtype=np.float64)
    norm = float(np.linalg.norm(x))
    return x if norm <= clip or norm == 0.0 else x * (clip / norm)


def noise_rng() -> np.random.Generator:
    """A generator seeded from the operating system: DP noise must not be predictable."""
    return np.random.default_rng(int.from_bytes(os.urandom(32), "little"))


def add_distributed_noise(x: np.ndarray, sensitivity: float, noise_multiplier: float, min_contributors: int,
                          rng: np.random.Generator | None = None) -> np.ndarray:
    """One bank's share of the Gaussian noise of a securely summed vector.

    Parameters
    ----------
    x : numpy.ndarray
        The bank's vector (its rows' contributions, each of L2 norm at most ``sensitivity``).
    sensitivity : float
        L2 bound of one row's contribution to the *sum* (the same at every bank).
    noise_multiplier : float
        From :class:`PrivacyPlan`.
    min_contributors : int
        The fewest banks whose vectors can be in a released sum (secure-aggregation threshold;
        1 when the coordinator sees each vector). The sum of any that many shares has variance
        at least ``(noise_multiplier * sensitivity)^2``.

    Returns
    -------
    numpy.ndarray
        ``x`` plus ``N(0, (noise_multiplier * sensitivity)^2 / min_contributors)`` per coordinate.
        This is the hook horizontal trainers call right before ``Aggregation.submit``.
    """
    if min_contributors < 1:
        raise ConfigError(f"min_contributors must be at least 1, got {min_contributors}")
    x = np.asarray(x, dtype=np.float64)
    std = noise_multiplier * sensitivity / math.sqrt(min_contributors)
    return x + (rng or noise_rng()).normal(0.0, std, size=x.shape)


def clip_rows(X: np.ndarray, clip: float) -> np.ndarray:
    """Scale every row of ``X`` down to L2 norm ``clip`` if it is longer (per-row clipping for LR)."""
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X, axis=1)
    return X * np.minimum(1.0, clip / np.maximum(norms, 1e-300))[:, None]


def min_contributors(agg: object, n_banks: int) -> int:
    """The fewest banks whose vectors can be in a released sum: each bank adds ``1/t`` of the noise.

    ``t`` is the secure-aggregation threshold (fixed from all banks); 1 when the aggregation shows
    the coordinator every vector (plain aggregation).
    """
    from fedrisk.algorithms.horizontal.aggregation import PlainAggregation

    if isinstance(agg, PlainAggregation) or not hasattr(agg, "threshold"):
        return 1
    from fedrisk.crypto.secure_aggregation import default_threshold

    t = getattr(agg, "threshold", None)
    t = t if t is not None else default_threshold(n_banks)
    return max(1, int(t))


def released_noise_std(noise_multiplier: float, sensitivity: float, contributors: int, min_contributors: int) -> float:
    """Standard deviation of the noise in a sum of ``contributors`` banks' vectors, each noised by
    :func:`add_distributed_noise` with ``min_contributors = t``.

    Each bank adds ``1/t`` of the calibrated variance, so the sum carries ``sqrt(contributors / t)``
    times the calibrated ``noise_multiplier * sensitivity`` (the privacy guarantee needs only the
    calibrated part; a coordinator that tests counts against the noise, e.g. "occupied above k
    sigma", must use this). Plain aggregation (``t = 1``) over three banks: ``sqrt(3)`` times.
    """
    return float(noise_multiplier * sensitivity * math.sqrt(max(int(contributors), 1) / max(int(min_contributors), 1)))


class BankNoise:
    """One bank's share of the noise of every sum it submits in a private run.

    Parameters
    ----------
    plan : PrivacyPlan
        The run's noise multiplier (the same for every mechanism).
    min_contributors : int
        See :func:`min_contributors`.
    """

    def __init__(self, plan: PrivacyPlan, min_contributors: int) -> None:
        self.plan = plan
        self.t = int(min_contributors)
        self.rng = noise_rng()

    def add(self, x: np.ndarray, sensitivity: float) -> np.ndarray:
        """``x`` plus this bank's share of ``N(0, (noise_multiplier * sensitivity)^2)`` per coordinate."""
        return add_distributed_noise(x, sensitivity, self.plan.noise_multiplier, self.t, self.rng)

    def std(self, sensitivity: float) -> float:
        """Standard deviation of the noise in the released sum (what the coordinator must expect)."""
        return self.plan.noise_multiplier * sensitivity
