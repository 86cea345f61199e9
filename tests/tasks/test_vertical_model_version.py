"""Vertical model files that carry training means (``imputation``, a party with ``missing = "mean"``) say
version 2, as the horizontal GBDT file does: a reader that ignored the means would fill blanks with the
scoring batch's own means (LR) or send them down the trees' missing branches (SecureBoost) and score
silently differently. A part without means stays version 1 (readable by every release), and a version this
release does not know is refused in one line by ``load_model`` (what federated predict reads each part with)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import fedrisk as fr
from fedrisk.errors import ConfigError
from fedrisk.estimators.engine import run_task
from fedrisk.model_files import load_model
from fedrisk.runtime.context import write_json


def _federation(n: int = 300) -> fr.Federation:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(n, 4))
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ [1.0, -0.7, 0.8, 0.6] - 1)))).astype(int)
    lender = pd.DataFrame({"id": np.arange(n), "y": y, "a": X[:, 0], "b": X[:, 1]})
    lender.loc[::7, "a"] = np.nan  # blanks the lender fills with its training means
    payco = pd.DataFrame({"id": np.arange(n), "c": X[:, 2], "d": X[:, 3]})
    return fr.Federation.vertical({"lender": lender, "payco": payco}, id="id", label="y", seed=7,
                                  missing={"lender": "mean", "payco": "reject"})


@pytest.mark.parametrize("kind, params, fmt", [
    ("vertical.lr", {"max_iter": 3}, "fedrisk.vertical.lr"),
    ("vertical.secureboost", {"n_trees": 2, "max_depth": 2, "max_bin": 8}, "fedrisk.vertical.secureboost"),
])
def test_a_vertical_part_with_imputation_says_version_2_and_a_newer_one_is_refused(tmp_path, kind, params, fmt):
    run = run_task(_federation(), kind, params, keep_dir=tmp_path / "run")
    out = next((tmp_path / "run").rglob("model.json")).parent
    lender, payco = load_model(out / "model.json"), load_model(out / "model-payco.json")
    assert lender["format"] == fmt and lender["imputation"] and lender["version"] == 2
    assert payco["format"] == fmt + ".part" and not payco["imputation"] and payco["version"] == 1
    assert run.files["model.json"]["version"] == 2
    for doc in (lender, payco):
        f = write_json(tmp_path / "newer.json", {**doc, "version": 3})  # digest intact: a real newer file
        with pytest.raises(ConfigError) as e:
            load_model(f)
        msg = str(e.value)
        assert f"format '{doc['format']}' version 3 was written by a newer fedrisk" in msg, msg
        assert "reads up to version 2" in msg and "\n" not in msg and str(f) in msg, msg
