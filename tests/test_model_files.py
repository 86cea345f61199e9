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


@pytest.mark.parametrize("fmt,version", [("fedrisk.gbdt", 3), ("fedrisk.lr", 3)])
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


def _logistic():
    from fedrisk.algorithms.horizontal.logistic import LogisticModel

    return LogisticModel(["x0", "x1"], np.array([0.0, 1.0]), np.array([1.0, 2.0]), np.array([0.5, -0.25]), -0.1)


def _blank_rows(tmp_path):
    f = tmp_path / "blank.csv"
    pd.DataFrame({"id": [1, 2, 3], "x0": [0.5, np.nan, -1.0], "x1": [2.0, 1.5, np.nan]}).to_csv(f, index=False)
    return f


def test_lr_file_with_imputation_says_version_2_and_without_stays_1(tmp_path):
    """As for trees and vertical models: a reader that ignored ``imputation`` would refuse (or fill otherwise)
    the blank cells the model was trained to fill with the federation's means."""
    from fedrisk.model_files import save_lr_model
    from fedrisk.runtime.predict import predict_file

    plain = load_model(save_lr_model(tmp_path / "a" / "model.json", _logistic(), "horizontal.lr", "j"))
    fill = {"x0": 0.0, "x1": 1.0}
    filled = load_model(save_lr_model(tmp_path / "b" / "model.json", _logistic(), "horizontal.lr", "j", imputation=fill))
    assert plain["version"] == 1 and "imputation" not in plain
    assert filled["version"] == 2 and filled["imputation"] == fill
    assert predict_file(tmp_path / "b" / "model.json", _blank_rows(tmp_path), tmp_path / "s.csv") == 3
    z = (np.array([[0.5, 2.0], [0.0, 1.5], [-1.0, 1.0]]) - [0.0, 1.0]) / [1.0, 2.0] @ [0.5, -0.25] - 0.1
    np.testing.assert_allclose(pd.read_csv(tmp_path / "s.csv")["score"], 1 / (1 + np.exp(-z)), atol=1e-7)


def test_a_version_1_lr_file_with_imputation_from_an_earlier_release_still_scores_with_it(tmp_path):
    """Files written before the version rule say version 1 and carry ``imputation``: read as written."""
    from fedrisk.runtime.predict import predict_file

    f = write_json(tmp_path / "model.json", _lr(imputation={"x0": 0.0, "x1": 1.0}))
    assert load_model(f)["version"] == 1
    assert predict_file(f, _blank_rows(tmp_path), tmp_path / "s.csv") == 3
    assert pd.read_csv(tmp_path / "s.csv")["score"].notna().all()


@pytest.mark.parametrize("imputation", [None, {}, {"x0": "mean"}])
def test_a_version_2_lr_file_without_its_imputation_is_refused_in_one_line(tmp_path, imputation):
    doc = _lr(version=2, **({} if imputation is None else {"imputation": imputation}))
    f = write_json(tmp_path / "model.json", doc)  # digest intact: damage the digest cannot catch
    with pytest.raises(ConfigError, match="'imputation'") as e:
        load_model(f)
    msg = str(e.value)
    assert str(f) in msg and "\n" not in msg
    if not imputation:
        assert "version 2 promises 'imputation'" in msg and "has none" in msg
    r = CliRunner().invoke(app, ["predict", str(f), str(_blank_rows(tmp_path)), "--out", str(tmp_path / "s.csv")])
    assert r.exit_code == 2 and "'imputation'" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "s.csv").exists()


def test_a_reader_of_version_1_lr_files_refuses_a_version_2_file_in_one_line(tmp_path, monkeypatch):
    """The previous release reads ``fedrisk.lr`` up to version 1: given a file with fill values it says so
    instead of scoring without them (simulated here with that release's table of versions)."""
    from fedrisk import model_files
    from fedrisk.model_files import save_lr_model

    f = save_lr_model(tmp_path / "model.json", _logistic(), "horizontal.lr", "j", imputation={"x0": 0.0, "x1": 1.0})
    monkeypatch.setitem(model_files.NEWEST_VERSION, "fedrisk.lr", 1)
    with pytest.raises(ConfigError, match=r"format 'fedrisk.lr' version 2 was written by a newer fedrisk \(this one "
                                          r"reads up to version 1\)") as e:
        load_model(f)
    assert "\n" not in str(e.value)
    plain = save_lr_model(tmp_path / "plain.json", _logistic(), "horizontal.lr", "j")
    assert load_model(plain)["version"] == 1  # a file without fill values stays readable by that release


def test_vertical_and_tree_files_of_version_2_need_their_imputation_too():
    from fedrisk.model_files import IMPUTATION_FORMATS

    assert {"fedrisk.lr", "fedrisk.gbdt", "fedrisk.vertical.lr.part", "fedrisk.vertical.secureboost"} <= IMPUTATION_FORMATS
    doc = json.loads(json.dumps(_gbdt().to_json()))
    with pytest.raises(ConfigError, match="version 2 promises 'imputation'"):
        validate_model({"format": "fedrisk.gbdt", "version": 2, **doc})
    part = {"format": "fedrisk.vertical.secureboost.part", "version": 2, "imputation": {}}
    with pytest.raises(ConfigError, match="version 2 promises 'imputation'"):
        validate_model(part)
    validate_model({**part, "version": 1})  # a part without fill values says version 1 (its 'imputation' empty)
