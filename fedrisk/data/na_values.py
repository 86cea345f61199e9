"""``na_values``: the cells a party's exports write for "no value" ("?", ".", "-999"), declared once per party.

The same placeholders must be missing wherever that party's rows are read: at training (the loaders,
:mod:`fedrisk.data.loading`) and at scoring (``fedrisk predict``, which reads them from the run folder's job
spec or ``--na-values``; the Python API's estimators, which remember the Federation's they were fitted on).
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

__all__ = ["declare_missing", "options_na_values", "run_na_values"]


def declare_missing(df: pd.DataFrame, na_values: Sequence[str]) -> pd.DataFrame:
    """``df`` with every cell that is one of ``na_values`` missing: text cells equal to one (after stripping
    spaces; exact case), and number cells equal to one that is a number (a ``"-999"`` sentinel), also when written
    as text (``"-999.0"``, as a CSV reader compares them). Category-typed (Parquet dictionary) columns too: their
    placeholder category is dropped.

    What ``pandas.read_csv(na_values=...)`` does while parsing, for Parquet too (its text columns carry
    ``"?"`` as text, its number columns ``-999`` as a number) and for CSV cells with spaces around the
    placeholder. A column of numbers whose only text cells were placeholders then loads as numbers with
    missing values (:func:`numbers_in_text`).
    """
    wanted = {str(v).strip() for v in na_values}
    sentinels = pd.to_numeric(pd.Series(sorted(wanted), dtype=object), errors="coerce").dropna().tolist()
    for c in df.columns:
        col = df[c]
        category = isinstance(col.dtype, pd.CategoricalDtype)
        if category or col.dtype == object or isinstance(col.dtype, pd.StringDtype):
            text = col.astype("string").str.strip()
            hit = text.isin(wanted)
            if sentinels:  # "-999.0" is the sentinel -999 written as text
                hit = hit | pd.to_numeric(text, errors="coerce").isin(sentinels)
            hit = hit.fillna(False).to_numpy(dtype=bool)
        elif sentinels and pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
            hit = col.isin(sentinels).to_numpy(dtype=bool)
        else:
            continue
        if hit.any():
            kept = col.where(~hit)
            df[c] = kept.cat.remove_unused_categories() if category else kept
    return df


def options_na_values(party_options: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every party's ``na_values`` in one list (scoring rows may come from any bank of a horizontal job)."""
    out: dict[str, None] = {}
    for opts in party_options:
        for v in (opts or {}).get("na_values") or ():
            if not isinstance(v, bool):
                out[str(v)] = None
    return list(out)


def run_na_values(folder: str | Path) -> list[str]:
    """The ``na_values`` of every party in a run folder's job spec copy (``job.toml``), or ``[]`` without one."""
    try:
        doc = tomllib.loads((Path(folder) / "job.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    parties = doc.get("parties")
    if not isinstance(parties, dict):
        return []
    return options_na_values(
        {"na_values": [p["na_values"]] if isinstance(p.get("na_values"), (str, int, float)) else p.get("na_values")}
        for p in parties.values() if isinstance(p, dict) and isinstance(p.get("na_values"), (list, str, int, float)))
