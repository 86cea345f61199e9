"""The hyper-parameters every boosted-tree trainer shares, declared once at the algorithm level.

:class:`~fedrisk.algorithms.vertical.secureboost.SecureBoostParams` and
:class:`~fedrisk.algorithms.horizontal.gbdt.GbdtParams` grow the same trees (second-order boosting
of the log-loss on binned features, :mod:`fedrisk.algorithms.vertical.tree`), so the settings with
the same name and meaning live here and each trainer's dataclass adds only its own (and words the
settings whose meaning depends on who holds the rows). The pydantic twin for job specs is
:class:`fedrisk.tasks.boosting_params.BoostingParams`; a test keeps the defaults of both equal.
"""
from __future__ import annotations

from dataclasses import dataclass

from fedrisk.algorithms.vertical.tree import TreeParams

__all__ = ["BoostingParams"]


@dataclass(frozen=True)
class BoostingParams:
    """Settings of second-order boosting shared by every tree trainer (its subclass validates them).

    Parameters
    ----------
    n_trees : int
        Boosting rounds (upper bound when early stopping).
    max_depth : int
        Depth of every tree (depth-wise growth).
    learning_rate : float
        Shrinkage of leaf weights.
    min_child_weight : float
        Minimum hessian sum in each child of a split.
    reg_lambda : float
        L2 penalty on leaf weights.
    min_split_gain : float
        Minimum loss reduction for a split (XGBoost's ``gamma``).

    ``max_bin``, ``subsample``, ``validation_fraction`` and ``early_stopping_rounds`` are declared
    here too; their meaning depends on who holds the rows, so each trainer documents them.
    """

    n_trees: int = 30
    max_depth: int = 3
    learning_rate: float = 0.3
    max_bin: int = 32
    min_child_weight: float = 1.0
    reg_lambda: float = 1.0
    min_split_gain: float = 0.0
    subsample: float = 1.0
    validation_fraction: float = 0.0
    early_stopping_rounds: int = 0

    @property
    def tree(self) -> TreeParams:
        """The tree-growth settings the split search needs."""
        return TreeParams(self.max_depth, self.learning_rate, self.min_child_weight, self.reg_lambda, self.min_split_gain)
