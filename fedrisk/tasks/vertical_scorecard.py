"""Task ``vertical.scorecard``: glue for a points scorecard split across a label holder and feature holders.

Participants: exactly one ``[parties.*]`` has ``label = "..."`` (the label holder: drives, holds
the base points, is the only one to see scores); the others are feature holders. No coordinator.

Steps, at every party:

1. load its file (text columns kept), ECDH-PSI alignment, split by the ``[evaluation]`` rule
   (:func:`~fedrisk.tasks.vertical_roles.choose_test_rows`; default ``id % 5 == 0`` is test) — as
   in :mod:`fedrisk.tasks.vertical_woe`; the label holder bins its own features locally;
2. the protocol, :mod:`fedrisk.algorithms.vertical.scorecard` (who sends what to whom and what
   each party learns are in its docstring): vertical WOE with ``reveal="woe"``, selection, vertical
   LR on the WOE columns (the same solver as ``vertical.lr``), each party's own part of the points
   table;
3. files and evaluation: the training and test rows are scored through the protocol's
   :func:`~fedrisk.algorithms.vertical.scorecard.combine_points`; the label holder writes metrics,
   scores and ``scores/test_reasons.csv`` (its own features by bin; one aggregated
   ``partner features (<party>)`` reason per feature holder unless that partner opts in with
   ``task.name_reasons``, then at ``fedrisk predict`` it names its own reasons).

Files, one per party, each with only that party's part (JSON, no pickle)::

    scorecard-<lh>.json   {"format": "fedrisk.vertical.scorecard", "version": 1, "task", "job",
                           "label_holder", "party", "parties": {name: file}, "id", "base_score",
                           "base_odds", "pdo", "round_points", "base_points", "intercept",
                           "features", "bins", "woe", "coef", "points", "table", "spec_dir", "created"}
    scorecard-<fh>.json   same with format "...scorecard.part", no base_points / intercept

``fedrisk predict RUN_DIR/scorecard-<lh>.json NEW.csv --out S.csv`` runs federated inference with
them (:mod:`fedrisk.runtime.inference`; the format is registered below; :func:`infer_table` writes
``id, points, probability, reason_1..k, points_lost_1..k, status``, and brings a feature holder's
column blank in every scored row to the label holder's output: :mod:`~fedrisk.algorithms.vertical.blank_columns`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from fedrisk.algorithms.vertical.blank_columns import relay_blank_columns
from fedrisk.algorithms.vertical.scorecard import PointsPart, combine_points, exchange_named_reasons, reason_codes, woe_columns
from fedrisk.errors import DataError
from fedrisk.runtime.context import PartyContext
from fedrisk.runtime.spec import JobSpec
from fedrisk.runtime.tasks import parse_params
from fedrisk.tasks.horizontal_scorecard import ScorecardParams, write_reasons
from fedrisk.tasks.vertical_lr import HeteroLRParams, not_converged_note
from fedrisk.tasks.vertical_roles import (  # noqa: F401 (hooks)
    DEFAULT_TEST_RULE, driver, inference_features, refuse_one_class, roles, validate_vertical)
from fedrisk.tasks.vertical_woe import (LabelKeyParams, ReleaseParams, aligned_frames, holder_iv_rows, local_woe,
                                        party_categorical)
from fedrisk.tasks.horizontal_woe import CategoryBinningParams, encoder_noise, iv_noise_check, iv_rows, load_frame

__all__ = ["KIND", "FORMAT", "TAG_PREFIXES", "INFERENCE_TAG_PREFIXES", "Params", "validate_spec", "driver", "run",
           "infer", "infer_table", "inference_features", "load_table", "load_scoring_rows"]

KIND = "vertical.scorecard"
FORMAT = "fedrisk.vertical.scorecard"
TAG_PREFIXES = ("vcat.", "psi.", "vwoe.", "vlr.", "vsc.")
INFERENCE_TAG_PREFIXES = ("psi.", "vsc.")
#: a party's own ``categorical = [...]`` is honoured next to ``[task] categorical`` (vertical_woe.party_categorical)
PARTY_CATEGORICAL = True


class Params(LabelKeyParams, ReleaseParams, CategoryBinningParams, HeteroLRParams, ScorecardParams):
    """``[task]`` settings of ``vertical.scorecard``: binning + vertical LR + points scaling."""

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
# The task: load, align, split, run the protocol, write files and metrics
# ------------------------------------------------------------------------------------------------
def run(ctx: PartyContext) -> None:
    from fedrisk.algorithms.vertical.scorecard import fit_feature_holder, fit_label_holder
    from fedrisk.algorithms.vertical.woe import refuse_unsplittable
    from fedrisk.runtime.context import write_json

    spec = ctx.spec
    params = parse_params(Params, spec.task)
    card = params.card()
    lh, hosts = roles(spec)
    me = ctx.name
    is_lh = me == lh
    t0 = time.perf_counter()
    ids, X, y, test, al, coding, rule = aligned_frames(ctx, params.categorical, default_split=True)
    if test.all():
        raise DataError(f"party {me!r}: every aligned row is a test row under the split rule; nothing to train on")
    tr = ~test
    X_tr = X[tr].reset_index(drop=True)
    y_tr = y[tr] if is_lh else None
    lr_config = params.hetero(spec.federation.seed)

    def lr_hooks(W: np.ndarray) -> dict[str, Any]:
        # resume: the WOE stage is recomputed (deterministic); the LR stage continues from the last
        # iteration every party checkpointed on these same WOE columns
        _, state = ctx.checkpoints.start("train", [lh, *hosts], inputs=W)
        return {"start": state, "checkpoint": ctx.checkpoints.saver("train")}

    if is_lh:
        refuse_one_class(me, y_tr)
        enc, sel = local_woe(params, X_tr, y_tr, me, ctx.log, spec)
        ctx.progress.update(1, 3, stage="woe", party=me)
        total = lr_config.max_iter if lr_config.solver in ("exact", "auto") else lr_config.epochs
        fit = fit_label_holder(
            ctx.channel, hosts, X_tr, y_tr, encoder=enc, selection=sel, config=params.binning(),
            smoothing=params.smoothing, scheme=params.scheme, key_bits=params.key_bits, release=params.release(),
            lr_config=lr_config, card=card, lr_hooks=lr_hooks,
            on_ivs=refuse_unsplittable(me, y_tr, params.release(), params.iv_threshold), noise_seed=spec.federation.seed,
            on_woe=lambda vres: _woe_done(ctx, vres, len(hosts) + 1),
            on_epoch=lambda e, rec: ctx.progress.update(e, total, stage="train",
                                                        **{k: v for k, v in rec.items() if k == "val_loss"}))
    else:
        fit = fit_feature_holder(ctx.channel, lh, hosts, X_tr, categorical=party_categorical(spec, me, params.categorical),
                                 config=params.binning(),
                                 iv_threshold=params.iv_threshold, max_corr=params.corr_or_none(),
                                 release=params.release(), lr_config=lr_config, card=card, log=ctx.log.warning,
                                 lr_hooks=lr_hooks)
    part, model, sel, vres = fit.part, fit.model, fit.selection, fit.woe
    note = not_converged_note(model.history, model.best_epoch, lr_config, lr_config.solver in ("exact", "auto"))
    if note and is_lh:
        ctx.log.warning(note)
    ctx.log.info("WOE features: %s", ", ".join(fit.bins) or "(none)")
    doc = {"format": FORMAT if is_lh else FORMAT + ".part", "version": 1, "task": KIND, "job": spec.job_id,
           "label_holder": lh, "parties": {p: model_file(p) for p in [lh, *hosts]}, "id": spec.parties[me].id,
           **part.to_dict(), "selection": sel, "best_epoch": model.best_epoch, "spec_dir": str(spec.base_dir),
           "n_reasons": params.n_reasons, "name_reasons": me in params.name_reasons, "run_id": ctx.run_id,
           "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           # the label holder's own label coding (its file only: label values never go to partners)
           **({"classes": coding} if is_lh and coding else {})}
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
    from fedrisk.finance.reference import comparison, logistic_alone
    from fedrisk.runtime.evaluation import write_evaluation

    p_tr = part.probability(res_tr.total)
    p_te = part.probability(res_te.total) if res_te is not None else None
    iv = {lh: iv_rows(enc.iv_, sel, bins={f: w.bins.n_bins for f, w in enc.woe_.items()},
                      kinds={f: w.bins.kind for f, w in enc.woe_.items()}, noise=encoder_noise(enc))}
    for h in hosts:
        iv[h] = holder_iv_rows(vres, h)
    extra: dict[str, Any] = {**iv_noise_check(ctx.log, iv, y_tr),
        "parties": [lh, *hosts], "label_holder": lh, "intersection": al.summary(),
        "rows": {"train": int(tr.sum() - model.n_val), "validation": model.n_val, "test": int(test.sum())},
        "split": rule,  # which rule chose the test rows (the report's stability section names it)
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
        from fedrisk.runtime.evaluation import weights_for

        w_te = weights_for(ctx, "test", ids[test])  # [evaluation] weight: the label holder's own, never sent
        alone = None
        if params.local_only and part.features:  # the floor: its own WOE columns alone, fitted locally
            W = woe_columns(part.features, part.bins, part.woe, X)
            alone = logistic_alone(W[tr], y_tr, W[test], y[test], l2=params.l2, sample_weight=w_te)
        extra["comparison"] = comparison(lh, y[test], p_te, alone, sample_weight=w_te)
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
    #: warnings about the batch itself (a feature column blank in every row), for a service's status
    notes: tuple[str, ...] = ()
    #: what reading the file changed (blank rows left out, ids written as decimals read as integers), also in
    #: ``notes``; logged at this party by the inference runtime (``PartyTable.read_notes``)
    read_notes: tuple[str, ...] = ()

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])


def load_table(spec: JobSpec, name: str, path=None, features=None, require_label: bool | None = None) -> RawRows:
    """A party's rows for scoring (categorical columns allowed, missing values allowed: a column blank in every
    row, e.g. one applicant without that field, scores as its missing bin)."""
    lh = driver(spec)
    if name == lh and features is not None and not list(features):  # a label holder that brought labels only
        frame = load_frame(spec, name, [], path=path, label=False, allow_no_features=True)
        return RawRows(frame.ids, np.empty((frame.n_rows, 0), dtype=object), [], tuple(frame.notes), tuple(frame.notes))
    frame = load_frame(spec, name, [], path=path, features=features, label=False,
                       forbid_label=spec.parties[lh].label if name != lh else None, allow_empty=True)
    from fedrisk.runtime.predict import warn_blank_columns

    # a whole batch without a column is more likely a broken feed than chance: said in this party's log
    note = warn_blank_columns(frame.X, frame.feature_names, name, "fedrisk.inference")
    return RawRows(frame.ids, frame.X.to_numpy(dtype=object), frame.feature_names,
                   (*frame.notes, *((note,) if note else ())), tuple(frame.notes))


def load_scoring_rows(spec: JobSpec, name: str, path, features) -> RawRows:
    """Inference hook: the label holder's rows to score, raw as at training (text categories, missing values)."""
    return load_table(spec, name, path=path, features=features)


def infer_table(channel, role_model: dict, X: np.ndarray, label_holder: str,
                feature_holders: list[str]) -> pd.DataFrame | None:
    """This party's part of scoring aligned rows; the label holder gets points, probability and reasons.

    Messages: :func:`combine_points` (tag ``vsc.predict``), :func:`exchange_named_reasons`, then
    :func:`~fedrisk.algorithms.vertical.blank_columns.relay_blank_columns`.

    Returns
    -------
    pandas.DataFrame or None
        Label holder: ``points``, ``probability``, ``reason_1..k``, ``points_lost_1..k`` per row of
        ``X`` (``k`` = the training job's ``n_reasons``); feature holders: ``None``.
    """
    from fedrisk.finance.scorecard import reason_columns

    part = PointsPart.from_dict(role_model)
    frame = pd.DataFrame(np.asarray(X, dtype=object).reshape(len(X), -1), columns=part.features)
    _warn_unseen_categories(part, frame)
    from fedrisk.runtime.batch_stability import characteristic_note

    moved = characteristic_note(part.bins, part.counts, frame, part.party)  # its own features, in its own log
    if moved:
        logging.getLogger("fedrisk.inference").warning(moved)
    n = int(role_model.get("n_reasons", 3))
    res = combine_points(channel, label_holder, feature_holders, part, frame, tag="vsc.predict")
    named = exchange_named_reasons(channel, label_holder, feature_holders, part, frame, n,
                                   bool(role_model.get("name_reasons", False)), tag="vsc.predict")
    # a feature holder's column blank in every scored row reaches the label holder's predict output, not only
    # the feature holder's own log (names only from a partner that names its reasons)
    relayed = relay_blank_columns(channel, label_holder, feature_holders, frame, part.features,
                                  bool(role_model.get("name_reasons", False)), tag="vsc.predict")
    if res is None:
        return None
    for note in relayed:
        logging.getLogger("fedrisk.inference").warning(note)
    reasons = reason_codes(part, frame, res, n, named)
    return pd.DataFrame({"points": res.total, "probability": part.probability(res.total), **reason_columns(reasons, n)})


def _warn_unseen_categories(part: PointsPart, frame: pd.DataFrame) -> None:
    """Log at this party how many rows hold categories its bins never saw (they score as the missing bin).

    Counts only, in this party's own log: the values and even the column names stay here.
    """
    import logging

    from fedrisk.data.categorical import unseen_note
    from fedrisk.finance.binning import unseen_categories

    unseen = unseen_categories({f: part.bins[f] for f in part.features}, frame)
    note = unseen_note(unseen, len(frame), part.party, scored_as="the missing bin")
    if note:
        logging.getLogger("fedrisk.inference").warning(note)


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


def _woe_done(ctx: PartyContext, vres: Any, parties: int) -> None:
    """The label holder after the WOE stage: progress, and its notes on partners' features (its log only)."""
    ctx.progress.update(2, 3, stage="woe", parties=parties)
    for w in vres.warnings:
        ctx.log.warning(w)
