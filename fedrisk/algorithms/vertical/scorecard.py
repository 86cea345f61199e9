"""Vertical scorecard protocol: WOE binning, vertical logistic regression, per-party points tables.

Parties: one label holder ``L`` (labels, its own features, the base points; the only party to see
scores) and feature holders ``F`` (features only). Rows are aligned beforehand (PSI) and split into
training and test rows by a public rule. This module is written per role against the ``Channel``
interface; the task ``vertical.scorecard`` (:mod:`fedrisk.tasks.vertical_scorecard`) loads files,
aligns, calls :func:`fit_label_holder` / :func:`fit_feature_holder` and writes the files.

Message flow (tags; see the sub-protocols' modules for their own steps)::

    1. WOE binning on the training rows                            (vwoe.*, :mod:`fedrisk.algorithms.vertical.woe`)
       L: bins its own features locally (nothing is sent)
       L -> F  vwoe.key, vwoe.labels       Paillier/OU public key, Enc(y_i)        public-parameter, ciphertext
       F -> L  vwoe.sizes, vwoe.sums       rows per pooled prebin, Enc(bads)       aggregate, ciphertext
       L -> F  vwoe.result                 IV, merged groups, WOE per final bin    model   (reveal="woe")
       F -> L  vwoe.selection              F's selection report (IV, correlation)  metric
    2. each party keeps its selected features and replaces them by their WOE (local)
    3. vertical LR on the WOE columns                              (vlr.*, :mod:`fedrisk.algorithms.vertical.hetero_lr`)
    4. each party: points_j(bin) = round(-factor * b_j * WOE_j(bin)), factor = pdo / ln 2;
       L also: base points = round(offset - factor * intercept)  (local; :meth:`PointsPart.build`)
    5. scoring (training/test evaluation and ``fedrisk predict``), :func:`combine_points`:
       F -> L  <tag>.partial               F's points per aligned row (float64)    plaintext-by-design
       F -> L  <tag>.best                  F's best possible partial points        model
    6. named reasons, only at ``fedrisk predict``, :func:`exchange_named_reasons`:
       F -> L  <tag>.reasons.vocab         ["feature = bin", ...] or []            plaintext-by-design
       F -> L  <tag>.reasons.codes/.lost   top reasons per row (opted-in F only)   plaintext-by-design
    7. blank columns, only at ``fedrisk predict`` (:mod:`~fedrisk.algorithms.vertical.blank_columns`):
       F -> L  <tag>.blank                 F's columns blank in every scored row   aggregate
                                           (names from an opted-in F only; None from the others)

What each party learns
    L: from step 1, for each of F's features the rows and bads per pooled prebin (hence WOE/IV),
    never edges, categories or row membership; from step 3 what hetero LR reveals (its docstring);
    from step 5 every F's partial points per scored row and their maximum — by design, since it
    must add them up and explain the score; with the WOE it computed in step 1 this is one linear
    combination per row of that F's WOE values. From step 6, only from a partner that opted in
    (``task.name_reasons``, decided by the partner's own copy of the spec), that partner's top
    reasons per applicant by feature and bin, and (step 7) which of its columns were blank in every
    row of the batch (the label holder chooses the batch, so per applicant for a batch of two).
    F: ciphertexts under L's key, the WOE of its own final bins (each covering at least the release
    rule's rows, goods and bads), what hetero LR reveals, and nothing at scoring.

Invariant: the parts of all parties together are the points table a centralised
:class:`~fedrisk.finance.scorecard.Scorecard` has for the same bins and coefficients
(``tests/algorithms/vertical/test_scorecard.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from fedrisk.errors import DataError, ProtocolError
from fedrisk.finance.binning import BinningConfig, FeatureBins
from fedrisk.finance.scorecard import Scorecard
from fedrisk.transport.channel import Channel

#: ``lr_hooks(W) -> {"start": ..., "checkpoint": ...}``: keyword hooks of the LR stage given its WOE columns
LRHooks = Callable[[np.ndarray], dict[str, Any]]

__all__ = ["PointsPart", "Combined", "combine_points", "reason_codes", "NamedReasons", "exchange_named_reasons",
           "ScorecardFit", "fit_label_holder", "fit_feature_holder"]


# ------------------------------------------------------------------------------------------------
# One party's part of the points table
# ------------------------------------------------------------------------------------------------
@dataclass
class PointsPart:
    """The rows of the points table for one party's features (and the base points at the label holder).

    Attributes
    ----------
    party : str
        Owner.
    features : list of str
        Its features in the scorecard (non-zero coefficient).
    bins, woe, coef, points : dict
        Per feature: bins, WOE per bin (missing bin last), coefficient, points per bin.
    base_points : float or None
        Label holder only: points every applicant starts with.
    base_score, base_odds, pdo, round_points
        Scaling (identical at every party).
    """

    party: str
    features: list[str]
    bins: dict[str, FeatureBins]
    woe: dict[str, np.ndarray]
    coef: dict[str, float]
    points: dict[str, np.ndarray]
    base_points: float | None
    base_score: float
    base_odds: float
    pdo: float
    round_points: bool = True
    intercept: float | None = None
    counts: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def build(cls, party: str, features: Sequence[str], bins: dict[str, FeatureBins], woe: dict[str, Any],
              coef: Sequence[float], card, intercept: float | None = None) -> "PointsPart":
        """Points for ``features`` with coefficients ``coef`` under the scaling of ``card`` (a Scorecard).

        The arithmetic is :meth:`Scorecard.fit`'s, feature by feature, so the parts of all parties
        together are the centralised scorecard's table for the same bins and coefficients.
        """
        card._check()
        c = np.asarray(coef, dtype=float).ravel()
        if c.shape[0] != len(features):
            raise DataError(f"party {party!r}: {c.shape[0]} coefficients for {len(features)} features")
        feats = [f for f, b in zip(features, c) if b != 0.0]
        coefs = {f: float(b) for f, b in zip(features, c) if b != 0.0}
        pts = {}
        for f in feats:
            p = -card.factor * coefs[f] * np.asarray(woe[f], dtype=float)
            pts[f] = np.round(p) + 0.0 if card.round_points else p
        base = None
        if intercept is not None:
            base = card.offset - card.factor * float(intercept)
            base = float(round(base)) if card.round_points else base
        return cls(party, feats, {f: bins[f] for f in feats}, {f: np.asarray(woe[f], dtype=float) for f in feats},
                   coefs, pts, base, card.base_score, card.base_odds, card.pdo, card.round_points,
                   None if intercept is None else float(intercept))

    @property
    def _scaling(self) -> Scorecard:
        """The points scaling (base score, base odds, PDO): one formula, kept in Scorecard."""
        return Scorecard(self.base_score, self.base_odds, self.pdo, self.round_points)

    @property
    def factor(self) -> float:
        return self._scaling.factor

    @property
    def offset(self) -> float:
        return self._scaling.offset

    def bin_index(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        from fedrisk.finance.woe import require_columns

        require_columns(X, self.features)
        return {f: self.bins[f].assign(X[f]) for f in self.features}

    def points_matrix(self, X: pd.DataFrame) -> np.ndarray:
        """Points per row (rows of ``X``) and feature (columns in ``features`` order)."""
        idx = self.bin_index(X)
        if not self.features:
            return np.zeros((len(X), 0))
        return np.column_stack([self.points[f][idx[f]] for f in self.features])

    def partial(self, X: pd.DataFrame) -> np.ndarray:
        """This party's points per row (without base points)."""
        return self.points_matrix(X).sum(axis=1)

    def best(self) -> float:
        """The most points this party's features can give (each feature's best bin)."""
        return float(sum(self.points[f].max() for f in self.features))

    def probability(self, score: Any) -> np.ndarray:
        """Default probability a total score stands for (inverse of the scaling)."""
        return self._scaling.probability(score)

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for f in self.features:
            n = self.counts.get(f)
            for i, lab in enumerate(self.bins[f].labels()):
                rows.append({"feature": f, "bin": i, "label": lab, "n": int(n[i]) if n is not None else None,
                             "woe": float(self.woe[f][i]), "coef": self.coef[f], "points": float(self.points[f][i])})
        return rows

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"party": self.party, "base_score": self.base_score, "base_odds": self.base_odds,
                             "pdo": self.pdo, "round_points": self.round_points, "features": self.features,
                             "bins": {f: b.to_dict() for f, b in self.bins.items()},
                             "woe": {f: w.tolist() for f, w in self.woe.items()}, "coef": self.coef,
                             "points": {f: p.tolist() for f, p in self.points.items()},
                             "best_points": self.best(), "table": self.table()}
        if self.base_points is not None:
            d["base_points"] = self.base_points
            d["intercept"] = self.intercept
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PointsPart":
        try:
            feats = [str(f) for f in d["features"]]
            part = cls(str(d["party"]), feats, {f: FeatureBins.from_dict(d["bins"][f]) for f in feats},
                       {f: np.asarray(d["woe"][f], dtype=float) for f in feats}, {f: float(d["coef"][f]) for f in feats},
                       {f: np.asarray(d["points"][f], dtype=float) for f in feats}, d.get("base_points"),
                       float(d["base_score"]), float(d["base_odds"]), float(d["pdo"]), bool(d.get("round_points", True)),
                       d.get("intercept"))
            # the training rows per bin (the table's ``n``), for the batch's characteristic stability at scoring
            for row in d.get("table") or ():
                if row.get("n") is not None and row.get("feature") in part.bins:
                    part.counts.setdefault(row["feature"], [0] * (part.bins[row["feature"]].n_bins + 1))[
                        int(row["bin"])] = int(row["n"])
            return part
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise DataError(f"scorecard part of {d.get('party')!r} is incomplete or malformed ({e}); re-train") from None


# ------------------------------------------------------------------------------------------------
# Scoring: partial points to the label holder
# ------------------------------------------------------------------------------------------------
@dataclass
class Combined:
    """The label holder's view of one scoring round."""

    total: np.ndarray
    own: np.ndarray
    partials: dict[str, np.ndarray]
    best: dict[str, float]


def combine_points(channel, label_holder: str, feature_holders: Sequence[str], part: PointsPart, X: pd.DataFrame,
                   tag: str = "vsc.score") -> Combined | None:
    """Every party calls this on its aligned rows ``X``; the label holder gets the total scores.

    Message flow::

        F -> L  <tag>.partial   plaintext-by-design   this party's points per row (float64)
        F -> L  <tag>.best      model                 its best possible partial points

    Returns
    -------
    Combined or None
        Label holder: totals (base + own + partner points), its own points per feature and every
        partner's partial points; feature holders: ``None``.
    """
    me = channel.me
    if me != label_holder:
        channel.send(label_holder, f"{tag}.partial", np.asarray(part.partial(X), dtype=np.float64), kind="plaintext-by-design")
        channel.send(label_holder, f"{tag}.best", part.best(), kind="model")
        return None
    if part.base_points is None:
        raise DataError(f"{me}: the label holder's scorecard part has no base points")
    own = part.points_matrix(X)
    total = part.base_points + own.sum(axis=1)
    partials, best = {}, {}
    for h in feature_holders:
        v = channel.recv(h, f"{tag}.partial")
        if not isinstance(v, np.ndarray) or v.dtype != np.float64 or v.shape != (len(X),) or not np.isfinite(v).all():
            raise ProtocolError(f"{me}: {tag}.partial from {h!r} should be {len(X)} finite float64 values")
        b = channel.recv(h, f"{tag}.best")
        if not isinstance(b, (int, float)) or not math.isfinite(b):
            raise ProtocolError(f"{me}: {tag}.best from {h!r} is not a number")
        partials[h], best[h] = v, float(b)
        total = total + v
    return Combined(total, own, partials, best)


def reason_codes(part: PointsPart, X: pd.DataFrame, res: Combined, n: int = 3,
                 named: dict[str, "NamedReasons"] | None = None) -> list[list[dict[str, Any]]]:
    """Top ``n`` reasons per applicant at the label holder: own features by bin, partners aggregated.

    Points lost = best bin's points − the applicant's (own features), or the partner's best partial
    points − the applicant's partial points (``partner features (<party>)``, no bin label). A
    partner in ``named`` (it opted in, see :func:`exchange_named_reasons`) contributes its own top
    reasons, each naming its feature and the applicant's bin, instead of the aggregate.
    """
    from fedrisk.finance.scorecard import top_reasons

    named = named or {}
    idx = part.bin_index(X)
    labels = {f: part.bins[f].labels() for f in part.features}
    m = len(X)
    # candidate columns: (name, label per row or None, points per row, lost per row)
    cands: list[tuple[str, Any, np.ndarray, np.ndarray]] = []
    for j, f in enumerate(part.features):
        cands.append((f, [labels[f][b] for b in idx[f]], res.own[:, j], part.points[f].max() - res.own[:, j]))
    for h, v in res.partials.items():
        if h in named:
            nr = named[h]
            for k in range(nr.codes.shape[1]):
                text = [nr.vocab[c] if c >= 0 else None for c in nr.codes[:, k]]
                cands.append((None, text, np.full(m, np.nan), np.nan_to_num(nr.lost[:, k], nan=0.0)))
        else:
            cands.append((f"partner features ({h})", None, v, res.best[h] - v))
    if not cands:
        return [[] for _ in range(m)]
    lost = np.column_stack([c[3] for c in cands])
    top, val = top_reasons(lost, n)
    out = []
    for r in range(m):
        row = []
        for j, v in zip(top[r], val[r]):
            if j < 0:
                break
            name, lab, pts, _ = cands[j]
            if name is None:  # a partner's named reason: "feature = bin" as the partner wrote it
                name, lab = lab[r], None
            else:
                lab = lab[r] if lab is not None else None
            row.append({"feature": name, "label": lab, "points": float(pts[r]), "points_lost": float(v)})
        out.append(row)
    return out


@dataclass
class NamedReasons:
    """A partner's own top reasons per scored row, sent because it opted in (``task.name_reasons``)."""

    vocab: list[str]
    codes: np.ndarray
    lost: np.ndarray


def exchange_named_reasons(channel, label_holder: str, feature_holders: Sequence[str], part: PointsPart,
                           X: pd.DataFrame, n: int, share: bool, tag: str) -> dict[str, NamedReasons] | None:
    """Partners that opted in send their top ``n`` reasons per row, by name; the others send ``[]``.

    Message flow::

        F -> L  <tag>.reasons.vocab  plaintext-by-design  ["feature = bin", ...] for every bin of its
                                                          points table, or [] (it does not name reasons)
        F -> L  <tag>.reasons.codes  plaintext-by-design  (rows, n) int32 index into vocab, -1 = none
        F -> L  <tag>.reasons.lost   plaintext-by-design  (rows, n) float64 points lost
                                                          (codes and lost only when vocab is not empty)

    What the label holder learns from an opted-in partner: for each scored applicant, which of the
    partner's features cost the most points and the applicant's bin on each — exactly what the
    partner agreed to show in adverse-action reasons. Nothing is sent by a partner that did not opt in.

    Returns
    -------
    dict or None
        Label holder: ``{partner: NamedReasons}`` for the partners that named reasons; others ``None``.
    """
    from fedrisk.finance.scorecard import reason_text, top_reasons

    if channel.me != label_holder:
        if not share or not part.features:
            channel.send(label_holder, f"{tag}.reasons.vocab", [], kind="plaintext-by-design")
            return None
        vocab, offset = [], {}
        for f in part.features:
            offset[f] = len(vocab)
            vocab += [reason_text(f, lab) for lab in part.bins[f].labels()]
        idx = part.bin_index(X)
        pts = part.points_matrix(X)
        best = np.array([part.points[f].max() for f in part.features])
        top, val = top_reasons(best[None, :] - pts, n)
        codes = np.full(top.shape, -1, dtype=np.int32)
        for j, f in enumerate(part.features):
            hit = top == j
            rows = np.nonzero(hit)[0]
            codes[hit] = offset[f] + idx[f][rows]
        channel.send(label_holder, f"{tag}.reasons.vocab", vocab, kind="plaintext-by-design")
        channel.send(label_holder, f"{tag}.reasons.codes", codes, kind="plaintext-by-design")
        channel.send(label_holder, f"{tag}.reasons.lost", np.asarray(val, dtype=np.float64), kind="plaintext-by-design")
        return None
    out: dict[str, NamedReasons] = {}
    for h in feature_holders:
        vocab = channel.recv(h, f"{tag}.reasons.vocab")
        if not isinstance(vocab, list) or not all(isinstance(v, str) for v in vocab):
            raise ProtocolError(f"{channel.me}: {tag}.reasons.vocab from {h!r} should be a list of strings")
        if not vocab:
            continue
        codes = channel.recv(h, f"{tag}.reasons.codes")
        lost = channel.recv(h, f"{tag}.reasons.lost")
        if (not isinstance(codes, np.ndarray) or codes.ndim != 2 or codes.shape[0] != len(X)
                or not np.issubdtype(codes.dtype, np.integer) or codes.min(initial=-1) < -1
                or codes.max(initial=-1) >= len(vocab)):
            raise ProtocolError(f"{channel.me}: {tag}.reasons.codes from {h!r} should be ({len(X)}, k) indices into its vocab")
        if not isinstance(lost, np.ndarray) or lost.shape != codes.shape or lost.dtype != np.float64:
            raise ProtocolError(f"{channel.me}: {tag}.reasons.lost from {h!r} should be {codes.shape} float64 values")
        out[h] = NamedReasons(vocab, codes.astype(np.int64), lost)
    return out


# ------------------------------------------------------------------------------------------------
# Training: steps 1-4, per role
# ------------------------------------------------------------------------------------------------
@dataclass
class ScorecardFit:
    """What one party ends training with.

    Attributes
    ----------
    part : PointsPart
        This party's rows of the points table (base points at the label holder).
    selection : dict
        This party's selection report (IV threshold, correlation).
    woe : VerticalWoeResult
        The vertical WOE outcome (label holder: every feature holder's IV, tables and selection;
        feature holder: its own bins, WOE, IV and warnings).
    model : PartyModel
        This party's part of the vertical LR (``best_epoch``, ``history``, ``n_val``).
    bins, woe_values : dict
        Every selected feature's bins and WOE per bin (also those whose coefficient is zero).
    """

    part: PointsPart
    selection: dict[str, Any]
    woe: Any
    model: Any
    bins: dict[str, FeatureBins]
    woe_values: dict[str, np.ndarray]


def woe_columns(features: Sequence[str], bins: dict[str, FeatureBins], woe: dict[str, Any], X: pd.DataFrame) -> np.ndarray:
    """The WOE of each row's bin, one column per feature (an ``(n, 0)`` array without features)."""
    if not features:
        return np.zeros((len(X), 0))
    return np.column_stack([np.asarray(woe[f], dtype=float)[bins[f].assign(X[f])] for f in features])


def _finish(channel: Channel, label_holder: str, feature_holders: Sequence[str], X: pd.DataFrame, y: np.ndarray | None,
            features: list[str], bins: dict[str, FeatureBins], woe: dict[str, Any], selection: dict[str, Any], vres: Any,
            lr_config: Any, card: Scorecard, on_epoch: Callable[[int, dict], None] | None,
            lr_hooks: LRHooks | None = None) -> ScorecardFit:
    """Steps 2-4 at every party: WOE columns, vertical LR, this party's points."""
    from fedrisk.algorithms.vertical.hetero_lr import train

    W = woe_columns(features, bins, woe, X)
    # resume hook: the caller (the runtime's checkpoints) decides where the LR stage starts, given
    # the WOE columns it starts from (a recomputed WOE stage that differs restarts it)
    hooks = lr_hooks(W) if lr_hooks is not None else {}
    model = train(channel, label_holder, feature_holders, W, y, lr_config, on_epoch=on_epoch, **hooks)
    is_lh = channel.me == label_holder
    part = PointsPart.build(channel.me, features, bins, woe, model.coef, card,
                            intercept=model.intercept if is_lh else None)
    part.counts = {f: np.bincount(bins[f].assign(X[f]), minlength=bins[f].n_bins + 1).tolist() for f in part.features}
    return ScorecardFit(part, selection, vres, model, bins, {f: np.asarray(woe[f], dtype=float) for f in features})


def fit_label_holder(channel: Channel, feature_holders: Sequence[str], X: pd.DataFrame, y: np.ndarray, *,
                     encoder: Any, selection: dict[str, Any], config: BinningConfig, smoothing: float,
                     scheme: str, key_bits: int, release: Any, lr_config: Any, card: Scorecard,
                     on_epoch: Callable[[int, dict], None] | None = None,
                     on_woe: Callable[[Any], None] | None = None, lr_hooks: LRHooks | None = None,
                     on_ivs: Callable[[str, dict[str, float]], None] | None = None,
                     noise_seed: int = 0) -> ScorecardFit:
    """Label-holder role on its aligned training rows ``X``, labels ``y``.

    ``encoder`` / ``selection`` are its own features' local WOE and selection (single-party math,
    :func:`~fedrisk.finance.woe.select_features`); the feature holders' WOE comes from step 1.
    ``lr_hooks(W)``: extra keyword arguments of the LR stage's
    :func:`~fedrisk.algorithms.vertical.hetero_lr.train` (resume: ``start`` / ``checkpoint``), given
    this party's WOE columns; every party passes them or none does. ``on_ivs``: as
    :func:`~fedrisk.algorithms.vertical.woe.vertical_woe_label_holder`'s (a check of each partner's IVs), and so is
    ``noise_seed`` (the job seed: the seed of the IV's permutation null).
    """
    from fedrisk.algorithms.vertical.woe import vertical_woe_label_holder

    card._check()
    vres = vertical_woe_label_holder(channel, feature_holders, y, config=config, smoothing=smoothing, reveal="woe",
                                     scheme=scheme, key_bits=key_bits, release=release,
                                     on_ivs=on_ivs, noise_seed=noise_seed)
    if on_woe is not None:
        on_woe(vres)  # the WOE stage's result (e.g. the feature holders' feature names, for the task's checks)
    feats = list(selection["selected"])
    bins = {f: encoder.woe_[f].bins for f in feats}
    woe = {f: encoder.woe_[f].woe for f in feats}
    return _finish(channel, channel.me, feature_holders, X, y, feats, bins, woe, selection, vres, lr_config, card, on_epoch,
                   lr_hooks)


def fit_feature_holder(channel: Channel, label_holder: str, feature_holders: Sequence[str], X: pd.DataFrame, *,
                       categorical: Sequence[str], config: BinningConfig, iv_threshold: float,
                       max_corr: float | None, release: Any, lr_config: Any, card: Scorecard,
                       log: Callable[[str], None] | None = None, lr_hooks: LRHooks | None = None) -> ScorecardFit:
    """Feature-holder role on its aligned training rows ``X`` (no labels). ``lr_hooks``: as
    :func:`fit_label_holder`'s.

    Raises
    ------
    DataError
        None of its features reaches the IV threshold (a scorecard part without features would
        still be told the label holder's merged bins for nothing).
    """
    from fedrisk.algorithms.vertical.woe import vertical_woe_feature_holder

    card._check()
    me = channel.me
    vres = vertical_woe_feature_holder(channel, label_holder, X, categorical=list(categorical), config=config,
                                       iv_threshold=iv_threshold, max_corr=max_corr, release=release)
    for w in vres.warnings:
        if log is not None:
            log(w)
    feats = list(vres.selection["selected"])
    if not feats:
        # every IV 0: no bin passed the release rule (few defaults at the label holder), which the user can change
        rule = (f"; every IV is 0: no bin of its features passed the release rule (task.min_bin_class = "
                f"{release.min_class} goods and bads per bin, task.min_bin_rows = {release.min_rows}), which with "
                "few defaults leaves each feature one bin: lower task.min_bin_class or train on more defaults"
                ) if vres.iv and all(v == 0 for v in vres.iv.values()) and release is not None else ""
        raise DataError(f"party {me!r}: none of its features reaches IV >= {iv_threshold} (IV: "
                        + ", ".join(f"{f} {v:.4f}" for f, v in vres.iv.items())
                        + f"){rule}; lower task.iv_threshold or leave this party out of the job")
    return _finish(channel, label_holder, feature_holders, X, None, feats, vres.bins, vres.woe, vres.selection, vres,
                   lr_config, card, None, lr_hooks)
