"""The category levels a horizontal test federation declares (``categories=``), shared by the estimator tests.

A horizontal job agrees its text columns' levels from what every participant declares (the spec, or the
estimator's ``categories=``), never from one bank's rows; tests declare every level the data set has.
"""
from __future__ import annotations

from collections.abc import Iterable

import pandas as pd


def declared_levels(df: pd.DataFrame, columns: Iterable[str] | None = None) -> dict[str, list[str]]:
    """``{column: sorted levels}`` of ``columns`` (default: every non-numeric column of ``df``)."""
    cols = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])] if columns is None else list(columns)
    return {c: sorted(df[c].dropna().unique().tolist()) for c in cols}
