"""Errors a notebook user meets are one line in the notebook's terms (found on data no test had used).

* The estimator's keywords, not job-spec lines the user never wrote: a user sets ``categories=`` and
  ``iv_threshold=`` on the estimator, but the task's errors said ``[task] categories = { purpose = [...] }``
  and ``lower task.iv_threshold``; blank cells said "load with missing='mean'" (the loader's keyword).
* DataFrames with a column twice (``pd.concat([df, df[["x1"]]], axis=1)``) raised pandas' or pyarrow's
  own errors (``Duplicate column names found``, ``arg must be a list, tuple, 1-d array, or Series``).
* Blank cells at ``predict_proba`` said "NaN/inf in feature columns" without naming them.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import fedrisk as fr
from fedrisk.estimators.engine import _task_settings_as_keywords
from tests.tasks.test_woe_tasks import german_frame


def test_spec_settings_read_as_keywords():
    assert _task_settings_as_keywords("treat them as categories ([task] categories = { purpose = [...] } in a job)") == \
        "treat them as categories (categories={'purpose': [...]} of the estimator in a job)"
    assert _task_settings_as_keywords('declare it in [task] categories = { "cohort" = [...] }') == \
        "declare it in categories={'cohort': [...]} of the estimator"  # (the spec's key quoted, as refusals write it)
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


@pytest.mark.parametrize("estimator", [fr.WoeBinning, fr.Scorecard])
def test_horizontal_woe_text_column_without_categories_gives_the_keyword_once(estimator):
    """The protocol's message carries its own Python hint after the spec line; once the spec line reads as the
    keyword the hint repeated it word for word ("... of the estimator (in Python: ... of the estimator)")."""
    df = german_frame()[["id", "y", "duration_in_month", "purpose"]]
    banks = {"bank1": df[df.id % 2 == 0], "bank2": df[df.id % 2 == 1]}
    with pytest.raises(fr.DataError) as e:
        estimator().fit(fr.Federation.horizontal(banks, id="id", label="y"))
    # (whichever bank's thread stops first names itself)
    assert re.sub(r"^bank[12]: ", "bankN: ", str(e.value)) == (
        "bankN: text columns ['purpose'] have no declared categories; horizontal banks agree categories from the "
        "job spec, never from their rows: list them in categories={'purpose': [...]} of the estimator, or exclude "
        "the column")


def test_a_python_hint_that_says_something_else_is_kept():
    from fedrisk.estimators.engine import _without_repeated_python_advice

    assert _without_repeated_python_advice("set a = 1 (in Python: a=1 of the estimator)") == \
        "set a = 1 (in Python: a=1 of the estimator)"
    assert _without_repeated_python_advice("set a=1 of the estimator (in Python: a=1 of the estimator), or b") == \
        "set a=1 of the estimator, or b"


def test_vertical_scorecard_iv_threshold_names_the_keyword():
    df = german_frame()
    fed = fr.Federation.vertical({"lender": df[["id", "y", "duration_in_month"]],
                                  "bureau": df[["id", "telephone"]]}, id="id", label="y")
    with pytest.raises(fr.FedriskError) as e:
        fr.Scorecard(iv_threshold=0.5, max_iter=3).fit(fed.split()[0])
    msg = str(e.value)
    assert "iv_threshold" in msg and "task." not in msg, msg


@pytest.fixture(scope="module")
def banks_and_model(shared_data):
    banks = {f"bank{i}": pd.read_csv(shared_data / f"default_credit_homo_{n}.csv", nrows=300)
             for i, n in enumerate(["guest", "host_1"], 1)}
    return banks, fr.LogisticRegression().fit(fr.Federation.horizontal(banks, id="id", label="y"))


def test_a_column_twice_is_one_line_at_fit_and_at_predict(banks_and_model):
    banks, lr = banks_and_model
    twice = {n: pd.concat([df, df[["x1"]]], axis=1) for n, df in banks.items()}
    with pytest.raises(fr.DataError, match=r"party 'bank1': its DataFrame has the columns \['x1'\] more than once"):
        fr.Federation.horizontal(twice, id="id", label="y")
    with pytest.raises(fr.DataError, match=r"feature columns \['x1'\] more than once; keep one copy"):
        lr.predict_proba(twice["bank2"])


def test_blank_cells_at_predict_name_their_columns(banks_and_model):
    banks, lr = banks_and_model
    X = banks["bank2"].assign(x3=lambda d: (d.x3 * 10).round().astype("Int64"))
    X.loc[X.index[:4], "x3"] = pd.NA
    with pytest.raises(fr.DataError, match=r"4 of 300 rows have blank \(NaN\) or infinite values in the model's "
                                           r"feature columns 'x3' \(4\); fill or drop them"):
        lr.predict_proba(X)
    X = banks["bank2"].assign(x8=lambda d: d.x8.where(d.index != 0, np.inf))
    with pytest.raises(fr.DataError, match=r"1 of 300 rows have infinite values in the model's feature columns 'x8' \(1\)"):
        fr.SecureBoost(n_trees=2).fit(fr.Federation.horizontal(banks, id="id", label="y")).predict_proba(X)


def test_blank_cells_at_fit_name_the_federations_missing_keyword(banks_and_model):
    banks, _ = banks_and_model
    blank = dict(banks, bank1=banks["bank1"].assign(x3=lambda d: d.x3.where(d.index % 50 != 0)))
    with pytest.raises(fr.DataError, match=r"or build the Federation with missing='mean'"):
        fr.LogisticRegression().fit(fr.Federation.horizontal(blank, id="id", label="y"))


def test_a_spec_setting_with_its_value_reads_as_one_keyword():
    """``task.min_bin_class = 5`` in a label holder's refusal read "min_bin_class= = 5" in a notebook."""
    assert _task_settings_as_keywords("the rule (task.min_bin_class = 5) holds; lower task.min_bin_class to 2") == \
        "the rule (the estimator's min_bin_class=5) holds; lower the estimator's min_bin_class= to 2"


def test_split_counts_every_blank_label_not_only_the_training_parts():
    """``fed.split()`` ran before the label check, so the fit said "empty in 1 rows" for 7 blank labels
    (only the training part's), and the user dropped them one split at a time."""
    rng = np.random.default_rng(1)
    d = pd.DataFrame({"id": range(600), "a": rng.normal(size=600), "b": rng.normal(size=600),
                      "y": (rng.random(600) < 0.3).astype(float)})
    d.loc[[3, 50, 100, 200, 300, 400, 500], "y"] = np.nan
    fed = fr.Federation.vertical({"lender": d[["id", "a", "y"]], "payco": d[["id", "b"]]}, id="id", label="y")
    with pytest.raises(fr.DataError, match=r"^party 'lender' \(its DataFrame\): label column 'y' is empty in 7 rows;"):
        fed.split()
    train, _ = fr.Federation.vertical({"lender": d[["id", "a", "y"]].dropna(), "payco": d[["id", "b"]]},
                                      id="id", label="y").split()
    assert train.y.notna().all()
