"""Early stopping on validation rows of one class: with rare defaults a small validation split can hold no
bad at all; its loss then only grows as the trees move off the base rate, so training silently stopped at
the first tree (1 % bads: train AUC 0.84 of a model that kept one tree). The label holder now says so in its
own log (counts only: partners learn nothing new)."""
from __future__ import annotations

import logging

import numpy as np

from fedrisk.algorithms.vertical.secureboost import SecureBoostParams
from fedrisk.algorithms.vertical.secureboost.params import _RowSchedule
from tests.algorithms.vertical.test_secureboost import make_data, train


def test_a_validation_split_without_defaults_is_named_in_the_label_holders_log(caplog):
    X, y = make_data(n=400)
    params = SecureBoostParams(key_bits=1024, max_bin=16, n_trees=3, max_depth=2, validation_fraction=0.1,
                               early_stopping_rounds=1)
    val = _RowSchedule(params, len(y)).val
    y = y.copy()
    y[val] = 0.0
    with caplog.at_level(logging.WARNING):
        res, _ = train([X[:, :3], X[:, 3:]], y, params)
    hits = [r.getMessage() for r in caplog.records if "validation" in r.getMessage()]
    assert len(hits) == 1 and "no default" in hits[0] and "early_stopping_rounds" in hits[0], hits
    assert res["lh"][0].warnings_ == hits  # the task writes them to the label holder's own log


def test_a_validation_split_with_both_classes_says_nothing(caplog):
    X, y = make_data(n=400)
    params = SecureBoostParams(key_bits=1024, max_bin=16, n_trees=2, max_depth=2, validation_fraction=0.3,
                               early_stopping_rounds=1)
    with caplog.at_level(logging.WARNING):
        res, _ = train([X[:, :3], X[:, 3:]], y, params)
    assert not [r for r in caplog.records if "validation" in r.getMessage()] and res["lh"][0].warnings_ == []
