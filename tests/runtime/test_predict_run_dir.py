"""``fedrisk predict RUN_DIR`` finds a vertical scorecard run's model, as ``fr.load(RUN_DIR)`` does.

A vertical scorecard run writes ``scorecard-<party>.json`` (no ``model.json`` or ``scorecard.json``);
``fedrisk predict RUN_DIR NEW.csv`` said "a folder with no model file" while ``fr.load(RUN_DIR)`` read it.
"""
from __future__ import annotations

import json

import pytest

from fedrisk.errors import ConfigError
from fedrisk.runtime.predict import _model_file, run_model_file


def test_the_label_holders_scorecard_part_is_the_runs_model(tmp_path):
    (tmp_path / "scorecard-bureau.json").write_text(json.dumps({"format": "fedrisk.vertical.scorecard.part", "version": 1}))
    (tmp_path / "scorecard-lender.json").write_text(json.dumps({"format": "fedrisk.vertical.scorecard", "version": 1}))
    assert _model_file(tmp_path) == tmp_path / "scorecard-lender.json" == run_model_file(tmp_path)


def test_a_folder_without_a_model_names_what_it_looked_for(tmp_path):
    (tmp_path / "scorecard-bureau.json").write_text(json.dumps({"format": "fedrisk.vertical.scorecard.part", "version": 1}))
    with pytest.raises(ConfigError, match=r"no model file \(model.json, scorecard.json or the label holder's "
                                          r"scorecard-<party>.json\)"):
        _model_file(tmp_path)


def test_run_model_json_of_a_vertical_scorecard_run_names_the_label_holders_part(tmp_path):
    """`fedrisk predict RUN/model.json` (as the README's vertical examples write it) on a vertical scorecard
    run said only "model file RUN/model.json does not exist"; the run's model is the label holder's part."""
    (tmp_path / "scorecard-bureau.json").write_text(json.dumps({"format": "fedrisk.vertical.scorecard.part", "version": 1}))
    (tmp_path / "scorecard-lender.json").write_text(json.dumps({"format": "fedrisk.vertical.scorecard", "version": 1}))
    with pytest.raises(ConfigError, match=r"model.json does not exist; this run's model is .*scorecard-lender.json"):
        _model_file(tmp_path / "model.json")
