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
