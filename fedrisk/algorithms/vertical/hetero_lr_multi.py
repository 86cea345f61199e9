"""Exact vertical logistic regression with two or more feature holders: a Fourier sigmoid on scores
masked modulo its period, evaluated under one feature holder's CKKS key.

Parties: the label holder ``G`` (features, intercept column, labels ``y``) and feature holders
``H_1..H_m``, ``m >= 2`` (``H_1`` is the first one listed in the job). Everything but the sigmoid
round is :mod:`fedrisk.algorithms.vertical.hetero_lr`'s exact solver: the same keys and encrypted
matrices, the same CKKS cross-products (paired rows), the same full-batch L-BFGS
(:func:`~fedrisk.algorithms.vertical.hetero_lr.lbfgs`, each party's preconditioner block
``X_P^T X_P / (4n) + l2``), the same tolerance schedule and stopping rule. The result is the
pooled penalised maximum-likelihood estimate, as with one feature holder.

Why a different sigmoid than the one-holder solver: there, ``G`` expands ``t -> sigma(u_G + t)``
per row because it knows every partial score but ``H``'s. With two feature holders nobody knows
``u_G + u_h'``, and adding two holders' encryptions under different keys would need multi-key
CKKS. Instead (:mod:`fedrisk.algorithms.vertical.fourier_sigmoid`)::

    sigma(z) = 1/2 + z / (2P) + sum_{k<=K} b_k sin(k w z) (+ error <= tol),   w = pi / P,

for ``|z| <= 2P - ln(4 / tol)``. The line is linear, so each party keeps its part ``u_P / (2P)``
as its own share; the sine terms depend on ``z`` only **modulo 2P**, so the feature holders can
combine their scores under masks drawn uniformly modulo ``2P``, which hide perfectly. ``H_j``
(``j >= 2``) sends ``(u_j + r_j) mod 2P`` to ``H_1`` and ``r_j`` to ``G``; ``H_1`` holds
``v = u_1 + sum_j (u_j + r_j) mod 2P`` and ``G`` holds ``a = u_G - sum_j r_j mod 2P``, so
``z = a + v (mod 2P)``: the one-holder shape again, with depth 1. ``H_1`` encrypts
``e^{i k w v_i}`` (``k = 1..K``, one complex slot per term and row, one message per 4096 rows);
``G`` multiplies term ``k`` by the per-row plaintext ``-i b_k e^{i k w a_i}`` -- the real part of
the product is ``b_k sin(k w z_i)`` --, sums, adds a fresh public-key encryption of a complex
Gaussian mask ``m_i`` (std ``mask_std`` per component, ChaCha20) and returns the ciphertext;
``H_1`` decrypts the real part. Residual shares, summing to ``sigma(z) - y``::

    G:    1/2 - y + u_G / (2P) - Re m        H_1:  (decrypted real part) + u_1 / (2P)
    H_j:  u_j / (2P)

Scores modulo ``2P`` travel as 48-bit fractions of the period (masks uniform on the 2^48 grid from
``os.urandom``: the masked values are exactly uniform). Every partial score is clipped to
``+-64`` (:data:`~fedrisk.algorithms.vertical.hetero_lr.MAX_RANGE`, as with one holder) and to
what the sigmoid needs, in the line and in the sine terms alike: each holder announces an
interval ``[c_h - B_h, c_h + B_h]`` holding its scores (:func:`~fedrisk.algorithms.vertical.
hetero_lr.range_interval`, as with one holder; clipped to it), ``G`` clips ``u_G`` where the
sigmoid is saturated whatever the holders' scores (:func:`choose_period`), bounds ``z`` by
``[min u_G + sum_h (c_h - B_h), max u_G + sum_h (c_h + B_h)]`` and takes ``P = (max(Z, 4) +
ln(4/tol)) / 2`` on a 2^(1/8) grid for ``Z`` the larger end in absolute value; ``K`` follows from
``P`` and the tolerance, measured (default credit at the optimum: ``z`` in [-29, 5], ``P`` ~ 19,
27 terms at 1e-6).

Cost against one feature holder: a sine term needs a whole complex slot (``cos`` and ``sin`` of
``k w v``) where a Chebyshev term needs half of one, and ``P`` follows the whole score's range,
not one holder's, so ``H_1`` encrypts ~1.5-2x the vectors; the cross-products grow from 2 to
``m (m + 1)`` per iteration (relays add them up: each party still decrypts one result per
iteration). Measured on default credit (24,000 training rows, in memory, CPU-s of all parties):
one holder 18 iterations, 9.3 CPU-s, 144 MB; two holders 22 iterations, 26.0 CPU-s, 342 MB;
three holders 21 iterations, 31.4 CPU-s, 409 MB; coefficients within 5e-5 of pooled in all three.

Message flow (tags start with ``vlr.``; setup ``vlr.key``/``vlr.matrix`` between every pair, as in
``hetero_lr``), iteration ``t``::

    H_h -> G    vlr.b.<t>        aggregate   [c_h, B_h]: range_interval of u_h (as with one holder)
    G -> H_h    vlr.p.<t>        aggregate   [P, K]: half-period and number of sine terms
    H_j -> H_1  vlr.m.<t>        masked      (u_j + r_j) mod 2P per row, 48-bit fractions (j >= 2)
    H_j -> G    vlr.o.<t>        masked      r_j per row: uniform 48-bit fractions (j >= 2)
    H_1 -> G    vlr.t.<t>.<c>    ciphertext  rows 4096 c ..: Enc_H1(e^{i k w v}), k = 1..K
    G -> H_1    vlr.s.<t>.<c>    ciphertext  rows 4096 c ..: Enc_H1(sum_k b_k sin(k w z) + m  (+ i garbage))
    P -> R(Q)   vlr.x.<t>.<i>    ciphertext  Enc_Q(X_Q^T s_P) + zero-sum flood, for every receiver Q = party i
                                             (index in [G, H_1, ..]) to Q's relay R(Q) = H_1 for G, G for a holder
    R(Q) -> Q   vlr.x.<t>        ciphertext  Enc_Q(X_Q^T sum_{P != Q} s_P): the parts added under Q's key, so Q
                                             decrypts one sum (its own gradient), never one peer's part
    H_h -> G -> H_h  vlr.d.<t>, vlr.c.<t>  aggregate  L-BFGS partial scalars (stop test; compact-form
                                 Gram entries, 5 + 4 x memory) to G, their sums back (a star: a holder
                                 sees only totals)

What each party learns
----------------------
* Label holder ``G``: the ``r_j`` (uniform, independent of everything: nothing), ciphertexts under
  ``H_1``'s key, cross-product results (its own gradient, hence ``X_G^T sigma(z)``: ``1 +
  #features`` functionals per iteration, as with one holder), each holder's interval (``min_i
  u_h,i`` and ``max_i u_h,i`` to within about ``B_h / 4`` per iteration, as with one holder),
  every holder's partial L-BFGS scalars (``1 + 5 + 4 x memory`` per holder per iteration: its
  step's max-norm and the compact form's Gram entries, as with one holder) and the final scores (``sum_h u_h`` of every scored
  row). Never a per-row value of a feature holder.
* First feature holder ``H_1``: ``(u_j + r_j) mod 2P`` for every other holder -- exactly uniform
  and independent of ``u_j`` --; per row and iteration ``sum_k b_k sin(k w z_i) + Re m_i`` and, in
  the imaginary part, ``-sum_k b_k cos(k w z_i) + Im m_i`` (two bounded functions of the joint
  score, each under an independent Gaussian mask of std 2^10: at most ``v^2 / (2 * 2^20)`` nats
  about a value of size ``v``); ``P`` and ``K`` (``P`` reveals the larger end of ``G``'s bound on
  ``|z|`` to ~9 %);
  its own exact gradient (``#features`` functionals of the labels and of the other parties'
  scores per iteration); the L-BFGS totals.
* Other feature holders ``H_j``: ``P`` and ``K``, cross-product results (their own gradients) and
  the L-BFGS totals. Nothing per row.
* Ciphertexts are under the receiver's peer's key or come back re-randomised, as in ``hetero_lr``.
  A relay only adds ciphertexts under another party's key. Why the relay: each party's share
  alone is not a gradient -- ``H_j``'s is ``u_j / (2P)`` -- so decrypting ``X_Q^T s_P`` part by part
  would give ``G`` the functionals ``X_G^T u_j`` of every holder's scores and a third holder a
  Gaussian-masked view of ``H_1``'s; one sum per receiver leaves exactly its own gradient
  (``tests/algorithms/vertical/test_hetero_lr_multi.py`` records what each party decrypts).

Security model: semi-honest, no collusion. **``G`` and ``H_1`` together recover every ``u_j mod
2P``** (``r_j`` plus the masked value) and hence ``u_j`` itself when ``|u_j| < P``; ``G`` with any
``H_j`` learns nothing more about the other holders than ``G`` alone. Any coalition with ``G``
learns the coalition's own data and the final scores, as with one holder.

Reproducibility: masks cancel exactly (the modular ones in integer arithmetic, the Gaussian ones
because ``G`` keeps them as its share) and the discrete choices (intervals, ``P``, ``K``, tolerance,
stopping iteration) sit on coarse grids, so two runs differ only by the intrinsic CKKS error, as
with one holder (each party's local gradient half uses the values its encrypted matrix holds, so
the Gaussian masks cancel against the cross-products exactly); measured 5e-10 on the coefficients
of the three-party test, which asserts 1e-8.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from fedrisk.algorithms.vertical import fourier_sigmoid as fs
from fedrisk.algorithms.vertical.hetero_lr import (_JOINT_BOUND, MAX_RANGE, HeteroLRConfig, _valid_interval, decrypt_cross, exact_setup,
                                                   lbfgs, range_interval)
from fedrisk.crypto.ckks import DEFAULT_PARAMS, CkksOwner, CkksPeer
from fedrisk.errors import CryptoError, ProtocolError
from fedrisk.transport.channel import Channel

__all__ = ["multi_exact_loop", "choose_period"]


def choose_period(u_g: np.ndarray, intervals: list[tuple[float, float]], tol: float) -> tuple[float, int, np.ndarray]:
    """The label holder's choice of ``(P, K)``, and its partial scores clipped for the sigmoid.

    ``intervals`` are the holders' announced ``(centre, B)``: their partial scores sum to within
    ``[S_lo, S_hi]``. Clipping ``u_G`` to ``[-(S_hi + L), L - S_lo]`` (``L`` = :func:`~fedrisk.
    algorithms.vertical.fourier_sigmoid.margin`) moves no sigmoid by more than ``tol / 4``: a row
    clipped from below has ``z`` below ``-L`` before and after. It bounds ``z`` by ``[min u_G +
    S_lo, max u_G + S_hi]`` with far-out label-holder scores cut back (default credit: one
    row's ``u_G`` of -28 would otherwise set ``P``): 25 % fewer terms there than a symmetric bound
    ``max|u_G| + sum_h B_h``.
    """
    L = fs.margin(tol)
    s_lo = sum(max(m - B, -MAX_RANGE) for m, B in intervals)  # holders clip at +-64 too
    s_hi = sum(min(m + B, MAX_RANGE) for m, B in intervals)
    u_g = np.clip(u_g, max(-(s_hi + L), -MAX_RANGE), min(L - s_lo, MAX_RANGE))
    lo = float(np.min(u_g, initial=0.0)) + s_lo
    hi = float(np.max(u_g, initial=0.0)) + s_hi
    Z = max(-lo, hi, 0.0)
    P = fs.half_period(Z, tol)
    if fs.valid_bound(P, tol) < Z:  # only with seven or more holders whose scores reach the clip
        raise ProtocolError(f"the joint score may reach {Z:.0f} logits, beyond the largest Fourier sigmoid "
                            f"({fs.valid_bound(P, tol):.0f}); use fewer feature holders or solver = 'surrogate'")
    return P, fs.terms(P, tol), u_g


def _fractions(me: str, got: Any, tag: str, frm: str, n: int) -> np.ndarray:
    if not isinstance(got, np.ndarray) or got.dtype != np.uint64 or got.shape != (n,) \
            or np.any(got >> np.uint64(fs.FRACTION_BITS)):
        raise ProtocolError(f"{me}: {tag} from {frm!r} should be {n} 48-bit fractions (uint64)")
    return got


def multi_exact_loop(channel: Channel, me: str, lh: str, fhs: list[str], X: np.ndarray, yv: np.ndarray | None,
                     cfg: HeteroLRConfig, owner: CkksOwner, peers: dict[str, CkksPeer], clock,
                     on_epoch, start: dict[str, Any] | None = None,
                     checkpoint: Callable[[int, dict[str, Any]], None] | None = None, *,
                     X_enc: np.ndarray | None = None) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Every role of the exact solver with ``len(fhs) >= 2`` feature holders; returns this party's
    weights and the iteration history (see the module docstring for the protocol).

    ``X_enc``: the values this party's encrypted matrix holds; the local half of the gradient uses
    them so the masked shares cancel exactly against the peers' cross-products (default: ``X``)."""
    is_lh, h1 = me == lh, fhs[0]
    XT = (X if X_enc is None else X_enc).T
    others = [p for p in [lh, *fhs] if p != me]
    order = {p: i for i, p in enumerate([lh, *fhs])}  # cross-product parts are tagged by receiver index
    n, k = X.shape
    chunks, allrows, pen, Minv, sc = exact_setup(X, cfg, is_lh)
    S = DEFAULT_PARAMS.slots
    spans = [(lo, min(lo + S, n)) for lo in range(0, n, S)]

    def joint(tag: str, v: np.ndarray) -> np.ndarray:
        """Sum over all parties of partial scalars: holders send theirs to G, G returns the total."""
        v = np.atleast_1d(np.asarray(v, dtype=np.float64))

        def check(got: Any, frm: str) -> np.ndarray:
            if not isinstance(got, np.ndarray) or got.dtype != np.float64 or got.shape != v.shape \
                    or not np.all(np.abs(got) < _JOINT_BOUND):
                raise ProtocolError(f"{me}: {tag} from {frm!r} should be {v.size} finite float64 values "
                                    f"below {_JOINT_BOUND:.0e} in size")
            return got

        if not is_lh:
            channel.send(lh, tag, v, kind="aggregate")
            return check(channel.recv(lh, tag), lh)
        total = v + sum(check(channel.recv(h, tag), h) for h in fhs)
        channel.broadcast(fhs, tag, total, kind="aggregate")
        return total

    def period(it: int, u: np.ndarray, tol: float) -> tuple[float, int, np.ndarray]:
        """Agree on (P, K): holders announce the interval of their scores, G chooses. Returns the
        partial scores clipped to what the sigmoid sees (the interval at a holder, see
        :func:`choose_period` at G)."""
        tb, tp = f"vlr.b.{it}", f"vlr.p.{it}"
        if is_lh:
            intervals = []
            for h in fhs:
                b = channel.recv(h, tb)
                ok = isinstance(b, np.ndarray) and b.dtype == np.float64 and b.shape == (2,)
                if not ok or not _valid_interval(float(b[0]), float(b[1])):
                    raise ProtocolError(f"{me}: {tb} from {h!r} is not an agreed range interval")
                intervals.append((float(b[0]), float(b[1])))
            P, K, u = choose_period(u, intervals, tol)
            channel.broadcast(fhs, tp, np.array([P, float(K)]), kind="aggregate")
            return P, K, u
        c, B = range_interval(float(u.min()), float(u.max())) if n else (0.0, 0.25)
        channel.send(lh, tb, np.array([c, B]), kind="aggregate")
        got = channel.recv(lh, tp)
        ok = isinstance(got, np.ndarray) and got.dtype == np.float64 and got.shape == (2,) and bool(np.all(np.isfinite(got)))
        P, K = (float(got[0]), float(got[1])) if ok else (0.0, 0.0)
        if not ok or not fs.on_grid(P) or K != int(K) or not 1 <= K <= fs.MAX_TERMS:
            raise ProtocolError(f"{me}: {tp} from {lh!r} is not an agreed half-period and term count")
        return P, int(K), np.clip(u, c - B, c + B)

    def gradient(it: int, w: np.ndarray, tol: float) -> np.ndarray:
        t0 = time.perf_counter()
        P, K, u = period(it, np.clip(X @ w, -MAX_RANGE, MAX_RANGE), tol)
        q = fs.to_fraction(u, P)
        t0 = clock.add("sigmoid", t0)
        share = u / (2.0 * P)
        if is_lh:
            a = q
            for h in fhs[1:]:
                a = fs.sub(a, _fractions(me, channel.recv(h, f"vlr.o.{it}"), f"vlr.o.{it}", h, n))
            t0 = clock.add("network", t0)
            b = (-1j * fs.sine_coefficients(P)[:K])[:, None]  # per-row phases built block by block (K x 4096)
            share += 0.5 - yv
            for c, (lo, hi) in enumerate(spans):  # one message per 4096 rows, pipelined with H_1's encryption
                cts = channel.recv(h1, f"vlr.t.{it}.{c}")
                t0 = clock.add("network", t0)
                if not isinstance(cts, list) or len(cts) != K or not all(isinstance(b, bytes) for b in cts):
                    raise ProtocolError(f"{me}: vlr.t.{it}.{c} from {h1!r} should hold {K} ciphertexts")
                try:
                    out, mask = peers[h1].inner_products([[ct] for ct in cts], b * fs.phases(a[lo:hi], K),
                                                         np.zeros(hi - lo), cfg.mask_std)
                except CryptoError as e:
                    raise ProtocolError(f"{me}: vlr.t.{it}.{c} from {h1!r} refused: {e}") from None
                t0 = clock.add("sigmoid", t0)
                channel.send(h1, f"vlr.s.{it}.{c}", out, kind="ciphertext")
                share[lo:hi] -= mask
        elif me == h1:
            v = q
            for h in fhs[1:]:
                v = fs.add(v, _fractions(me, channel.recv(h, f"vlr.m.{it}"), f"vlr.m.{it}", h, n))
            t0 = clock.add("network", t0)
            for c, (lo, hi) in enumerate(spans):  # phases block by block: K x n complex would not fit at 1M rows
                cts = owner.encrypt_vectors(fs.phases(v[lo:hi], K))
                channel.send(lh, f"vlr.t.{it}.{c}", [r[0] for r in cts], kind="ciphertext")
            t0 = clock.add("sigmoid", t0)
            for c, (lo, hi) in enumerate(spans):
                got = channel.recv(lh, f"vlr.s.{it}.{c}")
                t0 = clock.add("network", t0)
                try:
                    share[lo:hi] += owner.decrypt_vector(got, hi - lo)
                except CryptoError as e:
                    raise ProtocolError(f"{me}: vlr.s.{it}.{c} from {lh!r} refused: {e}") from None
                t0 = clock.add("decryption", t0)
        else:
            r = fs.uniform_fractions(n)
            channel.send(h1, f"vlr.m.{it}", fs.add(q, r), kind="masked")
            channel.send(lh, f"vlr.o.{it}", r, kind="masked")
            t0 = clock.add("sigmoid", t0)
        # scaled as in hetero_lr so every encrypted sum stays below ~2^15 (CKKS headroom 2^19)
        return (XT @ share + relayed_cross(f"vlr.x.{it}", share * sc) / sc) / n + cfg.l2 * pen * w

    def relay_of(q: str) -> str:
        return h1 if q == lh else lh

    def relayed_cross(tag: str, s_full: np.ndarray) -> np.ndarray:
        """``X_me^T`` (sum of every other party's share), decrypted as ONE sum.

        Each party ``P`` computes ``Enc_Q(X_Q^T s_P)`` for every other ``Q`` and hands it to ``Q``'s
        relay (``H_1`` for ``G``, ``G`` for every holder); the relay adds its own and the others'
        under ``Q``'s key (:meth:`CkksPeer.add_results`) and forwards the sum. Decrypting each part
        on its own would give ``Q`` the functionals ``X_Q^T u_j / (2P)`` of every holder's linear
        share, i.e. of ``u_j`` itself; the sum is ``X_Q^T (sigma(z) - y)`` minus ``Q``'s own share:
        its own gradient, as with one feature holder.
        """
        t_start = time.perf_counter()
        mine = {q: peers[q].cross(chunks, s_full) for q in others}
        for q in others:
            if relay_of(q) != me:
                channel.send(relay_of(q), f"{tag}.{order[q]}", mine[q],
                             kind="ciphertext" if mine[q] is not None else "control")
        for q in others:
            if relay_of(q) == me:
                parts = [mine[q]] + [channel.recv(p, f"{tag}.{order[q]}") for p in order if p not in (q, me)]
                try:
                    total = peers[q].add_results(parts)
                except CryptoError as e:
                    raise ProtocolError(f"{me}: a {tag} part for {q!r} was refused: {e}") from None
                channel.send(q, tag, total, kind="ciphertext" if total is not None else "control")
        got = channel.recv(relay_of(me), tag)
        clock.add("gradient", t_start)
        if got is None:  # every other party's share was zero (weights start at 0)
            return np.zeros(k)
        try:
            return decrypt_cross(me, owner, got, k, tag, relay_of(me), True)
        except CryptoError as e:
            raise ProtocolError(f"{me}: {tag} from {relay_of(me)!r} refused: {e}") from None

    return lbfgs(gradient, joint, k, Minv, cfg, on_epoch, start, checkpoint)
