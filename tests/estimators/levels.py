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


def banks_with_a_text_column(seed: int, sizes: dict[str, int], column: str, levels: list[str], risky: str,
                             intercept: float) -> dict[str, pd.DataFrame]:
    """Bank tables (``id, y, x, <column>``) whose text ``column`` draws ``levels``; rows at level ``risky``
    default more (logit ``x + [level == risky] + intercept``), so the column matters to a model."""
    import numpy as np

    rng = np.random.default_rng(seed)
    banks = {}
    for b, n in sizes.items():
        level = rng.choice(levels, n)
        x = rng.normal(size=n)
        y = (rng.random(n) < 1 / (1 + np.exp(-(x + (level == risky) + intercept)))).astype(int)
        banks[b] = pd.DataFrame({"id": np.arange(n), "y": y, "x": x, column: level})
    return banks
