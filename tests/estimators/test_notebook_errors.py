"""Errors of a notebook fit name the estimator's keywords, not job-spec lines the user never wrote.

A notebook user sets ``categories=`` and ``iv_threshold=`` on the estimator; the task's errors
said ``[task] categories = { purpose = [...] }`` and ``lower task.iv_threshold`` (found on German
credit with raw text columns, horizontal and vertical).
"""
from __future__ import annotations

import pytest

import fedrisk as fr
from fedrisk.estimators.engine import _task_settings_as_keywords
from tests.tasks.test_woe_tasks import german_frame


def test_spec_settings_read_as_keywords():
    assert _task_settings_as_keywords("treat them as categories ([task] categories = { purpose = [...] } in a job)") == \
        "treat them as categories (categories={'purpose': [...]} of the estimator in a job)"
    assert _task_settings_as_keywords("name them in [task] categorical = [...]") == \
        "name them in categorical=[...] of the estimator"
    assert _task_settings_as_keywords("lower task.iv_threshold or leave") == "lower the estimator's iv_threshold= or leave"


def test_text_columns_without_categories_name_the_keyword():
    df = german_frame()[["id", "y", "duration_in_month", "purpose"]]
    banks = {"bank1": df[df.id % 2 == 0], "bank2": df[df.id % 2 == 1]}
    with pytest.raises(fr.DataError) as e:
        fr.LogisticRegression().fit(fr.Federation.horizontal(banks, id="id", label="y"))
    msg = str(e.value)
    assert "categories={'purpose': [...]} of the estimator" in msg and "[task]" not in msg, msg


def test_vertical_scorecard_iv_threshold_names_the_keyword():
    df = german_frame()
    fed = fr.Federation.vertical({"lender": df[["id", "y", "duration_in_month"]],
                                  "bureau": df[["id", "telephone"]]}, id="id", label="y")
    with pytest.raises(fr.FedriskError) as e:
        fr.Scorecard(iv_threshold=0.5, max_iter=3).fit(fed.split()[0])
    msg = str(e.value)
    assert "iv_threshold" in msg and "task." not in msg, msg
