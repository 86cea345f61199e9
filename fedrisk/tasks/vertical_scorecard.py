"""Task ``vertical.scorecard``: a points scorecard split across a label holder and feature holders.

Participants: exactly one ``[parties.*]`` has ``label = "..."`` (the label holder: drives, holds
the base points, is the only one to see scores); the others are feature holders. No coordinator.

Steps, at every party:

1. load its file (text columns kept), ECDH-PSI alignment, split by the ``[evaluation]`` rule (:func:`~fedrisk.tasks.vertical_roles.choose_test_rows`)
   (default ``id % 5 == 0`` is test) — as in :mod:`fedrisk.tasks.vertical_woe`;
2. binning on the training rows: the label holder bins its own features locally; each feature
   holder bins its own features through :mod:`fedrisk.finance.vertical_woe` with
   ``reveal="woe"`` (encrypted labels in, encrypted per-bin sums out; the label holder sends back
   merged bins and the WOE per bin, which the feature holder needs to encode its columns);
3. each party keeps its features selected by IV threshold and correlation (its own features
   only) and replaces them by their WOE;
4. vertical logistic regression on the WOE columns (:func:`fedrisk.algorithms.vertical.hetero_lr.train`:
   nobody sees another's columns, weights or the labels) with the same solver as ``vertical.lr``
   (``exact`` with one feature holder: the coefficients are the pooled penalised WOE logistic
   regression on the same bins and rows);
5. each party turns its own coefficients into **its own part of the points table**:
   ``points_j(bin) = round(-factor * b_j * WOE_j(bin))`` with ``factor = pdo / ln 2``; the label
   holder also holds ``base points = round(offset - factor * intercept)``. Those are exactly the
   rows a centralised :class:`~fedrisk.finance.scorecard.Scorecard` would have for the same bins
   and coefficients;
6. scoring (training evaluation and ``fedrisk predict``): each feature holder sends the label
   holder its **partial points** per aligned row (the sum of its features' points) and, once, its
   best possible partial points; the label holder adds base points, its own points and the
   partials. Probability = the default probability the score stands for.

Reason codes (``scores/test_reasons.csv`` at the label holder) name the label holder's own
features (with the applicant's bin) and, for each feature holder, one aggregated reason
``partner features (<party>)`` whose points lost are that party's best partial points minus the
applicant's. The label holder cannot name a partner's feature or bin: it never learns which bin a
customer is in at another party — unless that partner opts in (``task.name_reasons = ["payco"]``,
decided by the partner's own copy of the spec): then, at ``fedrisk predict``, it also sends its own
top reasons per row by name (:func:`exchange_named_reasons`). ``fedrisk predict`` writes
``id, points, probability, reason_1..k, points_lost_1..k, status`` (:func:`infer_table`).

What each party learns, beyond the protocols of steps 1, 2 and 4
    Label holder: every feature holder's partial points per scored row and their maximum — by
    design, since it must add them up and explain the score (plaintext-by-design in the ledger).
    With the per-bin WOE it computed in step 2 this is one linear combination per row of that
    holder's WOE values; a scorecard's partial points are meant to be shown to the applicant's
    lender. Feature holders: the WOE of their own bins (step 2) and nothing at scoring.

Files, one per party, each with only that party's part (JSON, no pickle)::

    scorecard-<lh>.json   {"format": "fedrisk.vertical.scorecard", "version": 1, "task", "job",
                           "label_holder", "party", "parties": {name: file}, "id", "base_score",
                           "base_odds", "pdo", "round_points", "base_points", "intercept",
                           "features", "bins", "woe", "coef", "points", "table", "spec_dir", "created"}
    scorecard-<fh>.json   same with format "...scorecard.part", no base_points / intercept

``fedrisk predict RUN_DIR/scorecard-<lh>.json NEW.csv --out S.csv`` runs federated inference with
them (:mod:`fedrisk.runtime.inference`; the format is registered below).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd
from pydantic import Field

from fedrisk.errors import DataError, ProtocolError
from fedrisk.finance.binning import FeatureBins
from fedrisk.finance.scorecard import Scorecard
from fedrisk.runtime.context import PartyContext
from fedrisk.runtime.spec import JobSpec
from fedrisk.runtime.tasks import parse_params
from fedrisk.tasks.horizontal_scorecard import ScorecardParams, write_reasons
from fedrisk.tasks.vertical_lr import HeteroLRParams
from fedrisk.tasks.vertical_roles import (  # noqa: F401 (hooks)
    DEFAULT_TEST_RULE, driver, inference_features, roles, validate_vertical)
from fedrisk.tasks.vertical_woe import ReleaseParams, aligned_frames, holder_iv_rows, local_woe
from fedrisk.tasks.horizontal_woe import iv_rows, load_frame

__all__ = ["KIND", "FORMAT", "TAG_PREFIXES", "INFERENCE_TAG_PREFIXES", "Params", "PointsPart", "validate_spec",
           "driver", "run", "combine_points", "reason_codes", "exchange_named_reasons", "NamedReasons", "infer",
           "infer_table", "inference_features", "load_table", "load_scoring_rows"]

KIND = "vertical.scorecard"
FORMAT = "fedrisk.vertical.scorecard"
TAG_PREFIXES = ("psi.", "vwoe.", "vlr.", "vsc.")
INFERENCE_TAG_PREFIXES = ("psi.", "vsc.")


class Params(ScorecardParams, HeteroLRParams, ReleaseParams):
    """``[task]`` settings of ``vertical.scorecard``: binning + vertical LR + points scaling."""

    scheme: Literal["paillier", "ou"] = "paillier"
    key_bits: Literal[2048, 3072] = 2048
    local_only: bool = Field(True, description="also fit the label holder's features alone (the floor), locally")
    name_reasons: list[str] = Field(default_factory=list, description=(
        "feature holders that opt in to name their own features (with the applicant's bin) in the label holder's "
        "reason codes at scoring; others appear as one aggregated 'partner features (<party>)' reason"))


def validate_spec(spec: JobSpec, where: str) -> None:
    parse_params(Params, spec.task, where)
    validate_vertical(spec, where, KIND)


def model_file(party: str) -> str:
    return f"scorecard-{party}.json"


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
            return cls(str(d["party"]), feats, {f: FeatureBins.from_dict(d["bins"][f]) for f in feats},
                       {f: np.asarray(d["woe"][f], dtype=float) for f in feats}, {f: float(d["coef"][f]) for f in feats},
                       {f: np.asarray(d["points"][f], dtype=float) for f in feats}, d.get("base_points"),
                       float(d["base_score"]), float(d["base_odds"]), float(d["pdo"]), bool(d.get("round_points", True)),
                       d.get("intercept"))
        except (KeyError, TypeError, ValueError) as e:
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
        if not isinstance(v, np.ndarray) or v.dtype != np.float64 or v.shape != (len(X),):
            raise ProtocolError(f"{me}: {tag}.partial from {h!r} should be {len(X)} float64 values")
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
# The task
# ------------------------------------------------------------------------------------------------
def _local_logistic(W: np.ndarray, y: np.ndarray, l2: float = 1e-4, iters: int = 30) -> tuple[np.ndarray, float]:
    """Newton-IRLS logistic regression on the label holder's own columns (the 'alone' floor)."""
    A = np.hstack([W, np.ones((W.shape[0], 1))])
    w = np.zeros(A.shape[1])
    pen = np.full(A.shape[1], l2 * len(y))
    pen[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(A @ w)))
        g = A.T @ (p - y) + pen * w
        H = (A * (p * (1 - p))[:, None]).T @ A + np.diag(pen) + 1e-9 * np.eye(A.shape[1])
        step = np.linalg.solve(H, g)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w[:-1], float(w[-1])


def _brief(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in ("n", "auc", "ks", "gini") if k in m}


def run(ctx: PartyContext) -> None:
    from fedrisk.algorithms.vertical.hetero_lr import train
    from fedrisk.finance.vertical_woe import vertical_woe_feature_holder, vertical_woe_label_holder
    from fedrisk.runtime.context import write_json

    spec = ctx.spec
    params = parse_params(Params, spec.task)
    card = params.card()
    card._check()
    lh, hosts = roles(spec)
    me = ctx.name
    is_lh = me == lh
    t0 = time.perf_counter()
    ids, X, y, test, al = aligned_frames(ctx, params.categorical, default_split=True)
    if test.all():
        raise DataError(f"party {me!r}: every aligned row is a test row under the split rule; nothing to train on")
    tr = ~test
    X_tr = X[tr].reset_index(drop=True)
    y_tr = y[tr] if is_lh else None
    if is_lh:
        if y_tr.min() == y_tr.max():
            raise DataError(f"party {me!r}: the aligned training rows have only label {int(y_tr[0])}; need both classes")
        enc, sel = local_woe(params, X_tr, y_tr, me)
        ctx.progress.update(1, 3, stage="woe", party=me)
        vres = vertical_woe_label_holder(ctx.channel, hosts, y_tr, config=params.binning(), smoothing=params.smoothing,
                                         reveal="woe", scheme=params.scheme, key_bits=params.key_bits,
                                         release=params.release())
        ctx.progress.update(2, 3, stage="woe", parties=len(hosts) + 1)
        feats = list(sel["selected"])
        bins = {f: enc.woe_[f].bins for f in feats}
        woe = {f: enc.woe_[f].woe for f in feats}
    else:
        vres = vertical_woe_feature_holder(ctx.channel, lh, X_tr, categorical=params.categorical,
                                           config=params.binning(), iv_threshold=params.iv_threshold,
                                           max_corr=params.corr_or_none(), release=params.release())
        for w in vres.warnings:
            ctx.log.warning(w)
        sel = vres.selection
        feats = list(sel["selected"])
        bins, woe = vres.bins, vres.woe
        if not feats:
            raise DataError(f"party {me!r}: none of its features reaches IV >= {params.iv_threshold} (IV: "
                            + ", ".join(f"{f} {v:.4f}" for f, v in vres.iv.items())
                            + "); lower task.iv_threshold or leave this party out of the job")
    ctx.log.info("WOE features: %s", ", ".join(feats) or "(none)")
    W = np.column_stack([woe[f][bins[f].assign(X[f])] for f in feats]) if feats else np.zeros((len(X), 0))
    cfg = params.hetero(spec.federation.seed)

    total = cfg.max_iter if cfg.solver == "exact" or (cfg.solver == "auto" and len(hosts) == 1) else cfg.epochs

    def on_epoch(e: int, rec: dict) -> None:
        if is_lh:
            ctx.progress.update(e, total, stage="train", **{k: v for k, v in rec.items() if k == "val_loss"})

    # resume: the WOE stage above is recomputed (deterministic); the LR stage continues from the last
    # iteration every party checkpointed on these same WOE columns
    _, state = ctx.checkpoints.start("train", [lh, *hosts], inputs=W[tr])
    model = train(ctx.channel, lh, hosts, W[tr], y_tr, cfg, on_epoch=on_epoch, start=state,
                  checkpoint=ctx.checkpoints.saver("train"))
    part = PointsPart.build(me, feats, bins, woe, model.coef, card, intercept=model.intercept if is_lh else None)
    part.counts = {f: np.bincount(bins[f].assign(X_tr[f]), minlength=bins[f].n_bins + 1).tolist() for f in part.features}
    doc = {"format": FORMAT if is_lh else FORMAT + ".part", "version": 1, "task": KIND, "job": spec.job_id,
           "label_holder": lh, "parties": {p: model_file(p) for p in [lh, *hosts]}, "id": spec.parties[me].id,
           **part.to_dict(), "selection": sel, "best_epoch": model.best_epoch, "spec_dir": str(spec.base_dir),
           "n_reasons": params.n_reasons, "name_reasons": me in params.name_reasons, "run_id": ctx.run_id,
           "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_json(ctx.out / model_file(me), doc)
    # this party's binning tables, for its own report (the label holder's with goods and bads per bin)
    if is_lh:
        from fedrisk.tasks.horizontal_woe import woe_document

        ctx.write_json(f"woe/{me}.json", woe_document(ctx, enc.woe_, sel))
    else:
        from fedrisk.tasks.vertical_woe import holder_woe_document

        ctx.write_json(f"woe/{me}.json", holder_woe_document(ctx, vres, X_tr))

    res_tr = combine_points(ctx.channel, lh, hosts, part, X_tr, tag="vsc.train")
    X_te = X[test].reset_index(drop=True)
    res_te = combine_points(ctx.channel, lh, hosts, part, X_te, tag="vsc.test") if test.any() else None
    if not is_lh:
        return
    from fedrisk.finance.metrics import evaluate
    from fedrisk.runtime.evaluation import write_evaluation

    p_tr = part.probability(res_tr.total)
    p_te = part.probability(res_te.total) if res_te is not None else None
    iv = {lh: iv_rows(enc.iv_, sel, bins={f: w.bins.n_bins for f, w in enc.woe_.items()},
                      kinds={f: w.bins.kind for f, w in enc.woe_.items()})}
    for h in hosts:
        iv[h] = holder_iv_rows(vres, h)
    extra: dict[str, Any] = {
        "parties": [lh, *hosts], "label_holder": lh, "intersection": al.summary(),
        "rows": {"train": int(tr.sum() - model.n_val), "validation": model.n_val, "test": int(test.sum())},
        "iv": iv, "selection": {lh: sel, **vres.selection},
        "scorecard": {"base_points": part.base_points, "base_score": params.base_score, "base_odds": params.base_odds,
                      "pdo": params.pdo, "features": {lh: part.features, **{h: "held by the party" for h in hosts}},
                      "best_points": {lh: part.best(), **(res_tr.best if res_tr else {})}},
        "best_epoch": model.best_epoch, "epochs_run": len(model.history),
        "bytes_sent": ctx.channel.ledger.bytes_sent, "seconds": round(time.perf_counter() - t0, 3),
    }
    if p_te is not None:
        write_reasons(ctx.out / "scores" / "test_reasons.csv", ids[test], res_te.total,
                      reason_codes(part, X_te, res_te, params.n_reasons), params.n_reasons)
        comp: dict[str, Any] = {"federated": _brief(evaluate(y[test], p_te))}
        if params.local_only and part.features:
            Wl = W[:, [feats.index(f) for f in part.features]]
            c, b = _local_logistic(Wl[tr], y_tr.astype(float), l2=params.l2)
            comp["local_only"] = {lh: _brief(evaluate(y[test], 1.0 / (1.0 + np.exp(-(Wl[test] @ c + b)))))}
        extra["comparison"] = comp
    write_evaluation(ctx, ids[tr], y_tr, p_tr, ids[test] if p_te is not None else None,
                     y[test] if p_te is not None else None, p_te,
                     [{"round": r["epoch"], **{k: v for k, v in r.items() if k != "epoch"}} for r in model.history],
                     extra=extra)


# ------------------------------------------------------------------------------------------------
# Federated inference hooks (see fedrisk.runtime.inference)
# ------------------------------------------------------------------------------------------------
@dataclass
class RawRows:
    """Rows to score with text columns kept: ``X`` is an object array so ``X[rows]`` selects rows."""

    ids: np.ndarray
    X: np.ndarray
    feature_names: list[str]

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])


def load_table(spec: JobSpec, name: str, path=None, features=None, require_label: bool | None = None) -> RawRows:
    """A feature holder's rows for scoring (categorical columns allowed, missing values allowed)."""
    lh = driver(spec)
    frame = load_frame(spec, name, [], path=path, features=features, label=False,
                       forbid_label=spec.parties[lh].label if name != lh else None)
    return RawRows(frame.ids, frame.X.to_numpy(dtype=object), frame.feature_names)


def load_scoring_rows(spec: JobSpec, name: str, path, features) -> RawRows:
    """Inference hook: the label holder's rows to score, raw as at training (text categories, missing values)."""
    return load_table(spec, name, path=path, features=features)


def infer_table(channel, role_model: dict, X: np.ndarray, label_holder: str,
                feature_holders: list[str]) -> pd.DataFrame | None:
    """This party's part of scoring aligned rows; the label holder gets points, probability and reasons.

    Messages: :func:`combine_points` (tag ``vsc.predict``) then :func:`exchange_named_reasons`.

    Returns
    -------
    pandas.DataFrame or None
        Label holder: ``points``, ``probability``, ``reason_1..k``, ``points_lost_1..k`` per row of
        ``X`` (``k`` = the training job's ``n_reasons``); feature holders: ``None``.
    """
    from fedrisk.finance.scorecard import reason_columns

    part = PointsPart.from_dict(role_model)
    frame = pd.DataFrame(np.asarray(X, dtype=object).reshape(len(X), -1), columns=part.features)
    n = int(role_model.get("n_reasons", 3))
    res = combine_points(channel, label_holder, feature_holders, part, frame, tag="vsc.predict")
    named = exchange_named_reasons(channel, label_holder, feature_holders, part, frame, n,
                                   bool(role_model.get("name_reasons", False)), tag="vsc.predict")
    if res is None:
        return None
    reasons = reason_codes(part, frame, res, n, named)
    return pd.DataFrame({"points": res.total, "probability": part.probability(res.total), **reason_columns(reasons, n)})


def infer(channel, role_model: dict, X: np.ndarray, label_holder: str, feature_holders: list[str]) -> np.ndarray | None:
    """This party's part of scoring aligned rows; the label holder gets default probabilities."""
    t = infer_table(channel, role_model, X, label_holder, feature_holders)
    return None if t is None else t["probability"].to_numpy()


def _register() -> None:
    try:
        from fedrisk.runtime.inference import register_format
    except ImportError:  # pragma: no cover - inference not available in this build
        return
    register_format(FORMAT, __name__)


_register()
