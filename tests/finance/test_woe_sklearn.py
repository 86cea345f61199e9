"""WoeEncoder is a scikit-learn transformer: clone, Pipeline, and a documented subset of check_estimator.

The subset: the API checks (construction, get/set_params, clone, repr, mixin order, unfitted
errors). The data checks of ``check_estimator`` feed numpy arrays and multi-class or continuous
targets, which a WOE encoder refuses by design: it bins named DataFrame columns against a 0/1
default label (1 = bad) and says so in one DataError line.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import check_estimator

from fedrisk.finance.woe import WoeEncoder

API_CHECKS = {"check_parameters_default_constructible", "check_get_params_invariance", "check_set_params",
              "check_do_not_raise_errors_in_init_or_set_params", "check_estimators_unfitted", "check_mixin_order",
              "check_no_attributes_set_in_init", "check_estimator_repr", "check_transformer_n_iter"}


def test_documented_subset_of_check_estimator():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(WoeEncoder(), on_fail=None)
    status = {r["check_name"]: r["status"] for r in results if r["check_name"] in API_CHECKS}
    assert status and all(s == "passed" for s in status.values()), status


def test_clone_and_pipeline():
    enc = WoeEncoder(max_bins=4, categorical=["grade"])
    twin = clone(enc)
    assert twin.get_params() == enc.get_params() and twin is not enc
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"income": rng.normal(size=600), "grade": rng.choice(list("ABC"), size=600)})
    y = ((X.income + (X.grade == "C") + rng.normal(scale=0.5, size=600)) > 1).astype(int)
    pipe = make_pipeline(WoeEncoder(max_bins=4, categorical=["grade"]), LogisticRegression()).fit(X, y)
    assert pipe.predict_proba(X).shape == (600, 2)
    assert clone(pipe).get_params()["woeencoder__max_bins"] == 4
    with pytest.raises(Exception):
        WoeEncoder().transform(X)  # unfitted


def test_the_woe_helpers_report_and_scorecard_import_without_scikit_learn():
    """Every party process and ``fedrisk simulate``'s report import these; scikit-learn's import
    alone is ~2 s of CPU per process, paid only where an encoder or a reference model is built.
    ``fedrisk.finance.woe`` still exports the encoder, on first use, as the same class."""
    import subprocess
    import sys

    code = ("import sys; import fedrisk.finance.woe, fedrisk.finance.scorecard, fedrisk.finance.report, "
            "fedrisk.finance.tree_reasons; print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn')); "
            "from fedrisk.finance.woe import WoeEncoder; from fedrisk.finance import woe_encoder; "
            "print(WoeEncoder is woe_encoder.WoeEncoder, 'sklearn' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["[]", "True True"], r.stdout
