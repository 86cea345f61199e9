"""Horizontal federated logistic regression by damped Newton (IRLS) over secure aggregation: EXACT.

``solver = "newton"``, the default of ``horizontal.lr`` and ``horizontal.scorecard``. Banks hold the
same features about different customers; a coordinator that holds no data takes Newton steps on
the POOLED penalised log-likelihood from sums it cannot split by bank. Because the gradient and
Hessian of a sum of per-row losses are sums of per-bank gradients and Hessians, the iteration is
exactly the one a pooled Newton solver would run, and it converges (quadratically near the
optimum) to the pooled penalised maximum-likelihood estimate, whatever the banks' distributions.

Objective (see :mod:`~fedrisk.algorithms.horizontal.logistic`), on the federation-wide standardised
features ``x`` with intercept ``b``::

    F(w, b) = (1/N) * sum_i [log(1 + e^{z_i}) - y_i z_i] + (l2/2) * ||w||^2,   z_i = x_i w + b,

``N`` the pooled row count. This is scikit-learn's ``LogisticRegression(C = 1 / (l2 * N))`` fitted
on the pooled standardised rows (intercept unpenalised): the tests check coefficients to 1e-4.

Message flow (``agg`` = the injected :class:`~fedrisk.algorithms.horizontal.aggregation.Aggregation`;
secure aggregation by default: masked fixed-point sums in Z/2^64, the coordinator sees only sums)::

    1. schema and standardisation agreement of :mod:`~fedrisk.algorithms.horizontal.standardisation`
       (hlr.schema, hlr.schema.ok, hlr.magnitude, hlr.range, hlr.sum, hlr.mean, hlr.var,
       hlr.scaler; the scaler message also carries the first round and the bank count)
    2. for round r = 1, 2, ... (at most ``rounds``):
       coordinator -> bank_k : hlr.newton.rR        base point w, direction p, done flag,
                                                    loss F(w), [fallback]            (model)
       bank_k -> coordinator : hlr.stats.rR via agg
                 [n_k,
                  sum_k loss(w + t p) for t in LADDER = (0, 1, 1/2, ..., 1/1024),
                  sum_k dloss(w + t p)/dt at t = 0,
                  g_k = sum_k (sigmoid(z) - y) [x, 1]             at w + p,
                  upper triangle of H_k = sum_k sigmoid'(z) [x, 1][x, 1]^T   at w + p]
       coordinator: with the sums over this round's contributors (N_r rows) add the penalty,
                    accept the full step if Armijo holds (F(w+p) <= F(w) + 1e-4 F'(0), up to
                    fixed-point noise), else the largest ladder step that satisfies it and
                    re-evaluate there next round (p = 0). At an accepted full step, the new
                    direction is p = -H^{-1} g (Cholesky; a small Levenberg ridge if H is
                    singular, e.g. l2 = 0 with collinear columns), kept within ``MAX_STEP`` per
                    coefficient (a trust region against steps off the data's scale: a longer
                    step becomes the Levenberg-Marquardt step -(H + mu I)^{-1} g of that size,
                    so nearly collinear columns do not spend the rounds along their near-null
                    direction). Stop when
                    max |p| <= ``tol``: the last, tiny step is applied and sent as the final model.
    3. coordinator -> bank_k : hlr.newton.rR with done = True (the final model)

Rounds: one aggregation per Newton iteration when the full step is accepted (the usual case),
two when it is not, however many halvings the step needs: the ladder prices all of them at once.
From w = 0 the shipped default-credit data needs 7 rounds, the stress cases of the tests 9-12 (bar: 15).
A one-shot round that fails (below) costs one extra round.

What each participant learns. A bank learns the pooled mean and scale of every feature, and per
round the base point w, the direction p (the pooled Newton direction, ``-H^{-1} g`` of all banks'
data) and the pooled objective F(w): the whole optimisation path of the pooled model, which it is
meant to get. The coordinator learns, per round, sums over the contributing banks (never one
bank's, under secure aggregation): the row count; the loss at the ladder points and its slope;
the pooled gradient ``X^T (sigmoid(z) - y)`` and Hessian ``X^T diag(sigmoid'(z)) X`` at w + p.
That is more than FedAvg reveals: in round 1 (w = p = 0, sigmoid' = 1/4) the Hessian is
``X^T X / 4`` and the gradient ``X^T (1/2 - y)`` of the pooled standardised data, i.e. the pooled
correlation matrix of the features, the pooled bad count, and the pooled feature sums among
defaulters (class-conditional means); later rounds give the same second moments reweighted by
the current model's ``p (1 - p)``. No row and no single bank's statistics. Under plain
aggregation (an explicit opt-out) the coordinator sees each bank's Gram matrix, which for a bank
with few rows says a great deal about those rows — keep secure aggregation on.

Ring bounds. Secure aggregation sums ``round(v * 2^frac_bits)`` in 64 bits, so each bank's entries
must stay below ``2^(63 - frac_bits) / banks`` (5.5e11 / banks at the default 24 bits). After the
agreed standardisation every column has pooled sum of squares N, so by Cauchy-Schwarz
``|g_j| <= N`` and ``|H_jl| <= N / 4`` however heavy the tails of the raw amounts (that is why the
solver works on the standardised scale, not on raw balances); losses are capped at
``LOSS_CAP`` per bank (only a rejected, absurd trial point comes near it) and the step cap bounds
the slope by ``MAX_STEP * (d + 1) * N``. A bank checks every entry against the bound before
submitting and stops with a :class:`~fedrisk.errors.CryptoError` naming itself if one would wrap.
Sums are kept in row units (not means) so that the 2^-24 fixed-point resolution costs at most
~1e-11 in the mean gradient.

Dropouts. Secure aggregation excludes a bank that misses a round from that round's sums (and the
standardisation agreement refuses to proceed without every bank). Every quantity the coordinator
uses in a round — row count, losses at t = 0 and along the ladder, slope, gradient, Hessian — comes
from the same contributors, so the step test and the Newton direction are correct for the banks
present in that round. Over the wire (issue 14) a bank that misses a round's sums, cannot be
reached within the secure-aggregation dropout timeout, or stops, is dropped for that round and
every later one (:class:`~fedrisk.algorithms.horizontal.dropouts.Roster`): the coordinator keeps
going while at least the threshold of banks (fixed from ALL banks, so it never drops) remain, and
stops with one line naming the dropped banks otherwise. Since Newton converges to the optimum of
whatever sums it is given, the final model is the pooled optimum of the banks still in at the end
(on the scaler all banks agreed). Each ``hlr.newton`` message also carries the previous round's
contributors, so the evaluation holder's ``metrics.json`` lists them per round. A dropped bank
that restarts may rejoin at a round boundary (coordinator -> bank ``hlr.rejoin``, kind aggregate:
the scaler, the bank count and the round; see the roster's docstring); the round it rejoins
cannot end the job as converged, and the final model is the optimum of the banks in at the end.
Not under differential privacy (below): a private run neither resumes nor takes a bank back.

One-shot rounds (``agg`` an :class:`~fedrisk.crypto.secagg_oneshot.OptimisticSessionAggregation`,
the ``horizontal.lr`` default for Newton under session secure aggregation). Both sides decide per
round from the broadcast ``p`` alone: a round with ``p != 0`` (every accepted Newton step, i.e. all
rounds but the first and those after a rejected step) sums one-shot, a round with ``p = 0`` runs
Bonawitz (self-mask, survivor list, reveal). Who sends what in a one-shot round::

    coordinator -> bank_k : hlr.newton.rR                 (model, as above)
    bank_k -> coordinator : hlr.stats.rR.sa.masked  enc(stats_k) + pairwise masks of index r   (masked)

— one message per bank instead of three (no ``.sa.unmask`` / ``.sa.reveal``): at 50 banks the
coordinator handles ``2n`` messages per round instead of ``4n``. The pairwise masks cancel only in
the sum of *every* roster member, so the coordinator learns exactly what a Bonawitz round without
dropouts gives it (the pooled sums) and no share of anything is ever revealed for that index.

*A dropout in a one-shot round.* The round yields no sum
(:class:`~fedrisk.crypto.secagg_oneshot.IncompleteRound`): the coordinator drops the silent banks,
records the round as ``incomplete`` (history and checkpoint), and sends the next round's model
with ``fallback`` set, at ``w' = w + REDO_STEP p`` (``REDO_STEP = 3/4``, not a ladder point) with
``p = 0``; the banks abandon the session and every later sum of the job is a Bonawitz sum with
in-round recovery (a new setup over the survivors). Why not redo the failed round's sums over the
survivors: the silent bank's vector may still arrive (it was late, not dead) — or a deviating
coordinator may only claim it never came — and then the one-shot round *does* open, to the sum over
all banks at the round's points; the survivors' sum at the same points would differ from it by
exactly that bank's statistics (its gradient, Hessian and losses). Each bank therefore checks, in
the fallback round, that ``p = 0`` and that ``w'`` is none of the points its failed round evaluated
(``w + t p`` for every ladder ``t``: losses; ``t = 1``: gradient and Hessian; ``t = 0``: slope)
and refuses otherwise (:func:`_check_fresh_point`). Every bank also refuses to sum twice at the same
``(w, p)`` (:func:`_check_new_round`), which Newton never asks for.

*What the coordinator can still learn about a dropped bank*, at worst (late vector): the sum over
all banks at round ``r``'s points and the survivors' sums at later, different points; their
difference is not the bank's statistics (the attack test measures it: far from them in round 3),
but it does reveal the bank's row count ``n_k`` (the first entry is the same at every point) and,
near convergence where ``p`` is small, approximations of its statistics that improve as ``p``
shrinks. That is the same exposure Bonawitz sums already have when a bank drops out between two
rounds (the sum over all at round ``r - 1`` and over the survivors at round ``r``, one step apart),
which is why a dropout is only allowed, not hidden; differential privacy is what bounds it.

Differential privacy (``privacy``, a :class:`~fedrisk.crypto.dp.PrivacyPlan`; ``[privacy]`` in the
spec): a noisy-Newton variant. *What it protects*: any single customer row of any bank, against
everyone who sees a released sum — the coordinator, and (through the model and the losses
broadcast) every other bank and whoever later receives the model. Secure aggregation hides each
*bank's* statistics from the coordinator but the pooled sums it opens still depend on every row
(round 1 gives the pooled correlation matrix and class-conditional means); DP bounds what those
sums, and the final model, say about one row. The two compose: secure aggregation keeps the
per-bank noise shares and statistics hidden, DP makes the opened sums safe to release.

*How.* The three standardisation sums are noised (see
:mod:`~fedrisk.algorithms.horizontal.standardisation`). Each bank clips every standardised row
``[x, 1]`` to L2 norm ``C`` (``privacy.clip``, default ``sqrt(d + 1)``: a typical row's norm) and
each row's log-loss to ``DP_LOSS_CLIP``; one row then changes the round vector
``[n, sum loss, g, upper(H)]`` by at most ``sqrt(1 + DP_LOSS_CLIP^2 + C^2 + C^4 / 16)`` in L2
(``|sigmoid - y| <= 1``, ``sigmoid' <= 1/4``, and the upper triangle of ``x x^T`` has L2 norm at
most ``|x|^2``). Every bank adds its share of the Gaussian noise (``1/t`` of the variance, ``t``
the secure-aggregation threshold) before masking. The coordinator takes exactly
``privacy_rounds`` full Newton steps ``w += -H^{-1} g`` on the noisy sums (no line search: the
ladder's losses would cost sensitivity for little; the step cap still applies), with the noisy
Hessian's eigenvalues floored at the noise matrix's spectral norm (``2 sigma sqrt(d + 1)``, so
no step follows a direction that only noise curved), and the
accountant composes ``3 + privacy_rounds`` Gaussian mechanisms (:func:`private_mechanisms`).
At epsilon = infinity the iteration is the pooled Newton on the clipped rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from fedrisk.algorithms.horizontal.aggregation import AggregateResult, Aggregation, PlainAggregation, prepare_round
from fedrisk.algorithms.horizontal.dropouts import agreed_roster, rejoin_scaler
from fedrisk.algorithms.horizontal.logistic import LogisticModel, sigmoid
from fedrisk.algorithms.horizontal.standardisation import agree_bank, agree_coordinator, fill_missing
from fedrisk.crypto.dp import BankNoise, PrivacyPlan, clip_rows, min_contributors, released_noise_std
from fedrisk.crypto.secagg_oneshot import IncompleteRound
from fedrisk.errors import CryptoError, DataError, ProtocolError
from fedrisk.transport import expect
from fedrisk.transport.channel import Channel

__all__ = ["NewtonConfig", "run_bank", "run_coordinator", "LADDER", "TAG_PREFIXES", "stats_length",
           "private_mechanisms", "dp_sensitivity", "DP_LOSS_CLIP"]

TAG_PREFIXES = ("hlr.",)

#: step sizes priced in every round (t = 0 first, then the full step, then halvings)
LADDER = (0.0, 1.0) + tuple(0.5 ** k for k in range(1, 11))
#: largest move of one standardised coefficient per round (a trust region)
MAX_STEP = 10.0
#: cap on a bank's summed loss: legitimate values are <= n_k log 2 after round 1
LOSS_CAP = 2.0 ** 32
_ARMIJO = 1e-4
#: after a failed one-shot round the next round re-evaluates at w + REDO_STEP * p: not a ladder point
REDO_STEP = 0.75
#: per-row log-loss cap in private runs (bounds the loss entry's sensitivity)
DP_LOSS_CLIP = 4.0


@dataclass(frozen=True)
class NewtonConfig:
    """Hyper-parameters of the Newton solver.

    Attributes
    ----------
    rounds : int
        Most aggregation rounds (the solver usually stops well before).
    l2 : float
        Multiplies ``0.5 * ||w||^2`` added to the mean log-loss (intercept unpenalised).
    tol : float
        Stop when the largest Newton step on the standardised scale is at most ``tol``.
    """

    rounds: int = 20
    l2: float = 1e-4
    tol: float = 1e-6
    #: Newton steps of a private run (fixed in advance: the accountant composes them all)
    privacy_rounds: int = 6
    #: banks' empty cells are filled with the POOLED mean of the observed values, agreed in the
    #: standardisation's sum (``missing = "mean"``; see :mod:`~fedrisk.algorithms.horizontal.standardisation`)
    pooled_mean: bool = False


def private_mechanisms(cfg: NewtonConfig) -> int:
    """Gaussian mechanisms a private run releases: the standardisation's sums and one per Newton step."""
    from fedrisk.algorithms.horizontal.standardisation import MECHANISMS

    return MECHANISMS + cfg.privacy_rounds


def dp_clip(d: int, clip: float | None) -> float:
    """Row-norm clip of the standardised ``[x, 1]`` rows (default ``sqrt(d + 1)``)."""
    return float(clip) if clip is not None else float(np.sqrt(d + 1))


def dp_sensitivity(d: int, clip: float | None) -> float:
    """L2 sensitivity of a private round vector ``[n, sum loss, g, upper(H)]`` to one row."""
    c = dp_clip(d, clip)
    return float(np.sqrt(1.0 + DP_LOSS_CLIP ** 2 + c ** 2 + c ** 4 / 16.0))


def dp_bank_statistics(Xc1: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """A private round's vector at ``w`` on clipped rows ``Xc1``: ``[n, sum clipped loss, g, upper(H)]``."""
    n, k = Xc1.shape
    z = Xc1 @ w
    loss = float(np.sum(np.minimum(np.logaddexp(0.0, z) - y * z, DP_LOSS_CLIP)))
    mu = sigmoid(z)
    g = Xc1.T @ (mu - y)
    H = (Xc1 * (mu * (1.0 - mu))[:, None]).T @ Xc1
    return np.concatenate([[n, loss], g, H[np.triu_indices(k)]])


def stats_length(d: int) -> int:
    """Length of a bank's per-round vector for ``d`` features."""
    k = d + 1
    return 1 + len(LADDER) + 1 + k + k * (k + 1) // 2


def bank_statistics(Xs1: np.ndarray, y: np.ndarray, w: np.ndarray, p: np.ndarray) -> np.ndarray:
    """One bank's round vector (see the module docstring); ``Xs1`` has the intercept column last."""
    n, k = Xs1.shape
    z0 = Xs1 @ w
    zp = Xs1 @ p
    losses = np.empty(len(LADDER))
    for i, t in enumerate(LADDER):
        z = z0 + t * zp
        losses[i] = min(float(np.sum(np.logaddexp(0.0, z) - y * z)), LOSS_CAP)
    slope = float((sigmoid(z0) - y) @ zp)
    z1 = z0 + zp
    mu = sigmoid(z1)
    g = Xs1.T @ (mu - y)
    H = (Xs1 * (mu * (1.0 - mu))[:, None]).T @ Xs1
    return np.concatenate([[n], losses, [slope], g, H[np.triu_indices(k)]])


def _check_ring(vec: np.ndarray, agg: Aggregation, banks: int, me: str, tag: str) -> None:
    """Refuse, before sending, a vector whose masked sum could wrap the 64-bit ring."""
    frac_bits = getattr(agg, "frac_bits", None)
    if frac_bits is None:
        return
    from fedrisk.crypto.ring64 import max_abs_value

    bound = max_abs_value(frac_bits, max(1, banks))
    worst = float(np.max(np.abs(vec)))
    if not np.isfinite(worst) or worst > bound:
        raise CryptoError(f"{me}: a statistic of {tag!r} is {worst:.3g}, beyond what {banks} banks can sum in the "
                          f"64-bit ring (|v| <= {bound:.3g} at {frac_bits} fractional bits); nothing was sent. "
                          f"Lower the fixed-point precision (frac_bits) or split the bank's rows")


def run_bank(channel: Channel, coordinator: str, X: np.ndarray, y: np.ndarray, feature_names: Sequence[str],
             cfg: NewtonConfig, aggregation: Aggregation | None = None,
             on_round: Callable[[int, LogisticModel], None] | None = None,
             privacy: PrivacyPlan | None = None, n_banks: int | None = None,
             rejoining: bool = False) -> LogisticModel:
    """A bank's side of Newton LR. Returns the final global model (identical at every bank).

    ``privacy``: the run's plan (the same at every party); ``n_banks`` sets the noise share
    (default: the channel's peers minus the coordinator). ``rejoining``: this bank was taken back
    mid-job; the scaler comes in ``hlr.rejoin`` (never under privacy: the coordinator refuses it).
    """
    agg = aggregation or PlainAggregation()
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    d = X.shape[1]
    noise = None
    if privacy is not None:
        nb = n_banks or max(1, len([p for p in channel.peers if p != coordinator]))
        noise = BankNoise(privacy, min_contributors(agg, nb))
    if rejoining:
        scaler = rejoin_scaler(channel, coordinator, d)
    else:
        scaler = agree_bank(channel, coordinator, X, feature_names, agg, noise=noise, pooled_mean=cfg.pooled_mean)
    mean, scale = scaler["mean"], scaler["scale"]
    X = fill_missing(X, mean)
    me, stag = channel.me, "hlr.scaler"
    banks = expect.integer(scaler, "banks", me, coordinator, stag, lo=1, hi=max(1, len(channel.peers)), default=1)
    Xs1 = np.column_stack([(X - mean) / scale, np.ones(len(y))])
    if noise is not None:
        Xs1 = clip_rows(Xs1, dp_clip(d, privacy.clip))
        sens = dp_sensitivity(d, privacy.clip)
    model = LogisticModel(list(feature_names), mean, scale, np.zeros(d), 0.0)
    r = expect.integer(scaler, "first_round", me, coordinator, stag, lo=1, default=1) - 1
    optimistic = noise is None and _optimistic(agg)
    last_one_shot = None  # (w, p) of this bank's latest one-shot round
    seen: set[bytes] = set()  # the (w, p) of every round this bank has summed at
    while True:
        r += 1
        rtag = f"hlr.newton.r{r}"
        msg = expect.mapping(channel.recv(coordinator, rtag), me, coordinator, rtag)
        w = expect.vector(msg, "w", d + 1, me, coordinator, rtag)
        p = expect.vector(msg, "p", d + 1, me, coordinator, rtag)
        msg = {**msg, "done": expect.flag(msg, "done", me, coordinator, rtag)}
        if expect.flag(msg, "fallback", me, coordinator, rtag, default=False):
            # a one-shot round failed: sum only at a point no earlier sum evaluated, and with recovery from now on
            _check_fresh_point(channel.me, r, w, p, last_one_shot)
            agg.abandon(channel)
            optimistic = False
        if not msg["done"]:
            _check_new_round(channel.me, r, w, p, seen)
        model.coef, model.intercept = w[:d].copy(), float(w[d])
        model.record_round(r, msg)
        if on_round is not None:
            on_round(r, model)
        if msg["done"]:
            return model
        tag = f"hlr.stats.r{r}"
        prepare_round(agg, channel, coordinator, tag)
        if noise is not None:
            vec = noise.add(dp_bank_statistics(Xs1, y, w + p), sens)
        else:
            vec = bank_statistics(Xs1, y, w, p)
        _check_ring(vec, agg, banks, channel.me, tag)
        if optimistic and bool(np.any(p != 0.0)):
            last_one_shot = (w, p)
            agg.submit(channel, coordinator, tag, vec, one_shot=True)
        else:
            agg.submit(channel, coordinator, tag, vec)


def _optimistic(agg: Aggregation) -> bool:
    """Whether ``agg`` can run one-shot sums (see "One-shot rounds" in the module docstring)."""
    from fedrisk.crypto.secagg_oneshot import OptimisticSessionAggregation

    return isinstance(agg, OptimisticSessionAggregation)


def _check_new_round(me: str, r: int, w: np.ndarray, p: np.ndarray, seen: set[bytes]) -> None:
    """Refuse to sum twice at the same ``(w, p)``: Newton never repeats one (each round moves ``w`` or
    ``p``), so a repeat can only be a coordinator asking for the same statistics over another set
    of banks, whose difference with the first sum would be one bank's."""
    key = w.tobytes() + p.tobytes()
    if key in seen:
        raise ProtocolError(f"{me}: round {r}: the coordinator asks for statistics at a base point and direction this "
                            f"bank already summed at; refusing (two sums over different banks at one point differ "
                            f"by one bank's statistics)")
    seen.add(key)


def _check_fresh_point(me: str, r: int, w: np.ndarray, p: np.ndarray, last: tuple | None) -> None:
    """A bank's own check of a fallback round: it re-evaluates (``p = 0``) at a point its failed
    one-shot round did not evaluate, so that round's sum (if the coordinator ever completes it
    with a late vector) and this round's survivors' sum never cover the same quantity."""
    stale = np.any(p != 0.0)
    if last is not None:
        w0, p0 = last
        stale = stale or any(np.array_equal(w, w0 + t * p0) for t in LADDER)
    if stale:
        raise ProtocolError(f"{me}: round {r}: the coordinator asks to redo a failed one-shot sum at a point that "
                            f"sum already evaluated; refusing (the difference of the two sums would be one bank's "
                            f"statistics)")


def newton_direction(g: np.ndarray, H: np.ndarray, active: np.ndarray) -> np.ndarray:
    """``-H^{-1} g`` on the active coordinates (Cholesky; a growing ridge when H is not positive definite)."""
    p = np.zeros_like(g)
    Ha, ga = H[np.ix_(active, active)], g[active]
    ridge = 0.0
    base = max(float(np.max(np.abs(np.diag(Ha)))), 1e-300)
    for _ in range(30):
        try:
            L = np.linalg.cholesky(Ha + ridge * np.eye(len(ga)))
            p[active] = -np.linalg.solve(L.T, np.linalg.solve(L, ga))
            break
        except np.linalg.LinAlgError:
            ridge = base * 1e-12 if ridge == 0.0 else ridge * 10.0
    else:  # pragma: no cover - a Hessian with NaNs; the bank-side checks make this unreachable
        raise ProtocolError("the aggregated Hessian is not finite; a bank sent corrupt statistics")
    big = float(np.max(np.abs(p))) if p.size else 0.0
    if big > MAX_STEP:
        p[active] = _trust_region_step(Ha, ga)
    return p


def _trust_region_step(H: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``-(H + mu I)^{-1} g`` with the smallest ``mu >= 0`` that keeps every entry within ``MAX_STEP``.

    Scaling the Newton step down to the cap keeps its *direction*, and with nearly collinear
    columns (``x2 = x1 + 1e-7 noise``, l2 = 0) that direction is almost all along the Hessian's
    near-null eigenvector: every round moved the two coefficients by +-10 against each other and
    the loss hardly at all (20 rounds ended at log-loss 0.678 against the pooled optimum's 0.525,
    predictions up to 0.45 apart). The Levenberg-Marquardt step of the same size goes where the
    curvature says the loss falls (a trust region of radius ``MAX_STEP``); near the optimum the
    Newton step is small and this is never used, so the fixed point is the pooled optimum.
    """
    lam, V = np.linalg.eigh(H)
    gt = V.T @ g
    floor = max(0.0, -float(lam.min()))

    def step(mu: float) -> np.ndarray:
        return -(V @ (gt / np.maximum(lam + mu, 1e-300)))

    # bisection on log(mu - floor): the step's max-norm falls as mu grows; at t_hi even its
    # 2-norm is within MAX_STEP
    t_hi = max(float(np.linalg.norm(g)) / MAX_STEP, 1e-300)
    t_lo = t_hi * 1e-30
    for _ in range(200):
        t = np.sqrt(t_lo * t_hi)
        if np.max(np.abs(step(floor + t))) > MAX_STEP:
            t_lo = t
        else:
            t_hi = t
        if t_hi <= t_lo * (1 + 1e-9):
            break
    hi = floor + t_hi
    p = step(hi)
    big = float(np.max(np.abs(p)))
    return p * (MAX_STEP / big) if big > MAX_STEP else p


def run_coordinator(channel: Channel, banks: Sequence[str], cfg: NewtonConfig, aggregation: Aggregation | None = None,
                    on_round: Callable[[int, dict], None] | None = None,
                    start: tuple[int, np.ndarray] | None = None,
                    checkpoint: Callable[[int, dict], None] | None = None,
                    log: Callable[[str], None] | None = None,
                    privacy: PrivacyPlan | None = None,
                    admit: Callable[[str, int], bool] | None = None) -> LogisticModel:
    """The coordinator's side: agree the scaler, then take damped Newton steps on aggregated sums.

    ``admit(bank, round)`` (from the runtime) says whether a dropped bank asked to rejoin and may:
    it is taken back at that round's start (:meth:`~fedrisk.algorithms.horizontal.dropouts.Roster.readmit`).

    ``start = (round, w)`` resumes from a checkpoint written by ``checkpoint(round, state)``; the
    resumed job re-evaluates the gradient and Hessian at ``w`` in its first round. ``log`` gets
    one line per bank that drops out; the returned model's ``history`` lists each round's
    contributors and ``membership`` the dropped banks.
    """
    banks = list(banks)
    if privacy is not None and start is not None:
        raise ProtocolError("a private run cannot resume from a checkpoint: the repeated rounds would spend the "
                            "privacy budget again; start the job afresh")
    first, w, resumed = 1, None, {}
    if start is not None:  # (round, state written by checkpoint) or, from older checkpoints, (round, w)
        resumed = start[1] if isinstance(start[1], dict) else {"w": start[1]}
        first, w = start[0] + 1, np.asarray(resumed["w"], dtype=np.float64)
    def std(a: Aggregation):  # the noise an opened sum of every bank carries (each adds 1/t of it)
        return None if privacy is None else (lambda sens: released_noise_std(
            privacy.noise_multiplier, sens, len(banks), min_contributors(a, len(banks))))
    agg, roster, st = agreed_roster(
        channel, banks, aggregation or PlainAggregation(),
        lambda a: agree_coordinator(channel, banks, a, extra={"first_round": first, "banks": len(banks)},
                                    noise_std=std(a), pooled_mean=cfg.pooled_mean), log=log)
    names, d = st.feature_names, len(st.feature_names)
    k = d + 1
    if w is None:
        w = np.zeros(k)
    elif w.shape != (k,):
        raise ProtocolError(f"checkpoint has {w.shape[0] - 1} features but the banks have {d}; delete the checkpoint")
    constant = set(st.constant_features)
    active = np.array([j for j in range(d) if names[j] not in constant] + [d])
    w[[j for j in range(d) if names[j] in constant]] = 0.0
    pen = np.ones(k)
    pen[d] = 0.0  # the intercept is not penalised
    iu = np.triu_indices(k)
    ladder = np.asarray(LADDER)
    n_l = len(LADDER)
    p = np.zeros(k)
    history: list[dict] = []
    last_loss = None
    last_contributors = None
    r, done = first, False
    optimistic = privacy is None and _optimistic(agg)
    fallback = force_changed = False  # fallback: a one-shot round failed (sent once with the next model)

    def end_round(rec: dict) -> None:
        """Keep round ``r``'s record; checkpoint the state the next round starts from."""
        history.append(rec)
        if checkpoint is not None:
            checkpoint(r, {"w": w, "history": history, "p": p, "done": done, "last_loss": last_loss,
                           "last_contributors": last_contributors})
        if on_round is not None:
            on_round(r, rec)
    if privacy is not None:  # (no rejoin either: admit is not consulted, the noise shares assume the roster)
        w, history = _private_newton(channel, agg, roster, cfg, d, active, pen, on_round, checkpoint, privacy)
        r, done = cfg.privacy_rounds + 1, True
        last_loss, last_contributors = history[-1]["loss"], history[-1]["contributors"]
    elif "p" in resumed:  # the whole state: the resumed job takes exactly the uninterrupted job's steps
        p, history, done = np.asarray(resumed["p"], dtype=np.float64), list(resumed["history"]), bool(resumed["done"])
        last_loss, last_contributors = resumed["last_loss"], resumed["last_contributors"]
    while True:
        if not done and r > cfg.rounds and log is not None:
            # the round budget ran out before the step fell below tol: say so, as scikit-learn's ConvergenceWarning does
            step = history[-1].get("newton_step") if history else None
            log(f"Newton stopped after {cfg.rounds} rounds without converging (last step "
                f"{'n/a' if step is None else f'{step:.3g}'} > tol {cfg.tol:g}): raise task.rounds, or if the "
                "coefficients keep growing the pooled data may be separable (or l2 = 0 with collinear columns): "
                "set task.l2 > 0")
        done = done or r > cfg.rounds
        if not done:
            roster.readmit(r, admit, {"mean": st.mean, "scale": st.scale, "banks": len(banks)})
        roster.broadcast(r, f"hlr.newton.r{r}", {"w": w, "p": p, "done": done, "loss": last_loss,
                                                 "contributors": last_contributors,
                                                 **({"fallback": True} if fallback else {})}, kind="model")
        if done:
            break
        roster.require(r)
        if fallback:
            fallback, optimistic = False, False  # Bonawitz sums (in-round recovery) from here on
        one_shot = optimistic and bool(np.any(p != 0.0))
        try:
            if one_shot:
                res = agg.collect(channel, roster.active, f"hlr.stats.r{r}", stats_length(d), one_shot=True)
            else:
                res = agg.collect(channel, roster.active, f"hlr.stats.r{r}", stats_length(d))
        except IncompleteRound as e:
            # no sum this round; the next one re-evaluates (p = 0) at w + REDO_STEP p, a point this
            # round did not evaluate (see "One-shot rounds" in the module docstring)
            last_contributors = roster.record(r, AggregateResult(np.zeros(0), e.contributors))
            w, p = w + REDO_STEP * p, np.zeros(k)
            fallback = force_changed = True
            if log is not None:
                log(f"round {r}: no sum (one-shot round, no vector from {list(e.missing)}); round {r + 1} "
                    f"re-evaluates at a point this round did not, with in-round dropout recovery from then on")
            end_round({"round": r, "banks": len(e.contributors), "contributors": list(e.contributors),
                       "incomplete": list(e.missing)})
            r += 1
            continue
        # a bank lost this round changes the objective itself: nothing measured on the old one may
        # end the job, so a round that sees new contributors never declares convergence
        changed = force_changed or (last_contributors is not None and set(res.contributors) != set(last_contributors))
        force_changed = False
        last_contributors = roster.record(r, res)
        tot = res.total
        n_round = float(np.rint(tot[0]))
        if n_round <= 0:
            raise ProtocolError(f"round {r}: the aggregate row count is {n_round}; no bank contributed")
        trial = w[None, :] + ladder[:, None] * p[None, :]
        F = tot[1:1 + n_l] / n_round + 0.5 * cfg.l2 * np.sum((trial * pen) ** 2, axis=1)
        slope = tot[1 + n_l] / n_round + cfg.l2 * float(np.sum(w * pen * p))
        g = tot[2 + n_l:2 + n_l + k] / n_round
        Hu = tot[2 + n_l + k:] / n_round
        slack = 1e-10 * (1.0 + abs(F[0])) + 1e-6 / n_round  # fixed-point noise of the loss sums
        ok = F <= F[0] + _ARMIJO * ladder * min(slope, 0.0) + slack
        moved = bool(np.any(p != 0.0))
        rec: dict = {"round": r, "banks": len(res.contributors), "rows": int(n_round),
                     "contributors": list(res.contributors)}
        if start is None and r == first and not np.any(w):
            _refuse_one_class(n_round, g[d])
        if not moved or ok[1]:
            # the gradient and Hessian were evaluated at the accepted point w + p
            w = w + p
            last_loss = float(F[1])
            H = np.zeros((k, k))
            H[iu] = Hu
            H = H + np.triu(H, 1).T + cfg.l2 * np.diag(pen)
            grad = g + cfg.l2 * pen * w
            p = newton_direction(grad, H, active)
            step = float(np.max(np.abs(p)))
            rec.update(loss=last_loss, step_size=1.0, grad_norm=float(np.max(np.abs(grad[active]))), newton_step=step)
            if step <= cfg.tol and not changed:
                w = w + p  # the last step is below tol: take it without another round
                p = np.zeros(k)
                done = True
        else:
            good = np.flatnonzero(ok[2:])
            i = 2 + int(good[0]) if good.size else int(np.argmin(F))
            t = float(ladder[i])
            w = w + t * p
            last_loss = float(F[i])
            p = np.zeros(k)
            rec.update(loss=last_loss, step_size=t, grad_norm=None, newton_step=None)
            if t == 0.0 and not changed:
                done = True  # no step decreases the objective: w is optimal up to the ring's precision
        end_round(rec)
        r += 1
    roster.finish()
    model = LogisticModel(names, st.mean, st.scale, w[:d].copy(), float(w[d]), history, sorted(constant))
    model.membership = roster.summary()
    if privacy is not None:
        model.privacy = privacy.summary()
    return model


def _refuse_one_class(n_rows: float, g_intercept: float) -> None:
    """Stop when the pooled rows hold one class only (no bank has a default, or every row is one).

    At ``w = 0`` the intercept's mean gradient is ``1/2 - (pooled bad rate)``, so the coordinator
    reads the pooled bad count off the first round's sums (it learns it anyway: see "What each
    participant learns"). Without this a job whose banks exported the wrong label column, or
    filtered out their defaults, would run all its rounds towards an intercept of minus infinity
    and write that model as if it were one.
    """
    bads = n_rows * (0.5 - g_intercept)
    if bads < 0.5 or bads > n_rows - 0.5:
        which = "no row is a default (label 1)" if bads < 0.5 else "every row is a default (label 1)"
        raise DataError(f"the pooled training rows hold only one class: {which} at any bank; check each bank's "
                        "label column and its positive = ... coding (both defaults and non-defaults are needed)")


def _private_newton(channel: Channel, agg: Aggregation, roster, cfg: NewtonConfig, d: int, active: np.ndarray,
                    pen: np.ndarray, on_round, checkpoint, privacy: PrivacyPlan) -> tuple[np.ndarray, list[dict]]:
    """``privacy_rounds`` full Newton steps on noisy sums (see the module docstring); returns ``(w, history)``."""
    k = d + 1
    iu = np.triu_indices(k)
    w = np.zeros(k)
    sens = dp_sensitivity(d, privacy.clip)
    t = min_contributors(agg, len(roster.active))
    history: list[dict] = []
    last_loss = None
    last_contributors = None
    for r in range(1, cfg.privacy_rounds + 1):
        roster.broadcast(r, f"hlr.newton.r{r}", {"w": w, "p": np.zeros(k), "done": False, "loss": last_loss,
                                                 "contributors": last_contributors}, kind="model")
        roster.require(r)
        res = agg.collect(channel, roster.active, f"hlr.stats.r{r}", 2 + k + k * (k + 1) // 2)
        last_contributors = roster.record(r, res)
        tot = res.total
        n_round = max(float(tot[0]), 1.0)
        last_loss = float(tot[1] / n_round + 0.5 * cfg.l2 * np.sum((w * pen) ** 2))
        H = np.zeros((k, k))
        H[iu] = tot[2 + k:] / n_round
        H = H + np.triu(H, 1).T
        # the noise matrix has spectral norm about 2 sigma sqrt(k): eigenvalues below that are noise,
        # and a Newton step along them would be one too (the data's Hessian is positive semi-definite)
        sigma = privacy.noise_multiplier * sens * np.sqrt(len(res.contributors) / t)
        lam, V = np.linalg.eigh(H)
        H = (V * np.maximum(lam, 2.0 * sigma * np.sqrt(k) / n_round)) @ V.T + cfg.l2 * np.diag(pen)
        grad = tot[2:2 + k] / n_round + cfg.l2 * pen * w
        p = newton_direction(grad, H, active)
        w = w + p
        rec = {"round": r, "banks": len(res.contributors), "rows": int(round(n_round)), "loss": last_loss,
               "contributors": list(res.contributors), "step_size": 1.0,
               "grad_norm": float(np.max(np.abs(grad[active]))), "newton_step": float(np.max(np.abs(p)))}
        history.append(rec)
        if checkpoint is not None:
            checkpoint(r, {"w": w, "history": history})
        if on_round is not None:
            on_round(r, rec)
    return w, history
