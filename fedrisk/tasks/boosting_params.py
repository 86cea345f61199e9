"""The gradient-boosting ``[task]`` settings, declared once for every tree task.

``vertical.secureboost`` and ``horizontal.gbdt`` train the same model (second-order boosting of
the log-loss on binned features) and take the same settings with the same names, meanings and
defaults; each task's ``Params`` adds only its own (the vertical key and fixed-point settings, the
horizontal coordinator's dropout timeout). The estimator ``fr.SecureBoost`` builds its keywords
from these Params (:mod:`fedrisk.estimators.base`), so a setting is declared here and nowhere else.
Meanings: :class:`fedrisk.algorithms.vertical.secureboost.SecureBoostParams` and
:class:`fedrisk.algorithms.horizontal.gbdt.GbdtParams`.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["BoostingParams"]


class BoostingParams(BaseModel):
    """Boosting settings shared by ``vertical.secureboost`` and ``horizontal.gbdt``."""

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
