"""The label holder's own text columns are binned as they would be at a feature holder: rare categories
pooled first, then merged by bad rate.

A feature holder pools every category under ``need`` rows into one prebin before anything is summed
(the release rule), but the label holder used to bin its own columns category by category, sorted by
their bad rate. A 150-level code (branch, postcode) of pure noise at the label holder then came out as
the strongest feature of a German-credit scorecard: IV 1.30, test AUC 0.82 -> 0.71, no warning; the
same column at a feature holder got IV ~0. Now a column gets the same bins whichever party holds it."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedrisk.algorithms.vertical.woe import vertical_woe_feature_holder, vertical_woe_label_holder
from fedrisk.crypto.additive import generate_keypair
from fedrisk.runtime.threads import run_roles
from fedrisk.tasks.vertical_woe import Params, local_woe


def _with_noise_code(german, levels=150, seed=1):
    rng = np.random.default_rng(seed)
    X = german[["purpose", "credit_history", "duration_in_month"]].copy()
    X["branch"] = [f"BR{v:03d}" for v in rng.integers(0, levels, len(X))]
    y = (german["creditability"] == "bad").astype(int).to_numpy()
    return X.reset_index(drop=True), y


def test_a_many_level_noise_code_at_the_label_holder_is_pooled_not_fitted(german):
    X, y = _with_noise_code(german)
    enc, sel = local_woe(Params(), X, y, "lender")
    assert enc.iv_["branch"] < 0.05, enc.iv_  # was 1.3: 150 categories of ~7 rows merged by their bad rate
    assert "branch" not in sel["selected"]
    assert enc.iv_["purpose"] > 0.05 and enc.iv_["credit_history"] > 0.1  # real categories keep their signal
    # the stored bins still name every category, so scoring finds each one's bin
    cats = {c for g in enc.woe_["branch"].bins.groups for c in g}
    assert cats == set(X["branch"])


def test_a_text_column_gets_the_same_bins_at_either_party(german):
    X, y = _with_noise_code(german)
    key = generate_keypair("paillier", 1024)
    cols = ["purpose", "credit_history", "branch"]
    out = run_roles({
        "lender": lambda ch: vertical_woe_label_holder(ch, ["payco"], y, key=key, reveal="bins"),
        "payco": lambda ch: vertical_woe_feature_holder(ch, "lender", X[cols], min_key_bits=1024),
    })
    enc, _ = local_woe(Params(), X[cols], y, "lender")
    for f in cols:
        own = sorted(sorted(g) for g in enc.woe_[f].bins.groups)
        theirs = sorted(sorted(g) for g in out["payco"].bins[f].groups)
        assert own == theirs, f
        assert enc.iv_[f] == pytest.approx(out["lender"].iv["payco"][f], abs=1e-9), f


def test_numeric_columns_keep_single_party_binning(german):
    from fedrisk.finance.woe import WoeEncoder

    X, y = _with_noise_code(german)
    enc, _ = local_woe(Params(), X, y, "lender")
    ref = WoeEncoder().fit(X[["duration_in_month"]], y)
    assert enc.iv_["duration_in_month"] == pytest.approx(ref.iv_["duration_in_month"], abs=1e-12)
    assert isinstance(enc.transform(X), pd.DataFrame)


def test_a_random_many_level_code_gets_one_bin_at_either_party_as_single_party(german):
    """A random 10-level code (~100 rows a level, so nothing is pooled for rarity) has more levels than
    ``max_bins``: single-party ``WoeEncoder`` gives it one bin (the chi-square gate: its levels' bad rates
    do not differ), and so must the vertical label holder, for a feature holder's copy and for its own.
    Without the gate the label holder sorted the 10 levels by their own bad rates: 6 bins, IV 0.058,
    above the 0.02 threshold, so the noise column was selected in vertical jobs only."""
    from fedrisk.finance.woe import WoeEncoder

    rng = np.random.default_rng(4)
    X = german[["purpose", "credit_history"]].reset_index(drop=True).copy()
    y = (german["creditability"] == "bad").astype(int).to_numpy()
    X["branch"] = [f"BR{k:03d}" for k in rng.integers(0, 10, len(X))]
    X["code"] = [f"C{k:02d}" for k in rng.integers(0, 10, len(X))]
    ref = WoeEncoder().fit(X, y)
    for f in ("branch", "code"):
        assert ref.iv_[f] == 0.0 and ref.woe_[f].bins.n_bins == 1, f
    key = generate_keypair("paillier", 1024)
    out = run_roles({
        "lender": lambda ch: vertical_woe_label_holder(ch, ["payco"], y, key=key, reveal="bins"),
        "payco": lambda ch: vertical_woe_feature_holder(ch, "lender", X[["credit_history", "branch"]],
                                                        min_key_bits=1024),
    })
    own, sel = local_woe(Params(), X[["purpose", "code"]], y, "lender")
    got = {"branch": (out["lender"].iv["payco"]["branch"], out["payco"].bins["branch"].groups),
           "code": (own.iv_["code"], own.woe_["code"].bins.groups)}
    for f, (iv, groups) in got.items():
        assert iv == 0.0, (f, iv, groups)
        assert sorted(sorted(g) for g in groups) == sorted(sorted(g) for g in ref.woe_[f].bins.groups), f
    assert "code" not in sel["selected"] and "branch" not in out["payco"].selection["selected"]
    # informative columns with more levels than max_bins pass the gate and keep their grouping
    assert own.iv_["purpose"] > 0.05 and out["lender"].iv["payco"]["credit_history"] > 0.1


def test_the_label_holder_pools_prebins_under_min_category_count_before_the_gate():
    """With few rows the release rule's ``need`` is below ``min_category_count``; prebins under it are pooled
    (as single-party binning pools rare categories) before the chi-square gate and the merge."""
    from fedrisk.algorithms.vertical.woe import ReleaseRule, merge_prebins
    from fedrisk.finance.binning import BinningConfig

    goods = np.array([60.0, 12.0, 11.0, 60.0, 8.0])
    bads = np.array([40.0, 3.0, 4.0, 5.0, 4.0])
    groups = merge_prebins(goods, bads, "categorical", BinningConfig(min_category_count=20), ReleaseRule(), 10)
    assert sorted(i for g in groups for i in g) == list(range(5))
    small = [g for g in groups if 1 in g]
    assert set(small[0]) >= {1, 2, 4}  # the three prebins under 20 rows share one group
