"""Task ``horizontal.gbdt``: banks with the same schema train one gradient-boosted tree model.

Participants: every ``[parties.*]`` is a bank with labels; ``[coordinator]`` holds no data, drives
the rounds and finds splits on secure sums (see :mod:`fedrisk.algorithms.horizontal.gbdt` for who
sends what and what each learns). The evaluation holder (``evaluation.holder``, default the first
bank) also reads ``evaluation.test``, and writes ``metrics.json`` (test AUC after every tree,
feature importance, timings, privacy spent) and ``scores/``.

With a ``[privacy]`` table the histogram sums carry calibrated Gaussian noise and the spent
epsilon is in ``metrics.json`` (``privacy.epsilon``), the log and the report; a budget that the
planned rounds cannot meet refuses to start (:mod:`fedrisk.crypto.dp`).

Outputs: ``model.json`` (format ``fedrisk.gbdt``, the same global model at every participant,
scored locally by ``fedrisk predict``), ``metrics.json``, ``scores/{train,test}.csv``.
"""
from __future__ import annotations

import numpy as np

from fedrisk.algorithms.horizontal.aggregation import Aggregation
from fedrisk.algorithms.horizontal.gbdt import GbdtParams, planned_aggregations, run_bank, run_coordinator
from fedrisk.crypto.dp import PrivacyPlan, plan_privacy
from fedrisk.errors import ConfigError
from fedrisk.data.categorical import CategoryEncoder
from fedrisk.model_files import save_gbdt_model
from fedrisk.runtime.context import PartyContext
from fedrisk.runtime.spec import COORDINATOR, JobSpec
from fedrisk.runtime.tasks import parse_params
from fedrisk.tasks.boosting_params import BoostingParams
from fedrisk.tasks.horizontal_categories import CategoryParams, agreed_categories, refuse_with_privacy
from fedrisk.algorithms.horizontal.label_coding import coordinator_agreement, rejoin_admit
from fedrisk.tasks.horizontal_lr import (DropoutParams, agree_schema, make_aggregation, pooled_mean, rejoin_policy,
                                         validate_horizontal)

KIND = "horizontal.gbdt"
TAG_PREFIXES = ("hgb.", "hcat.")
#: text columns: level codes of levels agreed by the banks, split by partitions (tasks/horizontal_categories.py)
CATEGORY_ENCODING = "codes"
#: a bank that dies or is cut off after the bins are agreed is dropped; the job goes on while the
#: secure-aggregation threshold holds (read by the runtime and ``simulate``)
DROPOUT_TOLERANT = True
#: parties may load with ``missing = "keep"``: NaN gets its own bin and every split learns its side
HANDLES_MISSING = True
#: ``monotone = {feature = 1/-1}`` in the banks' tables (the same at every bank)
SUPPORTS_MONOTONE = True
#: ``[privacy]`` adds calibrated Gaussian noise to every histogram sum
SUPPORTS_PRIVACY = True


class Params(DropoutParams, BoostingParams, CategoryParams):
    """``[task]`` settings of ``horizontal.gbdt``: the names and meanings of ``vertical.secureboost``
    (see :class:`~fedrisk.algorithms.horizontal.gbdt.GbdtParams`); text columns: :class:`CategoryParams`."""

    def config(self, seed: int) -> GbdtParams:
        return GbdtParams(**self.model_dump(exclude={"dropout_timeout", "categories", "min_category_count"}), seed=seed)


def privacy_plan(spec: JobSpec, params: Params, where: str = "job spec") -> PrivacyPlan | None:
    """The noise and budget of this job (``None`` without ``[privacy]``); refuses an unmeetable budget."""
    pv = spec.privacy
    if pv is None:
        return None
    refuse_with_privacy(params, KIND, where)
    cfg = params.config(spec.federation.seed)
    mean = pooled_mean(spec)  # missing = "mean": the two pooled-mean sums are noised and counted too
    what = (f"{cfg.n_trees} trees x ({cfg.max_depth} levels + 1 leaf round) + 3 binning/loss rounds"
            + (" + 2 pooled-mean rounds" if mean else ""))
    try:
        return plan_privacy(planned_aggregations(cfg, private=True, pooled_mean=mean), epsilon=pv.epsilon, delta=pv.delta,
                            noise_multiplier=pv.noise_multiplier, clip=pv.clip, what=what)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def validate_spec(spec: JobSpec, where: str) -> None:
    params = parse_params(Params, spec.task, where)
    validate_horizontal(spec, where, KIND)
    if len(spec.parties) < 2:
        raise ConfigError(f"{where}: {KIND} needs at least 2 banks (one bank alone would show its sums to the coordinator)")
    keep = [n for n, p in spec.parties.items() if p.missing == "keep"]
    mean = [n for n, p in spec.parties.items() if p.missing == "mean"]
    if keep and mean:  # the model's imputation fills every blank before the trees see it: the learned side goes unused
        raise ConfigError(f"{where}: banks {keep} set missing = 'keep' and banks {mean} missing = 'mean'; a {KIND} model "
                          "either learns where blanks go or fills them with the pooled means, so give every bank with "
                          "blank cells the same setting")
    privacy_plan(spec, params, where)


def driver(spec: JobSpec) -> str:
    return COORDINATOR


def _privacy_line(summary: dict) -> str:
    return (f"differential privacy: epsilon = {summary['epsilon']:.3f} (delta = {summary['delta']:g}, budget "
            f"{summary.get('epsilon_budget', 'none')}) over {summary['mechanisms_run']} noisy sums "
            f"(planned {summary['mechanisms_planned']}), noise multiplier {summary['noise_multiplier']:.3f}; "
            f"{summary['accountant']}")


def one_shot(agg: Aggregation) -> Aggregation:
    """Boosting's session secure aggregation without the reveal round trip.

    The trainer restarts a tree when a bank drops out, so it needs no in-round recovery of a sum
    over survivors; :class:`~fedrisk.crypto.secagg_oneshot.OneShotSessionAggregation` then costs one
    message per bank per tree level instead of three (same keys, same masks minus the self-mask,
    nothing ever revealed). Single-round (``secure_aggregation_rounds = 0``) and plain
    aggregation are kept as configured.
    """
    from fedrisk.crypto.secagg_oneshot import OneShotSessionAggregation
    from fedrisk.crypto.secagg_session import SessionSecureAggregation

    if type(agg) is not SessionSecureAggregation:
        return agg
    return OneShotSessionAggregation(
        rounds=agg.rounds, round_timeout=agg.round_timeout, threshold=agg.threshold, frac_bits=agg.frac_bits,
        dropout_timeout=agg.dropout_timeout, key_timeout=agg.key_timeout, signing_key_pem=agg.signing_key_pem,
        peer_certs_pem=agg.peer_certs_pem, parties=agg.parties, colluders=agg.colluders,
        graph=agg.graph, degree=agg.degree)


def run(ctx: PartyContext) -> None:
    spec = ctx.spec
    params = parse_params(Params, spec.task)
    cfg = params.config(spec.federation.seed)
    agg = one_shot(make_aggregation(ctx, params))
    banks = list(spec.parties)
    privacy = privacy_plan(spec, params)
    categories = agreed_categories(ctx, params, banks, COORDINATOR)
    if privacy is not None:
        ctx.log.info("privacy plan: noise multiplier %.4f for at most %d noisy sums; epsilon %.4f at delta %g",
                     privacy.noise_multiplier, privacy.mechanisms, privacy.epsilon, privacy.delta)
    if ctx.name == COORDINATOR:
        def on_tree(t: int, rec: dict) -> None:
            shown = {k: v for k, v in rec.items() if k not in ("tree", "contributors")}
            ctx.progress.update(t, cfg.n_trees, **shown, contributors=",".join(rec.get("contributors", [])))

        # resume: only the coordinator holds training state; with [privacy] the bins' noise differs
        # every run (and the budget would be spent twice), so such a job starts afresh
        _, state = ctx.checkpoints.start("train", [COORDINATOR]) if privacy is None else (0, None)
        if ctx.resume and privacy is not None:
            ctx.log.warning("resume: a job with [privacy] starts afresh (its noisy bins differ every run)")
        classes, order = coordinator_agreement(ctx.channel, banks, "hgb.", params.dropout_timeout)
        model = run_coordinator(ctx.channel, banks, cfg, agg, privacy=privacy, on_tree=on_tree,
                                log=ctx.log.warning, start=state, checkpoint=ctx.checkpoints.saver("train"),
                                admit=rejoin_admit(rejoin_policy(ctx), ctx.channel, "hgb.", classes, order),
                                pooled_mean=pooled_mean(spec))
        ctx.log.info("trained %d trees (kept %d) in %d aggregations; phases %s", len(model.history),
                     len(model.trees), model.rounds, model.phases)
        if model.privacy is not None:
            ctx.log.info(_privacy_line(model.privacy))
        save_gbdt_model(ctx.out / "model.json", model, KIND, spec.job_id, categories=categories, classes=classes)
        _write_membership(ctx, banks, model.history)
        return

    from fedrisk.data.loading import EVALUATION_SETTINGS, load_party_table
    from fedrisk.runtime.evaluation import check_test_labels, register_test_weights, weight_keep, write_evaluation

    p = spec.parties[ctx.name]
    cat = dict(categorical=list(categories), encoding=CATEGORY_ENCODING, categories=categories) if categories else {}
    table = load_party_table(spec.data_path(ctx.name), party=ctx.name, id_col=p.id, label_col=p.label,
                             features=p.features, exclude=p.exclude, missing=p.missing, fill_later=True,
                             **p.read_options(), **cat)
    ctx.log.info("loaded %d rows x %d features from %s", table.X.shape[0], table.X.shape[1], table.path)
    for note in table.notes:
        ctx.log.warning(note)
    classes = agree_schema(ctx, table, "hgb.")
    from fedrisk.algorithms.vertical.tree import check_monotone

    check_monotone(p.monotone, list(table.feature_names), f"bank {ctx.name!r} (monotone in the job spec)")
    evaluator = ctx.name == spec.evaluation_holder() and spec.test_path() is not None
    # the evaluation holder reads its test file before training: a bad one stops the job now, not after the trees
    # (in its own dialect: [evaluation] sep / decimal / na_values, else the holder's)
    test = load_party_table(spec.test_path(), party=ctx.name, id_col=p.id, label_col=p.label,
                            features=table.feature_names, missing="keep" if p.missing == "mean" else p.missing,
                            settings_at=EVALUATION_SETTINGS, keep=weight_keep(spec, ctx.name),
                            **spec.test_read_options(), **cat) if evaluator else None
    test_w = None
    if test is not None:
        check_test_labels(ctx.name, test.path, test.y)
        test_w = register_test_weights(ctx, test)  # [evaluation] weight: local to this bank, never sent
        for note in test.read_notes:
            ctx.log.warning("evaluation.test: %s", note)
    model = run_bank(ctx.channel, COORDINATOR, table.X, table.y, table.feature_names, cfg, agg, privacy=privacy,
                     n_banks=len(banks), monotone=p.monotone,
                     rejoining=ctx.extra.get("rejoin") is not None,
                     categorical={c: len(CategoryEncoder.from_json(e).all_levels()) for c, e in (categories or {}).items()},
                     pooled_mean=pooled_mean(spec))
    if model.imputation:
        # missing = "mean": the training rows as trained on, and the test file's blanks filled as `fedrisk predict` fills
        from fedrisk.algorithms.horizontal.standardisation import fill_missing

        fill = np.array([model.imputation[f] for f in model.features])
        table.X = fill_missing(table.X, fill)
        if test is not None:
            test.X = fill_missing(test.X, fill)
    if model.privacy is not None:
        ctx.log.info(_privacy_line(model.privacy))
    save_gbdt_model(ctx.out / "model.json", model, KIND, spec.job_id, categories=categories, classes=classes)
    if test is None:
        return
    rounds = _staged_rounds(model, test.X, test.y, test_w)
    extra = {
        "banks": banks, "train_rows_at_holder": len(table.y),
        "dropped_banks": sorted(set(banks) - set(model.history[-1].get("contributors", banks) if model.history else banks)),
        "trees": len(model.trees), "trees_built": len(model.history), "best_iteration": model.best_iteration,
        "aggregations": model.rounds,
        "binning": model.binning,  # its zoom and refine rounds are the aggregations beyond the plan
        "importance": model.importance,
        "timing": model.phases,
        "bytes_sent": ctx.channel.ledger.bytes_sent,
        "protocol": ("horizontal histogram boosting: bins (XGBoost's hist cuts of the pooled values) agreed from secure "
                     "sums of grid counts, refined around the cuts; per level one "
                     "secure aggregation of the smaller children's g/h histograms, splits found by the "
                     "coordinator on sums only"),
    }
    if model.privacy is not None:
        extra["privacy"] = model.privacy
    p_te = model.predict_proba(test.X)
    from fedrisk.finance.reference import boosting_alone, comparison

    # the floor this bank computes alone: the same boosting settings on its own rows
    extra["comparison"] = comparison(ctx.name, test.y, p_te, boosting_alone(
        table.X, table.y, test.X, test.y, n_trees=cfg.n_trees, max_depth=cfg.max_depth,
        learning_rate=cfg.learning_rate, seed=spec.federation.seed, sample_weight=test_w), sample_weight=test_w)
    write_evaluation(ctx, table.ids, table.y, model.predict_proba(table.X), test.ids, test.y, p_te, rounds, extra=extra)
    # test applicants' reason codes (exact TreeSHAP on the global model, local) for the report's summary
    from fedrisk.runtime.predict import gbdt_predictions, write_predictions

    write_predictions(ctx.out / "scores" / "test_reasons.csv", test.ids,
                      gbdt_predictions({"features": model.features, "base_score": model.base_score,
                                        "trees": model.trees}, test.X, p_te))


def _write_membership(ctx: PartyContext, banks: list[str], history: list[dict]) -> None:
    """``membership.json``: the banks in each tree's sums and the banks that dropped out (issue 14)."""
    contributors = {str(h["tree"]): h["contributors"] for h in history if "contributors" in h}
    last = set(history[-1]["contributors"]) if history and "contributors" in history[-1] else set(banks)
    down = ctx.channel.down
    dropped = {b: {"reason": down.get(b, "left a secure sum")} for b in sorted(set(banks) - last)}
    if dropped:
        ctx.log.warning("finished without banks %s", sorted(dropped))
    ctx.write_json("membership.json", {"contributors": contributors, "dropped": dropped})


def _staged_rounds(model, X: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> list[dict]:
    """Per tree: the coordinator's pooled losses plus the holder's test AUC after that many trees (weighted by ``w``)."""
    from fedrisk.algorithms.horizontal.gbdt import predict_margin
    from fedrisk.finance.metrics import auc

    out = []
    margin = np.full(len(X), model.base_score)
    for i, rec in enumerate(model.history):
        if i < len(model.trees):
            margin = predict_margin(0.0, [model.trees[i]], X) + margin
        r = {"round": int(rec["tree"]), **{k: v for k, v in rec.items() if k not in ("tree", "banks")}}
        if i < len(model.trees):
            r["test_auc"] = auc(y, 1.0 / (1.0 + np.exp(-margin)), w)
        if "train_loss" in r:
            r["loss"] = r["train_loss"]
        out.append(r)
    return out


__all__ = ["KIND", "TAG_PREFIXES", "HANDLES_MISSING", "SUPPORTS_PRIVACY", "Params", "validate_spec", "driver", "run",
           "privacy_plan"]
