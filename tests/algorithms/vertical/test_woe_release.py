"""A feature holder with a near-unique column tries to read the labels off its released bins.

Attack (issue 12, item 1): one prebin per category of a unique-per-row text column; the label
holder orders the categories by bad rate and sends back groups and WOE, which then separate the
bads from the goods row by row (an honest ``vertical.scorecard`` run gave a feature holder 3,982 of
3,982 labels). These tests run the real protocol in memory with ``reveal = "woe"`` (what the
scorecard uses), take everything the feature holder received — the result message and its own
WOE/bins, from which its scorecard file is built — and score its best per-row label guess.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from fedrisk.errors import ConfigError
from fedrisk.finance.binning import BinningConfig
from fedrisk.finance.metrics import auc
from fedrisk.algorithms.vertical.woe import ReleaseRule, vertical_woe_feature_holder, vertical_woe_label_holder
from fedrisk.runtime.tasks import parse_params
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork

N = 2000


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random(N) < 0.2).astype(int)
    X = pd.DataFrame({
        "merchant_ref": [f"M-{i:06d}-{rng.integers(1e6)}" for i in range(N)],  # unique per row
        "postcode": rng.choice([f"P{k:04d}" for k in range(1500)], N),          # near-unique
        "rare_codes": np.where(rng.random(N) < 0.5, "common", [f"r{k}" for k in rng.integers(0, 400, N)]),
        "noise_num": rng.normal(size=N),                                         # 1000 prebins of ~2 rows
    })
    return X, y


def _run(X, y, release=None, n_prebins=1000):
    cfg = BinningConfig(max_bins=1000, n_prebins=n_prebins, min_bin_frac=0.0, method="quantile")
    net = InMemoryNetwork(["lh", "fh"], capture=True)
    out = run_roles({
        "lh": lambda ch: vertical_woe_label_holder(ch, ["fh"], y, config=cfg, reveal="woe", key_bits=1024,
                                                   release=release),
        "fh": lambda ch: vertical_woe_feature_holder(ch, "lh", X, config=cfg, max_corr=None, min_key_bits=1024,
                                                     release=release),
    }, network=net)
    return out["fh"], net


def _best_guess(res, X, y) -> dict[str, tuple[float, float]]:
    """Per feature: (AUC of the row's released WOE against the label, best threshold accuracy)."""
    out = {}
    base_acc = max(y.mean(), 1 - y.mean())
    for f in X.columns:
        w = res.woe[f][res.bins[f].assign(X[f])]
        a = auc(y, -w)  # low WOE = many bads
        a = max(a, 1 - a)
        acc = base_acc
        for thr in np.unique(w):
            for guess in ((w <= thr), (w > thr)):
                acc = max(acc, float(np.mean(guess.astype(int) == y)))
        out[f] = (a, acc)
    return out


def test_feature_holder_cannot_guess_labels_better_than_the_base_rate():
    X, y = _data()
    res, net = _run(X, y)
    # what the feature holder received from the label holder is exactly what it uses here
    got = [e for e in net["fh"].captured if e.tag == "vwoe.result"]
    assert len(got) == 1 and set(got[0].body["features"]) == set(X.columns)
    base_acc = max(y.mean(), 1 - y.mean())
    for f, (a, acc) in _best_guess(res, X, y).items():
        # unrelated columns: bins of >= 50 rows fitted in-sample rank slightly better than chance
        # (40 bins of 50 rows: AUC ~0.57 from noise alone), never anywhere near the labels
        assert a < 0.62, (f, a)
        assert acc <= base_acc + 0.02, (f, acc, base_acc)
    # every released bin covers >= min(50, 5 % of rows) rows and 5 goods and 5 bads
    for f in X.columns:
        idx = res.bins[f].assign(X[f])
        for b in range(res.bins[f].n_bins):
            rows = idx == b
            if rows.any():
                assert rows.sum() >= 50 and y[rows].sum() >= 5 and (1 - y[rows]).sum() >= 5, (f, b, rows.sum())


def test_near_unique_column_is_flagged_by_name(caplog):
    X, y = _data(1)
    with caplog.at_level(logging.WARNING, logger="fedrisk.algorithms.vertical.woe"):
        res, _ = _run(X[["merchant_ref", "noise_num"]], y)
    assert any("'merchant_ref'" in w for w in res.warnings)
    assert not any("'noise_num'" in w for w in res.warnings)
    assert res.bins["merchant_ref"].n_bins == 1  # every category rare: one pooled bin, WOE 0
    assert np.allclose(res.woe["merchant_ref"][:1], 0.0)


def test_every_encrypted_sum_covers_enough_rows():
    """Pooling happens before encryption: the label holder's decrypted sums are over >= need rows."""
    X, y = _data(2)
    _, net = _run(X, y)
    sizes = [e.body for e in net["lh"].captured if e.tag == "vwoe.sizes"][0]
    n = np.asarray(sizes["sizes"])
    assert n[n > 0].min() >= 50


def test_signal_survives_the_rule():
    """A real predictor with enough rows per bin is still released (the rule does not kill IV)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=N)
    y = (rng.random(N) < 1 / (1 + np.exp(-(2 * x - 1.5)))).astype(int)
    res, _ = _run(pd.DataFrame({"x": x}), y, n_prebins=20)
    assert res.iv["x"] > 0.5 and res.bins["x"].n_bins >= 4


def test_release_settings_are_task_params_validated_by_the_spec():
    from fedrisk.tasks import vertical_scorecard, vertical_woe

    for mod in (vertical_woe, vertical_scorecard):
        p = parse_params(mod.Params, {"kind": mod.KIND, "min_bin_rows": 100, "min_bin_class": 10}, "job.toml")
        assert p.release() == ReleaseRule(100, 0.05, 10, 0.5)
        with pytest.raises(ConfigError, match="min_bin_rows"):
            parse_params(mod.Params, {"kind": mod.KIND, "min_bin_rows": 0}, "job.toml")
        with pytest.raises(ConfigError, match="min_bin_share"):
            parse_params(mod.Params, {"kind": mod.KIND, "min_bin_share": 0.7}, "job.toml")


def test_honest_vertical_scorecard_run_gives_the_feature_holder_no_labels(tmp_path, caplog):
    """The issue's scenario end to end (task glue, in-process): a feature holder with a unique
    merchant reference. Before: the column got one prebin per row, was selected, and the feature
    holder's scorecard file held every training label (train AUC 1.0). Now it is pooled, flagged by
    name and not in the scorecard; the model trains on the real features only."""
    import json
    import textwrap

    from tests.tasks.test_woe_tasks import run_in_process

    rng = np.random.default_rng(4)
    n = 2500
    ids = np.arange(n)
    income = rng.normal(size=n)
    late = rng.poisson(1.0, n).astype(float)
    z = -1.4 - 0.8 * income + 0.6 * late
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    pd.DataFrame({"id": ids, "y": y, "income": income}).to_csv(tmp_path / "lender.csv", index=False)
    merchant = [f"MR-{i:06d}-{rng.integers(1e6)}" for i in range(n)]
    pd.DataFrame({"id": ids, "late": late, "merchant_ref": merchant}).to_csv(tmp_path / "payco.csv", index=False)
    spec = tmp_path / "job.toml"
    spec.write_text(textwrap.dedent("""
        [federation]
        name = "leak-check"
        [parties.lender]
        address = "127.0.0.1:1"
        data = "lender.csv"
        id = "id"
        label = "y"
        [parties.payco]
        address = "127.0.0.1:2"
        data = "payco.csv"
        id = "id"
        [task]
        kind = "vertical.scorecard"
        key_bits = 2048
        """))
    with caplog.at_level(logging.WARNING):
        metrics = run_in_process(spec, tmp_path / "run")
    assert any("'merchant_ref'" in r.getMessage() for r in caplog.records)
    card = json.loads((tmp_path / "run" / "scorecard-payco.json").read_text())
    assert "merchant_ref" not in card["features"]
    text = json.dumps(card)
    assert "MR-" not in text  # no per-category bins of the unique column in the file
    assert metrics["train"]["auc"] < 0.95


def test_a_withheld_missing_bin_leaves_no_trace_in_the_other_bins_woe():
    """A missing bin that fails the rule gets WOE 0; the other bins' WOE must not encode its bad rate either.

    Two label vectors that differ only on the missing rows (1 and 3 bads there: both below min_bin_class)
    must give the feature holder the same released WOE. Against totals that include the missing rows, a
    lone remaining bin had WOE ln((G'/G) / (B'/B)), i.e. the withheld rows' bad rate against the rest.
    """
    n = 1000
    rng = np.random.default_rng(5)
    x = rng.normal(size=n)
    y = (x + rng.normal(size=n) > 1.2).astype(int)
    miss = np.zeros(n, dtype=bool)
    miss[np.flatnonzero(y == 0)[:120]] = True   # 120 missing rows (>= the 50 rows a bin needs)
    y1, y3 = y.copy(), y.copy()
    m_idx = np.flatnonzero(miss)
    y1[m_idx[:1]] = 1
    y3[m_idx[:3]] = 1
    X = pd.DataFrame({"x": np.where(miss, np.nan, x), "flat": np.where(miss, np.nan, 1.0)})
    cfg = BinningConfig(max_bins=5, n_prebins=20, method="quantile")
    released = []
    for labels in (y1, y3):
        out = run_roles({
            "lh": lambda ch: vertical_woe_label_holder(ch, ["fh"], labels, config=cfg, reveal="woe", key_bits=1024),
            "fh": lambda ch: vertical_woe_feature_holder(ch, "lh", X, config=cfg, max_corr=None, min_key_bits=1024),
        }, network=InMemoryNetwork(["lh", "fh"]))
        released.append(out["fh"])
    a, b = released
    for f in X.columns:
        assert a.woe[f][-1] == 0.0 and b.woe[f][-1] == 0.0, f  # the missing bin: neutral
        np.testing.assert_allclose(a.woe[f], b.woe[f], err_msg=f)
    # a column that is one bin apart from its withheld missing rows says nothing at all
    assert np.all(a.woe["flat"] == 0.0) and a.iv["flat"] == 0.0


def test_a_separator_the_release_rule_merges_away_is_named_at_the_label_holder_only():
    """A partner's 0/1 flag that copies the label (a collections flag recorded after the default) but for 4 bads
    gave IV 7.0 in one vertical.woe run and, in a scorecard run whose split left 4 bads with flag 0, "IV 0.0000
    < 0.02" and was dropped as if it carried nothing: the release rule (min_bin_class bads per bin) merged its two
    bins. The label holder, which decrypted the prebin counts, now says so in its own warnings (its IV before the
    rule, a leakage hint); nothing of it reaches the feature holder."""
    rng = np.random.default_rng(4)
    n = 1200
    y = np.zeros(n, int)
    y[:100] = 1
    flag = y.copy()
    flag[:4] = 0  # 4 bads without the flag: below min_bin_class = 5
    X = pd.DataFrame({"late_flag": flag.astype(float), "noise": rng.normal(size=n)})
    cfg = BinningConfig(max_bins=6, n_prebins=20, min_bin_frac=0.05)
    net = InMemoryNetwork(["lh", "fh"], capture=True)
    out = run_roles({
        "lh": lambda ch: vertical_woe_label_holder(ch, ["fh"], y, config=cfg, reveal="woe", key_bits=1024,
                                                   release=ReleaseRule()),
        "fh": lambda ch: vertical_woe_feature_holder(ch, "lh", X, config=cfg, max_corr=None, min_key_bits=1024,
                                                     release=ReleaseRule()),
    }, network=net)
    lh = out["lh"]
    assert lh.iv["fh"]["late_flag"] == 0.0  # the rule holds: one bin
    named = [w for w in lh.warnings if "'late_flag'" in w]
    assert len(named) == 1 and "min_bin_class = 5" in named[0] and "leakage" in named[0], lh.warnings
    assert not [w for w in lh.warnings if "'noise'" in w]
    received = repr(net["fh"].captured)  # everything the feature holder received
    assert "leakage" not in received and "min_bin_class" not in received


def _released_rates(goods, bads, groups, smoothing=0.5):
    from tests.finance.test_binning import _scored_rates

    return _scored_rates(goods, bads, groups, smoothing)


def test_the_release_merge_keeps_the_woe_strictly_monotonic_with_min_bin_class_0():
    """min_bin_class = 0 and prebins under ``need`` rows: the release step merged two bins without defaults
    (42 | 37 + 21 goods) after the monotone merge, and the bigger one's smoothed WOE (0.96) passed its
    neighbour's (0.64): released WOE 0.64, 0.96, -0.54. Now out-of-order (or tied) neighbours merge too."""
    from fedrisk.algorithms.vertical.woe import merge_prebins
    from tests.finance.test_binning import _strictly_monotone

    g = np.array([42.0, 37, 21, 27, 51])
    b = np.array([0.0, 0, 0, 1, 2])
    rule = ReleaseRule(min_rows=34, min_share=0.4, min_class=0)
    groups = merge_prebins(g, b, "numeric", BinningConfig(), rule, 34)
    assert groups == [[0, 1, 2], [3, 4]]
    assert all(rule.ok(g[grp].sum(), b[grp].sum(), 34) for grp in groups)
    assert _strictly_monotone(_released_rates(g, b, groups))


def test_released_bins_pass_the_rule_and_are_strictly_monotonic_whatever_min_bin_class():
    """Seeded counts with rare defaults and prebins under ``need`` rows, numeric and categorical, min_bin_class 0
    to 5: every released group passes the rule (or is the only one) and the scored bad rate is strictly
    monotonic across the groups."""
    from fedrisk.algorithms.vertical.woe import merge_prebins
    from tests.finance.test_binning import _strictly_monotone

    rng = np.random.default_rng(7)
    cfg = BinningConfig(min_category_count=1)
    for _ in range(100):
        k = int(rng.integers(3, 10))
        n = rng.integers(1, 60, size=k).astype(float)
        b = np.minimum(rng.poisson(rng.uniform(0, 2), k), n).astype(float)
        g = n - b
        need = int(rng.integers(5, 80))
        for min_class in (0, 1, 2, 5):
            rule = ReleaseRule(min_rows=need, min_share=0.4, min_class=min_class)
            for kind in ("numeric", "categorical"):
                groups = merge_prebins(g, b, kind, cfg, rule, need)
                assert sorted(i for grp in groups for i in grp) == list(range(k))
                assert len(groups) == 1 or all(rule.ok(g[grp].sum(), b[grp].sum(), need) for grp in groups)
                assert len(groups) == 1 or _strictly_monotone(_released_rates(g, b, groups)), (kind, g, b, need, groups)


def test_what_a_partner_receives_with_min_bin_class_0_is_monotonic_and_keeps_the_rule():
    """The label holder enforces its own rule on whatever prebins arrive (here a partner pooling to 1 row: a
    looser setting, another version). With min_bin_class = 0 its release merge left the WOE the partner received
    out of order (0.64, 0.96, -0.54); the message the partner got now has strictly monotonic WOE over bins that
    each cover the label holder's 34 rows."""
    from tests.finance.test_binning import _strictly_monotone

    levels = [(0, 42, 0), (1, 37, 0), (2, 21, 0), (3, 27, 1), (4, 51, 2)]  # (value, goods, bads)
    x = np.concatenate([np.full(gd + bd, v, dtype=float) for v, gd, bd in levels])
    y = np.concatenate([np.r_[np.ones(bd), np.zeros(gd)] for _, gd, bd in levels]).astype(int)
    order = np.random.default_rng(0).permutation(len(y))
    X, y = pd.DataFrame({"x": x[order]}), y[order]
    strict = ReleaseRule(min_rows=34, min_share=0.4, min_class=0)
    loose = ReleaseRule(min_rows=1, min_share=0.0, min_class=0)
    net = InMemoryNetwork(["lh", "fh"], capture=True)
    out = run_roles({
        "lh": lambda ch: vertical_woe_label_holder(ch, ["fh"], y, reveal="woe", key_bits=1024, release=strict),
        "fh": lambda ch: vertical_woe_feature_holder(ch, "lh", X, max_corr=None, min_key_bits=1024, release=loose),
    }, network=net)
    got = [e.body for e in net["fh"].captured if e.tag == "vwoe.result"]
    assert len(got) == 1
    sent = got[0]["features"]["x"]
    assert sent["groups"] == [[0, 1, 2], [3, 4]]
    k = len(sent["groups"])
    assert _strictly_monotone(sent["woe"][:k]), sent["woe"]
    fh = out["fh"]
    np.testing.assert_array_equal(fh.woe["x"], sent["woe"])
    idx = fh.bins["x"].assign(X["x"])
    for i in range(k):  # the rule, on the partner's own rows: >= 34 rows per released bin
        assert (idx == i).sum() >= 34, (i, (idx == i).sum())
    assert out["lh"].tables["fh"]["x"][0]["bads"] == 0  # (min_bin_class = 0: a bin without defaults is released)
