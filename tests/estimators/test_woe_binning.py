"""WoeBinning.transform: the federation's WOE equals a pooled WoeEncoder's on the same bins."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import fedrisk as fr
from fedrisk.errors import ConfigError
from fedrisk.finance.binning import FeatureBins
from fedrisk.finance.woe import WoeEncoder

pytestmark = pytest.mark.slow


def test_horizontal_woe_transform_equals_pooled_counts_on_the_same_bins(hfed, horizontal_frames):
    _, holdout = horizontal_frames
    wb = fr.WoeBinning().fit(hfed)
    W = wb.transform(holdout)
    doc = wb.files_["woe/bank1.json"]
    assert list(W.columns) == list(doc["features"]) and len(W) == len(holdout)
    pooled = pd.concat(hfed.parties.values(), ignore_index=True)
    bins = {f: FeatureBins.from_dict(d["bins"]) for f, d in doc["features"].items()}
    ref = WoeEncoder().fit_bins(pooled[list(bins)], pooled["y"], bins).transform(holdout)
    assert np.allclose(W.to_numpy(), ref.to_numpy(), atol=1e-9)
    assert set(wb.selected_) == {"federation"} and wb.iv_["iv"].max() > 0.1


def test_vertical_woe_transform_per_party(vfed):
    train, _ = vfed.split()
    with pytest.raises(ConfigError, match="reveal='woe'"):
        fr.WoeBinning().fit(train).transform(train)
    wb = fr.WoeBinning(reveal="woe").fit(train)
    out = wb.transform(train)
    assert set(out) == {"lender", "payco"}
    assert list(out["payco"].columns) == [c for c in train.parties["payco"].columns if c != "id"]
    assert np.isfinite(out["lender"].to_numpy()).all() and out["payco"].shape == (len(train.parties["payco"]), 10)


@pytest.mark.parametrize("estimator", [fr.WoeBinning, fr.Scorecard])
def test_a_true_false_column_is_binned_as_0_1_as_lr_and_gbdt_read_it(estimator):
    """A pandas bool column (a flag; CSV "True"/"False") was refused as a "text column without declared
    categories" by horizontal WOE and scorecards only, while LR and GBDT read it as 0/1. Now it is a 0/1
    number there too: the same bins and IV as single-party binning of the pooled 0/1 column."""
    rng = np.random.default_rng(3)
    banks = {}
    for i in range(2):
        n = 700
        flag = rng.random(n) < 0.4
        x = rng.normal(size=n)
        banks[f"bank{i}"] = pd.DataFrame({"id": np.arange(n) + 1000 * i, "x": x, "flag": flag,
                                          "y": (rng.random(n) < 1 / (1 + np.exp(1.5 - 1.2 * flag - 0.5 * x))).astype(int)})
    m = estimator(iv_threshold=0.0).fit(fr.Federation.horizontal(banks, id="id", label="y"))
    pooled = pd.concat(banks.values())
    ref = WoeEncoder().fit(pooled[["x"]].assign(flag=pooled["flag"].astype(float)), pooled["y"].to_numpy())
    if estimator is fr.WoeBinning:
        iv = m.iv_.set_index("feature")["iv"]
        assert iv["flag"] == pytest.approx(ref.woe_["flag"].iv, rel=1e-9) and iv["flag"] > 0.05
    else:  # a points row per 0/1 bin, and a bool column scores as its 0/1 numbers
        assert len(m.table_[m.table_["feature"] == "flag"]) >= 2, m.table_
        new = pooled.drop(columns="y").head(40)
        np.testing.assert_array_equal(m.predict_proba(new), m.predict_proba(new.assign(flag=new["flag"].astype(int))))
