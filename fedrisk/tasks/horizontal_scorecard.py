"""Task ``horizontal.scorecard``: federated WOE, logistic regression on WOE, points scorecard.

Participants: every ``[parties.*]`` is a bank with labels; ``[coordinator]`` holds no data. The
evaluation holder (``evaluation.holder``, default the first bank) also reads ``evaluation.test``.

Steps:

1. federated binning, WOE/IV and selection (:mod:`fedrisk.algorithms.horizontal.woe`, secure
   aggregation by default) — every participant ends with the same global bins and WOE; text
   columns need ``[task] categories`` (as ``horizontal.woe``: only declared names and secure counts
   cross; undeclared and rare categories score as ``"(other)"``);
2. each bank WOE-encodes its selected features and trains one logistic model with the solver of
   ``horizontal.lr`` (``solver = "newton"`` by default: the pooled penalised optimum, so the points
   table is that of a pooled WOE logistic regression on the same bins —
   :mod:`~fedrisk.algorithms.horizontal.newton_lr`; ``"fedavg"`` is approximate), over the same
   aggregation; the agreed standardisation is folded back so coefficients apply to WOE values;
3. every participant turns the model into the same :class:`~fedrisk.finance.scorecard.Scorecard`
   (``base_score`` points at good:bad odds ``base_odds``, ``pdo`` points to double the odds,
   points rounded per bin) and writes it;
4. the evaluation holder scores its training rows and the test file with the scorecard
   (probability = the odds the score stands for) and writes reason codes for the test rows.

Outputs: ``scorecard.json`` (every participant, identical: scaling, base points, the points table,
bins, coefficients), ``metrics.json``, ``scores/{train,test}.csv`` and ``scores/test_reasons.csv``
(``id, points, reason_1, lost_1, ...``: the features costing most points against their best bin)
at the evaluation holder, ``woe/<bank>.json`` at each bank.

What each participant learns: that of the two protocols (the coordinator sees only sums under
secure aggregation), plus the final scorecard, which every bank holds whole.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pydantic import Field

from fedrisk.errors import DataError
from fedrisk.runtime.context import PartyContext
from fedrisk.runtime.spec import COORDINATOR, JobSpec
from fedrisk.runtime.tasks import parse_params
from fedrisk.tasks.horizontal_lr import DropoutParams, LRParams, progress_fields, validate_horizontal
from fedrisk.tasks.horizontal_woe import (BinningParams, HistogramParams, HorizontalCategoryParams, encoder_noise,
                                          iv_noise_check, iv_rows, load_frame, pooled_bads,
                                          run_woe)

__all__ = ["KIND", "TAG_PREFIXES", "Params", "ScorecardParams", "validate_spec", "driver", "run", "write_reasons"]

KIND = "horizontal.scorecard"
TAG_PREFIXES = ("hwoe.", "hlr.")


class ScorecardParams(BinningParams):
    """Points scaling shared by both scorecard tasks (see :class:`~fedrisk.finance.scorecard.Scorecard`)."""

    base_score: float = Field(600.0, description="score at base_odds")
    base_odds: float = Field(50.0, gt=0, description="good:bad odds scoring base_score")
    pdo: float = Field(20.0, gt=0, description="points to double the odds; must be > 0")
    round_points: bool = Field(True, description="round each bin's points and the base points to whole points")
    n_reasons: int = Field(3, ge=1, le=20, description="reason codes per applicant")

    def card(self):
        from fedrisk.finance.scorecard import Scorecard

        return Scorecard(self.base_score, self.base_odds, self.pdo, self.round_points)


class Params(DropoutParams, HistogramParams, ScorecardParams, LRParams, HorizontalCategoryParams):
    """``[task]`` settings of ``horizontal.scorecard``: binning + the LR solver of ``horizontal.lr`` + scaling."""


def validate_spec(spec: JobSpec, where: str) -> None:
    parse_params(Params, spec.task, where).check_solver_settings(where)
    validate_horizontal(spec, where, KIND)


def driver(spec: JobSpec) -> str:
    return COORDINATOR


def write_reasons(path: Path, ids: Sequence[Any], points: np.ndarray, reasons: list[list[dict[str, Any]]], n: int) -> None:
    """``id, points, reason_1, lost_1, ...``: one row per applicant, the costliest feature first."""
    from fedrisk.runtime.context import replaced_when_done

    with replaced_when_done(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "points"] + [c for k in range(1, n + 1) for c in (f"reason_{k}", f"lost_{k}")])
        for i, pts, rs in zip(ids, points, reasons):
            cells: list[Any] = []
            for r in rs[:n]:
                cells += [f"{r['feature']} = {r['label']}" if r.get("label") is not None else r["feature"],
                          f"{r['points_lost']:g}"]
            cells += [""] * (2 * n - len(cells))
            w.writerow([i, f"{float(pts):g}", *cells])


def run(ctx: PartyContext) -> None:
    from fedrisk.tasks.horizontal_lr import make_aggregation

    spec = ctx.spec
    params = parse_params(Params, spec.task)
    params.card()._check()
    params.warn_ignored(ctx.log)
    cfg = params.solver_config(spec.federation.seed)
    run_bank, run_coordinator = params.solver_roles()
    agg = make_aggregation(ctx, params)
    banks = list(spec.parties)
    res, frame = run_woe(ctx, params, agg)
    test = test_w = None
    if frame is not None and ctx.name == spec.evaluation_holder() and spec.test_path() is not None:
        from fedrisk.runtime.evaluation import check_test_labels, register_test_weights, weight_keep

        # read before training: a bad test file stops the job now, not after the model is fitted
        test = load_frame(spec, ctx.name, params.categorical, path=spec.test_path(), features=frame.feature_names,
                          allow_empty=True, test_file=True, keep=weight_keep(spec, ctx.name))
        for note in test.notes:
            ctx.log.warning("evaluation.test: %s", note)
        check_test_labels(ctx.name, test.path, test.y)
        test_w = register_test_weights(ctx, test)  # [evaluation] weight: local to this bank, never sent
    feats = list(res.selection["selected"])
    if not feats:
        raise DataError(f"no feature reaches IV >= {params.iv_threshold} across the federation; lower task.iv_threshold")
    ctx.log.info("federated WOE: %d of %d features selected: %s", len(feats), len(res.iv), ", ".join(feats))
    enc = res.encoder()
    from fedrisk.algorithms.horizontal.label_coding import coordinator_coding
    from fedrisk.tasks.horizontal_lr import agree_classes

    if ctx.name == COORDINATOR:
        classes = coordinator_coding(ctx.channel, banks, "hlr.", params.dropout_timeout)
    else:
        classes = agree_classes(ctx, frame.label_coding, "hlr.")
    if ctx.name == COORDINATOR:
        def on_round(r: int, rec: dict) -> None:
            ctx.progress.update(r, cfg.rounds, **progress_fields(rec))

        # resume: the WOE stage is recomputed (exact secure sums: the same bins); the LR stage
        # continues from the coordinator's last round if it was trained on these same WOE tables
        step, state = ctx.checkpoints.start("train", [COORDINATOR], inputs=json.dumps(
            {f: w.to_dict() for f, w in res.woe.items()}, sort_keys=True, default=str))
        model = run_coordinator(ctx.channel, banks, cfg, agg, on_round=on_round, start=(step, state) if state else None,
                                checkpoint=ctx.checkpoints.saver("train"), log=ctx.log.warning)
    else:
        W = enc.transform(frame.X)[feats].to_numpy(dtype=float)
        model = run_bank(ctx.channel, COORDINATOR, W, frame.y, feats, cfg, agg)
    coef, intercept = model.raw_coefficients()
    card = params.card().fit(enc, coef, intercept, feats)
    ctx.write_json("scorecard.json", {"format": "fedrisk.scorecard", "version": 1, "task": KIND, "job": spec.job_id,
                                      **card.to_dict(), "coef": dict(zip(feats, coef.tolist())),
                                      "intercept": intercept, "n_reasons": params.n_reasons, "history": model.history,
                                      **({"classes": classes} if classes else {})})
    if ctx.name == COORDINATOR or ctx.name != spec.evaluation_holder():
        return
    from fedrisk.runtime.evaluation import write_evaluation

    p_tr = card.probability(card.score(frame.X))
    test_ids = test_y = p_te = None
    if test is not None:
        s_te = card.score(test.X)
        test_ids, test_y, p_te = test.ids, test.y, card.probability(s_te)
        write_reasons(ctx.out / "scores" / "test_reasons.csv", test.ids, s_te,
                      card.reason_codes(test.X, n=params.n_reasons), params.n_reasons)
    # this bank holds the final bins' pooled counts, not the pooled prebin counts (those stay at the coordinator):
    # the chi-square noise figures of the final bins, labelled iv_null "chi2" (the calibrated ones would be new
    # content on the wire)
    iv = {"federation": iv_rows(res.iv, res.selection, bins={f: w.bins.n_bins for f, w in res.woe.items()},
                                kinds={f: w.bins.kind for f, w in res.woe.items()}, noise=encoder_noise(res))}
    extra = {
        "banks": banks, "train_rows_at_holder": int(frame.n_rows), **iv_noise_check(ctx.log, iv, pooled_bads(res)),
        "iv": iv,
        "selection": res.selection,
        "scorecard": {"base_points": card.base_points_, "features": card.features_, "pdo": params.pdo,
                      "base_score": params.base_score, "base_odds": params.base_odds},
    }
    if test_y is not None:
        from fedrisk.finance.reference import comparison, logistic_alone

        # the floor: this bank's own rows alone (WOE-encoded on the federation's bins), locally
        W_own = enc.transform(frame.X)[feats].to_numpy(dtype=float)
        W_te = enc.transform(test.X)[feats].to_numpy(dtype=float)
        extra["comparison"] = comparison(ctx.name, test_y, p_te, logistic_alone(
            W_own, frame.y, W_te, test_y, l2=params.l2, sample_weight=test_w), sample_weight=test_w)
    write_evaluation(ctx, frame.ids, frame.y, p_tr, test_ids, test_y, p_te, model.history, extra=extra)
