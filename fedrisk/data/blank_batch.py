"""Feature columns with no value in any row of a scoring batch, and the one warning line about them.

A scorecard scores a blank cell as the feature's missing bin, so one applicant without a field is
scored; but a whole batch without a column is more likely a broken data feed (a field renamed or
dropped upstream) than chance, and would be scored silently. Horizontal scoring, a vertical party's
own rows and the label holder's relay of a partner's warning
(:mod:`fedrisk.algorithms.vertical.blank_columns`) all use these two functions, so the rule (a batch
of two rows or more) and the wording are the same everywhere. Column names and a row count only:
never a value.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["blank_columns", "blank_columns_line"]


def blank_columns(X: Any, features: Sequence[str]) -> list[str]:
    """The ``features`` with no value in any row of ``X`` (a DataFrame, or an array with those columns).

    A one-row batch has none by definition: one applicant without a field is not a broken feed.
    """
    import pandas as pd

    n = len(X)
    if n < 2:
        return []
    frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X, dtype=object).reshape(n, -1),
                                                                columns=list(features))
    return [f for f in features if f in frame.columns and frame[f].isna().all()]


def blank_columns_line(party: str, rows: int, columns: Sequence[str], relayed: bool = False) -> str:
    """The warning for ``columns`` of ``party`` blank in all ``rows`` scored rows.

    ``relayed``: the line is shown at the label holder about a feature holder's columns, so the
    advice is to ask that party to check its feed rather than to check one's own.
    """
    many = len(columns) > 1
    check = f"ask {party} to check its data feed" if relayed else "check the data feed"
    return (f"party {party!r}: feature column{'s' if many else ''} {list(columns)} {'are' if many else 'is'} blank "
            f"in all {rows} rows scored; every row scores {'them' if many else 'it'} as the missing bin -- {check} "
            "if the batch should carry that field")
