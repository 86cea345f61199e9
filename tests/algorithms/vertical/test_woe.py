"""Vertical IV with Paillier-encrypted labels: equals pooled IV; neither side sees what it must not."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedrisk.crypto.additive import generate_keypair
from fedrisk.errors import ConfigError, FedriskError
from fedrisk.algorithms.vertical.woe import ReleaseRule, vertical_woe_feature_holder, vertical_woe_label_holder
from fedrisk.finance.woe import WoeEncoder
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork
from fedrisk.transport.codec import BigInts

TEST_KEY_BITS = 1024  # small keys keep tests fast; production uses 2048+


@pytest.fixture(scope="module")
def key():
    return generate_keypair("paillier", TEST_KEY_BITS)


def _run(key, y, hosts: dict[str, pd.DataFrame], reveal="iv", network=None, **fh_kw):
    roles = {"lender": lambda ch: vertical_woe_label_holder(ch, list(hosts), y, key=key, reveal=reveal)}
    for p, X in hosts.items():
        roles[p] = lambda ch, X=X: vertical_woe_feature_holder(ch, "lender", X, min_key_bits=TEST_KEY_BITS, **fh_kw)
    return run_roles(roles, network=network)


def _german_split(german):
    y = (german["creditability"] == "bad").astype(int).to_numpy()
    payco = german[["duration_in_month", "credit_amount", "purpose", "age_in_years"]]
    bureau = german[["credit_history", "savings_account_and_bonds", "number_of_existing_credits_at_this_bank"]]
    return y, {"payco": payco, "bureau": bureau}


def test_vertical_iv_equals_pooled_iv(german, key):
    y, hosts = _german_split(german)
    out = _run(key, y, hosts, reveal="woe")
    for p, X in hosts.items():
        fh = out[p]
        pooled = WoeEncoder().fit_bins(X, y, fh.bins)
        for f in X.columns:
            assert out["lender"].iv[p][f] == pytest.approx(pooled.iv_[f], abs=1e-9)
            assert fh.iv[f] == pytest.approx(pooled.iv_[f], abs=1e-9)
            assert np.allclose(fh.woe[f], pooled.woe_[f].woe, atol=1e-9)
        assert out["lender"].selection[p]["party"] == p
    rows = out["lender"].iv_table()
    assert rows[0]["iv"] >= rows[-1]["iv"] and {"party", "feature", "iv", "strength"} <= rows[0].keys()


def test_what_each_party_sees(german, key):
    y, hosts = _german_split(german)
    hosts = {"payco": hosts["payco"]}
    net = InMemoryNetwork(["lender", "payco"], capture=True)
    _run(key, y, hosts, network=net)
    n = len(y)
    # feature holder: public key, ciphertexts, and only per-feature IV back (reveal="iv")
    got = net["payco"].captured
    assert {e.kind for e in got} == {"public-parameter", "ciphertext", "metric"}
    labels = next(e.body for e in got if e.tag == "vwoe.labels")
    assert isinstance(labels, BigInts) and len(labels) == n
    assert all(int(c) not in (0, 1) for c in list(labels)[:50])
    result = next(e.body for e in got if e.tag == "vwoe.result")
    assert all(set(v) == {"iv"} for v in result["features"].values())
    # label holder: per-prebin sizes and encrypted sums only — nothing per row
    for e in net["lender"].captured:
        if e.tag == "vwoe.sizes":
            assert len(e.body["sizes"]) < n and "edges" not in e.body
            assert sum(e.body["sizes"]) == n * len(e.body["features"])
        if e.tag == "vwoe.sums":
            assert len(e.body) < n


def test_reveal_bins_only(german, key):
    y, hosts = _german_split(german)
    out = _run(key, y, {"payco": hosts["payco"]}, reveal="bins")
    assert set(out["payco"].bins) == set(hosts["payco"].columns) and not out["payco"].woe


def test_bad_inputs(key):
    y = np.array([0, 1] * 50)
    with pytest.raises(ConfigError):
        run_roles({"lender": lambda ch: vertical_woe_label_holder(ch, ["h"], y, key=key, reveal="all"),
                   "h": lambda ch: None})
    X = pd.DataFrame({"x": np.arange(99.0)})
    with pytest.raises(FedriskError, match="align the rows"):
        _run(key, y, {"h": X})
    # a small key is refused by default
    with pytest.raises(FedriskError, match="bits refused"):
        run_roles({"lender": lambda ch: vertical_woe_label_holder(ch, ["h"], y, key=key),
                   "h": lambda ch: vertical_woe_feature_holder(ch, "lender", pd.DataFrame({"x": np.arange(100.0)}))})


def test_zero_bad_bin_and_single_value(key):
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    y = ((x > 0) & (rng.random(400) < 0.5)).astype(int)  # no bads at all below 0
    X = pd.DataFrame({"x": x, "const": 3.0, "cat": rng.choice(list("abcdefghij"), 400)})
    out = _run(key, y, {"h": X}, reveal="woe")
    assert np.isfinite(out["h"].woe["x"]).all() and out["lender"].iv["h"]["const"] == 0.0


def test_a_partners_rare_default_bins_are_single_partys_with_monotone_smoothed_woe(key):
    """18 defaults in 3,000 rows, the release rule off: a partner's bins are the single-party bins of the same
    rows, and their smoothed WOE (the one the scorecard scores) is monotonic next to bins without defaults."""
    from tests.finance.test_binning import _monotone, _rare_defaults

    x, y = _rare_defaults(3)
    X = pd.DataFrame({"x": x})
    off = ReleaseRule(min_rows=1, min_share=0.0, min_class=0)
    out = run_roles({
        "lender": lambda ch: vertical_woe_label_holder(ch, ["payco"], y, key=key, reveal="woe", release=off),
        "payco": lambda ch: vertical_woe_feature_holder(ch, "lender", X, min_key_bits=TEST_KEY_BITS, release=off),
    })
    single = WoeEncoder().fit(X, y).woe_["x"]
    fh = out["payco"]
    np.testing.assert_array_equal(fh.bins["x"].edges, single.bins.edges)
    np.testing.assert_allclose(fh.woe["x"], single.woe, atol=1e-12)
    k = single.bins.n_bins
    assert _monotone(fh.woe["x"][:k])
    # the IV's permutation null at the label holder (the partner's decrypted prebin counts): single-party's
    fed, one = out["lender"].noise["payco"]["x"], single.significance()
    assert fed["iv_null"] == one["iv_null"] == "permutation"
    assert (fed["iv_p_value"], fed["iv_noise_95"]) == (one["iv_p_value"], one["iv_noise_95"])


def test_tied_neighbours_are_one_bin_for_a_partners_and_the_label_holders_columns(key):
    """Levels with exactly equal bad rates, default release rule: a partner's columns get the single-party bins of
    the same rows (tied levels merged, strictly monotonic WOE), and so do the label holder's own columns."""
    from fedrisk.algorithms.vertical.woe import label_holder_bins
    from tests.finance.test_binning import _strictly_monotone, tied_rows

    X, y = tied_rows(2)
    out = _run(key, y, {"payco": X}, reveal="woe", max_corr=None)
    single = WoeEncoder().fit(X, y)
    own = label_holder_bins(X, y)
    for f in X.columns:
        fh_bins, ref = out["payco"].bins[f], single.woe_[f]
        assert fh_bins.to_dict() == ref.bins.to_dict() == own[f].to_dict(), f
        np.testing.assert_allclose(out["payco"].woe[f], ref.woe, atol=1e-12)
        assert _strictly_monotone(ref.woe[:ref.bins.n_bins].tolist()), (f, ref.woe)
    assert single.woe_["c"].bins.groups == [["a", "b"], ["c"], ["d"]]
