"""A column with blank cells gets the same bins, WOE and IV whichever party of a vertical job holds it.

A feature holder never sums a missing bin of fewer than ``need`` rows (the release rule: the label
holder would decrypt the bad count of a handful of the partner's customers), so those rows got WOE 0
and the other bins' WOE came from the other rows; the label holder's own copy of the same column kept
its small missing bin's WOE. Measured on German credit with 30 blank ``duration_in_month`` cells: IV
0.2613 held by the label holder, 0.2683 held by a partner. Parity is reached the conservative way: the
label holder's own column follows the partner's rule (and the partner's bins), so nothing more is
revealed. The pooled reference is single-party :class:`~fedrisk.finance.woe.WoeEncoder` on the same
rows with the same bins: all rows when the missing bin passes the rule, else the rows with a value
(the blank rows then weigh 0).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedrisk.algorithms.vertical.woe import ReleaseRule, vertical_woe_feature_holder, vertical_woe_label_holder
from fedrisk.crypto.additive import generate_keypair
from fedrisk.finance.binning import is_missing
from fedrisk.finance.woe import WoeEncoder
from fedrisk.runtime.threads import run_roles
from fedrisk.tasks.vertical_woe import Params, local_woe


def _blanked(german):
    """Three copies of German columns with blank cells: 30 blanks (under the 50 rows a bin needs), 80 blanks
    (a released missing bin), and 60 blanks of which only 2 are bads (rows enough, bads too few)."""
    y = (german["creditability"] == "bad").astype(int).to_numpy()
    rng = np.random.default_rng(5)
    X = pd.DataFrame({"duration": german["duration_in_month"].astype(float),
                      "amount": german["credit_amount"].astype(float),
                      "purpose": german["purpose"].astype(object),
                      "age": german["age_in_years"].astype(float)})
    X.loc[rng.choice(len(X), 30, replace=False), "duration"] = np.nan
    X.loc[rng.choice(len(X), 80, replace=False), "amount"] = np.nan
    X.loc[rng.choice(len(X), 30, replace=False), "purpose"] = ""
    goods, bads = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    X.loc[np.concatenate([rng.choice(goods, 58, replace=False), rng.choice(bads, 2, replace=False)]), "age"] = np.nan
    return X, y


def _bins_key(fb):
    return ("numeric", tuple(np.round(fb.edges, 9))) if fb.kind == "numeric" else \
        ("categorical", tuple(sorted(tuple(sorted(g)) for g in fb.groups)))


def test_a_column_with_blanks_gets_the_same_bins_woe_and_iv_at_either_party(german):
    X, y = _blanked(german)
    key = generate_keypair("paillier", 1024)
    out = run_roles({
        "lender": lambda ch: vertical_woe_label_holder(ch, ["payco"], y, key=key, reveal="woe"),
        "payco": lambda ch: vertical_woe_feature_holder(ch, "lender", X, min_key_bits=1024, max_corr=None),
    })
    partner, lh = out["payco"], out["lender"]
    own, _ = local_woe(Params(), X, y, "lender")
    need = ReleaseRule().rows_needed(len(y))
    assert need == 50
    for f in X.columns:
        mine = own.woe_[f]
        assert _bins_key(mine.bins) == _bins_key(partner.bins[f]), f
        np.testing.assert_allclose(mine.woe, partner.woe[f], atol=1e-12, err_msg=f)
        assert own.iv_[f] == pytest.approx(lh.iv["payco"][f], abs=1e-12), f
    # the release rule still holds for the partner's copy: its 30 blank cells were never summed
    assert lh.tables["payco"]["duration"][-1]["n"] == 0 and lh.tables["payco"]["purpose"][-1]["n"] == 0
    assert lh.tables["payco"]["amount"][-1]["n"] == 80 and lh.tables["payco"]["age"][-1]["n"] == 60
    # and, held by either party, the missing bins that fail it weigh nothing; the one that passes keeps its WOE
    for f in ("duration", "purpose", "age"):
        assert own.woe_[f].woe[-1] == 0.0 and own.woe_[f].iv_bins[-1] == 0.0, f
    assert own.woe_["amount"].woe[-1] != 0.0
    # the label holder's own table still shows its own counts (its data): 30 rows, WOE 0
    assert own.woe_["duration"].goods[-1] + own.woe_["duration"].bads[-1] == 30


def test_both_copies_equal_single_party_woe_on_the_same_rows(german):
    """The pooled reference: WoeEncoder with the federated bins — on every row when the missing bin is
    released, on the rows with a value when it is not (then the blank rows' WOE is 0)."""
    X, y = _blanked(german)
    own, _ = local_woe(Params(), X, y, "lender")
    for f in X.columns:
        bins = {f: own.woe_[f].bins}
        present = ~is_missing(X[f])
        rows = slice(None) if f == "amount" else present
        ref = WoeEncoder().fit_bins(X.loc[rows, [f]].reset_index(drop=True), y[rows], bins)
        assert own.iv_[f] == pytest.approx(ref.iv_[f], abs=1e-12), f
        np.testing.assert_allclose(own.woe_[f].woe[:-1], ref.woe_[f].woe[:-1], atol=1e-12, err_msg=f)
    # where single-party binning cuts the same bins (duration, no small prebin to pool), the whole pipeline
    # equals WoeEncoder fitted on the rows with a value
    present = ~is_missing(X["duration"])
    single = WoeEncoder().fit(X.loc[present, ["duration"]].reset_index(drop=True), y[present])
    assert _bins_key(single.woe_["duration"].bins) == _bins_key(own.woe_["duration"].bins)
    assert single.iv_["duration"] == pytest.approx(own.iv_["duration"], abs=1e-12)
    # (the label holder used to keep the blanks' own WOE: single-party binning on every row, another IV)
    assert abs(WoeEncoder().fit(X[["duration"]], y).iv_["duration"] - own.iv_["duration"]) > 1e-3
