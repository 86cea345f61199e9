"""The scikit-learn contract of every estimator, and parameters declared once (the task Params).

No training here: everything below is checked before any message is sent.
"""
from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

import fedrisk as fr
from fedrisk.errors import ConfigError
from fedrisk.runtime.tasks import get_task

ESTIMATORS = [fr.LogisticRegression, fr.SecureBoost, fr.WoeBinning, fr.Scorecard]


def test_public_surface_is_explicit():
    for name in ("Federation", "LogisticRegression", "SecureBoost", "WoeBinning", "Scorecard", "metrics", "load",
                 "run", "errors"):
        assert name in fr.__all__ and getattr(fr, name) is not None
    assert callable(fr.metrics.auc) and callable(fr.metrics.ks) and callable(fr.metrics.gini)
    with pytest.raises(AttributeError):
        fr.NoSuchThing  # noqa: B018


def test_import_fedrisk_does_not_load_the_notebook_stack():
    # party processes import fedrisk; they must not pay for scikit-learn at start-up
    code = "import sys, fedrisk; print('sklearn' in sys.modules, 'fedrisk.estimators' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_clone_get_set_params(cls):
    est = cls()
    params = est.get_params()
    assert params and all(not k.endswith("_") for k in params)
    sig = inspect.signature(cls)
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in sig.parameters.values())
    assert list(sig.parameters) == list(cls._declared)  # the task Params' fields, nothing else
    first = next(k for k, v in params.items() if isinstance(v, (int, float)) and not isinstance(v, bool)) \
        if any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in params.values()) else None
    if first is not None:
        est.set_params(**{first: params[first] + 1})
        assert est.get_params()[first] == params[first] + 1
    twin = clone(est)
    assert twin is not est and twin.get_params() == est.get_params()
    with pytest.raises(TypeError, match="unexpected keyword"):
        cls(no_such_setting=1)


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_defaults_come_from_the_task_params(cls):
    """One declaration: each default is the task's (or None where the kinds disagree)."""
    est = cls()
    from fedrisk.runtime.tasks import TASKS

    kinds = [get_task(k).Params for k in cls._TASKS.values() if k in TASKS]
    for name, value in est.get_params().items():
        declared = [P.model_fields[name].get_default(call_default_factory=True) for P in kinds if name in P.model_fields]
        if len(declared) == len(kinds) and all(d == declared[0] for d in declared):
            assert value == declared[0], name
        else:
            assert value is None, name


def test_secureboost_defaults_are_the_spec_defaults():
    P = get_task("vertical.secureboost").Params
    got = fr.SecureBoost().get_params()
    # with horizontal.gbdt present, vertical-only settings (scheme, key_bits ...) default to None
    assert {k: v for k, v in got.items() if v is not None} == \
        {k: v for k, v in P().model_dump().items() if got.get(k) is not None}
    assert got["n_trees"] == 30 and got["max_depth"] == 3 and got["max_bin"] == 32
    assert "Notes" in fr.SecureBoost.__doc__ and "learns" in fr.SecureBoost.__doc__
    assert "n_trees : int, default 30" in fr.SecureBoost.__doc__


def test_bad_settings_are_one_config_error_before_any_message(vfed, hfed):
    with pytest.raises(ConfigError, match=r"^SecureBoost: max_depth: Input should be greater"):
        fr.SecureBoost(max_depth=0).fit(vfed)
    with pytest.raises(ConfigError, match="n_trees"):
        fr.SecureBoost(scheme="rsa").set_params(scheme="ou", n_trees=0).fit(vfed)
    with pytest.raises(ConfigError, match="scheme"):
        fr.SecureBoost(scheme="rsa").fit(vfed)
    with pytest.raises(ConfigError, match="mu=0.5.*horizontal"):
        fr.LogisticRegression(mu=0.5).fit(vfed)  # a FedAvg setting on a vertical federation
    from fedrisk.runtime.tasks import TASKS

    if "horizontal.gbdt" not in TASKS:  # the banks' tree model is a task of its own
        with pytest.raises(ConfigError, match="runs on vertical"):
            fr.SecureBoost().fit(hfed)
    with pytest.raises(ConfigError, match="Federation"):
        fr.LogisticRegression().fit(pd.DataFrame({"x": [1.0]}))


def test_split_is_local_and_by_id(vfed):
    train, test = vfed.split("id % 5 == 0")
    for name, df in vfed.parties.items():
        assert len(train.parties[name]) + len(test.parties[name]) == len(df)
        assert (test.parties[name]["id"] % 5 == 0).all() and (train.parties[name]["id"] % 5 != 0).all()
    assert np.array_equal(test.y.to_numpy(), vfed.parties["lender"].loc[vfed.parties["lender"].id % 5 == 0, "y"].to_numpy())
    with pytest.raises(ConfigError, match="id % K == R"):
        vfed.split("id > 3")


def test_federation_input_errors(vertical_frames):
    lender, payco = vertical_frames
    with pytest.raises(ConfigError, match="one label holder"):
        fr.Federation.vertical({"lender": lender, "payco": payco.assign(y=0)})
    with pytest.raises(ConfigError, match="party name"):
        fr.Federation.vertical({"Lender": lender, "payco": payco})
    with pytest.raises(fr.DataError, match="id column 'key'"):
        fr.Federation.vertical({"lender": lender, "payco": payco}, id="key")


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_every_parameter_has_its_meaning_and_the_notes_say_what_each_party_learns(cls):
    """The numpydoc Parameters are generated from the one declaration; none may be blank."""
    doc = cls.__doc__
    for name, rec in cls._declared.items():
        assert rec["doc"], f"{cls.__name__}: setting {name!r} has no meaning (give its Params Field a description)"
        assert f"    {name} : " in doc, name
    assert "Notes\n    -----\n    What each party learns" in doc
