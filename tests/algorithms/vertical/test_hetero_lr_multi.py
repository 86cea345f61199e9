"""Exact vertical LR with several feature holders: the pooled optimum, what each party received, same
seed same model, and the CKKS precision of the Fourier sigmoid shares."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedrisk.algorithms.vertical import fourier_sigmoid as fs
from fedrisk.algorithms.vertical.hetero_lr import HeteroLRConfig, range_interval, sigmoid, train
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork
from tests.algorithms.vertical.test_hetero_lr import _floats


def credit_split(data_dir: Path, rows: int, holders: int, seed: int = 0):
    """Default credit over a lender and ``holders`` feature holders, standardised (tests/stress_data)."""
    from tests.stress_data import vertical as sv

    return sv.standardised(sv.credit_parties(data_dir, rows, holders, seed))


def run(parts: dict[str, np.ndarray], y: np.ndarray, cfg: HeteroLRConfig):
    """Train on the in-memory network with capture; also record every party's weights per iteration."""
    names = list(parts)
    net = InMemoryNetwork(names, capture=True, tag_prefixes=("vlr.",))
    ws: dict[str, list[np.ndarray]] = {p: [] for p in names}

    def role(p):
        return lambda ch: train(ch, names[0], names[1:], parts[p], y if p == names[0] else None, cfg,
                                checkpoint=lambda it, state: ws[p].append(np.array(state["w"])))

    return net, run_roles({p: role(p) for p in names}, network=net), ws


def against_pooled(parts, y, test, res, l2):
    """(max coefficient/intercept difference, test-AUC gap) against scikit-learn on the pooled rows."""
    from sklearn.linear_model import LogisticRegression

    from fedrisk.finance.metrics import auc

    names = list(parts)
    A = np.hstack([parts[p] for p in names])
    tr = ~test
    sk = LogisticRegression(C=1.0 / (l2 * tr.sum()), tol=1e-12, max_iter=20000).fit(A[tr], y[tr])
    fed = np.r_[np.concatenate([res[p].coef for p in names]), res[names[0]].intercept]
    diff = float(np.abs(fed - np.r_[sk.coef_[0], sk.intercept_[0]]).max())
    p = sigmoid(A[test] @ fed[:-1] + fed[-1])
    gap = abs(auc(y[test], p) - auc(y[test], sk.predict_proba(A[test])[:, 1]))
    return diff, gap


def train_rows(parts, tr):
    return {p: X[tr] for p, X in parts.items()}


@pytest.fixture(scope="module")
def credit3(shared_data):
    """Default credit, 6,000 rows (~4,800 training rows: two 4096-row CKKS chunks), lender + 2 holders."""
    parts, y, test = credit_split(shared_data, 6000, 2)
    cfg = HeteroLRConfig(l2=1e-3)  # solver "auto"
    net, res, ws = run(train_rows(parts, ~test), y[~test], cfg)
    return parts, y, test, cfg, net, res, ws


def test_two_feature_holders_reach_the_pooled_optimum(credit3):
    parts, y, test, cfg, _, res, _ = credit3
    assert all(res[p].solver == "exact" for p in parts)  # auto = exact with any number of holders
    diff, gap = against_pooled(parts, y, test, res, cfg.l2)
    print(f"default credit, 2 feature holders: coef diff {diff:.2e}, AUC gap {gap:.5f}, "
          f"{len(res['lender'].history)} iterations")
    assert diff < 1e-3 and gap < 0.002
    assert len(res["lender"].history) < cfg.max_iter  # converged, not capped


@pytest.mark.extended(covered_by="test_two_feature_holders_reach_the_pooled_optimum and "
                                "test_heavy_tailed_split_over_two_holders_reaches_the_pooled_optimum (the same several-holder "
                                "protocol with one holder fewer in its loops); tests/tasks/test_vertical_lr_e2e.py "
                                "two-holder runs over the task glue")
def test_three_feature_holders_reach_the_pooled_optimum(shared_data):
    parts, y, test = credit_split(shared_data, 5000, 3)
    cfg = HeteroLRConfig(l2=1e-3, solver="exact")
    _, res, _ = run(train_rows(parts, ~test), y[~test], cfg)
    diff, gap = against_pooled(parts, y, test, res, cfg.l2)
    print(f"default credit, 3 feature holders: coef diff {diff:.2e}, AUC gap {gap:.5f}, "
          f"{len(res['lender'].history)} iterations")
    assert diff < 1e-3 and gap < 0.002
    assert len(res["lender"].history) < cfg.max_iter


def test_heavy_tailed_split_over_two_holders_reaches_the_pooled_optimum(shared_data):
    """The heavy-tailed stress case (tests/stress_data/vertical.py) with its feature-holder columns
    cut over two holders: the second holds the exp(1.5 x) columns and the Pareto outliers, so the
    joint score spans tens of logits (large P, ~30-60 sine terms at the end)."""
    from tests.stress_data import vertical as sv

    c = sv.load("heavy_tailed", shared_data, rows=5000)
    parts = {"lender": c.XG, "payco": c.XH[:, :4], "bureau": c.XH[:, 4:]}
    cfg = HeteroLRConfig(l2=1e-3)
    _, res, _ = run(train_rows(parts, c.train), c.y[c.train], cfg)
    diff, gap = against_pooled(parts, c.y, c.test, res, cfg.l2)
    print(f"heavy_tailed, 2 feature holders: coef diff {diff:.2e}, AUC gap {gap:.5f}, "
          f"{len(res['lender'].history)} iterations")
    assert diff < 1e-3 and gap < 0.002
    assert len(res["lender"].history) < cfg.max_iter


# -- what each party received -------------------------------------------------------------------------
def test_messages_each_party_received(credit3):
    """Capture over the whole run: per-row arrays reach only the first holder (``vlr.m``: the second
    holder's masked fractions) and the label holder (``vlr.o``: the masks alone); everything else
    per row is ciphertext bytes; scalars are the bound, (P, K) and L-BFGS sums."""
    parts, y, test, cfg, net, res, ws = credit3
    n = int((~test).sum())
    for p in parts:
        for env in net[p].captured:
            assert env.kind in {"ciphertext", "public-parameter", "aggregate", "control", "masked"}, (p, env.tag)
            arrays = list(_floats(env.body))
            if env.tag.startswith(("vlr.m.", "vlr.o.")):
                assert (p, env.sender, env.kind) == ({"vlr.m": "payco", "vlr.o": "lender"}[env.tag[:5]], "bureau", "masked")
                assert isinstance(env.body, np.ndarray) and env.body.dtype == np.uint64 and env.body.shape == (n,)
            elif env.tag.startswith("vlr.c."):  # L-BFGS Gram entries (compact form): 5 + 4 per kept pair
                assert env.kind == "aggregate" and sum(a.size for a in arrays) <= 5 + 4 * cfg.memory, (p, env.tag)
            else:
                assert sum(a.size for a in arrays) <= 4, (p, env.tag)
                assert not isinstance(env.body, np.ndarray) or env.body.dtype == np.float64, (p, env.tag)
            if env.tag.startswith("vlr.b."):  # the holder's range interval: centre and half-width
                assert p == "lender" and sum(a.size for a in arrays) == 2
            if env.tag.startswith("vlr.p."):
                assert p != "lender" and env.sender == "lender" and sum(a.size for a in arrays) == 2
            if env.tag.startswith("vlr.x."):  # cross-products: parts go to the receiver's relay, sums to it
                relay = {"lender": "payco", "payco": "lender", "bureau": "lender"}
                if env.tag.count(".") == 3:  # a part Enc_Q(X_Q^T s_P) for receiver Q = party index
                    q = ["lender", "payco", "bureau"][int(env.tag.split(".")[3])]
                    assert p == relay[q] and env.sender not in (p, q), (p, env.tag, env.sender)
                else:  # the one sum a party decrypts: only ever from its relay
                    assert env.sender == relay[p], (p, env.tag, env.sender)
            if env.tag.startswith("vlr.x.") and env.body is None:  # a share that is zero on every row (w = 0)
                assert env.kind == "control" and env.tag.startswith(("vlr.x.0.", "vlr.x.0")) \
                    and env.tag.split(".")[2] == "0"
            elif env.tag.startswith(("vlr.t.", "vlr.s.", "vlr.x.")):
                assert isinstance(env.body, list) and all(isinstance(b, bytes) for b in env.body)
                assert env.tag.startswith("vlr.x.") or p == {"vlr.t": "lender", "vlr.s": "payco"}[env.tag[:5]]
    # each party decrypts ONE cross-product sum per iteration (never a single peer's part: a holder's
    # share u_j / (2P) alone would hand the receiver X^T u_j)
    for p in parts:
        sums = [e.tag for e in net[p].captured if e.tag.startswith("vlr.x.") and e.tag.count(".") == 2]
        # one gradient per iteration (the stop test comes before the gradient, so none after the last)
        assert len(sums) == len(set(sums)) == len(res["lender"].history), (p, len(sums))
    # the second feature holder receives no per-row value at all, not even masked
    assert not [e for e in net["bureau"].captured
                if sum(a.size for a in _floats(e.body)) > (5 + 4 * cfg.memory if e.tag.startswith("vlr.c.") else 4)
                or isinstance(e.body, np.ndarray) and e.body.dtype != np.float64]


def test_masked_fractions_are_uniform_and_independent_of_the_score(credit3):
    """What ``vlr.m`` (to the first holder) and ``vlr.o`` (to the label holder) held, iteration by
    iteration, against the second holder's actual partial score ``u_j`` (recomputed from its recorded
    weights): their difference is exactly ``u_j``'s fraction of the period (the protocol does what
    it says), yet each alone is uniform (KS) and has the same distribution on rows with high and
    low ``u_j`` (two-sample KS) -- what a party sees does not depend on ``u_j``."""
    from scipy.stats import ks_2samp, kstest

    parts, y, test, cfg, net, res, ws = credit3
    Xb = parts["bureau"][~test]
    got = {p: {e.tag: e.body for e in net[p].captured} for p in ("payco", "lender", "bureau")}
    its = sorted(int(t.split(".")[2]) for t in got["payco"] if t.startswith("vlr.m."))
    assert its == list(range(len(ws["bureau"])))  # no gradient (no sigmoid round) after the last step
    unit = 2.0 ** fs.FRACTION_BITS
    for it in its:
        w = np.zeros(Xb.shape[1]) if it == 0 else ws["bureau"][it - 1]
        u = np.clip(Xb @ w, -64, 64)
        c, B = range_interval(float(u.min()), float(u.max()))
        u = np.clip(u, c - B, c + B)  # what the holder feeds the sigmoid (a no-op below the 64 cap)
        P = float(got["bureau"][f"vlr.p.{it}"][0])
        m, r = got["payco"][f"vlr.m.{it}"], got["lender"][f"vlr.o.{it}"]
        assert np.array_equal(fs.sub(m, r), fs.to_fraction(u, P))
        for seen in (m, r):
            x = seen.astype(np.float64) / unit
            # ~80 tests per run: 1e-7 each keeps spurious failures below 1e-5 per run, while a
            # missing or non-uniform mask gives p ~ 0 on these ~4,800 rows
            assert kstest(x, "uniform").pvalue > 1e-7
            if it > 0:
                hi = u > np.median(u)
                assert ks_2samp(x[hi], x[~hi]).pvalue > 1e-7
        if it > 0:  # a plain (unmasked) fraction would fail the same check
            x = fs.to_fraction(u, P).astype(np.float64) / unit
            assert ks_2samp(x[u > np.median(u)], x[u <= np.median(u)]).pvalue < 1e-4


def test_same_seed_same_model():
    """Two runs with three parties agree to 1e-8 (CKKS is approximate and keys/masks are fresh every
    run; masks cancel exactly -- the local gradient halves use the values the encrypted matrices
    hold, as the cross-products do -- so only the intrinsic CKKS error differs: measured 5e-10)."""
    rng = np.random.default_rng(1)
    n = 2400
    X = rng.normal(size=(n, 9))
    X[:, 5] = 0.7 * X[:, 0] + 0.7 * X[:, 5]
    y = (rng.random(n) < sigmoid(X @ rng.normal(size=9) - 1.0)).astype(np.int8)
    parts = {"lender": X[:, :4], "payco": X[:, 4:7], "bureau": X[:, 7:]}
    cfg = HeteroLRConfig(l2=1e-3)
    out = []
    for _ in range(2):
        _, res, _ = run(parts, y, cfg)
        out.append(np.r_[res["lender"].coef, res["lender"].intercept, res["payco"].coef, res["bureau"].coef])
    print(f"same seed: max coefficient drift {np.abs(out[0] - out[1]).max():.2e}")
    assert np.abs(out[0] - out[1]).max() < 1e-8


def test_sigmoid_shares_under_ckks_are_within_tolerance():
    """One sigmoid round by hand with the real CKKS objects and mask size, three parties, joint scores
    up to +-120 (P ~ 68, ~95 sine terms: phases e^{i k w v} up to k ~ 95): the sum of the three
    residual shares is sigma(z) to the series tolerance plus the CKKS error, which is measured."""
    from fedrisk.crypto.ckks import CkksOwner, CkksPeer

    cfg = HeteroLRConfig()
    rng = np.random.default_rng(11)
    n, tol = 4096, 1e-6
    uG, u1, u2 = rng.uniform(-40, 40, n), rng.uniform(-40, 40, n), rng.uniform(-40, 40, n)
    z = uG + u1 + u2
    P = fs.half_period(120.0, tol)
    K = fs.terms(P, tol)
    assert K > 80
    r = fs.uniform_fractions(n)
    a = fs.sub(fs.to_fraction(uG, P), r)
    v = fs.add(fs.to_fraction(u1, P), fs.add(fs.to_fraction(u2, P), r))
    owner = CkksOwner()
    peer = CkksPeer(owner.public_bundle(), flood=cfg.flood)
    try:
        cts = owner.encrypt_vectors(fs.phases(v, K))
        coef = (-1j * fs.sine_coefficients(P)[:K])[:, None] * fs.phases(a, K)
        out, mask = peer.inner_products(cts, coef, np.zeros(n), cfg.mask_std)
        dec = owner.decrypt_vector(out, n)
    finally:
        owner.close()
        peer.close()
    shares = (0.5 + uG / (2 * P) - mask) + (dec + u1 / (2 * P)) + u2 / (2 * P)
    series = fs.evaluate(z, P, K)
    ckks_err = np.abs(shares - series).max()
    total_err = np.abs(shares - sigmoid(z)).max()
    print(f"P {P:.2f}, K {K}: CKKS share error {ckks_err:.2e}, total vs float sigmoid {total_err:.2e}")
    assert np.abs(mask).std() > 100  # the mask is the configured 2^10 Gaussian, not zero
    assert ckks_err < 1e-7
    assert total_err < tol + 1e-7


def test_resume_from_a_checkpoint_gives_the_same_model():
    """The resume hooks (what ``--resume`` feeds ``train``): every party restarts from its own
    L-BFGS state after iteration 3 of a first run and ends on that run's model, to the CKKS level:
    the two runs' later iterations differ by the intrinsic CKKS error only, which this small
    (1,500 rows, coefficients ~2) problem amplifies to ~2.5e-6 on the end point (measured)."""
    rng = np.random.default_rng(2)
    n = 1500
    X = rng.normal(size=(n, 7))
    y = (rng.random(n) < sigmoid(X @ rng.normal(size=7) - 0.5)).astype(np.int8)
    parts = {"lender": X[:, :3], "payco": X[:, 3:5], "bureau": X[:, 5:]}
    names = list(parts)
    cfg = HeteroLRConfig(l2=1e-3)
    states: dict[str, dict] = {}

    def role(p, start=None):
        def keep(it, state):
            if it == 3:
                states[p] = state
        return lambda ch: train(ch, "lender", names[1:], parts[p], y if p == "lender" else None, cfg,
                                start=start, checkpoint=keep if start is None else None)

    full = run_roles({p: role(p) for p in names})
    assert len(full["lender"].history) > 3
    net = InMemoryNetwork(names, capture=True, tag_prefixes=("vlr.",))
    resumed = run_roles({p: role(p, states[p]) for p in names}, network=net)
    # it continued: the first sigmoid round of the resumed run is iteration 4's
    assert min(int(e.tag.split(".")[2]) for e in net["payco"].captured if e.tag.startswith("vlr.p.")) == 4
    for p in names:
        assert np.abs(full[p].coef - resumed[p].coef).max() < 1e-5
    assert abs(len(resumed["lender"].history) - len(full["lender"].history)) <= 1


@pytest.mark.parametrize("tol", [1e-2, 1e-6])
def test_label_holder_clip_moves_no_sigmoid_by_more_than_a_quarter_tolerance(tol):
    """choose_period clips u_G where the sigmoid is saturated whatever the holders' scores (within
    their announced intervals): sigma moves by at most tol / 4 on every row, and the clipped joint
    score stays inside the range where the series is within tol."""
    from fedrisk.algorithms.vertical.hetero_lr_multi import choose_period

    rng = np.random.default_rng(5)
    n = 20000
    intervals = [(-0.25, 0.75), (2.0, 4.0)]
    u_g = rng.uniform(-64, 64, n)
    P, K, clipped = choose_period(u_g, intervals, tol)
    hs = [np.where(rng.random(n) < 0.2, rng.choice([m - B, m + B], n), rng.uniform(m - B, m + B, n))
          for m, B in intervals]
    z, zc = u_g + sum(hs), clipped + sum(hs)
    assert np.any(clipped != u_g)
    assert np.abs(sigmoid(z) - sigmoid(zc)).max() <= tol / 4
    assert np.abs(zc).max() <= fs.valid_bound(P, tol) and K == fs.terms(P, tol)
