"""The exact solver's federated L-BFGS resumes bit-exactly from its checkpoint (issue 14, resume).

The end-to-end resume test (tests/runtime/test_resume_e2e.py) compares a resumed CKKS run with a
separate uninterrupted one, so it can only assert agreement up to the CKKS noise of two runs. Here
the gradient is computed in plaintext (the same rows, split between two parties over the in-memory
network), so the optimiser is deterministic and a resumed run must equal the uninterrupted one to
the last bit: every piece of state the next iteration needs (weights, gradient, the L-BFGS pairs,
the compact form's Gram entries, the scaling ``gamma``, the gradient norm that sets the sigmoid
tolerance, the history) must be in the checkpoint and survive the checkpoint file's JSON round trip.
"""
from __future__ import annotations

import numpy as np
import pytest

from fedrisk.algorithms.vertical.hetero_lr import HeteroLRConfig, lbfgs, sigmoid
from fedrisk.runtime.checkpoint import CheckpointStore
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork

PARTIES = ("lender", "payco")


class Crash(Exception):
    """Stands in for the SIGKILL right after a checkpoint."""


def _data(n: int = 600, seed: int = 4) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    X[:, 4] = 0.8 * X[:, 1] + 0.6 * X[:, 4]  # correlated across the parties: the cross-curvature matters
    y = (rng.random(n) < sigmoid(X @ np.array([0.9, -0.7, 0.3, 0.5, -0.6, 0.2]) - 0.5)).astype(float)
    return {"lender": np.c_[X[:, :3], np.ones(n)], "payco": X[:, 3:]}, y


def _role(me: str, X: np.ndarray, y: np.ndarray, cfg: HeteroLRConfig, store: CheckpointStore, start=None,
          crash_after: int | None = None, tols: list | None = None):
    other = PARTIES[1 - PARTIES.index(me)]
    n, k = X.shape

    def run(ch):
        def joint(tag, v):
            ch.send(other, tag, np.asarray(v, dtype=np.float64), kind="aggregate")
            return v + ch.recv(other, tag)

        def gradient(it, w, tol):  # the exact residual in plaintext (the protocol's CKKS noise left out)
            if tols is not None:
                tols.append((it, tol))
            u = X @ w
            ch.send(other, f"t.u.{it}", u, kind="aggregate")
            r = sigmoid(u + ch.recv(other, f"t.u.{it}")) - y
            return X.T @ r / n + cfg.l2 * w

        def checkpoint(step, state):
            store.save("train", step, state)
            if step == crash_after:
                raise Crash

        Minv = np.linalg.inv(X.T @ X / (4 * n) + cfg.l2 * np.eye(k))
        try:
            return lbfgs(gradient, joint, k, Minv, cfg, start=start, checkpoint=checkpoint)
        except Crash:
            return None
    return run


def _train(tmp, tag: str, cfg: HeteroLRConfig, crash_after: int | None = None, resume: bool = False,
           tols: dict | None = None):
    parts, y = _data()
    stores = {p: CheckpointStore(tmp / tag, p, "job", "vertical.lr", {"spec": "s", "data": "d"}) for p in PARTIES}
    starts = {}
    if resume:  # a fresh store reads the file back, as a resumed process does
        for p in PARTIES:
            assert stores[p].open_for_resume()
            starts[p] = stores[p].load("train", max(stores[p].steps("train")))
    net = InMemoryNetwork(list(PARTIES))
    return run_roles({p: _role(p, parts[p], y, cfg, stores[p], starts.get(p), crash_after,
                               None if tols is None else tols.setdefault(p, []))
                      for p in PARTIES}, network=net)


@pytest.mark.parametrize("crash_after", [1, 4, 9])
def test_a_resumed_lbfgs_equals_the_uninterrupted_one_bit_for_bit(tmp_path, crash_after):
    """Crash both parties after iteration ``crash_after`` (1: one pair kept; 9: the memory of 3 is
    full and pairs have been dropped), resume from the checkpoint files: same weights, same history,
    same sigmoid tolerances asked for, to the last bit."""
    cfg = HeteroLRConfig(l2=1e-3, max_iter=14, step_tol=0.0, memory=3)
    tols_ref, tols_run = {}, {}
    ref = _train(tmp_path, "ref", cfg, tols=tols_ref)
    assert _train(tmp_path, "run", cfg, crash_after=crash_after) == {p: None for p in PARTIES}
    got = _train(tmp_path, "run", cfg, resume=True, tols=tols_run)
    for p in PARTIES:
        (w_ref, h_ref), (w_got, h_got) = ref[p], got[p]
        assert w_got.tobytes() == w_ref.tobytes(), (p, w_got - w_ref)
        assert h_got == h_ref, p
        assert len(h_got) == cfg.max_iter
        # the resumed run asked for the gradients after the crash point only, at the same tolerances
        assert tols_run[p] == [t for t in tols_ref[p] if t[0] > crash_after], p
