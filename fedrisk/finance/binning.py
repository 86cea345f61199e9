"""Feature binning for WOE/IV and scorecards: bins as data, merging on counts.

Every binning decision here is a function of *per-bin counts*, never of rows. Local binning
counts rows itself; federated binning (:mod:`fedrisk.algorithms.horizontal.woe`,
:mod:`fedrisk.algorithms.vertical.woe`) gets the same counts through secure aggregation or
Paillier sums and calls the same functions — so a federated and a pooled run with the same
counts make identical bins.

Bins of one feature (:class:`FeatureBins`)
    * numeric: right-closed intervals ``(-inf, e0], (e0, e1], ..., (e_k, +inf)`` over the inner
      edges ``e``;
    * categorical: groups of category labels (strings);
    * always one extra, last bin for missing values (NaN/None/empty) — and, for categorical
      features without an ``"(other)"`` group, for categories never seen while fitting.

Methods
    * ``"quantile"`` — equal-frequency prebins, only empty bins removed;
    * ``"monotonic"`` — equal-frequency prebins merged until the bad rate is monotonic in the
      bin order (pool-adjacent-violators, direction chosen by IV), then bins below
      ``min_bin_frac`` of the rows are merged into their closest neighbour and, while more than
      ``max_bins`` remain, the adjacent pair whose merge loses the least IV is merged. Last,
      neighbours whose *smoothed* WOE (the one the scorecard scores, see
      :mod:`fedrisk.finance.woe`) breaks the trend are merged: a bin without bads (or goods) gets
      ``smoothing`` added to both counts, which can pull its WOE past its neighbour's although its
      raw bad rate is in order (rare defaults: points 18, 18, 81, -23, -61 on a "monotonic"
      feature). That last pass is *strict*: neighbours with exactly the same smoothed bad rate
      (hence the same WOE and points: -57, -57) are merged too, so the final bins' WOE is strictly
      monotonic. "The same" is exact equality of the rates on the counts (10 of 100 = 11 of 110),
      not a tolerance: rates that differ at all are a difference the data show, a tolerance would
      need a scale (points depend on the scorecard's PDO and rounding, unknown here), and exact
      arithmetic on the counts keeps pooled and federated binning identical.
      Categorical features are first ordered by their (smoothed) bad rate, so "monotonic"
      becomes a grouping of similar categories.

Categorical features (:func:`group_categories`, the same for local and federated binning)
    Categories with fewer than ``min_category_count`` rows pool into one ``"(other)"`` prebin,
    which also takes any value never seen while fitting (at scoring, too). Then, as optbinning
    does, the prebins are ordered by bad rate and merged on their counts — but a feature with more
    prebins than ``max_bins`` only if its categories' bad rates differ at all (chi-square test of
    the category x class table at ``category_pvalue``): ordering 150 random branch codes by their
    own bad rates and cutting the order into bins fits noise (IV 0.1 on 7,500 rows, 1.4 on 800, an
    overfit scorecard), and the omnibus test is not fooled by that ordering. A feature that fails
    it gets one bin.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, Sequence

import functools
import math
from fractions import Fraction

import numpy as np
import pandas as pd

from fedrisk.errors import ConfigError, DataError

__all__ = [
    "FeatureBins",
    "BinningConfig",
    "is_missing",
    "is_categorical",
    "category_text",
    "unseen_categories",
    "quantile_edges",
    "class_counts",
    "merge_bins",
    "scored_bad_rate",
    "bad_rate_trend",
    "strictly_monotone",
    "order_categories",
    "group_categories",
    "categories_differ",
    "categorical_bins",
    "pool_rare_categories",
    "OTHER",
    "bins_from_groups",
    "feature_prebins",
    "merge_feature_prebins",
    "fit_feature_bins",
    "fit_bins",
]

Kind = Literal["numeric", "categorical"]

#: the label of the pooled prebin of rare and unseen categories (the same text as
#: :data:`fedrisk.data.categorical.OTHER`); a group holding it takes every value no group names
OTHER = "(other)"


@dataclass(frozen=True)
class BinningConfig:
    """Binning hyper-parameters (shared by local and federated binning).

    Parameters
    ----------
    method : {"monotonic", "quantile"}
        See the module docstring.
    max_bins : int
        Most bins per feature, excluding the missing bin. Also where the categorical test starts:
        only a column with more (pooled) categories than ``max_bins`` is tested (``category_pvalue``).
    n_prebins : int
        Equal-frequency prebins before merging.
    min_bin_frac : float
        Smallest share of non-missing rows a final bin may hold (``monotonic`` only).
    min_category_count : int
        Categories with fewer rows pool into one ``"(other)"`` prebin (federated: rows federation-wide).
    smoothing : float
        The WOE smoothing of the bins' scores (:data:`~fedrisk.finance.woe.DEFAULT_SMOOTHING`): ``monotonic``
        binning keeps the *smoothed* WOE monotonic, so it must be the one the WOE is computed with.
    category_pvalue : float
        A categorical feature with more (pooled) categories than ``max_bins`` whose categories' bad
        rates do not differ at this significance (chi-square test of the category x class table;
        on sparse tables, under 1 expected bad or good a category, a Monte Carlo p-value of the same
        statistic, see :func:`categories_differ`) gets one bin and IV 0; ``1.0`` turns the test
        off. A column with at most ``max_bins`` categories is never tested: each category is
        already a bin, merged like a numeric column's prebins. See :func:`group_categories`.
    """

    method: str = "monotonic"
    max_bins: int = 6
    n_prebins: int = 20
    min_bin_frac: float = 0.05
    min_category_count: int = 20
    category_pvalue: float = 0.01
    smoothing: float = 0.5

    def __post_init__(self) -> None:
        if self.method not in ("monotonic", "quantile"):
            raise ConfigError(f"binning method must be 'monotonic' or 'quantile', got {self.method!r}")
        if self.max_bins < 1 or self.n_prebins < 1:
            raise ConfigError(f"max_bins and n_prebins must be >= 1 (got {self.max_bins}, {self.n_prebins})")
        if not 0 <= self.min_bin_frac < 0.5:
            raise ConfigError(f"min_bin_frac must be in [0, 0.5), got {self.min_bin_frac}")
        if self.min_category_count < 1 or not 0 < self.category_pvalue <= 1:
            raise ConfigError(f"min_category_count must be >= 1 and category_pvalue in (0, 1] (got "
                              f"{self.min_category_count}, {self.category_pvalue})")
        if not self.smoothing >= 0:
            raise ConfigError(f"WOE smoothing must be >= 0, got {self.smoothing}")


@dataclass
class FeatureBins:
    """The bins of one feature; the last bin (index ``n_bins``) holds missing values.

    Parameters
    ----------
    name : str
        Column name.
    kind : {"numeric", "categorical"}
        Feature kind.
    edges : ndarray
        Numeric: sorted inner edges (bin ``i`` is ``(edges[i-1], edges[i]]``). Empty for
        categorical features.
    groups : list of list of str
        Categorical: the category labels of each bin. Empty for numeric features.
    """

    name: str
    kind: Kind
    edges: np.ndarray = field(default_factory=lambda: np.empty(0))
    groups: list[list[str]] = field(default_factory=list)

    @property
    def n_bins(self) -> int:
        """Number of non-missing bins (the missing bin is index ``n_bins``)."""
        if self.kind == "numeric":
            return int(len(self.edges)) + 1
        return max(len(self.groups), 1)

    def assign(self, values: Any) -> np.ndarray:
        """Bin index of every value (``n_bins`` for missing / unseen categories).

        Raises
        ------
        DataError
            A numeric feature receives values that are not numbers.
        """
        s = values.reset_index(drop=True) if isinstance(values, pd.Series) else pd.Series(values)
        miss = is_missing(s)
        out = np.full(len(s), self.n_bins, dtype=np.int64)
        if self.kind == "numeric":
            num = pd.to_numeric(s.where(~miss), errors="coerce")
            bad = num.isna().to_numpy() & ~miss
            if bad.any():
                from fedrisk.data.loading import numbers_in_another_format

                other = numbers_in_another_format(s[bad])
                if other is not None:  # a dialect or a display format, not a placeholder to declare missing
                    raise DataError(f"column {self.name!r} is numeric in the model but holds {other}")
                example = s[bad].iloc[0]
                raise DataError(
                    f"column {self.name!r} is numeric in the model but holds non-numeric values such as {example!r}; "
                    "check the file's schema matches the one the model was fitted on, or, if it is a placeholder "
                    "for no value, declare it missing (na_values in the job spec, na_values= in Python, "
                    f"fedrisk predict --na-values {str(example)!r})"
                )
            v = num.to_numpy(dtype=float)
            ok = ~miss
            out[ok] = np.searchsorted(self.edges, v[ok], side="left")
        else:
            lookup = {c: i for i, g in enumerate(self.groups) for c in g}
            unseen = lookup.get(OTHER, self.n_bins)  # "(other)" takes categories no group names
            labels, raw = category_text(s), s.astype(str).to_numpy()  # raw: models binned before category_text
            idx = np.array([lookup.get(c, lookup.get(r, unseen)) for c, r in zip(labels, raw)],
                           dtype=np.int64) if len(s) else out
            out = np.where(miss, self.n_bins, idx)
        return out

    def labels(self) -> list[str]:
        """Human-readable label of every bin, the missing bin last."""
        if self.kind == "numeric":
            e = [-np.inf, *self.edges.tolist(), np.inf]
            lab = []
            for lo, hi in zip(e[:-1], e[1:]):
                if lo == -np.inf and hi == np.inf:
                    lab.append("all values")
                elif lo == -np.inf:
                    lab.append(f"<= {hi:g}")
                elif hi == np.inf:
                    lab.append(f"> {lo:g}")
                else:
                    lab.append(f"({lo:g}, {hi:g}]")
        else:
            lab = [", ".join(g) for g in self.groups] or ["(no categories)"]
        return lab + ["missing"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (see :meth:`from_dict`)."""
        return {"name": self.name, "kind": self.kind, "edges": [float(e) for e in self.edges], "groups": self.groups}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureBins":
        """Inverse of :meth:`to_dict`."""
        if d.get("kind") not in ("numeric", "categorical"):
            raise DataError(f"bins of feature {d.get('name')!r}: unknown kind {d.get('kind')!r}")
        return cls(str(d["name"]), d["kind"], np.asarray(d.get("edges", []), dtype=float),
                   [[str(c) for c in g] for g in d.get("groups", [])])


# -- helpers -----------------------------------------------------------------------------------
def is_missing(values: Any) -> np.ndarray:
    """Boolean mask of missing values: NaN, None, and empty / whitespace-only strings."""
    s = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values, dtype=object))
    miss = s.isna().to_numpy().copy()
    if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):  # pandas' str dtype too: " " is blank there
        miss |= s.astype(object).map(lambda v: isinstance(v, str) and v.strip() == "").to_numpy(dtype=bool)
    return miss


def category_text(values: Any) -> np.ndarray:
    """The text every category value is binned and looked up by: ``"4"`` for ``4``, ``4.0`` and ``" 4 "``.

    A column of integer codes reads as floats once one cell is blank (pandas has no integer NaN),
    and exports pad text with spaces; both must land in the category training saw, at every party
    and at scoring, not silently in the missing bin.
    """
    def key(v: Any) -> str:
        if isinstance(v, str):
            return v.strip()
        if isinstance(v, (float, np.floating)) and math.isfinite(v) and float(v).is_integer():
            return str(int(v))
        return str(v)

    seq = values.tolist() if isinstance(values, (pd.Series, np.ndarray)) else list(values)
    return np.array([key(v) for v in seq], dtype=object)


def unseen_categories(bins: Mapping[str, "FeatureBins"], frame: pd.DataFrame) -> dict[str, int]:
    """Rows per categorical feature whose (non-blank) category its bins never saw: they score as the
    ``"(other)"`` bin, or the missing bin where there is none.

    Counts only, for the scoring party's own log (``fedrisk.data.categorical.unseen_note``).
    """
    out = {}
    for f, b in bins.items():
        if b.kind == "categorical" and f in frame.columns:
            named = FeatureBins(f, "categorical", groups=[[c for c in g if c != OTHER] for g in b.groups])
            k = int(((named.assign(frame[f]) == b.n_bins) & ~is_missing(frame[f])).sum())
            if k:
                out[f] = k
    return out


def is_categorical(values: pd.Series) -> bool:
    """A column is categorical when its non-missing values are not all numbers."""
    if pd.api.types.is_bool_dtype(values) or isinstance(values.dtype, pd.CategoricalDtype):
        return True
    if pd.api.types.is_numeric_dtype(values):
        return False
    present = values[~is_missing(values)]
    return bool(len(present)) and pd.to_numeric(present, errors="coerce").isna().any()


def quantile_edges(x: np.ndarray, n_bins: int) -> np.ndarray:
    """Inner edges of up to ``n_bins`` equal-frequency right-closed bins over non-missing ``x``.

    Edges are data values (``inverted_cdf`` quantiles), so a feature with few distinct values
    gets one bin per value; duplicates are dropped and the maximum is never an edge.
    """
    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0 or n_bins <= 1:
        return np.empty(0)
    q = np.quantile(x, np.arange(1, n_bins) / n_bins, method="inverted_cdf")
    return np.unique(q[q < x.max()])


def class_counts(bin_index: np.ndarray, y: np.ndarray, n_bins_with_missing: int) -> tuple[np.ndarray, np.ndarray]:
    """Goods and bads per bin index (``y`` 1 = bad)."""
    y = np.asarray(y, dtype=float)
    bads = np.bincount(bin_index, weights=y, minlength=n_bins_with_missing)
    total = np.bincount(bin_index, minlength=n_bins_with_missing)
    return total - bads, bads


def _iv_of(goods: np.ndarray, bads: np.ndarray, smoothing: float = 0.5) -> float:
    # lazy import: woe imports binning
    from fedrisk.finance.woe import woe_iv

    return woe_iv(goods, bads, smoothing)[2]


# -- merging on counts -------------------------------------------------------------------------
def scored_bad_rate(goods: float, bads: float, smoothing: float = 0.0) -> Fraction:
    """Exact bad rate of one bin as scored: with ``smoothing``, a bin lacking goods or bads gets it added to
    both counts, as :func:`~fedrisk.finance.woe.woe_iv` does.

    The WOE of a bin is ``ln(g / b) + ln(B / G)`` with the same totals for every bin of a feature, so two bins
    have equal WOE exactly when these rates are equal. A :class:`~fractions.Fraction` of the (float) counts, so
    "equal" is exact arithmetic on the counts, the same for pooled and federated counts, not a float accident.
    """
    g, b = Fraction(float(goods)), Fraction(float(bads))
    if smoothing and (g == 0 or b == 0):
        g, b = g + Fraction(float(smoothing)), b + Fraction(float(smoothing))
    return b / (g + b) if g + b else Fraction(0)


def _pava(goods: list[float], bads: list[float], groups: list[list[int]], increasing: bool,
          smoothing: float = 0.0, strict: bool = False) -> None:
    """Pool adjacent violators of a monotonic bad rate. With ``smoothing``, the rate of a bin lacking goods
    or bads is taken after adding ``smoothing`` to both its counts, as :func:`~fedrisk.finance.woe.woe_iv`
    does: then the order is that of the WOE the bins are scored with (WOE falls as this rate rises). With
    ``strict``, neighbours with equal rates (:func:`scored_bad_rate`, exact) are violators too: they are one
    bin to the model."""
    def rate(i: int) -> float:
        g, b = goods[i], bads[i]
        if smoothing and (g == 0 or b == 0):
            g, b = g + smoothing, b + smoothing
        return b / (g + b) if g + b else 0.0

    def order(i: int) -> int:
        # sign of rate(i + 1) - rate(i); floats decide clear cases, exact fractions near-ties (equal floats
        # need not be equal rates, nor the other way round when smoothing is not a binary fraction)
        a, c = rate(i), rate(i + 1)
        if abs(c - a) > 1e-9 * max(a, c):
            return 1 if c > a else -1
        a, c = scored_bad_rate(goods[i], bads[i], smoothing), scored_bad_rate(goods[i + 1], bads[i + 1], smoothing)
        return (c > a) - (c < a)

    i = 0
    while i < len(groups) - 1:
        d = order(i) if increasing else -order(i)
        violates = d <= 0 if strict else d < 0
        if violates:
            goods[i] += goods.pop(i + 1)
            bads[i] += bads.pop(i + 1)
            groups[i] += groups.pop(i + 1)
            i = max(i - 1, 0)
        else:
            i += 1


def _merge_pair(goods: list[float], bads: list[float], groups: list[list[int]], i: int) -> None:
    goods[i] += goods.pop(i + 1)
    bads[i] += bads.pop(i + 1)
    groups[i] += groups.pop(i + 1)


def merge_bins(goods: Sequence[float], bads: Sequence[float], *, max_bins: int, min_bin_frac: float = 0.0,
               monotonic: bool = True, trend: str = "auto", smoothing: float = 0.5) -> list[list[int]]:
    """Merge ordered prebins (given only their class counts) into final bins.

    Parameters
    ----------
    goods, bads : sequence of float
        Counts per prebin, in bin order (missing bin excluded).
    max_bins : int
        Most final bins.
    min_bin_frac : float
        Smallest share of rows a final bin may hold.
    monotonic : bool
        Enforce a *strictly* monotonic bad rate across bins (pool adjacent violators; the final pass also pools
        neighbours with exactly equal scored bad rates, see ``smoothing``).
    trend : {"auto", "increasing", "decreasing"}
        Direction of the bad rate; ``auto`` keeps whichever direction gives the higher IV.
    smoothing : float
        The WOE smoothing the bins will be scored with (:func:`~fedrisk.finance.woe.woe_iv`). With
        ``monotonic``, after the merges above, neighbours whose smoothed WOE breaks the trend or equals its
        neighbour's are merged too (:func:`scored_bad_rate`, exact on the counts). Only bins without goods or
        bads are smoothed, so among bins holding both classes only exact ties of the raw bad rate merge.

    Returns
    -------
    list of list of int
        Consecutive prebin indices making up each final bin (empty prebins are attached to a
        neighbour). An all-empty input gives one group with every prebin.
    """
    g0 = np.asarray(goods, dtype=float)
    b0 = np.asarray(bads, dtype=float)
    k = g0.shape[0]
    if k == 0:
        return []
    # attach empty prebins to the next non-empty one (the last ones to the previous)
    groups: list[list[int]] = []
    pending: list[int] = []
    for i in range(k):
        pending.append(i)
        if g0[i] + b0[i] > 0:
            groups.append(pending)
            pending = []
    if not groups:
        return [list(range(k))]
    groups[-1] += pending

    def run(direction: bool | None) -> tuple[list[list[int]], float]:
        grp = [list(g) for g in groups]
        gs = [float(g0[g].sum()) for g in grp]
        bs = [float(b0[g].sum()) for g in grp]
        if direction is not None:
            _pava(gs, bs, grp, direction)
        total = sum(gs) + sum(bs)
        while len(grp) > 1:
            sizes = np.add(gs, bs)
            i = int(np.argmin(sizes))
            if sizes[i] >= min_bin_frac * total:
                break
            if i == 0:
                j = 0
            elif i == len(grp) - 1:
                j = i - 1
            else:
                r = bs[i] / sizes[i]
                left = abs(bs[i - 1] / sizes[i - 1] - r)
                right = abs(bs[i + 1] / sizes[i + 1] - r)
                j = i - 1 if left <= right else i
            _merge_pair(gs, bs, grp, j)
        while len(grp) > max_bins:
            best, best_iv = 0, -np.inf
            for j in range(len(grp) - 1):
                g2 = gs[:j] + [gs[j] + gs[j + 1]] + gs[j + 2:]
                b2 = bs[:j] + [bs[j] + bs[j + 1]] + bs[j + 2:]
                v = _iv_of(np.array(g2), np.array(b2), smoothing)
                if v > best_iv:
                    best, best_iv = j, v
            _merge_pair(gs, bs, grp, best)
        if direction is not None:
            # the scorecard scores the smoothed WOE: a bin without bads next to one with few can be out of order,
            # and neighbours with the same WOE (a tie the non-strict merges keep, or make) are one bin to it
            _pava(gs, bs, grp, direction, smoothing, strict=True)
        return grp, _iv_of(np.array(gs), np.array(bs), smoothing)

    if not monotonic:
        return run(None)[0]
    if trend == "increasing":
        return run(True)[0]
    if trend == "decreasing":
        return run(False)[0]
    if trend != "auto":
        raise ConfigError(f"trend must be 'auto', 'increasing' or 'decreasing', got {trend!r}")
    inc, dec = run(True), run(False)
    return inc[0] if inc[1] >= dec[1] else dec[0]


def bad_rate_trend(groups: Sequence[Sequence[int]], goods: Sequence[float], bads: Sequence[float],
                   smoothing: float = 0.5) -> bool | None:
    """Direction of a monotonic merge's bins: ``True`` if the scored bad rate (:func:`scored_bad_rate`) rises
    from the first group to the last, ``False`` if it falls, ``None`` for one group (or equal ends).

    For groups out of :func:`merge_bins` (strictly monotonic), the first and last say the direction of all, so a
    later step that merges them further (the vertical release rule) can restore the same order
    (:func:`strictly_monotone`).
    """
    if len(groups) < 2:
        return None
    g, b = np.asarray(goods, dtype=float), np.asarray(bads, dtype=float)
    first, last = (scored_bad_rate(g[list(grp)].sum(), b[list(grp)].sum(), smoothing) for grp in (groups[0], groups[-1]))
    return None if first == last else last > first


def strictly_monotone(groups: Sequence[Sequence[int]], goods: Sequence[float], bads: Sequence[float], *,
                      increasing: bool, smoothing: float = 0.5) -> list[list[int]]:
    """Merge neighbouring groups (runs of prebin indices, in bin order) until the scored bad rate strictly rises
    (``increasing``) or falls from group to group: :func:`merge_bins`' last pass, for groups merged further after
    it (a merge of two bins without defaults has a smoothed WOE beyond both, which can pass a neighbour's).

    Only merges, so every group still holds at least what it held before (rows, goods, bads): a minimum-count
    rule that every group passed still holds.
    """
    g, b = np.asarray(goods, dtype=float), np.asarray(bads, dtype=float)
    grp = [list(x) for x in groups]
    gs = [float(g[x].sum()) for x in grp]
    bs = [float(b[x].sum()) for x in grp]
    _pava(gs, bs, grp, increasing, smoothing, strict=True)
    return grp


def bins_from_groups(name: str, kind: Kind, groups: list[list[int]], *, prebin_edges: np.ndarray | None = None,
                     categories: Sequence[str] | None = None) -> FeatureBins:
    """Final :class:`FeatureBins` from merged prebin groups.

    Parameters
    ----------
    name, kind
        Feature name and kind.
    groups : list of list of int
        Output of :func:`merge_bins`.
    prebin_edges : ndarray, optional
        Numeric: inner edges of the prebins the group indices refer to.
    categories : sequence of str, optional
        Categorical: the category label of each prebin (in the order the indices refer to).
    """
    if kind == "numeric":
        pe = np.asarray(prebin_edges if prebin_edges is not None else [], dtype=float)
        edges = np.array([pe[g[-1]] for g in groups[:-1] if g[-1] < len(pe)], dtype=float)
        return FeatureBins(name, "numeric", edges=np.unique(edges))
    cats = list(categories or [])
    return FeatureBins(name, "categorical", groups=[sorted(cats[i] for i in g) for g in groups])


def order_categories(cats: Sequence[str], goods: np.ndarray, bads: np.ndarray) -> np.ndarray:
    """Order of categories by smoothed bad rate (ties by label), the prebin order for merging."""
    # smoothed so that a category with 1 row does not sort to an extreme
    prior = (bads.sum() + 0.5) / (goods.sum() + bads.sum() + 1.0)
    rate = (bads + prior) / (goods + bads + 1.0)
    return np.lexsort((np.asarray(cats, dtype=object).astype(str), rate))


def pool_rare_categories(categories: Sequence[str], counts: Sequence[float], min_count: int) -> list[list[str]]:
    """Prebins of a categorical feature: one per category with ``min_count`` rows or more, in the
    given order, then (if any category is rarer) one ``"(other)"`` prebin pooling the rarer ones.

    The ``"(other)"`` prebin also holds the label :data:`OTHER`, so values never seen while
    fitting (undeclared ones at a bank, new ones at scoring) fall into it.
    """
    kept = [[str(c)] for c, n in zip(categories, counts) if n >= min_count]
    rare = sorted(str(c) for c, n in zip(categories, counts) if n < min_count)
    return kept + ([rare + [OTHER]] if rare else [])


def categories_differ(goods: np.ndarray, bads: np.ndarray) -> float:
    """p-value of the chi-square test that every prebin has the same bad rate (1.0 if untestable).

    One omnibus test of the whole category x class table: unlike tests between neighbours after
    sorting the categories by their own bad rates, it is not fooled by that sorting. When the
    table is too sparse for the chi-square distribution (Cochran's rule: an expected count under 1,
    or more than a fifth under 5 — e.g. 300 categories of 20 rows at a 1 % bad rate, where the
    asymptotic test rejected twice as often as asked), the p-value is that of the same statistic
    over tables drawn with the same margins (:func:`_simulated_pvalue`, the Monte Carlo test of
    R's ``chisq.test(simulate.p.value = TRUE)``). Either way a function of the counts only, whatever
    the order of the prebins, so local and federated binning decide alike.
    """
    from scipy.stats import chi2

    g, b = np.asarray(goods, dtype=float), np.asarray(bads, dtype=float)
    rows = g + b
    keep = rows > 0
    g, b, rows = g[keep], b[keep], rows[keep]
    n, tg, tb = rows.sum(), g.sum(), b.sum()
    if len(rows) < 2 or tg == 0 or tb == 0:
        return 1.0
    eg, eb = rows * tg / n, rows * tb / n
    stat = float(((g - eg) ** 2 / eg).sum() + ((b - eb) ** 2 / eb).sum())
    expected = np.minimum(eg, eb)
    if expected.min() >= 1.0 and (expected < 5.0).mean() <= 0.2:
        return float(chi2.sf(stat, len(rows) - 1))
    return _simulated_pvalue(rows, b if tb <= tg else g)


#: tables drawn by :func:`_simulated_pvalue` (fewer only for very large tables, see there)
SIMULATED_TABLES = 2000
_SIMULATION_WORK = 20_000_000


def _simulated_pvalue(rows: np.ndarray, minority: np.ndarray) -> float:
    """Monte Carlo p-value of the chi-square statistic given the table's margins (Hope 1968).

    Under "same bad rate everywhere" with the margins fixed, the minority-class counts are
    multivariate hypergeometric; the statistic is an increasing function of
    ``sum(minority**2 / rows)``. ``p = (1 + #{drawn >= observed}) / (1 + draws)``, so never below
    ``1 / (1 + draws)``: ``draws`` is 2,000 (p >= 0.0005) unless a table has both over ~10,000
    minority-class rows and over ~700 prebins, then fewer (at least 200, p >= 0.005). The seed is
    fixed and the cells sorted first: a deterministic function of the multiset of counts.
    """
    order = np.lexsort((minority, rows))
    r, m = rows[order].astype(np.int64), minority[order].astype(np.int64)
    observed = float((m.astype(float) ** 2 / r).sum())
    drawn = _simulated_statistics(tuple(r.tolist()), int(m.sum()))
    hits = len(drawn) - int(np.searchsorted(drawn, observed * (1 - 1e-12), side="left"))
    return (1 + hits) / (1 + len(drawn))


@functools.lru_cache(maxsize=64)
def _simulated_statistics(rows: tuple[int, ...], total: int) -> np.ndarray:
    """The sorted statistics ``sum(minority**2 / rows)`` of the tables :func:`_simulated_pvalue` draws for these
    (sorted) row margins and minority total. They depend on the margins only, so they are drawn once: the
    permutation null of the IV (:mod:`fedrisk.finance.iv_noise`) tests hundreds of label draws of one column
    with the same margins (46 ms a test otherwise)."""
    r = np.asarray(rows, dtype=np.int64)
    # numpy's "count" method costs ~ the sample size per table, "marginals" ~ 15 x the number of cells
    method = "count" if total <= 15 * len(r) else "marginals"
    work = max(1, min(total, 15 * len(r)))
    draws = int(max(200, min(SIMULATED_TABLES, _SIMULATION_WORK // work)))
    rng = np.random.default_rng(20240601)
    chunk = max(1, min(draws, 2_000_000 // len(r)))  # bounds the memory of one batch of tables
    stats, done = [], 0
    while done < draws:
        size = min(chunk, draws - done)
        sim = rng.multivariate_hypergeometric(r, total, size=size, method=method).astype(float)
        stats.append((sim ** 2 / r).sum(axis=1))
        done += size
    out = np.sort(np.concatenate(stats))
    out.flags.writeable = False
    return out


def group_categories(prebins: Sequence[Sequence[str]], goods: np.ndarray, bads: np.ndarray,
                     config: BinningConfig) -> list[list[int]]:
    """Final bins of a categorical feature from its prebins' counts, as lists of prebin indices.

    With more non-empty prebins than ``config.max_bins`` (so that cutting their bad-rate order into
    bins would select on noise) and a :func:`categories_differ` p-value above
    ``config.category_pvalue``: one bin (the categories carry no evidence about the label). Fewer
    prebins are each a bin already, as a numeric feature's prebins are, and are merged as such (on
    German credit the test would drop ``other_debtors_or_guarantors``, 3 levels, IV 0.03). Otherwise
    the prebins are ordered by bad rate
    (:func:`order_categories`) and merged (:func:`merge_bins`, increasing bad rate). A function of
    counts only, so local and federated binning with the same counts make the same bins.
    """
    k = len(prebins)
    if k == 0:
        return []
    g, b = np.asarray(goods, dtype=float), np.asarray(bads, dtype=float)
    if int(((g + b) > 0).sum()) > config.max_bins and categories_differ(g, b) > config.category_pvalue:
        return [list(range(k))]
    names = [", ".join(sorted(str(c) for c in grp)) for grp in prebins]
    order = order_categories(names, g, b)
    monotonic = config.method == "monotonic"
    groups = merge_bins(g[order], b[order], max_bins=config.max_bins,
                        min_bin_frac=config.min_bin_frac if monotonic else 0.0, monotonic=monotonic, trend="increasing",
                        smoothing=config.smoothing)
    return [[int(order[i]) for i in grp] for grp in groups]


def categorical_bins(name: str, prebins: Sequence[Sequence[str]], groups: list[list[int]]) -> FeatureBins:
    """:class:`FeatureBins` whose bin ``i`` holds the labels of the prebins in ``groups[i]``."""
    return FeatureBins(name, "categorical", groups=[sorted(str(c) for i in grp for c in prebins[i]) for grp in groups])


def feature_prebins(x: Any, y: Any, name: str, *, kind: Kind | None = None,
                    config: BinningConfig | None = None) -> tuple[FeatureBins, np.ndarray, np.ndarray]:
    """The prebins :func:`fit_feature_bins` merges, with goods and bads per prebin (missing bin last).

    Numeric: ``config.n_prebins`` equal-frequency bins of the non-missing values (:func:`quantile_edges`);
    categorical: one prebin per category, the rarer ones pooled (:func:`pool_rare_categories`). They depend
    on the values only, never on the labels, so re-running :func:`merge_feature_prebins` on their counts with
    the labels permuted is the binning of a noise column (:mod:`fedrisk.finance.iv_noise`).

    Raises
    ------
    DataError
        ``x`` and ``y`` differ in length, or a column declared numeric holds text.
    """
    cfg = config or BinningConfig()
    s = x.reset_index(drop=True) if isinstance(x, pd.Series) else pd.Series(x)
    yv = np.asarray(y, dtype=float)
    if len(s) != len(yv):
        raise DataError(f"feature {name!r} has {len(s)} rows but the label has {len(yv)}")
    kind = kind or ("categorical" if is_categorical(s) else "numeric")
    miss = is_missing(s)
    if kind == "numeric":
        try:
            v = pd.to_numeric(s.where(~miss), errors="raise").to_numpy(dtype=float)
        except (ValueError, TypeError) as exc:
            raise DataError(f"feature {name!r} was declared numeric but holds non-numeric values ({exc})") from exc
        pre = FeatureBins(name, "numeric", edges=quantile_edges(v[~miss], cfg.n_prebins))
        idx = np.full(len(s), pre.n_bins, dtype=np.int64)
        idx[~miss] = np.searchsorted(pre.edges, v[~miss], side="left")
    else:
        labels = category_text(s[~miss]).astype(str)
        cats, n_rows = np.unique(labels, return_counts=True)
        pre = FeatureBins(name, "categorical",
                          groups=pool_rare_categories(cats.tolist(), n_rows, cfg.min_category_count) if cats.size else [])
        idx = pre.assign(s)
    g, b = class_counts(idx, yv, pre.n_bins + 1)
    return pre, g, b


def merge_feature_prebins(prebins: FeatureBins, goods: Any, bads: Any, config: BinningConfig) -> list[list[int]]:
    """:func:`fit_feature_bins`' merge of the *non-missing* prebins' counts into final bins, as prebin indices
    (numeric: :func:`merge_bins`; categorical: :func:`group_categories`). Counts only, so the federated
    coordinator and the permutation null of the IV (:mod:`fedrisk.finance.iv_noise`) run the same merge."""
    g, b = np.asarray(goods, dtype=float), np.asarray(bads, dtype=float)
    if prebins.kind == "numeric":
        monotonic = config.method == "monotonic"
        return merge_bins(g, b, max_bins=config.max_bins, min_bin_frac=config.min_bin_frac if monotonic else 0.0,
                          monotonic=monotonic, smoothing=config.smoothing)
    return group_categories(prebins.groups, g, b, config) if prebins.groups else []


def fit_feature_bins(x: Any, y: Any, name: str, *, kind: Kind | None = None,
                     config: BinningConfig | None = None, prebins: dict[str, Any] | None = None) -> FeatureBins:
    """Fit the bins of one feature on one party's rows.

    Parameters
    ----------
    x : array-like
        Feature values (missing: NaN/None/empty string).
    y : array-like of {0, 1}
        Target, 1 = bad.
    name : str
        Feature name (used in messages and the result).
    kind : {"numeric", "categorical"}, optional
        Inferred with :func:`is_categorical` when omitted.
    config : BinningConfig, optional
        Hyper-parameters; defaults to ``BinningConfig()``.
    prebins : dict, optional
        Filled with ``{name: (prebins, goods, bads)}`` (:func:`feature_prebins`): what the IV's permutation
        null re-merges (:mod:`fedrisk.finance.iv_noise`).

    Returns
    -------
    FeatureBins
        A single-valued or all-missing feature gets one (non-missing) bin and IV 0.
    """
    cfg = config or BinningConfig()
    pre, g, b = feature_prebins(x, y, name, kind=kind, config=cfg)
    if prebins is not None:
        prebins[name] = (pre, g, b)
    groups = merge_feature_prebins(pre, g[:-1], b[:-1], cfg)
    if pre.kind == "numeric":
        return bins_from_groups(name, "numeric", groups, prebin_edges=pre.edges)
    if not pre.groups:
        return FeatureBins(name, "categorical", groups=[])
    return categorical_bins(name, pre.groups, groups)


def fit_bins(X: pd.DataFrame, y: Any, *, features: Iterable[str] | None = None,
             categorical: Iterable[str] | None = None, config: BinningConfig | None = None,
             prebins: dict[str, Any] | None = None) -> dict[str, FeatureBins]:
    """Fit bins for every feature of a data frame (one party, local data).

    Parameters
    ----------
    X : DataFrame
        Features.
    y : array-like of {0, 1}
        Target, 1 = bad.
    features : iterable of str, optional
        Columns to bin (default: all).
    categorical : iterable of str, optional
        Columns forced categorical (others are inferred).
    config : BinningConfig, optional
        Hyper-parameters.
    prebins : dict, optional
        Filled with each feature's prebins and their counts (see :func:`fit_feature_bins`).

    Returns
    -------
    dict
        ``{feature: FeatureBins}``.
    """
    cols = list(features) if features is not None else list(X.columns)
    missing = [c for c in cols if c not in X.columns]
    if missing:
        raise DataError(f"columns {missing} not in the data (has {list(X.columns)[:20]})")
    cat = set(categorical or ())
    return {c: fit_feature_bins(X[c], y, c, kind="categorical" if c in cat else None, config=config, prebins=prebins)
            for c in cols}
