"""The IV a pure-noise column reaches when its bins are fitted to the same labels: a permutation null.

Why
    A feature's ``iv_p_value`` is read by model validators as "the chance that a column with no relation
    to the label shows an IV this high". The chi-square figure of the final bins
    (:func:`~fedrisk.finance.woe.iv_significance`) treats the bins as fixed, but monotone binning chose them
    on these labels -- the best of ~19 cut points when it ends with 2 bins: a noise column got
    ``p < 0.05`` there in 18-40 % of simulated runs instead of 5 %.

How (:class:`BinningNull`)
    The prebins (equal-frequency bins of the values, categories) depend on the feature's values only; the
    binning is a function of the prebins' good/bad counts only. Under "no relation", given the values and
    the number of defaults, every assignment of the labels to the rows is equally likely (a label
    permutation), so the bads per prebin are multivariate hypergeometric (``Generator.multivariate_
    hypergeometric``: prebin sizes and total defaults fixed). Each draw is binned by the very same merge
    (:func:`~fedrisk.finance.binning.merge_bins` / :func:`~fedrisk.finance.binning.group_categories`, and at
    a vertical label holder the release rule) and its IV computed. With ``D`` draws and ``h`` of them
    reaching the observed IV, ``iv_p_value = (h + 1) / (D + 1)`` -- a valid p-value for any ``D``:
    ``P(p <= a) <= a`` under the null, for the binning as it was done. ``D`` is 99, or :data:`NULL_DRAWS`
    (199) when the first 99 put ``p`` between 0.01 and 0.2, near the 5 % line (a two-stage Monte Carlo test:
    clear signal and clear noise need no more; the 5 % level stays exact but for ~1e-5). ``iv_noise_95`` is the
    IV of the ``0.05 (D + 1)``-th highest draw (the 5th of 99, the 10th of 199): an IV above it has
    ``iv_p_value <= 0.05``, one at or below it not. When no draw reaches the IV (a real signal), ``iv_p_value`` is the smaller of
    ``1 / (D + 1)`` and the chi-square figure with the prebins' degrees of freedom (merging prebins
    cannot add IV, so the prebins' chi-square bounds the fitted bins'), so a strong feature still reads as
    tiny rather than "0.005".

Calibration (measured; the ``ivperm`` notes)
    Over all noise columns ``p <= 0.05`` happens 5 % of the time, by construction. By the number of bins
    the binning ended with (3,000 draws each of 20 prebins, 3,000 rows with 18 / 60 / 300 defaults, 1,000 rows
    with 300): 2 bins 0.9-2.5 % (the chi-square figure: 30-40 %), 3 bins 1.5-6.6 % (12-18 %), 4 bins
    2.7-4.7 %, 5 bins 4-7 %, 6 bins 5-10 % (chi-square: 2-7 %). The null is that of the whole binning, not
    of the bin count it ended with: a test conditional on the bin count would need the draws that end with as
    many bins, several times more draws for the rarer counts.

Seeded and counts-only
    The draws are seeded by the job seed and the feature's name (:func:`feature_seed`), and need only the
    prebin counts, so a federated run (the horizontal coordinator's pooled counts, the vertical label
    holder's decrypted counts of a partner's prebins) and single-party binning of the same rows give the
    same figures, and a rerun gives the same figures. Nothing new is sent to anyone.

Cost
    One merge per draw: ~0.7-1.5 ms for 20 numeric prebins, so ~0.1 s a feature (99 draws) to ~0.25 s
    (199); computed when a figure is asked for (an IV table), not at fitting.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from fedrisk.errors import ConfigError

__all__ = ["NULL_DRAWS", "NULL_PERMUTATION", "NULL_CHI2", "BinningNull", "feature_seed", "single_party_null"]

#: most label draws of the permutation null (half of them first; p-values are multiples of 1 / 200 or 1 / 100;
#: at least 19 are needed)
NULL_DRAWS = 199
#: ``iv_null`` of a figure from the permutation null of the binning
NULL_PERMUTATION = "permutation"
#: ``iv_null`` of the chi-square figure of given bins (no prebins known, e.g. ``WoeEncoder.fit_bins``)
NULL_CHI2 = "chi2"
_STREAM = 0x1F_0015E  # (separates these draws from any other use of the job seed)

#: the merge of one feature's non-missing prebin counts into final bins (lists of prebin indices)
Regroup = Callable[[np.ndarray, np.ndarray], "list[list[int]]"]


def feature_seed(name: str, seed: int = 0) -> np.random.SeedSequence:
    """The seed of a feature's null draws: the job seed and the feature's name (not its position, which differs
    between a federated run and a single-party refit of the same columns)."""
    return np.random.SeedSequence([_STREAM, int(seed) & 0xFFFF_FFFF_FFFF_FFFF, zlib.crc32(str(name).encode("utf-8"))])


@dataclass(frozen=True, eq=False)
class BinningNull:
    """A feature's prebin counts and how its final bins were made of them: enough to bin noise the same way.

    Parameters
    ----------
    goods, bads : ndarray
        Counts per prebin, the missing bin last (its rows stay in the missing bin whatever the labels). The
        labels are permuted over these rows only: rows in no prebin (a vertical partner's missing bin too small
        to be summed) are not in the IV, and the test is conditional on the defaults among the rows that are.
    regroup : callable
        ``regroup(goods, bads)`` of the *non-missing* prebins -> final bins as lists of prebin indices: the
        merge the feature's bins came from, with its settings.
    smoothing : float
        The WOE smoothing of the IV (:func:`~fedrisk.finance.woe.woe_iv`).
    seed : SeedSequence
        :func:`feature_seed`.
    draws : int
        Label draws (:data:`NULL_DRAWS`).
    keep_missing : callable, optional
        ``keep_missing(goods, bads)`` of the missing bin: ``False`` drops it from the IV (the vertical release
        rule: a missing bin too small to describe gets WOE 0).
    """

    goods: np.ndarray
    bads: np.ndarray
    regroup: Regroup
    smoothing: float
    seed: np.random.SeedSequence
    draws: int = NULL_DRAWS
    keep_missing: Callable[[float, float], bool] | None = None

    def __post_init__(self) -> None:
        if int(self.draws) < 19:  # fewer cannot put an IV beyond 95 % of them
            raise ConfigError(f"the IV's permutation null needs at least 19 draws, got {self.draws}")

    def final_counts(self, goods: np.ndarray, bads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Goods and bads per final bin (missing bin last, unless ``keep_missing`` drops it) of these prebin
        counts."""
        k = len(goods) - 1
        groups = self.regroup(goods[:k], bads[:k])
        fg = [float(goods[g].sum()) for g in groups] or [0.0]
        fb = [float(bads[g].sum()) for g in groups] or [0.0]
        mg, mb = float(goods[k]), float(bads[k])
        if self.keep_missing is None or mg + mb == 0 or self.keep_missing(mg, mb):
            fg, fb = fg + [mg], fb + [mb]
        return np.asarray(fg), np.asarray(fb)

    def iv(self, goods: np.ndarray, bads: np.ndarray) -> float:
        """The IV of the final bins these prebin counts get."""
        from fedrisk.finance.woe import woe_iv

        return woe_iv(*self.final_counts(goods, bads), self.smoothing)[2]

    def significance(self) -> dict[str, Any]:
        """``iv_p_value``, ``iv_noise_95`` and ``iv_null`` (:data:`NULL_PERMUTATION`) of the observed counts' IV.

        ``iv_p_value`` 1.0 and ``iv_noise_95`` 0.0 when no binning can give an IV (one class, or every row
        in one prebin).
        """
        from scipy.stats import chi2  # (lazy: scipy.stats is slow to import)

        from fedrisk.finance.woe import NOISE_LEVEL

        g0, b0 = np.asarray(self.goods, dtype=float), np.asarray(self.bads, dtype=float)
        n = g0 + b0
        total_bads, total_goods = int(round(float(b0.sum()))), int(round(float(g0.sum())))
        observed = self.iv(g0, b0)
        cells = int((n > 0).sum())
        if cells < 2 or total_bads == 0 or total_goods == 0:
            return {"iv_p_value": 1.0, "iv_noise_95": 0.0, "iv_null": NULL_PERMUTATION}
        rng = np.random.default_rng(self.seed)
        seen: dict[bytes, float] = {}

        def draw(size: int) -> np.ndarray:
            out = np.empty(size)
            for i, s in enumerate(rng.multivariate_hypergeometric(n.astype(np.int64), total_bads, size=size)):
                key = s.tobytes()
                if key not in seen:
                    b = s.astype(float)
                    seen[key] = self.iv(n - b, b)
                out[i] = seen[key]
            return out

        def reached(null: np.ndarray) -> int:
            return int((null >= observed * (1 - 1e-9) - 1e-15).sum())

        # half the draws first; the rest only where the p-value is near the 5 % line (0.01 < p <= 0.2): a clear
        # signal or clear noise is told by 99 draws, a borderline one gets the resolution of 199 (the merge is
        # ~1 ms a draw)
        first = max(19, int(self.draws) // 2)
        null = draw(min(first, int(self.draws)))
        hits = reached(null)
        if len(null) < int(self.draws) and 0 < hits < 0.2 * (len(null) + 1):
            null = np.concatenate([null, draw(int(self.draws) - len(null))])
            hits = reached(null)
        p = (hits + 1) / (len(null) + 1)
        if hits == 0:
            G, B = float(g0.sum()), float(b0.sum())
            if G > 0 and B > 0:
                p = min(p, float(chi2.sf(observed * G * B / (G + B), cells - 1)))
        j = int(np.floor(NOISE_LEVEL * (len(null) + 1) + 1e-9)) - 1
        return {"iv_p_value": float(p), "iv_noise_95": float(np.sort(null)[::-1][j]), "iv_null": NULL_PERMUTATION}


def single_party_null(prebins: Any, goods: np.ndarray, bads: np.ndarray, config: Any, *, smoothing: float,
                      seed: int = 0, draws: int = NULL_DRAWS) -> BinningNull:
    """The null of single-party binning (:func:`~fedrisk.finance.binning.fit_feature_bins`) and of the horizontal
    coordinator's (the same merge of the pooled counts): ``prebins`` is the feature's prebin
    :class:`~fedrisk.finance.binning.FeatureBins`, ``goods``/``bads`` their counts (missing bin last)."""
    from functools import partial

    from fedrisk.finance.binning import merge_feature_prebins

    return BinningNull(np.asarray(goods, dtype=float), np.asarray(bads, dtype=float),
                       partial(merge_feature_prebins, prebins, config=config), smoothing,
                       feature_seed(prebins.name, seed), draws)
