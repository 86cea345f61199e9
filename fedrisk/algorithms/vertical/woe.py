"""Vertical (same customers, different columns) WOE/IV of a feature holder's features.

The label holder learns per-bin good/bad counts of the feature holder's bins — and nothing
about which customer is in which bin; the feature holder learns nothing about the labels (only
the IV per feature, and more only if the label holder chooses to reveal it). Rows are assumed
aligned beforehand (PSI): row ``i`` is the same customer at both parties.

Message flow (``L`` = label holder, ``F`` = each feature holder, ``T`` = tag prefix "vwoe")::

    1. L -> F  T.key      additively homomorphic public key (Paillier)   public-parameter
       L -> F  T.labels   Enc(y_i) for every aligned row                  ciphertext
    2. F: equal-frequency prebins per feature (+ a missing bin; one prebin per category), pooled
          until each holds >= need rows (see "Minimum counts" below),
          S_fk = rerandomise( prod_{i in prebin k of f} Enc(y_i) ) = Enc(bads in prebin k)
       F -> L  T.sizes    rows per prebin, feature names and kinds        aggregate
       F -> L  T.sums     S_fk                                            ciphertext
    3. L: decrypt -> bads per prebin, goods = size - bads; merge prebins (:func:`merge_prebins`:
          numeric ones with binning.merge_bins; categorical ones with single-party's rule,
          binning.group_categories, on the prebins' counts); WOE and IV from the merged counts
       L -> F  T.result   IV per feature (+ merged prebin groups if reveal >= "bins",
                          + WOE per final bin if reveal == "woe")          metric / model
    4. F: select its own features (IV threshold, then correlation among its own features)
       F -> L  T.selection  the selection report                          metric

Minimum counts (:class:`ReleaseRule`, task settings ``min_bin_rows``, ``min_bin_share``,
``min_bin_class``, ``max_category_share``). Without them a near-unique text column gives one
prebin per row and the released groups/WOE are the labels (an honest ``vertical.scorecard`` run
handed a feature holder 3,982 of 3,982 training labels). So:

* F, before encrypting anything, pools its prebins until each holds at least
  ``need = min(min_bin_rows, ceil(min_bin_share * n))`` rows: rare categories go into one pooled
  prebin, small numeric prebins are merged with a neighbour, a missing bin smaller than ``need``
  is not summed at all (its rows get the empty bin's WOE). These are privacy costs of a partner's
  column only: the label holder's own numeric columns are binned exactly as single-party
  :class:`~fedrisk.finance.woe.WoeEncoder` bins the pooled rows (nothing of them is released), so
  the same column with a few blank cells or a bin under ``need`` rows can get a slightly different IV
  held by a partner (German credit, 30 blank ``duration_in_month`` cells: 0.2613 at the label holder,
  0.2683 at a partner) -- a deliberate difference, not parity at the cost of the pooled result. A categorical column with more
  distinct values than ``max_category_share`` of its rows is logged as a warning naming it;
  pooling then leaves it (nearly) one bin. Every encrypted sum therefore covers ``>= need`` rows.
* L merges released groups until each holds ``>= need`` rows and ``>= min_bin_class`` goods and
  bads, then merges neighbours whose smoothed WOE broke out of the monotonic order or tied
  (with ``min_bin_class = 0`` two bins without defaults can merge into one whose WOE passes its
  neighbour's), so released WOE is strictly monotonic; a merge only adds rows, so the rule still
  holds. A missing bin that fails the rule is released with WOE 0 (no information). A feature the rule
  makes one bin although its counts split at a "suspicious" IV (> 0.5) gets a leakage warning in L's own
  result (never sent) instead of passing as "IV 0, not predictive": a flag copying the label but for a
  few defaults is exactly such a feature.
* F refuses a result whose groups do not partition its prebins.
* L bins its own text columns the same way, locally (:func:`label_holder_bins`): a column gets the
  same bins whichever party holds it, and a code of many rare levels (branch, postcode) is pooled
  instead of being merged by each level's own bad rate (which fits noise).
* Categorical prebins, at either party, get single-party binning's rule on their counts
  (:func:`~fedrisk.finance.binning.group_categories` with the task's binning settings): prebins under
  ``min_category_count`` rows (possible when ``need`` is smaller) pooled into one, and a column with
  more prebins than ``max_bins`` keeps one bin unless the chi-square test finds its bad rates differ
  (``category_pvalue``, default 0.01; task settings ``category_pvalue`` and ``min_category_count``, as in
  the horizontal tasks and single-party binning). So a random 10-level code
  gets IV 0 as with :class:`~fedrisk.finance.woe.WoeEncoder`. L computes this from the counts it
  already decrypted; F learns only the final groups, as before.

What each party learns
    L: for each of F's features, the number of prebins, rows and bads per prebin (its labels
    summed over F's private grouping), hence WOE/IV. Not the bin edges, not the categories,
    not which row is in which bin: the sums are re-randomised, so L cannot test which of its
    own ciphertexts a sum contains.
    F: ciphertexts under L's key (semantically secure) and what L reveals: the IV per
    feature by default; with ``reveal="bins"`` the merged groups (which say which neighbouring
    prebins have similar bad rates, and for categorical features their bad-rate order); with
    ``reveal="woe"`` the WOE of each final bin, i.e. each bin's bad rate — what F needs to
    WOE-encode its columns for a federated scorecard. Every released bin covers at least
    ``need`` rows and ``min_bin_class`` goods and bads, so F's best per-row guess is a bad rate
    over at least that many customers (``tests/algorithms/vertical/test_woe_release.py``).

Against a deviating L (not in the semi-honest model): L could encrypt crafted plaintexts
(``2^i`` instead of ``y_i``) and read F's prebin memberships from the decrypted sums; pooling
bounds every sum to ``>= need`` rows but does not stop this. See ``SECURITY.md``.
"""
from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from fedrisk.crypto.additive import PrivateKey, PublicKey, generate_keypair, public_key_from_wire
from fedrisk.errors import ConfigError, DataError, ProtocolError
from fedrisk.finance.binning import (
    BinningConfig,
    FeatureBins,
    bad_rate_trend,
    bins_from_groups,
    category_text,
    group_categories,
    is_categorical,
    is_missing,
    merge_bins,
    quantile_edges,
    strictly_monotone,
)
from fedrisk.finance.iv_noise import BinningNull, feature_seed
from fedrisk.finance.woe import DEFAULT_SMOOTHING, NOISE_LEVEL, iv_strength, select_features, woe_iv
from fedrisk.transport.channel import Channel
from fedrisk.transport import expect

__all__ = ["VerticalWoeResult", "ReleaseRule", "vertical_woe_label_holder", "vertical_woe_feature_holder",
           "REVEAL_LEVELS", "label_holder_bins", "merge_prebins", "refuse_unsplittable", "unsplittable"]

REVEAL_LEVELS = ("iv", "bins", "woe")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReleaseRule:
    """Smallest populations a released (or encrypted-and-summed) bin may describe.

    Parameters
    ----------
    min_rows : int
        A bin needs at least ``min(min_rows, ceil(min_share * n))`` rows ("5 % of the rows or
        50 rows, whichever is smaller", by default).
    min_share : float
        See ``min_rows``.
    min_class : int
        Goods and bads each bin must hold before its groups or WOE are released.
    max_category_share : float
        A categorical column with more distinct values than this share of its rows is flagged
        (logged as a warning naming it); pooling then makes it (nearly) one bin.
    """

    min_rows: int = 50
    min_share: float = 0.05
    min_class: int = 5
    max_category_share: float = 0.5

    def __post_init__(self) -> None:
        if not (isinstance(self.min_rows, int) and self.min_rows >= 1):
            raise ConfigError(f"min_bin_rows must be an integer >= 1, got {self.min_rows!r}")
        if not 0 <= self.min_share < 0.5:
            raise ConfigError(f"min_bin_share must be in [0, 0.5), got {self.min_share!r}")
        if not (isinstance(self.min_class, int) and self.min_class >= 0):
            raise ConfigError(f"min_bin_class must be an integer >= 0, got {self.min_class!r}")
        if not 0 < self.max_category_share <= 1:
            raise ConfigError(f"max_category_share must be in (0, 1], got {self.max_category_share!r}")

    def rows_needed(self, n: int) -> int:
        """Rows a bin needs when ``n`` rows are binned."""
        return max(1, min(self.min_rows, math.ceil(self.min_share * n)))

    def ok(self, goods: float, bads: float, need: int) -> bool:
        return goods + bads >= need and goods >= self.min_class and bads >= self.min_class


def unsplittable(who: str, holder: str, ivs: dict[str, float], y: np.ndarray, rule: ReleaseRule) -> str | None:
    """Why every feature of ``holder`` got IV 0 under ``rule`` at labels ``y``, or ``None``.

    Decided after the IVs are known: only when each of ``holder``'s IVs is 0 *and* the labels hold fewer
    than ``2 * min_class`` of a class (two released bins need ``min_class`` goods and bads each). With few
    bads a feature can still get an IV above 0 (a missing bin holding ``min_class`` bads is released on its
    own, the rest is the last group), so the counts alone do not say the job fails. The sentence names the
    rule, its setting and the counts; the counts are the labels' own, so it belongs in the label holder's
    log or in a :func:`~fedrisk.runtime.abort_reason.label_error`.
    """
    if not ivs or any(v != 0 for v in ivs.values()):
        return None
    bads = int(np.sum(y))
    goods = int(len(y)) - bads
    short = [f"{n} {what}" for n, what in ((bads, "bads"), (goods, "goods")) if n < 2 * rule.min_class]
    if not short:
        return None
    return (f"party {who!r}: every feature of party {holder!r} got IV 0: the aligned training rows hold "
            f"{' and '.join(short)}, but the WOE release rule lets a partner's bin out only with at least "
            f"{rule.min_class} goods and {rule.min_class} bads (task.min_bin_class = {rule.min_class}), so none of "
            "its features could be cut into bins")


def refuse_unsplittable(who: str, y: np.ndarray, rule: ReleaseRule, iv_threshold: float):
    """The label holder's check of a scorecard's partner IVs (``on_ivs`` of :func:`vertical_woe_label_holder`).

    A scorecard needs ``IV >= iv_threshold`` (when above 0), which an all-IV-0 partner never reaches: the job
    failed at that feature holder with "none of its features reaches IV", naming no count. When the labels
    are the reason (:func:`unsplittable`), the label holder refuses first, before sending that partner its
    result, in one line naming the rule, the counts and the fix; partners get only the label summary.
    """
    from fedrisk.runtime.abort_reason import label_error

    def check(holder: str, ivs: dict[str, float]) -> None:
        why = unsplittable(who, holder, ivs, y, rule) if iv_threshold > 0 else None  # (at 0, one-bin features pass)
        if why is None:
            return
        bads = int(np.sum(y))
        lower = min(bads, int(len(y)) - bads) // 2
        raise label_error(
            f"{why}, below task.iv_threshold = {iv_threshold}; train on rows with at least {2 * rule.min_class} of "
            "each class, or " + (f"lower task.min_bin_class to {lower} or less (each released bin then describes "
                                 "fewer customers' labels)" if lower >= 1
                                 else "set task.iv_threshold = 0 to keep one-bin features"))

    return check


def enforce_release(groups: list[list[int]], goods: np.ndarray, bads: np.ndarray, need: int,
                    rule: ReleaseRule, *, increasing: bool | None = None,
                    smoothing: float = DEFAULT_SMOOTHING) -> list[list[int]]:
    """Merge neighbouring groups until each passes ``rule`` (or one group is left).

    ``groups`` are consecutive runs of prebin indices in the merge order (as from
    :func:`~fedrisk.finance.binning.merge_bins`). The neighbour is the one with the closer bad rate.
    Merging neighbours keeps the *raw* bad rate monotonic, not the smoothed one the bins are scored
    with: with ``min_class = 0`` two bins without defaults can merge, and the merged bin's smoothed
    WOE lies beyond both (0.64, 0.96, -0.54). So with ``increasing`` (the trend of the input, see
    :func:`~fedrisk.finance.binning.bad_rate_trend`) neighbours out of that order, or tied, are
    merged afterwards (:func:`~fedrisk.finance.binning.strictly_monotone`): only merges, so every
    group still passes ``rule``.
    """
    grp = [list(g) for g in groups]
    gs = [float(goods[g].sum()) for g in grp]
    bs = [float(bads[g].sum()) for g in grp]
    while len(grp) > 1:
        bad_i = [i for i in range(len(grp)) if not rule.ok(gs[i], bs[i], need)]
        if not bad_i:
            break
        i = min(bad_i, key=lambda k: gs[k] + bs[k])
        if i == 0:
            j = 0
        elif i == len(grp) - 1:
            j = i - 1
        else:
            rate = bs[i] / max(gs[i] + bs[i], 1.0)
            left = abs(bs[i - 1] / max(gs[i - 1] + bs[i - 1], 1.0) - rate)
            right = abs(bs[i + 1] / max(gs[i + 1] + bs[i + 1], 1.0) - rate)
            j = i - 1 if left <= right else i
        gs[j] += gs.pop(j + 1)
        bs[j] += bs.pop(j + 1)
        grp[j] += grp.pop(j + 1)
    if increasing is not None:
        grp = strictly_monotone(grp, goods, bads, increasing=increasing, smoothing=smoothing)
    return grp


@dataclass
class VerticalWoeResult:
    """Outcome at one party.

    Attributes
    ----------
    iv : dict
        Label holder: ``{party: {feature: iv}}``; feature holder: ``{feature: iv}``.
    tables : dict
        Label holder only: ``{party: {feature: [per-bin rows]}}`` (bins are numbered, not labelled:
        the label holder never sees edges or categories).
    selection : dict
        ``{party: selection report}`` at the label holder; this party's report at a feature holder.
    bins : dict
        Feature holder with ``reveal`` >= "bins": ``{feature: FeatureBins}`` (its final bins).
    woe : dict
        Feature holder with ``reveal == "woe"``: ``{feature: ndarray}`` WOE per final bin
        (missing bin last).
    warnings : list of str
        Feature holder: columns flagged by the release rule (near-unique categories).
    nulls : dict
        Label holder only: ``{party: {feature: BinningNull}}``, the partner's decrypted prebin counts and the merge
        and release rule its bins came from (:class:`~fedrisk.finance.iv_noise.BinningNull`; kept here, never sent).
    """

    iv: dict[str, Any]
    tables: dict[str, Any] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)
    bins: dict[str, FeatureBins] = field(default_factory=dict)
    woe: dict[str, np.ndarray] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    nulls: dict[str, Any] = field(default_factory=dict)

    @functools.cached_property
    def noise(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Label holder only: ``{party: {feature: {"iv_p_value", "iv_noise_95", "iv_null"}}}``, the partner's IV
        against a pure-noise column's binned the same way: the labels permuted over the partner's prebins and
        this merge and release rule re-run (:class:`~fedrisk.finance.iv_noise.BinningNull`, ~0.2 s a feature,
        computed on first use). Equal to single-party binning's figures for the same rows where pooling and the
        release rule change nothing."""
        return {p: {f: null.significance() for f, null in nulls.items()} for p, nulls in self.nulls.items()}

    def iv_table(self) -> list[dict[str, Any]]:
        """Rows ``party``, ``feature``, ``iv``, ``strength`` by descending IV (label holder view)."""
        flat = self.iv if all(isinstance(v, dict) for v in self.iv.values()) else {"": self.iv}
        rows = [{"party": p, "feature": f, "iv": v, "strength": iv_strength(v)} for p, d in flat.items() for f, v in d.items()]
        return sorted(rows, key=lambda r: -r["iv"])


def vertical_woe_label_holder(channel: Channel, feature_holders: Sequence[str], y: Any, *,
                              config: BinningConfig | None = None, smoothing: float = DEFAULT_SMOOTHING,
                              reveal: str = "iv", key: tuple[PublicKey, PrivateKey] | None = None,
                              scheme: str = "paillier", key_bits: int = 2048, tag: str = "vwoe",
                              release: ReleaseRule | None = None,
                              on_ivs: Callable[[str, dict[str, float]], None] | None = None,
                              noise_seed: int = 0) -> VerticalWoeResult:
    """Label-holder role: encrypt labels, decrypt per-bin sums, compute the holders' WOE/IV.

    Parameters
    ----------
    channel : Channel
        The label holder's endpoint.
    feature_holders : sequence of str
        Parties whose features are evaluated.
    y : array-like of {0, 1}
        Labels of the aligned rows, 1 = bad.
    config : BinningConfig, optional
        Merging settings (``n_prebins`` is the feature holders' own setting).
    smoothing : float
        WOE smoothing (see :mod:`fedrisk.finance.woe`).
    reveal : {"iv", "bins", "woe"}
        What the feature holders get back (see the module docstring).
    key : (PublicKey, PrivateKey), optional
        An existing key pair; otherwise one is generated (``scheme``, ``key_bits``).
    tag : str
        Tag prefix.
    release : ReleaseRule, optional
        Minimum rows and goods/bads of every released group (default :class:`ReleaseRule`).
    on_ivs : callable, optional
        ``on_ivs(holder, {feature: iv})`` once a holder's IVs are known, before its result is sent: the
        caller may raise to stop the job there (the scorecard's :func:`refuse_unsplittable`).
    noise_seed : int
        The job seed: with each feature's name, the seed of the IV's permutation null
        (:attr:`VerticalWoeResult.noise`), so a partner's figures equal single-party binning's of the same rows
        (``WoeEncoder(random_state=noise_seed)``) when the release rule and pooling change nothing.

    Returns
    -------
    VerticalWoeResult
        IV and per-bin tables per holder and feature, and each holder's selection report.
    """
    rule = release or ReleaseRule()
    if reveal not in REVEAL_LEVELS:
        raise ConfigError(f"reveal must be one of {REVEAL_LEVELS}, got {reveal!r}")
    cfg = config or BinningConfig()
    yv = np.asarray(y, dtype=float).ravel()
    if yv.size == 0 or not np.isin(yv, (0.0, 1.0)).all():
        raise DataError(f"{channel.me}: the label must be 0/1 (1 = bad) with no missing values")
    pub, priv = key if key is not None else generate_keypair(scheme, key_bits)
    enc = pub.ciphertexts_to_wire(priv.encrypt(yv.astype(np.int64)))
    for p in feature_holders:
        channel.send(p, f"{tag}.key", pub.to_wire(), kind="public-parameter")
        channel.send(p, f"{tag}.labels", enc, kind="ciphertext")
    result = VerticalWoeResult(iv={}, tables={}, selection={})
    for p in feature_holders:
        sizes = channel.recv(p, f"{tag}.sizes")
        sums = pub.ciphertexts_from_wire(channel.recv(p, f"{tag}.sums"))
        feats, kinds, n_pre, n = _checked_sizes(channel.me, p, f"{tag}.sizes", sizes)
        if len(sums) != n.size or sum(k + 1 for k in n_pre) != n.size:
            raise ProtocolError(f"party {p!r} sent {len(sums)} encrypted sums and {n.size} sizes for prebins {n_pre}")
        raw = [int(b) for b in priv.decrypt(sums)]  # Python ints: a crafted sum may not fit a float
        if any(not 0 <= b <= m for b, m in zip(raw, n)):
            raise ProtocolError(f"party {p!r}: decrypted bad counts do not fit the prebin sizes it declared")
        bads = np.asarray(raw, dtype=float)
        if (bads < 0).any() or (bads > n).any():
            raise ProtocolError(f"party {p!r}: decrypted bad counts do not fit the prebin sizes it declared")
        goods = n - bads
        ivs, tables, back, noise = {}, {}, {}, {}
        pos = 0
        for f, kind, k in zip(feats, kinds, n_pre):
            g, b = goods[pos:pos + k + 1], bads[pos:pos + k + 1]
            pos += k + 1
            need = rule.rows_needed(len(yv))  # the same rows the feature holder pooled for
            groups = merge_prebins(g[:k], b[:k], kind, cfg, rule, need)
            if len(groups) == 1 and k > 1:
                note = _merged_away(p, f, g[:k], b[:k], kind, cfg, rule, smoothing, seed=feature_seed(f, noise_seed))
                if note:
                    result.warnings.append(note)
            fg = np.array([g[grp].sum() for grp in groups] + [g[k]])
            fb = np.array([b[grp].sum() for grp in groups] + [b[k]])
            if fg[-1] + fb[-1] > 0 and not rule.ok(fg[-1], fb[-1], need):
                # too few missing rows (or of one class) to say anything about them: neutral WOE, and the other
                # bins' WOE from the other rows alone (against totals with the missing rows, a lone remaining
                # bin's WOE would be their bad rate against the rest's: what the rule withholds)
                woe, ivb, _ = woe_iv(fg[:-1], fb[:-1], smoothing)
                woe, ivb = np.append(woe, 0.0), np.append(ivb, 0.0)
                iv = float(np.sum(ivb))
            else:
                woe, ivb, iv = woe_iv(fg, fb, smoothing)
            # the IV's permutation null: this merge and release rule re-run on the decrypted prebin counts
            noise[f] = BinningNull(g.copy(), b.copy(), partial(merge_prebins, kind=kind, cfg=cfg, rule=rule, need=need),
                                   smoothing, feature_seed(f, noise_seed), keep_missing=partial(rule.ok, need=need))
            ivs[f] = iv
            tables[f] = [{"bin": i, "prebins": grp, "n": int(fg[i] + fb[i]), "goods": int(fg[i]), "bads": int(fb[i]),
                          "woe": float(woe[i]), "iv": float(ivb[i])}
                         for i, grp in enumerate(groups + [["missing"]])]
            back[f] = {"iv": iv}
            if reveal in ("bins", "woe"):
                back[f]["groups"] = groups
            if reveal == "woe":
                back[f]["woe"] = woe.tolist()
        if on_ivs is not None:
            on_ivs(p, ivs)
        channel.send(p, f"{tag}.result", {"features": back, "reveal": reveal},
                     kind="model" if reveal == "woe" else "metric")
        result.iv[p] = ivs
        result.tables[p] = tables
        result.nulls[p] = noise
    for p in feature_holders:
        result.selection[p] = channel.recv(p, f"{tag}.selection")
    return result


def _merged_away(holder: str, feature: str, goods: np.ndarray, bads: np.ndarray, kind: str, cfg: BinningConfig,
                 rule: ReleaseRule, smoothing: float, *, seed: np.random.SeedSequence) -> str | None:
    """The label holder's note on a partner's feature that splits at a "suspicious" IV but the release rule makes
    one bin.

    Its IV is then 0 and its selection reason reads "IV 0.0000 < 0.02", as for a feature without signal; yet
    a bin with fewer than ``min_class`` defaults (or non-defaults) at such an IV is a near-perfect separator,
    typically a flag recorded after the default that copies the label. A weak split merged away is the rule
    working as documented and gets no note, and so does an IV above 0.5 that a noise column binned the same way
    reaches too at these counts (the permutation null of :mod:`fedrisk.finance.iv_noise`, the labels permuted over
    the non-missing rows: two defaults in 340 rows split 1 / 1 give IV 0.88, whatever the missing rows hold). The IV before
    the rule comes from the prebin counts the label holder decrypted anyway; the note stays in its own log (never
    sent), so the feature holder learns nothing new.
    """
    free = merge_prebins(goods, bads, kind, cfg, _NO_RELEASE, 1)
    if len(free) < 2:
        return None
    fg, fb = np.array([goods[grp].sum() for grp in free]), np.array([bads[grp].sum() for grp in free])
    iv = woe_iv(fg, fb, smoothing)[2]
    if not iv_strength(iv).startswith("suspicious"):  # (the report's IV table's reading)
        return None
    null = BinningNull(np.append(goods, 0.0), np.append(bads, 0.0),
                       partial(merge_prebins, kind=kind, cfg=cfg, rule=_NO_RELEASE, need=1), smoothing, seed)
    if null.significance()["iv_p_value"] > NOISE_LEVEL:
        return None  # a "suspicious" IV from a handful of defaults is what noise gives too (2 bads: IV 0.88)
    return (f"party {holder!r}, feature {feature!r}: the release rule (task.min_bin_class = {rule.min_class} goods and "
            f"bads per bin) merged its {len(free)} bins (IV {iv:.2f}) into one, so it shows IV 0 and is dropped as not "
            "predictive; a bin almost without defaults or non-defaults at this IV is a near-perfect separator: check "
            "the column for leakage (a value recorded after the default)")


#: no release constraint: the bins the label holder's counts alone give (:func:`_merged_away`)
_NO_RELEASE = ReleaseRule(min_rows=1, min_share=0.0, min_class=0)


def _checked_sizes(me: str, peer: str, tag: str, sizes: Any) -> tuple[list[str], list[str], list[int], np.ndarray]:
    """A feature holder's prebin declaration: names, kinds, prebin counts and row counts that fit together."""
    ok = isinstance(sizes, dict) and all(isinstance(sizes.get(k), list) for k in ("features", "kinds", "n_prebins", "sizes"))
    if ok:
        feats, kinds, n_pre, rows = (sizes[k] for k in ("features", "kinds", "n_prebins", "sizes"))
        ok = (len(feats) == len(kinds) == len(n_pre) and len(set(map(str, feats))) == len(feats)
              and all(isinstance(f, str) and 0 < len(f) <= 4096 for f in feats)
              and all(k in ("numeric", "categorical") for k in kinds)
              and all(expect.whole(k, 0) for k in n_pre) and all(expect.whole(r, 0) for r in rows))
    if not ok:
        raise ProtocolError(f"{me}: party {peer!r} sent a malformed prebin declaration ({tag}): it needs unique "
                            f"feature names, numeric/categorical kinds and whole non-negative counts; refused")
    return list(feats), list(kinds), [int(k) for k in n_pre], np.asarray(rows, dtype=float)


def _checked_result(me: str, peer: str, tag: str, back: Any, feats: list[str]) -> dict[str, Any]:
    """The label holder's result: an entry with a finite IV for each of this party's features."""
    table = back.get("features") if isinstance(back, dict) else None
    if not isinstance(table, dict) or not all(
            isinstance(table.get(f), dict) and expect.real(table[f].get("iv"), finite=True)
            and isinstance(table[f].get("woe", []), list)
            and all(expect.real(w, finite=True) for w in table[f].get("woe", []))
            for f in feats):
        raise ProtocolError(f"{me}: {peer!r} sent a result ({tag}) without a finite IV (and finite WOE values) "
                            f"for each of this party's {len(feats)} features; refused")
    return back


def merge_prebins(goods: np.ndarray, bads: np.ndarray, kind: str, cfg: BinningConfig, rule: ReleaseRule,
                  need: int) -> list[list[int]]:
    """The label holder's merge of one feature's (pooled) prebins into final bins, as prebin indices.

    Categorical prebins get single-party binning's rule on their counts: prebins under
    ``cfg.min_category_count`` rows pooled into one, then
    :func:`~fedrisk.finance.binning.group_categories` (one bin unless the chi-square test finds the bad
    rates differ, for more prebins than ``max_bins``; else ordered by bad rate and merged). Numeric
    prebins: :func:`~fedrisk.finance.binning.merge_bins`. Then :func:`enforce_release`. Used for a
    feature holder's features and for the label holder's own text columns, so a column gets the same
    bins whichever party holds it. A function of the counts the label holder decrypted, so the feature
    holder learns nothing new: only the final groups, as before.
    """
    if kind == "categorical":
        pooled = _pool_small_prebins(goods + bads, cfg.min_category_count)
        pg = np.array([goods[p].sum() for p in pooled], dtype=float)
        pb = np.array([bads[p].sum() for p in pooled], dtype=float)
        groups = group_categories([[str(p[0])] for p in pooled], pg, pb, cfg)  # names: ties by prebin index
        trend = bad_rate_trend(groups, pg, pb, cfg.smoothing) if cfg.method == "monotonic" else None
        # groups are runs in bad-rate order
        groups = enforce_release(groups, pg, pb, need, rule, increasing=trend, smoothing=cfg.smoothing)
        return [sorted(int(i) for j in grp for i in pooled[j]) for grp in groups]
    monotonic = cfg.method == "monotonic"
    groups = merge_bins(goods, bads, max_bins=cfg.max_bins, min_bin_frac=cfg.min_bin_frac if monotonic else 0.0,
                        monotonic=monotonic, trend="auto", smoothing=cfg.smoothing)
    trend = bad_rate_trend(groups, goods, bads, cfg.smoothing) if monotonic else None
    groups = enforce_release(groups, goods, bads, need, rule, increasing=trend, smoothing=cfg.smoothing)
    return [[int(i) for i in grp] for grp in groups]


def _pool_small_prebins(rows: np.ndarray, min_count: int) -> list[list[int]]:
    """Prebin indices, one list per prebin with ``min_count`` rows or more, then one list pooling the rest
    (:func:`~fedrisk.finance.binning.pool_rare_categories` on prebins: the feature holder already pooled
    its categories under ``need`` rows, which is fewer than ``min_count`` when there are few rows)."""
    kept = [[i] for i in range(len(rows)) if rows[i] >= min_count]
    rare = [i for i in range(len(rows)) if rows[i] < min_count]
    return kept + ([rare] if rare else [])


def label_holder_bins(X: pd.DataFrame, y: Any, *, categorical: Iterable[str] = (), config: BinningConfig | None = None,
                      release: ReleaseRule | None = None, warnings: list[str] | None = None,
                      nulls: dict[str, BinningNull] | None = None, noise_seed: int = 0) -> dict[str, FeatureBins]:
    """Bins of the label holder's own features (local: nothing is sent).

    Numeric columns: single-party binning (:func:`~fedrisk.finance.binning.fit_feature_bins`). Text
    columns: the bins a feature holder's copy of the column would get — categories under ``need`` rows
    pooled into one prebin (:func:`_pool_categories`), then :func:`merge_prebins`. Sorting a code of
    150 rare levels by each level's own bad rate would fit noise (IV 1.3 on German credit for a random
    branch code) that the same column at a feature holder never shows.

    ``nulls``, if given, is filled with each feature's :class:`~fedrisk.finance.iv_noise.BinningNull` (its prebin
    counts and this merge, seeded by ``noise_seed`` and the name): the IV's permutation null.
    """
    from fedrisk.finance.binning import class_counts, fit_feature_bins
    from fedrisk.finance.iv_noise import single_party_null

    cfg = config or BinningConfig()
    rule = release or ReleaseRule()
    warnings = warnings if warnings is not None else []
    yv = np.asarray(y, dtype=float).ravel()
    need = rule.rows_needed(len(yv))
    forced = set(categorical)
    bins: dict[str, FeatureBins] = {}
    for f in X.columns:
        s = X[f].reset_index(drop=True)
        if f not in forced and not is_categorical(s):
            counted: dict[str, Any] = {}
            bins[f] = fit_feature_bins(s, yv, f, kind="numeric", config=cfg, prebins=counted)
            if nulls is not None:
                nulls[f] = single_party_null(*counted[f], cfg, smoothing=cfg.smoothing, seed=noise_seed)
            continue
        pre = _pool_categories(f, s, need, rule, warnings)
        if not pre.groups:
            bins[f] = pre
            continue
        g, b = class_counts(pre.assign(s), yv, pre.n_bins + 1)
        groups = merge_prebins(g[:-1], b[:-1], "categorical", cfg, rule, need)
        if nulls is not None:
            nulls[f] = BinningNull(g, b, partial(merge_prebins, kind="categorical", cfg=cfg, rule=rule, need=need),
                                   cfg.smoothing, feature_seed(f, noise_seed))
        bins[f] = FeatureBins(f, "categorical", groups=[sorted(c for i in grp for c in pre.groups[i]) for grp in groups])
    return bins


def _pool_numeric(fb: FeatureBins, counts: np.ndarray, need: int) -> FeatureBins:
    """Merge neighbouring numeric prebins (drop the edge between them) until each has ``need`` rows."""
    edges = list(fb.edges)
    c = list(counts[:-1])  # missing bin excluded
    while len(c) > 1 and min(c) < need:
        i = int(np.argmin(c))
        j = i - 1 if i == len(c) - 1 or (i > 0 and c[i - 1] <= c[i + 1]) else i  # merge i with j + 1 == i or i + 1
        c[j] += c.pop(j + 1)
        edges.pop(j)
    return FeatureBins(fb.name, "numeric", edges=np.asarray(edges, dtype=float))


def _pool_categories(name: str, s: pd.Series, need: int, rule: ReleaseRule, warnings: list[str]) -> FeatureBins:
    """One prebin per category with ``need`` rows or more; every rarer category pooled into one."""
    vals = pd.Series(category_text(s[~is_missing(s)]), dtype=object)
    counts = vals.value_counts()
    if len(counts) > rule.max_category_share * max(len(vals), 1):
        msg = (f"column {name!r} has {len(counts)} distinct values for {len(vals)} rows (more than "
               f"max_category_share = {rule.max_category_share}): near-unique text cannot be released per "
               f"category; it is pooled into bins of >= {need} rows (group or drop the column)")
        warnings.append(msg)
        log.warning(msg)
    big = sorted(str(c) for c, k in counts.items() if k >= need)
    rare = sorted(str(c) for c, k in counts.items() if k < need)
    groups = [[c] for c in big]
    if rare:
        pooled_n = int(counts[rare].sum())
        if pooled_n >= need or not groups:
            groups.append(rare)
        else:  # the pooled rest is still too small: join it to the smallest released category
            smallest = min(range(len(groups)), key=lambda i: counts[groups[i][0]])
            groups[smallest] = sorted(groups[smallest] + rare)
    return FeatureBins(name, "categorical", groups=groups)


def _prebins(X: pd.DataFrame, features: Sequence[str], categorical: set[str], n_prebins: int,
             rule: ReleaseRule | None = None, warnings: list[str] | None = None
             ) -> tuple[list[FeatureBins], np.ndarray]:
    """Prebins of every feature, pooled so that each holds at least ``rule.rows_needed(n)`` rows."""
    rule = rule or ReleaseRule()
    warnings = warnings if warnings is not None else []
    need = rule.rows_needed(len(X))
    pre, idx = [], []
    for f in features:
        s = X[f]
        if f in categorical or is_categorical(s):
            fb = _pool_categories(f, s, need, rule, warnings)
        else:
            miss = is_missing(s)
            v = pd.to_numeric(s[~miss], errors="coerce")
            if v.isna().any():
                raise DataError(f"column {f!r} mixes numbers and text; declare it categorical or clean it")
            fb = FeatureBins(f, "numeric", edges=quantile_edges(v.to_numpy(dtype=float), n_prebins))
            fb = _pool_numeric(fb, np.bincount(fb.assign(s), minlength=fb.n_bins + 1), need)
        pre.append(fb)
        idx.append(fb.assign(s))
    return pre, np.column_stack(idx) if idx else np.empty((len(X), 0), dtype=np.int64)


def _check_groups(who: str, feature: str, groups: Any, n_prebins: int) -> list[list[int]]:
    """The label holder's groups must partition this party's prebins (else refuse, naming the feature)."""
    ok = isinstance(groups, list) and all(isinstance(g, list) and g and all(
        expect.whole(i) for i in g) for g in groups)
    if ok:
        flat = sorted(i for g in groups for i in g)
        ok = flat == list(range(n_prebins))
    if not ok:
        raise ProtocolError(f"{who}: the bins returned for feature {feature!r} are not a partition of its "
                            f"{n_prebins} prebins; refusing them")
    return groups


def vertical_woe_feature_holder(channel: Channel, label_holder: str, X: pd.DataFrame, *,
                                features: Iterable[str] | None = None, categorical: Iterable[str] | None = None,
                                config: BinningConfig | None = None, iv_threshold: float = 0.02,
                                max_corr: float | None = 0.7, min_key_bits: int = 2048,
                                tag: str = "vwoe", release: ReleaseRule | None = None) -> VerticalWoeResult:
    """Feature-holder role: return encrypted per-prebin label sums; get IV (and bins if revealed).

    Parameters
    ----------
    channel : Channel
        This party's endpoint.
    label_holder : str
        The label holder's party name.
    X : DataFrame
        This party's features for the aligned rows (same order as the label holder's labels).
    features, categorical : iterable of str, optional
        Columns to evaluate (default all) and columns forced categorical.
    config : BinningConfig, optional
        ``n_prebins`` is used here.
    iv_threshold, max_corr : float
        This party's selection settings. Correlation uses WOE values when the label holder
        reveals them, otherwise Spearman correlation of the raw numeric columns (categorical
        columns are then only filtered by IV).
    min_key_bits : int
        Refuse a public key with a smaller modulus.
    tag : str
        Tag prefix.
    release : ReleaseRule, optional
        Minimum rows per encrypted sum (prebins are pooled to it before anything is summed).

    Returns
    -------
    VerticalWoeResult
        IV per feature, this party's selection, final bins / WOE if revealed, and warnings
        (e.g. a near-unique categorical column).
    """
    rule = release or ReleaseRule()
    cfg = config or BinningConfig()
    feats = list(features) if features is not None else list(X.columns)
    missing = [f for f in feats if f not in X.columns]
    if missing:
        raise DataError(f"{channel.me}: columns {missing} not in this party's data")
    pub = public_key_from_wire(channel.recv(label_holder, f"{tag}.key"), min_bits=min_key_bits)
    enc_y = pub.ciphertexts_from_wire(channel.recv(label_holder, f"{tag}.labels"))
    if len(enc_y) != len(X):
        raise DataError(f"{channel.me}: {len(X)} rows here but {len(enc_y)} encrypted labels from {label_holder!r}; "
                        "align the rows (PSI) before computing IV")
    warnings: list[str] = []
    pre, idx = _prebins(X, feats, set(categorical or ()), cfg.n_prebins, rule, warnings)
    need = rule.rows_needed(len(X))
    width = max((fb.n_bins + 1 for fb in pre), default=1)
    sums = pub.bin_sums(enc_y, idx, width) if pre else []
    zero = None
    flat, sizes = [], []
    for j, fb in enumerate(pre):
        k = fb.n_bins + 1
        counts = np.bincount(idx[:, j], minlength=k)[:k]
        cts = list(sums[j][:k])
        if 0 < counts[-1] < need:
            # too few missing values to sum without singling customers out: send an empty bin
            zero = zero if zero is not None else pub.encrypt([0])[0]
            cts[-1], counts[-1] = zero, 0
        flat += cts
        sizes += counts.tolist()
    flat = pub.rerandomize(flat)
    channel.send(label_holder, f"{tag}.sizes", {"features": feats, "kinds": [fb.kind for fb in pre],
                                                "n_prebins": [fb.n_bins for fb in pre], "sizes": sizes}, kind="aggregate")
    channel.send(label_holder, f"{tag}.sums", pub.ciphertexts_to_wire(flat), kind="ciphertext")
    back = _checked_result(channel.me, label_holder, f"{tag}.result", channel.recv(label_holder, f"{tag}.result"), feats)
    iv = {f: float(back["features"][f]["iv"]) for f in feats}
    bins: dict[str, FeatureBins] = {}
    woe: dict[str, np.ndarray] = {}
    for fb in pre:
        info = back["features"][fb.name]
        if "groups" in info:
            groups = _check_groups(f"{channel.me}: {label_holder!r}", fb.name, info["groups"], fb.n_bins)
            if fb.kind == "numeric":
                bins[fb.name] = bins_from_groups(fb.name, "numeric", groups, prebin_edges=fb.edges)
            else:  # a pooled prebin holds several categories
                bins[fb.name] = FeatureBins(fb.name, "categorical",
                                            groups=[sorted(c for i in g for c in fb.groups[i]) for g in groups])
        if "woe" in info:
            woe[fb.name] = np.asarray(info["woe"], dtype=float)
            if fb.name not in bins or woe[fb.name].shape != (bins[fb.name].n_bins + 1,):
                raise ProtocolError(f"{channel.me}: {label_holder!r} sent WOE values for {fb.name!r} that do not "
                                    f"match its bins (message {tag}.result); refused")
    frame = None
    if woe and len(woe) == len(feats):
        frame = pd.DataFrame({f: woe[f][bins[f].assign(X[f])] for f in feats})
    elif max_corr is not None:
        num = [fb.name for fb in pre if fb.kind == "numeric"]
        frame = pd.DataFrame({f: pd.to_numeric(X[f], errors="coerce") for f in num}).rank() if num else None
    corr = frame.corr(method="pearson").fillna(0.0) if frame is not None and frame.shape[1] > 1 else None
    if corr is not None:
        cand = [f for f in feats if f not in corr.index]
        corr = corr.reindex(index=corr.index.union(cand), columns=corr.index.union(cand), fill_value=0.0)
    selection = select_features(iv, iv_threshold=iv_threshold, max_corr=max_corr, corr=corr, party=channel.me)
    channel.send(label_holder, f"{tag}.selection", selection, kind="metric")
    return VerticalWoeResult(iv=iv, selection=selection, bins=bins, woe=woe, warnings=warnings)
