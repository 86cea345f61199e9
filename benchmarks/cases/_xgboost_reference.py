"""The pooled XGBoost reference the boosted-tree benchmark cases compare with (not a case itself).

Both ``horizontal-gbdt`` and ``vertical-secureboost`` train XGBoost on the pooled rows with the
job's own ``[task]`` settings (defaults as fedrisk's), ``hist`` trees and two threads, so the
comparison changes with the spec and never with the case.
"""
from __future__ import annotations

from typing import Any

import xgboost as xgb  # imported here, at the case's import, so no measured() block times the import


def xgboost_like(task: dict) -> Any:
    """An unfitted ``xgboost.XGBClassifier`` with the boosting settings of ``task`` (a ``[task]`` table)."""
    return xgb.XGBClassifier(
        n_estimators=task.get("n_trees", 30), max_depth=task.get("max_depth", 3),
        learning_rate=task.get("learning_rate", 0.3), max_bin=task.get("max_bin", 32),
        min_child_weight=task.get("min_child_weight", 1.0), reg_lambda=task.get("reg_lambda", 1.0),
        gamma=task.get("min_split_gain", 0.0), subsample=task.get("subsample", 1.0),
        tree_method="hist", n_jobs=2, random_state=0)
