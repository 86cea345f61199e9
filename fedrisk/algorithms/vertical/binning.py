"""Local quantile binning of one party's features for histogram-based tree growth.

Every party bins its own columns, on its own premises, and never shows the cut points to anyone:
in SecureBoost a feature holder's threshold is the one thing about a split that stays with it.

Bins of one feature are defined by sorted cut values ``c_0 < c_1 < ... < c_{B-2}``::

    bin(x) = #{k : c_k <= x}        so bin 0 is x < c_0 and bin B-1 is x >= c_{B-2}

A split "bins 0..k go left" is therefore the rule ``x < c_k``, which scores new rows without bins.
Cut values are taken from the data (quantiles with ``method="lower"``); a column with at most
``max_bin`` distinct values gets one bin per value, as XGBoost's ``hist`` does.
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
    n_bins_ : numpy.ndarray
        ``len(cuts_[f]) + 1`` per feature.
    """

    max_bin: int = 32

    def __post_init__(self) -> None:
        if not isinstance(self.max_bin, (int, np.integer)) or not 2 <= self.max_bin <= MAX_BIN_LIMIT:
            raise ConfigError(f"max_bin must be an integer in [2, {MAX_BIN_LIMIT}], got {self.max_bin!r}")

    def fit(self, X: np.ndarray) -> "QuantileBinner":
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"binning expects a 2-D array, got shape {X.shape}")
        self.cuts_ = [quantile_cuts(X[:, f], int(self.max_bin)) for f in range(X.shape[1])]
        self.n_bins_ = np.array([len(c) + 1 for c in self.cuts_], dtype=np.int64)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Bin index per row and feature, ``uint8`` of shape ``X.shape``."""
        X = np.asarray(X, dtype=np.float64)
        out = np.empty(X.shape, dtype=np.uint8)
        for f, c in enumerate(self.cuts_):
            out[:, f] = np.searchsorted(c, X[:, f], side="right")
        return out

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        return self.fit(X).transform(X)

    def threshold(self, feature: int, bin_index: int) -> float:
        """The rule ``x < threshold`` equivalent to "bins ``0..bin_index`` go left"."""
        return float(self.cuts_[feature][bin_index])
