"""Agreeing the levels of text categorical columns across banks, by secure sums of counts.

Banks with the same schema must encode a categorical column the same way (one-hot columns for
logistic regression, level codes for trees), but which bank has customers in which category, and
how many, is commercially sensitive. So the *vocabulary* is public, declared once in the job spec
(``[task] categories = { purpose = ["car", "furniture", ...] }``, which every participant holds),
and only *how many rows* each category has is aggregated, securely.

Message flow (``C`` = coordinator, ``P`` = every bank, ``T`` = tag prefix, default ``"hcat"``)::

    1. P => C  T.counts   for each categorical column (sorted by name): rows per declared category
                          (spec order), rows with a value the spec does not list, rows with no
                          value                                                  aggregate sum
    2. C -> P  T.levels   for each column: the declared categories with at least ``min_count`` rows
                          in the whole federation (spec order), the declared ones with no row at
                          all (``absent``), and whether an ``"(other)"`` level (rarer or undeclared
                          categories) and a ``"(missing)"`` level exist
                                                                                 public-parameter

(``=>`` is one round of the job's :class:`~fedrisk.algorithms.horizontal.aggregation.Aggregation`.)

What each side learns
    Coordinator: the vocabulary (public, in the spec) and, with secure aggregation, the
    federation-wide row count of every category — a sum only: not which bank holds a category,
    nor any bank's count. (With ``secure_aggregation = false``, an explicit opt-out, it sees each
    bank's counts.) Banks: which declared categories reach ``min_count`` rows federation-wide, which
    have no row anywhere (so ``"(other)"`` names only declared categories some bank holds; such a value
    at scoring is unseen and encoded as ``"(other)"`` all the same), and whether any row anywhere is
    missing or undeclared — never a count. Values a bank holds that
    the spec does not list never leave it (they go to ``"(other)"``; the bank's own log says how
    many rows).

Used by ``horizontal.lr``, ``horizontal.gbdt`` and, inside its protocol (tags ``hwoe.cat.*``), by
``horizontal.woe`` / ``horizontal.scorecard`` (:mod:`fedrisk.algorithms.horizontal.woe`), whose prebin of
a categorical column is one per kept category plus ``"(other)"``.

Why not let banks announce their categories (as the WOE protocol's schema step did until this was
shared with it): that tells the coordinator exactly which bank has customers in which category, and
a near-unique text column (names, e-mail addresses) hands over every value. Why a minimum count: a level
held by a handful of rows would be learned almost per customer (a one-hot weight, a tree split),
and pooling rare levels into ``"(other)"`` is what a modeller does anyway.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from fedrisk.algorithms.horizontal.aggregation import Aggregation
from fedrisk.data.categorical import MISSING, OTHER, CategoryEncoder, is_missing
from fedrisk.errors import DataError, ProtocolError
from fedrisk.finance.binning import FeatureBins, category_text
from fedrisk.transport.channel import Channel

__all__ = ["count_vector", "agree_levels_bank", "agree_levels_coordinator", "encoders_from_levels"]


def _layout(vocabulary: Mapping[str, Sequence[str]]) -> list[tuple[str, list[str]]]:
    return [(c, [str(v) for v in category_text(list(vocabulary[c]))]) for c in sorted(vocabulary)]


def count_vector(frame: pd.DataFrame, vocabulary: Mapping[str, Sequence[str]]) -> tuple[np.ndarray, dict[str, int]]:
    """This bank's counts in the layout of step 1, and per column the rows with an undeclared value."""
    parts, undeclared = [], {}
    for col, cats in _layout(vocabulary):
        s = frame[col].reset_index(drop=True)
        miss = is_missing(s)
        vals = pd.Series(category_text(s[~miss]), dtype=object)  # 4 and 4.0 (a column with a blank) agree
        known = vals.isin(cats)
        counts = vals[known].value_counts()
        parts.append(np.array([float(counts.get(c, 0)) for c in cats]
                              + [float((~known).sum()), float(miss.sum())]))
        if (~known).any():
            undeclared[col] = int((~known).sum())
    return (np.concatenate(parts) if parts else np.zeros(0)), undeclared


def encoders_from_levels(levels: Mapping[str, Mapping], vocabulary: Mapping[str, Sequence[str]]) -> dict[str, dict]:
    """The agreed levels of step 2 as category encoders (JSON, as a model file stores them)."""
    out = {}
    for col, cats in _layout(vocabulary):
        lv = levels[col]
        kept = [str(c) for c in lv["kept"]]
        groups = [[c] for c in kept]
        names = list(kept)
        absent = {str(c) for c in lv.get("absent", [])}  # declared but no row anywhere: not named
        other = -1
        if lv["other"]:
            other = len(kept)
            groups.append([c for c in cats if c not in kept and c not in absent])  # rarer declared ones; undeclared are "unseen"
            names.append(OTHER)
        enc = CategoryEncoder(col, FeatureBins(col, "categorical", groups=groups), names, bool(lv["missing"]), other)
        out[col] = enc.to_json()
    return out


def agree_levels_bank(channel: Channel, coordinator: str, frame: pd.DataFrame, vocabulary: Mapping[str, Sequence[str]],
                      aggregation: Aggregation, tag: str = "hcat") -> tuple[dict[str, dict], dict[str, int]]:
    """Bank side: submit this bank's category counts, receive the agreed levels.

    Returns the encoders (JSON) and, per column, how many of this bank's rows hold a category the
    spec does not list (they are encoded as ``"(other)"``; say so in the bank's log).
    """
    vec, undeclared = count_vector(frame, vocabulary)
    aggregation.submit(channel, coordinator, f"{tag}.counts", vec)
    msg = channel.recv(coordinator, f"{tag}.levels")
    if not isinstance(msg, dict) or set(msg) != set(vocabulary):
        raise ProtocolError(f"the coordinator's category levels do not match the job spec's columns {sorted(vocabulary)}")
    for col, cats in _layout(vocabulary):
        lv = msg[col]
        kept = lv.get("kept") if isinstance(lv, dict) else None
        absent = lv.get("absent", []) if isinstance(lv, dict) else None
        if not (isinstance(kept, list) and all(isinstance(c, str) for c in kept) and len(set(kept)) == len(kept)
                and isinstance(absent, list) and all(isinstance(c, str) for c in absent)
                and isinstance(lv.get("other"), bool)
                and isinstance(lv.get("missing"), bool)) or not set(kept) <= set(cats) \
                or not set(absent) <= set(cats) - set(kept):
            raise ProtocolError(f"the coordinator's levels of column {col!r} are not among the spec's categories "
                                f"(or are malformed); refused")
    return encoders_from_levels(msg, vocabulary), undeclared


def agree_levels_coordinator(channel: Channel, banks: Sequence[str], vocabulary: Mapping[str, Sequence[str]],
                             aggregation: Aggregation, min_count: int, tag: str = "hcat") -> dict[str, dict]:
    """Coordinator side: sum the banks' counts, keep categories with ``min_count`` rows, announce the levels."""
    layout = _layout(vocabulary)
    length = sum(len(c) + 2 for _, c in layout)
    res = aggregation.collect(channel, list(banks), f"{tag}.counts", length)
    total = np.rint(np.asarray(res.total, dtype=np.float64))
    if total.shape != (length,) or (total < 0).any():
        raise ProtocolError("the summed category counts are malformed")
    levels, at = {}, 0
    for col, cats in layout:
        k = len(cats)
        counts, undeclared, missing = total[at:at + k], total[at + k], total[at + k + 1]
        at += k + 2
        kept = [c for c, n in zip(cats, counts) if n >= min_count]
        rest = float(counts.sum() - sum(n for n in counts if n >= min_count) + undeclared)
        if not kept and rest == 0 and missing == 0:
            raise DataError(f"categorical column {col!r}: no bank has any row in it")
        absent = [c for c, n in zip(cats, counts) if n == 0]
        levels[col] = {"kept": kept, "absent": absent, "other": rest > 0, "missing": bool(missing > 0)}
    channel.broadcast(list(res.contributors), f"{tag}.levels", levels, kind="public-parameter")
    return levels
