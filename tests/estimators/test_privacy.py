"""Differential privacy from the notebook: ``Federation.horizontal(..., privacy={...})`` is the spec's
``[privacy]`` table. It was reachable only through a job spec, so a modeller in a notebook could not train
the private models the CLI trains."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import fedrisk as fr
from fedrisk.errors import ConfigError


def _banks(seed: int = 0) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    out = {}
    for b, n in (("bank1", 500), ("bank2", 400), ("bank3", 300)):
        X = rng.normal(size=(n, 4))
        y = (rng.random(n) < 1 / (1 + np.exp(-(X @ [1.2, -0.8, 0.6, 0.0] - 1.0)))).astype(int)
        out[b] = pd.DataFrame({"id": np.arange(n) + 10_000 * len(out), "y": y,
                               **{f"x{j}": X[:, j] for j in range(4)}})
    return out


def test_a_budget_set_in_the_notebook_is_spent_and_reported_as_in_a_spec():
    banks = _banks()
    private = fr.Federation.horizontal(banks, privacy={"epsilon": 4.0, "delta": 1e-5}, seed=3)
    est = fr.SecureBoost(n_trees=3, max_depth=2, max_bin=16).fit(private)
    p = est.privacy_  # what the model file and the job's metrics carry
    assert 3.9 < p["epsilon"] <= 4.0 and p["delta"] == 1e-5 and p["mechanisms_planned"] == 2 + 3 * (2 + 1) + 1
    assert "[privacy]" in est.run_.spec and "epsilon = 4.0" in est.run_.spec
    plain = fr.SecureBoost(n_trees=3, max_depth=2, max_bin=16).fit(fr.Federation.horizontal(banks, seed=3))
    assert plain.privacy_ is None and "[privacy]" not in plain.run_.spec
    X = banks["bank1"].drop(columns=["y"])
    assert not np.allclose(est.predict_proba(X)[:, 1], plain.predict_proba(X)[:, 1])  # noised sums moved it
    # the setting survives split copies and clone
    assert fr.Federation.horizontal(banks, privacy={"epsilon": 2.0})._with(banks).privacy == {"epsilon": 2.0}


@pytest.mark.parametrize("privacy, words", [
    ({"epsilon": -1.0}, ["epsilon", "greater than 0"]),
    ({"epsilon": 4.0, "budget": 2}, ["budget", "keys: epsilon, delta"]),
    ({"delta": 1e-5}, ["set epsilon"]),
    ("4.0", ["pass a dict"]),
])
def test_a_bad_privacy_setting_is_one_line(privacy, words):
    with pytest.raises(ConfigError) as e:
        fr.Federation.horizontal(_banks(), privacy=privacy)
    msg = str(e.value)
    assert all(w in msg for w in words) and "\n" not in msg, msg


def test_a_vertical_federation_has_no_privacy_setting():
    banks = _banks()
    lender = banks["bank1"][["id", "y", "x0", "x1"]]
    payco = banks["bank1"][["id", "x2", "x3"]]
    with pytest.raises(ConfigError, match="horizontal trainers"):
        fr.Federation.vertical({"lender": lender, "payco": payco}, privacy={"epsilon": 4.0})


def test_a_private_logistic_regression_reports_its_budget_without_a_test_set():
    """``LogisticRegression`` on a private federation came back with ``privacy_ = None``: horizontal.lr wrote
    the budget only into the evaluation holder's metrics.json, which a federation without test rows (and a CLI
    job without ``[evaluation]``) never writes, and not into model.json as horizontal.gbdt does."""
    banks = _banks()
    est = fr.LogisticRegression().fit(fr.Federation.horizontal(banks, privacy={"epsilon": 4.0, "delta": 1e-5}, seed=3))
    p = est.privacy_
    assert p is not None, "privacy_ is None after a private fit"
    assert 3.9 < p["epsilon"] <= 4.0 and p["delta"] == 1e-5
    assert est.files_["model.json"]["privacy"] == p  # the model file carries it, as a GBDT model's does
    plain = fr.LogisticRegression().fit(fr.Federation.horizontal(banks, seed=3))
    assert plain.privacy_ is None and "privacy" not in plain.files_["model.json"]
