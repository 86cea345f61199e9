"""Newton LR over one-shot secure sums (OptimisticSessionAggregation): same model, fewer messages, safe dropouts.

A Newton round that moves (``p != 0``) sums the banks' statistics one-shot: one masked vector per
bank, nothing revealed. A dropout in such a round yields no sum; the next round re-evaluates at
``w + REDO_STEP p`` (a point the failed round did not evaluate) with Bonawitz sums from then on.
The attack test plays the curious coordinator that also receives the dropped bank's late vector.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from fedrisk.algorithms.horizontal.aggregation import PlainAggregation
from fedrisk.algorithms.horizontal.newton_lr import (LADDER, REDO_STEP, NewtonConfig, _check_fresh_point,
                                                     bank_statistics, run_bank, run_coordinator)
from fedrisk.crypto import ring64
from fedrisk.crypto.secagg_oneshot import OptimisticSessionAggregation
from fedrisk.errors import ProtocolError
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork
from tests.algorithms.horizontal.test_fedavg_lr import synthetic_banks
from tests.algorithms.horizontal.test_newton_lr import NAMES5, max_diff, pooled_reference

SIZES = (400, 300, 500, 350)


def federate(banks, cfg, agg, capture=True):
    net = InMemoryNetwork([*banks, "coordinator"], capture=capture)
    roles = {b: (lambda X, y: lambda ch: run_bank(ch, "coordinator", X, y, NAMES5, cfg, agg))(X, y)
             for b, (X, y) in banks.items()}
    roles["coordinator"] = lambda ch: run_coordinator(ch, list(banks), cfg, agg)
    return run_roles(roles, network=net), net


def moved(net, bank, r):
    """Whether round ``r``'s model message to ``bank`` carried a direction (a one-shot round)."""
    msg = next(e.body for e in net[bank].captured if e.tag == f"hlr.newton.r{r}")
    return bool(np.any(np.asarray(msg["p"]) != 0.0))


def test_one_shot_rounds_give_the_plain_model_with_one_message_per_bank():
    banks = synthetic_banks(11, sizes=SIZES)
    plain, _ = federate(banks, NewtonConfig(), PlainAggregation(), capture=False)
    res, net = federate(banks, NewtonConfig(), OptimisticSessionAggregation(rounds=64))
    m = res["coordinator"]
    assert len(m.history) == len(plain["coordinator"].history)
    np.testing.assert_allclose(m.coef, plain["coordinator"].coef, atol=1e-7)
    X = np.vstack([X for X, _ in banks.values()])
    y = np.concatenate([y for _, y in banks.values()])
    coef, intercept, _ = pooled_reference(X, y, 1e-4)
    assert max_diff(m, coef, intercept) <= 1e-6
    got = [e for e in net["coordinator"].captured if e.tag.startswith("hlr.stats")]
    rounds = sorted({int(e.tag.split(".")[2][1:]) for e in got})
    one_shot = [r for r in rounds if moved(net, "b0", r)]
    assert one_shot and len(one_shot) >= len(rounds) - 2  # round 1 (p = 0) runs Bonawitz with its reveal
    for r in rounds:
        tags = {e.tag.rsplit(".sa.", 1)[1] for e in got if e.tag.startswith(f"hlr.stats.r{r}.")}
        assert ("reveal" not in tags) == (r in one_shot), (r, tags)
        masked = [e for e in got if e.tag == f"hlr.stats.r{r}.sa.masked"]
        assert len(masked) == len(banks) and all(e.kind == "masked" and e.body.dtype == np.uint64 for e in masked)


class LateBank(OptimisticSessionAggregation):
    """``late`` sends its round-``r`` masked vector ``delay`` seconds late; the coordinator keeps every sum."""

    def __init__(self, late: str, r: int, delay: float, **kw) -> None:
        super().__init__(**kw)
        self.late, self.r, self.delay = late, r, delay
        self.sums: dict[str, np.ndarray] = {}

    def _send_masked(self, channel, coordinator, tag, y):
        if channel.me == self.late and tag == f"hlr.stats.r{self.r}":
            time.sleep(self.delay)
        super()._send_masked(channel, coordinator, tag, y)

    def collect(self, channel, parties, tag, length, **kw):
        res = super().collect(channel, parties, tag, length, **kw)
        self.sums[tag] = res.total
        return res


def test_a_dropout_in_a_one_shot_round_never_lets_the_coordinator_difference_out_the_bank():
    banks = synthetic_banks(12, sizes=SIZES)
    gone, r = "b1", 3
    agg = LateBank(gone, r, delay=9.0, rounds=64, round_timeout=6.0, dropout_timeout=30.0)
    res, net = federate(banks, NewtonConfig(), agg)
    m = res["coordinator"]
    assert moved(net, gone, r), "the late round must be a one-shot round"
    assert m.membership["dropped"][gone]["round"] == r
    assert m.history[r - 1]["incomplete"] == [gone]
    # the next round re-evaluates (p = 0) at w + REDO_STEP p, announced as the fallback
    msg3 = next(e.body for e in net["b0"].captured if e.tag == f"hlr.newton.r{r}")
    msg4 = next(e.body for e in net["b0"].captured if e.tag == f"hlr.newton.r{r + 1}")
    w3, p3, w4 = (np.asarray(msg3["w"]), np.asarray(msg3["p"]), np.asarray(msg4["w"]))
    assert msg4["fallback"] and not np.any(np.asarray(msg4["p"]))
    np.testing.assert_array_equal(w4, w3 + REDO_STEP * p3)
    assert not any(np.allclose(w4, w3 + t * p3, atol=1e-9) for t in LADDER)
    # the late round ran no reveal: nothing of it can be unmasked except the sum of all four
    captured = net["coordinator"].captured
    assert not [e for e in captured if e.tag.startswith(f"hlr.stats.r{r}.sa.") and not e.tag.endswith(".masked")]
    masked = {e.sender: e.body for e in captured if e.tag == f"hlr.stats.r{r}.sa.masked"}
    assert set(masked) == set(banks), "the late vector did reach the coordinator"

    # the curious coordinator: the full sum of round r (late vector included) ...
    full = ring64.decode(sum(masked.values(), np.zeros_like(masked[gone])), agg.frac_bits)
    mean, scale = m.mean, m.scale

    def stats(b, w, p):
        X, y = banks[b]
        return bank_statistics(np.column_stack([(X - mean) / scale, np.ones(len(y))]), y, w, p)

    truth = stats(gone, w3, p3)
    np.testing.assert_allclose(full, sum(stats(b, w3, p3) for b in banks), rtol=1e-6, atol=1e-3)
    # ... minus the survivors' sum of the fallback round: not the dropped bank's statistics
    survivors = agg.sums[f"hlr.stats.r{r + 1}"]
    diff = full - survivors
    grad_hess = slice(2 + len(LADDER), None)
    rel = np.max(np.abs(diff[grad_hess] - truth[grad_hess])) / np.max(np.abs(truth[grad_hess]))
    assert rel > 0.05, f"the difference comes within {rel:.1%} of {gone}'s gradient and Hessian"
    # (a redo at the round's own point would have handed them over exactly: that is what is avoided)
    same_point = sum(stats(b, w3, p3) for b in banks if b != gone)
    np.testing.assert_allclose(full - same_point, truth, rtol=1e-6, atol=1e-3)

    # and the model is the pooled optimum of the banks that stayed
    stay = [b for b in banks if b != gone]
    X = np.vstack([banks[b][0] for b in stay])
    y = np.concatenate([banks[b][1] for b in stay])
    from fedrisk.algorithms.horizontal.logistic import sklearn_C
    from sklearn.linear_model import LogisticRegression

    ref = LogisticRegression(C=sklearn_C(1e-4, len(y)), solver="newton-cholesky", tol=1e-12, max_iter=1000)
    ref.fit((X - mean) / scale, y)
    assert max_diff(m, ref.coef_[0], float(ref.intercept_[0])) <= 1e-4


def test_a_bank_refuses_a_fallback_round_at_a_point_the_failed_sum_evaluated():
    w0, p0 = np.array([0.1, -0.2, 0.3]), np.array([0.5, 0.25, -1.0])
    _check_fresh_point("b0", 4, w0 + REDO_STEP * p0, np.zeros(3), (w0, p0))
    for t in LADDER:
        with pytest.raises(ProtocolError, match="already evaluated"):
            _check_fresh_point("b0", 4, w0 + t * p0, np.zeros(3), (w0, p0))
    with pytest.raises(ProtocolError, match="refusing"):
        _check_fresh_point("b0", 4, w0 + REDO_STEP * p0, p0, (w0, p0))


def test_a_bank_refuses_to_sum_twice_at_the_same_point():
    from fedrisk.algorithms.horizontal.newton_lr import _check_new_round

    seen: set[bytes] = set()
    w, p = np.array([0.1, 0.2]), np.array([0.0, -0.3])
    _check_new_round("b0", 2, w, p, seen)
    _check_new_round("b0", 3, w + p, np.zeros(2), seen)
    with pytest.raises(ProtocolError, match="already summed at"):
        _check_new_round("b0", 4, w.copy(), p.copy(), seen)
