"""Vertical federations from DataFrames shaped as notebook users have them.

* The customer id as the DataFrame's (named) index, as after ``df.set_index("cid")``: refused with
  "no id column" although the ids were there.
* A label coded "good"/"bad" without ``positive``: the error said to set it "for this party in the job
  spec", which a notebook has no copy of; it now also says how in Python (``party_options``)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import fedrisk as fr
from fedrisk.errors import DataError


def _frames(n=300, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"C-{i:05d}" for i in range(n)]
    x = rng.normal(size=(n, 3))
    y = np.where(x[:, 0] + x[:, 2] + rng.normal(size=n) > 0.8, "bad", "good")
    lender = pd.DataFrame({"cid": ids, "status": y, "a": x[:, 0], "b": x[:, 1]})
    bureau = pd.DataFrame({"cid": ids, "c": x[:, 2]}).sample(frac=1, random_state=1)
    return lender, bureau


def test_the_id_as_a_named_index_is_the_id_column():
    lender, bureau = _frames()
    opts = {"lender": {"positive": "bad"}}
    by_col = fr.Federation.vertical({"lender": lender, "bureau": bureau}, id="cid", label="status", party_options=opts)
    by_idx = fr.Federation.vertical({"lender": lender.set_index("cid"), "bureau": bureau.set_index("cid")}, id="cid",
                                    label="status", party_options=opts)
    a = fr.LogisticRegression(l2=0.01, solver="exact").fit(by_col)
    b = fr.LogisticRegression(l2=0.01, solver="exact").fit(by_idx)
    assert np.allclose(a.coef_, b.coef_, atol=1e-6)


def test_an_unnamed_or_other_index_still_needs_the_id_column():
    lender, bureau = _frames()
    with pytest.raises(DataError, match="no id column 'cid'"):
        fr.Federation.vertical({"lender": lender.drop(columns="cid"), "bureau": bureau}, id="cid", label="status")


def test_label_coding_advice_names_the_python_setting():
    lender, bureau = _frames()
    fed = fr.Federation.vertical({"lender": lender, "bureau": bureau}, id="cid", label="status")
    with pytest.raises(DataError) as info:
        fr.LogisticRegression().fit(fed)
    msg = str(info.value)
    assert "\n" not in msg and "positive" in msg and "party_options={'lender': {'positive':" in msg, msg
