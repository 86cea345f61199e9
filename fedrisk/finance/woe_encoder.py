"""The single-party WOE transformer, :class:`WoeEncoder` (scikit-learn API).

Kept apart from :mod:`fedrisk.finance.woe` (which still exports it, on first use) so that importing
the WOE/IV helpers does not import scikit-learn: the party processes and the run report need the
helpers, and scikit-learn's import alone is ~2 s of CPU per process.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from fedrisk.errors import ConfigError
from fedrisk.finance.binning import BinningConfig, FeatureBins, class_counts, fit_bins
from fedrisk.finance.iv_noise import NULL_DRAWS, single_party_null
from fedrisk.finance.woe import DEFAULT_SMOOTHING, FeatureWoe, _check_y, iv_strength, require_columns

__all__ = ["WoeEncoder"]


class WoeEncoder(TransformerMixin, BaseEstimator):
    """Bin features, compute WOE/IV, and replace values by their bin's WOE (one party, local rows).

    A scikit-learn transformer (``get_params``/``set_params``/``clone``, usable in a ``Pipeline``)
    over DataFrames: ``X`` must be a DataFrame, because binning keeps the column names and types.

    Parameters
    ----------
    method : {"monotonic", "quantile"}
        Binning method (see :mod:`fedrisk.finance.binning`).
    max_bins : int
        Most bins per feature, missing bin excluded; only a categorical column with more (pooled)
        categories than this is tested at ``category_pvalue``.
    n_prebins : int
        Equal-frequency prebins before merging.
    min_bin_frac : float
        Smallest share of rows in a final bin (monotonic method).
    categorical : iterable of str, optional
        Columns forced categorical; others are inferred (non-numeric values → categorical).
    smoothing : float
        WOE smoothing for bins lacking goods or bads (see module Notes).
    min_category_count, category_pvalue
        Categorical columns: rarer categories pool into ``"(other)"`` (which also takes values never
        seen while fitting); a column with more categories than ``max_bins`` whose bad rates do not
        differ at ``category_pvalue`` (chi-square; Monte Carlo on sparse tables) gets one bin. A column
        with at most ``max_bins`` categories is not tested. See :func:`~fedrisk.finance.binning.group_categories`.
    random_state : int
        Seed of the IV's permutation null (with each feature's name; :mod:`fedrisk.finance.iv_noise`): the job
        seed, to get a federated run's ``iv_p_value`` for the same rows.
    iv_null_draws : int
        Label draws of that null (p-values are multiples of ``1 / (iv_null_draws + 1)``; ~1.3 ms each).

    Attributes
    ----------
    features_ : list of str
        Columns fitted, in order.
    woe_ : dict of str to FeatureWoe
        Per-feature bins, counts, WOE and IV.
    iv_ : dict of str to float
        IV per feature.
    """

    def __init__(self, method: str = "monotonic", max_bins: int = 6, n_prebins: int = 20, min_bin_frac: float = 0.05,
                 categorical: Iterable[str] | None = None, smoothing: float = DEFAULT_SMOOTHING,
                 min_category_count: int = 20, category_pvalue: float = 0.01, random_state: int = 0,
                 iv_null_draws: int = NULL_DRAWS) -> None:
        self.method = method
        self.max_bins = max_bins
        self.n_prebins = n_prebins
        self.min_bin_frac = min_bin_frac
        self.categorical = categorical
        self.smoothing = smoothing
        self.min_category_count = min_category_count
        self.category_pvalue = category_pvalue
        self.random_state = random_state
        self.iv_null_draws = iv_null_draws

    def _config(self) -> BinningConfig:
        return BinningConfig(self.method, self.max_bins, self.n_prebins, self.min_bin_frac, self.min_category_count,
                             self.category_pvalue, self.smoothing)

    def fit(self, X: pd.DataFrame, y: Any) -> "WoeEncoder":
        """Fit bins and WOE on ``X`` (DataFrame) and ``y`` (1 = bad)."""
        yv = _check_y(y, len(X))
        cfg = self._config()
        prebins: dict[str, Any] = {}
        bins = fit_bins(X, yv, categorical=self.categorical, config=cfg, prebins=prebins)
        nulls = {f: single_party_null(pre, g, b, cfg, smoothing=self.smoothing, seed=self.random_state,
                                      draws=self.iv_null_draws) for f, (pre, g, b) in prebins.items()}
        return self.fit_bins(X, yv, bins, nulls=nulls)

    def fit_bins(self, X: pd.DataFrame, y: Any, bins: dict[str, FeatureBins],
                 nulls: Mapping[str, Any] | None = None) -> "WoeEncoder":
        """Compute WOE/IV on ``X``, ``y`` with given bins (e.g. agreed by a federation).

        ``nulls``: how each feature's bins were fitted from its prebin counts
        (:class:`~fedrisk.finance.iv_noise.BinningNull`); a feature without one gets the chi-square noise
        figures of its given bins in :meth:`iv_table` (``iv_null = "chi2"``: right for bins fixed in advance,
        optimistic for bins fitted to these labels)."""
        yv = _check_y(y, len(X))
        self.woe_ = {}
        for name, fb in bins.items():
            require_columns(X, [name])
            g, b = class_counts(fb.assign(X[name]), yv, fb.n_bins + 1)
            self.woe_[name] = FeatureWoe.from_counts(fb, g, b, self.smoothing, null=(nulls or {}).get(name))
        self.features_ = list(bins)
        self.iv_ = {k: v.iv for k, v in self.woe_.items()}
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """WOE value of every cell, one column per fitted feature.

        Raises
        ------
        DataError
            A fitted column is absent, or a numeric column holds non-numbers (schema mismatch).
        """
        self._check_fitted()
        require_columns(X, self.features_)
        return pd.DataFrame({f: self.woe_[f].woe[self.woe_[f].bins.assign(X[f])] for f in self.features_}, index=X.index)

    def fit_transform(self, X: pd.DataFrame, y: Any) -> pd.DataFrame:
        return self.fit(X, y).transform(X)

    def bin_index(self, X: pd.DataFrame) -> pd.DataFrame:
        """Bin index of every cell (missing bin = ``n_bins``)."""
        self._check_fitted()
        require_columns(X, self.features_)
        return pd.DataFrame({f: self.woe_[f].bins.assign(X[f]) for f in self.features_}, index=X.index)

    def iv_table(self) -> list[dict[str, Any]]:
        """Features by descending IV: ``feature``, ``iv``, ``n_bins``, ``kind``, ``strength``, and how the IV
        compares with noise at these counts, ``iv_p_value``, ``iv_noise_95`` and the null they come from,
        ``iv_null`` (:meth:`~fedrisk.finance.woe.FeatureWoe.significance`: ``"permutation"`` after :meth:`fit`,
        ``"chi2"`` for bins given to :meth:`fit_bins`)."""
        self._check_fitted()
        rows = [{"feature": f, "iv": w.iv, "n_bins": w.bins.n_bins, "kind": w.bins.kind, "strength": iv_strength(w.iv),
                 **w.significance()} for f, w in self.woe_.items()]
        return sorted(rows, key=lambda r: -r["iv"])

    def _check_fitted(self) -> None:
        if not hasattr(self, "woe_"):
            raise ConfigError("WoeEncoder is not fitted; call fit(X, y) first")
