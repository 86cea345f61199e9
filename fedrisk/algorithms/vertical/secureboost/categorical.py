"""SecureBoost partition splits on categorical level codes (XGBoost ``enable_categorical``).

The label holder searches its own categorical features and a feature holder's (on the per-bin
``(G, H)`` sums it already decrypts) with :func:`fedrisk.algorithms.vertical.tree.best_categorical_split`;
a won partition on a feature holder's column travels as that party's *bins* that go left
(``"categories"`` in ``sb.t<t>.d<d>.win``), and the owner turns its bins back into level codes
(:func:`bin_values`) for its model. Nothing here sends anything.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fedrisk.algorithms.vertical.binning import QuantileBinner
from fedrisk.algorithms.vertical.tree import TreeParams, best_categorical_split


def partition_candidates(hist: np.ndarray, n_bins: np.ndarray, categorical: np.ndarray, nd: Any, tp: TreeParams,
                         party: str) -> list[tuple]:
    """Partition-split candidates of one party's categorical features at a node, as
    ``(gain, party, feature, 0, False, GL, HL, bins going left)``; no bounds (categories are never monotone)."""
    out = []
    for f in np.flatnonzero(categorical):
        c = best_categorical_split(hist[f], int(n_bins[f]), nd.G, nd.H, tp)
        if c is not None:
            out.append((c[0], party, int(f), 0, False, c[2], c[3], c[1]))
    return out


def code_top(X: np.ndarray, categorical: np.ndarray) -> np.ndarray:
    """Per feature, the largest level code in the training rows (0 for other features): the upper
    end of the last bin when bins are turned back into codes."""
    top = np.zeros(X.shape[1])
    for f in np.flatnonzero(categorical):
        col = X[:, f]
        seen = ~np.isnan(col)
        top[f] = float(np.max(col[seen])) if seen.any() else 0.0
    return top


def bin_values(binner: QuantileBinner, f: int, bins: Sequence[int], top: float) -> list[float]:
    """The level codes in ``bins`` of a categorical feature (integers ``0..top``; cuts lie between them)."""
    cuts = np.asarray(binner.cuts_[f], dtype=np.float64)
    edges = np.concatenate([[-np.inf], cuts, [np.inf]])
    out: list[float] = []
    for b in sorted(int(x) for x in bins):
        lo, hi = edges[b], edges[b + 1]  # bin b holds codes in [lo, hi) (searchsorted side="right")
        lo_i = 0 if not np.isfinite(lo) else int(np.ceil(lo))
        hi_i = int(top) if not np.isfinite(hi) else int(np.ceil(hi)) - 1
        out += [float(v) for v in range(lo_i, hi_i + 1)]
    return out
