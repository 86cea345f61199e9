"""Local quantile binning of one party's features for histogram-based tree growth.

Every party bins its own columns, on its own premises, and never shows the cut points to anyone:
in SecureBoost a feature holder's threshold is the one thing about a split that stays with it.

Bins of one feature are defined by sorted cut values ``c_0 < c_1 < ... < c_{B-2}``::

    bin(x) = #{k : c_k <= x}        so bin 0 is x < c_0 and bin B-1 is x >= c_{B-2}

A split "bins 0..k go left" is therefore the rule ``x < c_k``, which scores new rows without bins.
Cut values are taken from the data (quantiles with ``method="lower"``); a column with at most
``max_bin`` distinct values gets one bin per value, as XGBoost's ``hist`` does.

Missing values (NaN, kept by the ``missing = "keep"`` data policy) get a bin of their own, the
last one (``B - 1``), in every column that has any when the binner is fitted; cut values come from
the present values only, so such a column has at most ``max_bin - 1`` value bins. A split then
also says where missing values go (:func:`fedrisk.algorithms.vertical.tree.best_split` tries
both sides, as XGBoost's sparsity-aware split finding does). A NaN in a column that had none at
fitting time is routed like ``x >= threshold`` (right).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedrisk.errors import ConfigError

__all__ = ["QuantileBinner", "quantile_cuts"]

MAX_BIN_LIMIT = 256  # bins are stored as uint8


def quantile_cuts(x: np.ndarray, max_bin: int) -> np.ndarray:
    """Sorted cut values of one column, at most ``max_bin - 1`` of them (so at most ``max_bin`` bins).

    Parameters
    ----------
    x : numpy.ndarray
        Finite float values of one feature.
    max_bin : int
        Largest number of bins.

    Returns
    -------
    numpy.ndarray
        Strictly increasing cut values, each larger than ``min(x)`` (no empty first bin).
    """
    x = np.asarray(x, dtype=np.float64)
    uniq = np.unique(x)
    if uniq.size <= 1:
        return np.empty(0, dtype=np.float64)
    if uniq.size <= max_bin:
        return uniq[1:].copy()
    qs = np.quantile(x, np.arange(1, max_bin) / max_bin, method="lower")
    cuts = np.unique(qs)
    return cuts[cuts > uniq[0]]


@dataclass
class QuantileBinner:
    """Per-feature quantile bins, fitted and applied locally.

    Parameters
    ----------
    max_bin : int
        Largest number of bins per feature (2..256).

    Attributes
    ----------
    cuts_ : list of numpy.ndarray
        Cut values per feature (see the module docstring); they never leave the party.
    has_missing_ : numpy.ndarray
        Per feature, whether it had missing values when fitted (its last bin holds them).
    n_bins_ : numpy.ndarray
        ``len(cuts_[f]) + 1`` per feature, plus one for the missing bin where there is one.
    """

    max_bin: int = 32

    def __post_init__(self) -> None:
        if not isinstance(self.max_bin, (int, np.integer)) or not 2 <= self.max_bin <= MAX_BIN_LIMIT:
            raise ConfigError(f"max_bin must be an integer in [2, {MAX_BIN_LIMIT}], got {self.max_bin!r}")

    def fit(self, X: np.ndarray) -> "QuantileBinner":
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"binning expects a 2-D array, got shape {X.shape}")
        nan = np.isnan(X)
        self.has_missing_ = nan.any(axis=0)
        self.cuts_ = []
        for f in range(X.shape[1]):
            present = X[~nan[:, f], f]
            self.cuts_.append(quantile_cuts(present, int(self.max_bin) - int(self.has_missing_[f]))
                              if present.size else np.empty(0, dtype=np.float64))
        self.n_bins_ = np.array([len(c) + 1 + int(m) for c, m in zip(self.cuts_, self.has_missing_)], dtype=np.int64)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Bin index per row and feature, ``uint8`` of shape ``X.shape`` (``uint16`` when a feature has
        more than 256 bins: horizontal GBDT's agreed bins give missing values a bin past ``max_bin``
        value bins, as XGBoost does; missing: the last bin where the feature has one; otherwise NaN
        sorts past every cut, into the last value bin)."""
        X = np.asarray(X, dtype=np.float64)
        out = np.empty(X.shape, dtype=np.uint8 if int(self.n_bins_.max(initial=0)) <= 256 else np.uint16)
        for f, c in enumerate(self.cuts_):
            col = X[:, f]
            out[:, f] = np.searchsorted(c, col, side="right")
            if self.has_missing_[f]:
                out[np.isnan(col), f] = len(c) + 1
        return out

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        return self.fit(X).transform(X)

    def threshold(self, feature: int, bin_index: int) -> float:
        """The rule ``x < threshold`` equivalent to "bins ``0..bin_index`` go left"; past the last
        cut ("every present value goes left", a split on missingness) the largest float."""
        c = self.cuts_[feature]
        return float(c[bin_index]) if bin_index < len(c) else float(np.finfo(np.float64).max)

    def missing_bins(self) -> np.ndarray:
        """Per feature, the index of its missing bin, or -1 (what split finding needs)."""
        return np.where(self.has_missing_, self.n_bins_ - 1, -1).astype(np.int64)
