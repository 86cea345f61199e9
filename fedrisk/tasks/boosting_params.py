"""The ``[task]`` settings every boosting task shares, declared once.

``vertical.secureboost`` and ``horizontal.gbdt`` take the same boosting parameters with the same
names, bounds and meaning (XGBoost's); each task's ``Params`` adds only its own protocol settings.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["BoostingParams"]


class BoostingParams(BaseModel):
    """Trees, depth, shrinkage, binning, regularisation, subsampling and early stopping.

    The algorithms' dataclasses (``SecureBoostParams``, ``GbdtParams``) document each setting; the
    bounds here are what a job spec may ask for (refused in one line otherwise).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    n_trees: int = Field(30, ge=1, le=10000)
    max_depth: int = Field(3, ge=1, le=16)
    learning_rate: float = Field(0.3, gt=0, le=1)
    max_bin: int = Field(32, ge=2, le=256)
    min_child_weight: float = Field(1.0, ge=0)
    reg_lambda: float = Field(1.0, ge=0)
    min_split_gain: float = Field(0.0, ge=0)
    subsample: float = Field(1.0, gt=0, le=1)
    validation_fraction: float = Field(0.0, ge=0, lt=0.5)
    early_stopping_rounds: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _early_stopping(self) -> "BoostingParams":
        if self.early_stopping_rounds and not self.validation_fraction:
            raise ValueError("early_stopping_rounds needs validation_fraction > 0 (e.g. 0.1) to hold rows out")
        return self
