"""``Federation.vertical/horizontal(..., na_values=[...])``: placeholders in a party's DataFrame ("?" where a number
belongs) are missing values in the job, as ``na_values`` in each party's spec table; without it the job is refused
in one line naming the setting and how to give it in Python."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import fedrisk as fr
from fedrisk.errors import DataError
from fedrisk.estimators.engine import run_task


def _parties(n: int = 300) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(n, 3))
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ [1.0, -0.8, 0.6] - 1)))).astype(int)
    amount = [f"{v:.2f}" for v in 1000 + 300 * X[:, 1]]
    for i in range(0, n, 37):
        amount[i] = "?"
    lender = pd.DataFrame({"id": np.arange(n), "y": y, "a": X[:, 0], "amount": amount})
    payco = pd.DataFrame({"id": np.arange(n), "c": X[:, 2]})
    return {"lender": lender, "payco": payco}


def test_placeholders_in_a_dataframe_are_missing_values_once_declared():
    with pytest.raises(DataError) as info:
        run_task(fr.Federation.vertical(_parties(), id="id", label="y", missing="mean"), "vertical.lr", {"max_iter": 5})
    msg = str(info.value)
    assert "'amount'" in msg and 'na_values = ["?"]' in msg and "party_options={'lender': {'na_values'" in msg, msg
    fed = fr.Federation.vertical(_parties(), id="id", label="y", missing="mean", na_values=["?"])
    run = run_task(fed, "vertical.lr", {"max_iter": 5})
    model = run.files["model.json"]
    assert "amount" in model["features"] and model["imputation"]["amount"] > 0
    # the same through party_options
    fed2 = fr.Federation.vertical(_parties(), id="id", label="y", missing="mean",
                                  party_options={"lender": {"na_values": ["?"]}})
    assert run_task(fed2, "vertical.lr", {"max_iter": 5}).files["model.json"]["features"] == model["features"]
