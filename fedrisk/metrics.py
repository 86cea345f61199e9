"""Evaluation metrics for notebooks: ``fr.metrics.auc(y, p)`` and friends.

The same functions ``metrics.json`` is computed with (:mod:`fedrisk.finance.metrics`): ``y`` is
1 for default, ``p`` is higher-is-riskier; AUC with ties is the Mann-Whitney statistic. Each takes
``sample_weight=`` (a row of weight ``w`` counts as ``w`` rows; the PSI ``expected_weight=`` /
``actual_weight=``) for stratified samples and exposure weighting.
"""
from __future__ import annotations

from fedrisk.finance.metrics import (
    auc,
    brier,
    calibration_table,
    confusion,
    evaluate,
    gini,
    ks,
    ks_curve,
    lift_table,
    population_stability_index,
)

__all__ = ["auc", "ks", "gini", "ks_curve", "lift_table", "population_stability_index", "brier",
           "calibration_table", "confusion", "evaluate"]
