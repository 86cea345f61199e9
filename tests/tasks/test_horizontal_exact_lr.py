"""horizontal.lr / horizontal.scorecard / horizontal.woe through the real task functions, in-process.

* the solver setting: FedAvg-only settings are refused next to an explicit ``solver = "newton"``
  and ignored (with a warning) when the solver is defaulted;
* the scorecard inherits the exact solver: its coefficients and unrounded points equal those of a
  pooled scikit-learn logistic regression on the same WOE-encoded bins;
* same spec and seed, same model: every horizontal task run twice agrees to 1e-9.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from fedrisk.algorithms.horizontal.logistic import sklearn_C
from fedrisk.errors import ConfigError
from fedrisk.finance.woe import FeatureWoe
from fedrisk.runtime.spec import load_spec
from tests.tasks.test_woe_tasks import categories_toml, horizontal_spec, run_in_process, split_german


@pytest.mark.parametrize("kind", ["horizontal.lr", "horizontal.scorecard"])
def test_fedavg_settings_next_to_an_explicit_newton_solver_are_refused(tmp_path, kind):
    split_german(tmp_path, banks=2)
    spec = horizontal_spec(tmp_path, kind, banks=2, task_extra='solver = "newton"\nlearning_rate = 0.2\nmu = 0.1')
    with pytest.raises(ConfigError, match=r"task\.learning_rate, task\.mu only apply to solver = 'fedavg'"):
        load_spec(spec)
    # a defaulted solver keeps old specs running; the settings are reported as ignored at run time
    spec = horizontal_spec(tmp_path, kind, banks=2, task_extra="learning_rate = 0.2")
    load_spec(spec)
    spec = horizontal_spec(tmp_path, kind, banks=2, task_extra='solver = "fedavg"\nlearning_rate = 0.2')
    load_spec(spec)
    spec = horizontal_spec(tmp_path, kind, banks=2, task_extra='solver = "sgd"')
    with pytest.raises(ConfigError, match=r"task\.solver"):
        load_spec(spec)


def _numeric_model(path: Path) -> dict:
    m = json.loads(path.read_text())
    return {k: m[k] for k in ("coef", "intercept", "mean", "scale")}


def _assert_close(a, b, tol=1e-9, where="") -> None:
    """Same structure, same strings, numbers within ``tol``."""
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _assert_close(a[k], b[k], tol, f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, tol, f"{where}.{i}")
    elif isinstance(a, (int, float)) and not isinstance(a, bool):
        assert abs(a - b) <= tol * max(1.0, abs(a)), (where, a, b)
    else:
        assert a == b, (where, a, b)


def numeric_banks(tmp: Path, banks: int = 3) -> None:
    """Small numeric banks ``bank{k}.csv`` and ``test.csv`` for horizontal.lr."""
    rng = np.random.default_rng(0)
    for name, n in [*((f"bank{k + 1}", 150 + 50 * k) for k in range(banks)), ("test", 100)]:
        X = rng.normal(size=(n, 3))
        y = (rng.random(n) < 1 / (1 + np.exp(-X @ [1.0, -0.5, 0.3]))).astype(int)
        pd.DataFrame({"id": np.arange(n), "y": y, **{f"x{j}": X[:, j] for j in range(3)}}).to_csv(tmp / f"{name}.csv", index=False)


def test_horizontal_lr_logs_the_ignored_fedavg_settings(tmp_path, caplog):
    numeric_banks(tmp_path)
    spec = horizontal_spec(tmp_path, "horizontal.lr", test=True, task_extra="learning_rate = 0.2")
    with caplog.at_level(logging.WARNING):
        m = run_in_process(spec, tmp_path / "run")
    assert "learning_rate only apply to solver = 'fedavg' and are IGNORED" in caplog.text
    assert m["solver"] == "newton"


def test_scorecard_points_equal_a_pooled_woe_logistic_regression(tmp_path):
    parts = split_german(tmp_path, banks=3, test=True)
    spec = horizontal_spec(tmp_path, "horizontal.scorecard", test=True,
                           task_extra="round_points = false\n" + categories_toml(parts))
    run_in_process(spec, tmp_path / "run")
    card = json.loads((tmp_path / "run" / "scorecard.json").read_text())
    feats = list(card["coef"])
    assert card["history"] and len(card["history"]) <= 15
    pooled = pd.concat([parts[b] for b in ("bank1", "bank2", "bank3")], ignore_index=True)
    woe = {f: FeatureWoe.from_dict(card["bins"][f]) if f in card["bins"] else None for f in feats}
    # features the card dropped (coefficient exactly 0) are not in its bins; the model still had them
    assert all(w is not None for w in woe.values()), "every selected feature should carry weight on germancredit"
    W = np.column_stack([woe[f].woe[woe[f].bins.assign(pooled[f])] for f in feats])
    mean, std = W.mean(0), W.std(0)
    ref = LogisticRegression(C=sklearn_C(1e-4, len(pooled)), solver="newton-cholesky", tol=1e-12, max_iter=1000)
    ref.fit((W - mean) / std, pooled["y"].to_numpy())
    coef_raw = ref.coef_[0] / std
    intercept_raw = float(ref.intercept_[0] - np.sum(coef_raw * mean))
    fed = np.array([card["coef"][f] for f in feats])
    # compare on the standardised scale (what the solver optimises) and on the WOE scale
    assert np.max(np.abs(fed * std - ref.coef_[0])) <= 1e-4
    assert abs(card["intercept"] - intercept_raw) <= 1e-4
    factor = card["pdo"] / np.log(2)
    for r in card["table"]:
        j = feats.index(r["feature"])
        assert r["points"] == pytest.approx(-factor * coef_raw[j] * r["woe"], abs=1e-2)


def _lr_spec(tmp_path: Path, shared_data: Path) -> Path:
    from tests.stress_data.horizontal import make_case, write_case

    case = make_case("collinear_constant_small", shared_data)
    write_case(case, tmp_path)
    spec = horizontal_spec(tmp_path, "horizontal.lr", test=True)
    return spec


@pytest.mark.parametrize("kind", ["horizontal.lr", "horizontal.scorecard", "horizontal.woe"])
def test_same_spec_and_seed_give_the_same_model(tmp_path, kind, shared_data):
    if kind == "horizontal.lr":
        spec = _lr_spec(tmp_path, shared_data)
    else:
        parts = split_german(tmp_path, banks=3, test=kind == "horizontal.scorecard")
        spec = horizontal_spec(tmp_path, kind, test=kind == "horizontal.scorecard", task_extra=categories_toml(parts))
    outs = [tmp_path / "run1", tmp_path / "run2"]
    for out in outs:
        run_in_process(spec, out)
    if kind == "horizontal.lr":
        _assert_close(_numeric_model(outs[0] / "model.json"), _numeric_model(outs[1] / "model.json"))
        s = [pd.read_csv(o / "scores" / "test.csv")["score"].to_numpy() for o in outs]
        np.testing.assert_allclose(s[0], s[1], rtol=0, atol=1e-12)
    elif kind == "horizontal.scorecard":
        cards = [json.loads((o / "scorecard.json").read_text()) for o in outs]
        for c in cards:
            # in-process every participant writes the same file: the history is whoever wrote last's view;
            # the digest covers those run-specific fields too (and the run id / time of writing)
            for k in ("job", "history", "digest", "run_id", "created"):
                c.pop(k, None)
        _assert_close(cards[0], cards[1])
    else:
        for bank in ("bank1", "bank2", "bank3"):
            docs = [json.loads((o / "woe" / f"{bank}.json").read_text()) for o in outs]
            for d in docs:
                for k in ("job", "created", "digest", "run_id"):
                    d.pop(k, None)
            _assert_close(docs[0], docs[1])
