"""Model files (issue 12 item 10): validated before anything is scored, and sealed with a digest."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fedrisk.cli import app
from fedrisk.errors import ConfigError
from fedrisk.model_files import load_model, model_digest, score_lr, validate_model
from fedrisk.runtime.context import write_json


def _lr(**over):
    m = {"format": "fedrisk.lr", "version": 1, "task": "horizontal.lr", "job": "j", "features": ["x0", "x1"],
         "mean": [0.0, 1.0], "scale": [1.0, 2.0], "coef": [0.5, -0.25], "intercept": -0.1, "history": []}
    m.update(over)
    return m


@pytest.fixture()
def rows(tmp_path):
    rng = np.random.default_rng(0)
    f = tmp_path / "rows.csv"
    pd.DataFrame({"id": range(199), "x0": rng.normal(size=199), "x1": rng.normal(size=199)}).to_csv(f, index=False)
    return f


def test_zero_scale_is_refused_instead_of_scoring_nan(tmp_path, rows):
    # before: "scored 199 rows" and a scores file of NaN
    f = tmp_path / "model.json"
    f.write_text(json.dumps(_lr(scale=[0.0, 2.0])))  # a hand-edited file, no digest
    r = CliRunner().invoke(app, ["predict", str(f), str(rows), "--out", str(tmp_path / "s.csv")])
    assert r.exit_code == 2, r.output
    assert "'scale'[0] is 0.0; scales must be positive" in r.output and "scored" not in r.output
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("field,value,msg", [
    ("coef", [float("nan"), 1.0], "not a finite number"),
    ("coef", [1.0], "list of 2 numbers"),
    ("mean", [0.0, "1"], "not a finite number"),
    ("scale", [1.0, -1.0], "must be positive"),
    ("intercept", None, "'intercept'"),
    ("features", ["x0", "x0"], "distinct"),
    ("version", "1", "'version'"),
])
def test_bad_linear_fields_are_named(tmp_path, field, value, msg):
    f = tmp_path / "model.json"
    f.write_text(json.dumps(_lr(**{field: value})))
    with pytest.raises(ConfigError, match=msg) as e:
        load_model(f)
    assert str(f) in str(e.value) and "\n" not in str(e.value)


def test_written_models_carry_a_digest_that_load_checks(tmp_path, rows):
    f = write_json(tmp_path / "model.json", _lr(coef=np.array([0.5, -0.25])))
    saved = json.loads(f.read_text())
    assert saved["digest"]["sha256"] == model_digest(saved)
    model = load_model(f)
    X = pd.read_csv(rows)[["x0", "x1"]].to_numpy()
    assert np.isfinite(score_lr(model, X)).all()
    # a careful edit that stays schema-valid is still caught
    saved["coef"] = [5.0, -0.25]
    f.write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match="does not match its sha256 digest"):
        load_model(f)


def test_nan_in_history_does_not_break_the_digest(tmp_path):
    f = write_json(tmp_path / "model.json", _lr(history=[{"round": 1, "loss": float("nan")}]))
    assert math.isnan(load_model(f)["history"][0]["loss"])


def test_scorecard_fields_are_checked(tmp_path):
    card = {"format": "fedrisk.scorecard", "version": 1, "features": ["x"], "base_points": 600.0,
            "base_score": 600, "base_odds": 50, "pdo": 0, "table": [{"feature": "x", "bin": 0, "points": 1.0}],
            "bins": {"x": {}}}
    with pytest.raises(ConfigError, match="'pdo' is 0"):
        validate_model(card)
    card["pdo"] = 20
    card["table"][0]["points"] = float("inf")
    with pytest.raises(ConfigError, match="points is inf"):
        validate_model(card)


def _gbdt(imputation=None):
    from fedrisk.algorithms.horizontal.gbdt import GbdtModel

    tree = {"nodes": [{"id": 0, "feature": "x0", "feature_index": 0, "bin": 0, "threshold": 0.0, "missing_left": True,
                       "left": 1, "right": 2, "gain": 1.0, "cover": 2.0},
                      {"id": 1, "leaf": -0.5, "cover": 1.0}, {"id": 2, "leaf": 0.5, "cover": 1.0}]}
    return GbdtModel(["x0", "x1"], -1.0, [tree], [[0.0], [0.0]], [True, False], imputation=imputation)


def test_gbdt_file_with_imputation_says_version_2_and_without_stays_1(tmp_path):
    """An older reader would ignore ``imputation`` (blanks would take the trees' missing branches): such a
    file must carry a version that says so; a file without it stays readable by every release."""
    from fedrisk.model_files import save_gbdt_model, score_gbdt

    plain = load_model(save_gbdt_model(tmp_path / "a.json", _gbdt(), "horizontal.gbdt", "j"))
    filled = load_model(save_gbdt_model(tmp_path / "b.json", _gbdt({"x0": 3.0, "x1": 0.0}), "horizontal.gbdt", "j"))
    assert plain["version"] == 1 and "imputation" not in plain
    assert filled["version"] == 2 and filled["imputation"] == {"x0": 3.0, "x1": 0.0}
    X = np.array([[1.0, 0.0], [-1.0, 0.0]])
    assert np.allclose(score_gbdt(plain, X), score_gbdt(filled, X))


@pytest.mark.parametrize("fmt,version", [("fedrisk.gbdt", 3), ("fedrisk.lr", 2)])
def test_a_newer_model_file_version_is_refused_in_one_line(tmp_path, rows, fmt, version):
    from fedrisk.model_files import save_gbdt_model

    if fmt == "fedrisk.gbdt":
        doc = json.loads(save_gbdt_model(tmp_path / "g.json", _gbdt(), "horizontal.gbdt", "j").read_text())
    else:
        doc = _lr()
    f = write_json(tmp_path / "model.json", {**doc, "version": version})  # digest intact: a real newer file
    with pytest.raises(ConfigError, match=rf"format '{fmt}' version {version} was written by a newer fedrisk") as e:
        load_model(f)
    assert str(f) in str(e.value) and "\n" not in str(e.value)
    r = CliRunner().invoke(app, ["predict", str(f), str(rows), "--out", str(tmp_path / "s.csv")])
    assert r.exit_code == 2 and "newer fedrisk" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "s.csv").exists()
