"""Text categorical columns, encoded at their owner before any protocol sees them.

A party declares its categorical columns (``categorical = ["purpose", ...]`` in its
``[parties.NAME]`` table); a non-numeric column it did not declare is treated as categorical too,
with a warning. (Horizontal jobs agree one set of levels across banks instead of fitting them
per party: see :mod:`fedrisk.tasks.horizontal_categories`.) Each column gets a :class:`CategoryEncoder`, fitted on the party's own training
rows and written into the party's own model file (a feature holder's levels never leave it), so
``fedrisk predict`` encodes new rows the same way.

Levels: every category holding at least ``min_share`` of the rows keeps a level of its own,
ordered by frequency (then label); rarer categories are pooled into one ``"(other)"`` level, as the
binning code pools small bins (:class:`fedrisk.finance.binning.FeatureBins` holds the groups and
assigns them). Empty cells get a ``"(missing)"`` level when the training rows had any. At scoring,
a category never seen in training goes to ``"(other)"`` (or, when training had no rare categories,
to ``"(missing)"`` / the reference level) and is counted, so the task can say how many rows it
affected.

Encodings (chosen by the task, not the user):

* ``"codes"`` (trees: ``vertical.secureboost``, ``horizontal.gbdt``): one column of level codes
  ``0..k-1``. Every level with enough rows is a bin of its own. ``horizontal.gbdt`` splits them
  natively with XGBoost's ``enable_categorical`` partition search
  (:func:`fedrisk.algorithms.vertical.tree.best_categorical_split`), its levels agreed across banks
  by :mod:`fedrisk.algorithms.horizontal.category_levels`; ``vertical.secureboost``'s label
  holder runs the same search on its own and a partner's (decrypted, per-bin) sums and tells the
  owner which of its bins go left, so no labels reach the feature holder.
* ``"onehot"`` (logistic regression): one 0/1 column per level except the most frequent one (the
  reference, absorbed by the intercept). One-hot rather than WOE because WOE needs each category's
  default counts: the label holder could compute them for its own columns, but a feature holder
  would need an extra protocol that reveals per-category label counts (see
  :mod:`fedrisk.algorithms.vertical.woe`); one-hot needs nothing from anybody, and a scorecard task
  that wants WOE already bins categories itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from fedrisk.errors import DataError
from fedrisk.finance.binning import FeatureBins, category_text
from fedrisk.finance.binning import is_missing as _is_missing

__all__ = ["CategoryEncoder", "Encoding", "OTHER", "MISSING", "encode_columns", "raw_columns", "unseen_note"]

Encoding = Literal["codes", "onehot"]
OTHER = "(other)"
MISSING = "(missing)"
#: categories below this share of the training rows are pooled into "(other)"
MIN_SHARE = 0.01
#: more levels than this in one column is probably an id or free text, not a category
MAX_LEVELS = 200


def is_missing(values: pd.Series) -> np.ndarray:
    """NaN/None and blank strings, whatever the text dtype (pandas' ``str`` dtype included)."""
    return _is_missing(pd.Series(values).astype(object))


@dataclass
class CategoryEncoder:
    """Levels of one categorical column and how they become numbers.

    ``bins.groups[i]`` are the categories of level ``i`` (one each, except ``"(other)"`` which
    pools the rare ones); ``has_missing`` says whether ``"(missing)"`` is a level.
    """

    name: str
    bins: FeatureBins
    level_names: list[str]
    has_missing: bool
    other: int  # index of the "(other)" level, or -1

    @classmethod
    def fit(cls, name: str, values: pd.Series, min_share: float = MIN_SHARE, party: str = "?") -> "CategoryEncoder":
        miss = is_missing(values)
        present = pd.Series(category_text(values[~miss]), dtype=object)  # 4, 4.0 and " 4" are one level
        counts = present.value_counts()
        if len(counts) > MAX_LEVELS:
            raise DataError(f"party {party!r}: categorical column {name!r} has {len(counts)} distinct values "
                            f"(at most {MAX_LEVELS}); is it an id or free text? list it in exclude")
        # frequency order, ties by label: deterministic whatever the row order
        order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        n = max(len(values), 1)
        keep = [c for c, k in order if k / n >= min_share]
        rare = [c for c, k in order if k / n < min_share]
        groups = [[c] for c in keep] + ([rare] if rare else [])
        names = list(keep) + ([OTHER] if rare else [])
        has_missing = bool(miss.any())
        return cls(name, FeatureBins(name, "categorical", groups=groups), names, has_missing,
                   len(keep) if rare else -1)

    @property
    def n_levels(self) -> int:
        return len(self.level_names) + int(self.has_missing)

    def codes(self, values: pd.Series) -> tuple[np.ndarray, int]:
        """Level code of every value and the number of values never seen in training."""
        s = values.reset_index(drop=True)
        miss = is_missing(s)
        idx = self.bins.assign(s)  # len(groups) for missing and unseen; values keyed by category_text
        # a category never seen in training, or an empty cell when training had none: both go to a
        # level that does not describe them, so both are counted for the caller to report
        unseen = ((idx == self.bins.n_bins) & ~miss) | (miss & (not self.has_missing))
        if not self.bins.groups:
            idx = np.zeros(len(s), dtype=np.int64)
        missing_code = len(self.level_names) if self.has_missing else (self.other if self.other >= 0 else 0)
        unseen_code = self.other if self.other >= 0 else missing_code
        out = np.where(miss, missing_code, np.where(unseen, unseen_code, idx)).astype(np.float64)
        return out, int(unseen.sum())

    def all_levels(self) -> list[str]:
        return self.level_names + ([MISSING] if self.has_missing else [])

    def onehot_names(self) -> list[str]:
        """Column names of the one-hot encoding (every level but the reference, level 0)."""
        return [f"{self.name}={lv}" for lv in self.all_levels()[1:]]

    def onehot(self, values: pd.Series) -> tuple[np.ndarray, int]:
        code, unseen = self.codes(values)
        k = self.n_levels
        out = np.zeros((len(code), max(k - 1, 0)))
        rows = np.flatnonzero(code > 0)
        out[rows, code[rows].astype(np.int64) - 1] = 1.0
        return out, unseen

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "groups": self.bins.groups, "levels": self.level_names,
                "has_missing": self.has_missing, "other": self.other}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "CategoryEncoder":
        try:
            groups = [[str(c) for c in g] for g in d["groups"]]
            return cls(str(d["name"]), FeatureBins(str(d["name"]), "categorical", groups=groups),
                       [str(x) for x in d["levels"]], bool(d["has_missing"]), int(d["other"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"the model's categories of column {d.get('name') if isinstance(d, Mapping) else '?'!r} "
                            f"are malformed ({exc}); retrain or restore the model file") from None


def encode_columns(df: pd.DataFrame, feature_names: Sequence[str], categorical: Iterable[str], encoding: Encoding,
                   fitted: Mapping[str, Mapping[str, Any]] | None = None, party: str = "?"
                   ) -> tuple[np.ndarray, list[str], dict[str, dict], dict[str, int]]:
    """Encode ``feature_names`` of ``df`` into a float matrix.

    Returns ``(X, names, encoders, unseen)``: the matrix, its column names (a categorical column
    keeps its name under ``"codes"`` and becomes ``name=level`` columns under ``"onehot"``), the
    encoders as JSON (for the model file) and per column the count of never-seen categories.
    ``fitted``: encoders of a trained model (scoring); otherwise they are fitted here.
    """
    cats = set(categorical)
    blocks: list[np.ndarray] = []
    names: list[str] = []
    encoders: dict[str, dict] = {}
    unseen: dict[str, int] = {}
    for c in feature_names:
        if c not in cats:
            col = pd.to_numeric(df[c], errors="coerce") if not pd.api.types.is_numeric_dtype(df[c]) else df[c]
            bad = col.isna().to_numpy() & ~is_missing(df[c])
            if bad.any():
                example = df[c][bad].iloc[0]
                raise DataError(f"party {party!r}: column {c!r} is numeric in the model but holds {example!r}; "
                                f"declare it in categorical = [...] and retrain, or fix the file")
            blocks.append(col.to_numpy(dtype=np.float64, na_value=np.nan)[:, None])
            names.append(c)
            continue
        if fitted is not None and c not in fitted:
            raise DataError(f"party {party!r}: column {c!r} holds text, but the model was trained with it numeric; "
                            "fix the file, declare placeholder cells such as '?' missing (na_values = [...] for this "
                            "party; fedrisk predict --na-values), or retrain with it in categorical = [...]")
        enc = CategoryEncoder.from_json(fitted[c]) if fitted is not None else CategoryEncoder.fit(c, df[c], party=party)
        encoders[c] = enc.to_json()
        if encoding == "codes":
            v, u = enc.codes(df[c])
            blocks.append(v[:, None])
            names.append(c)
        else:
            v, u = enc.onehot(df[c])
            blocks.append(v)
            names += enc.onehot_names()
        if u:
            unseen[c] = u
    X = np.hstack(blocks) if blocks else np.zeros((len(df), 0))
    return np.ascontiguousarray(X), names, encoders, unseen


def raw_columns(features: Sequence[str], categories: Mapping[str, Any] | None) -> list[str]:
    """The file columns behind a model's feature names (one-hot ``name=level`` back to ``name``)."""
    out: list[str] = []
    # longest first: a column named "housing=type" owns "housing=type=rent", whatever else is a category
    cats = sorted(categories or {}, key=len, reverse=True)
    for f in features:
        base = next((c for c in cats if f.startswith(c + "=")), f)
        if base not in out:
            out.append(base)
    return out


def unseen_note(unseen: Mapping[str, int], n_rows: int, party: str,
                scored_as: str = "the '(other)' (or reference) level", notebook: bool = False) -> str | None:
    """One warning line for rows scored with categories their model never saw, or ``None``.

    At scoring such a value is encoded as ``"(other)"`` (or the missing / reference level), which
    is a defined choice but not what the value means: the operator must hear how many rows it
    touched, per column. Counts only, no values: the line goes to this party's own log.
    ``notebook``: ``party`` is the notebook method scoring (``Scorecard.predict_proba``), which
    starts the line as the estimators' other notes do, instead of ``party 'NAME'``.
    """
    if not unseen:
        return None
    cols = ", ".join(f"{c!r} ({k} of {n_rows} rows)" for c, k in unseen.items())
    return (f"{party if notebook else f'party {party!r}'}: categories (or empty cells) never seen in training, scored as {scored_as}: "
            f"{cols}; retrain with rows that have them if they matter")
