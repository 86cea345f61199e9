"""Task ``vertical.secureboost``: a label holder and feature holders train gradient-boosted trees.

Participants: exactly one ``[parties.*]`` has ``label = "..."`` (the label holder, which drives the
job, holds every leaf weight and writes ``metrics.json``); every other party is a feature holder.
No coordinator.

Steps, at every party:

1. load its file (a feature holder must not carry the label holder's label column);
2. ECDH-PSI alignment with all parties (:mod:`fedrisk.algorithms.vertical.alignment`);
3. choose test rows among the aligned rows (:func:`~fedrisk.tasks.vertical_roles.choose_test_rows`:
   ``evaluation.test_fraction``, ``test_rule`` or ``test_column``; default ``id % 5 == 0`` for
   integer ids, a keyed-hash 20 % otherwise);
4. train with :mod:`fedrisk.algorithms.vertical.secureboost` on the training rows (each party
   bins its own features locally; see that module for who sends what and what each learns);
5. score train and test rows with the tree-walking protocol (only the label holder gets scores).

Model files (JSON, no pickle), one per party, each holding only that party's part::

    model.json (label holder)        {"format": "fedrisk.vertical.secureboost", "version": 1 or 2, "task",
                                      "job", "label_holder", "party", "parties": {name: model file},
                                      "params", "base_score", "features", "trees", "importance",
                                      "history", "best_iteration", "spec_dir", "created",
                                      "imputation": {feature: training mean}}  # not empty: version 2
    model-<party>.json (each holder) {"format": "fedrisk.vertical.secureboost.part", same header,
                                      "features", "trees", "importance"}

``trees[t]["nodes"]`` at the label holder: every node of tree ``t`` in id order; an internal node
is ``{"id", "owner", "left", "right", "gain"}`` plus ``"feature"`` (name) and ``"threshold"`` when
the label holder owns it; a leaf is ``{"id", "leaf": weight}``. At a feature holder:
``trees[t]["nodes"]`` lists only its own split nodes ``{"id", "feature", "threshold"}``. A row goes
left at a node when ``x[feature] < threshold``; its score is
``sigmoid(base_score + sum of its leaves' weights)``.

Feature importance (split counts and total gain) is written by each party for its own features
only; the label holder's file shows feature holders' features as anonymous ``f<index>``.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np
from pydantic import Field

from fedrisk.algorithms.vertical.secureboost import (
    FeatureHolderModel,
    LabelHolderModel,
    SecureBoostFeatureHolder,
    SecureBoostLabelHolder,
    SecureBoostParams,
    score_feature_holder,
    score_label_holder,
)
from fedrisk.algorithms.vertical.tree import check_monotone
from fedrisk.errors import DataError
from fedrisk.model_files import imputation_version
from fedrisk.runtime.context import PartyContext, write_json
from fedrisk.runtime.spec import JobSpec
from fedrisk.runtime.tasks import parse_params
from fedrisk.tasks.boosting_params import BoostingParams
from fedrisk.tasks.vertical_roles import (  # noqa: F401 (driver, load_table, inference_features are hooks)
    DEFAULT_TEST_RULE, driver, fill_training_means, inference_features, refuse_one_class, load_table, model_file, roles,
    aligned_kept, choose_test_rows, validate_vertical)

KIND = "vertical.secureboost"
#: parties may load with ``missing = "keep"``: NaN gets its own bin and every split learns its side
HANDLES_MISSING = True
#: ``monotone = {feature = 1/-1}`` in a party's table: enforced for that party's own features
SUPPORTS_MONOTONE = True
#: text columns (``categorical = [...]``) become level codes at their owner, see fedrisk.data.categorical
CATEGORY_ENCODING = "codes"
FORMAT = "fedrisk.vertical.secureboost"
TAG_PREFIXES = ("psi.", "sb.", "sbi.")
INFERENCE_TAG_PREFIXES = ("psi.", "sbi.")


class Params(BoostingParams):
    """``[task]`` settings of ``vertical.secureboost``; see :class:`SecureBoostParams` for their meaning."""

    scheme: str = Field("ou", pattern="^(ou|paillier)$", description="'ou' (Okamoto-Uchiyama, fast) or 'paillier'")
    key_bits: int = Field(2048, ge=2048, le=8192, description="modulus bits of the label holder's key")
    precision: int = Field(16, ge=8, le=52, description="fixed-point fractional bits of g and h")
    first_tree_label_holder_only: bool = False
    rows_per_ciphertext: int = Field(0, ge=0, le=8, description="rows per encrypted (g, h) plaintext; 0 picks the "
                                     "cheapest for the job's size (the model is the same for every value)")

    def config(self, seed: int) -> SecureBoostParams:
        return SecureBoostParams(**self.model_dump(), seed=seed)


def validate_spec(spec: JobSpec, where: str) -> None:
    parse_params(Params, spec.task, where)
    validate_vertical(spec, where, KIND)


def run(ctx: PartyContext) -> None:
    from fedrisk.runtime.psi_checkpoint import aligned_rows

    spec = ctx.spec
    cfg = parse_params(Params, spec.task).config(spec.federation.seed)
    lh, hosts = roles(spec)
    me = ctx.name
    is_lh = me == lh
    table = load_table(spec, me)
    ctx.log.info("loaded %d rows x %d features from %s", table.n_rows, table.n_features, table.path)
    for note in table.notes:
        ctx.log.warning(note)
    # an unknown constrained column fails here, before any alignment work (one line, this party only)
    check_monotone(spec.parties[me].monotone, list(table.feature_names), f"party {me!r} (monotone in the job spec)")
    al = aligned_rows(ctx, table.ids)  # PSI, or its checkpoint under --resume
    idx = al.indices
    ids = table.ids[idx]
    X = table.X[idx]
    test, rule = choose_test_rows(ctx, ids, aligned_kept(ctx, table.extra, idx, ids, table.path),
                                  labels=table.y[idx] if is_lh else None)
    ctx.log.info("test rows: %d of %d aligned rows, by %s", int(test.sum()), len(ids), rule)
    if test.all():
        raise DataError(f"party {me!r}: every aligned row is a test row under {rule!r}; nothing to train on")
    tr = ~test
    X, imputation, filled = fill_training_means(spec, me, X, tr, table.feature_names)
    if filled:
        ctx.log.info(filled)
    ctx.phase("training")
    header: dict[str, Any] = {
        # 2 when scoring must fill blanks with the training means (fedrisk.model_files.imputation_version)
        "version": imputation_version({"imputation": imputation}), "task": KIND, "job": spec.job_id, "label_holder": lh, "party": me, "id": spec.parties[me].id,
        "parties": {p: model_file(p, lh) for p in [lh, *hosts]}, "params": cfg.__dict__,
        "spec_dir": str(spec.base_dir), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        # training means used for missing = "mean"; scoring fills with these, not the new file's means
        "imputation": imputation,
        # this party's category levels (its own file only), so predict encodes new rows the same way
        "categories": table.categories, "category_encoding": CATEGORY_ENCODING,
    }
    # resume: every party continues after the last tree all of them checkpointed (own state only)
    _, state = ctx.checkpoints.start("train", [lh, *hosts])
    hooks = {"start": state, "checkpoint": ctx.checkpoints.saver("train")}
    if not is_lh:
        est = SecureBoostFeatureHolder(cfg).fit(ctx.channel, lh, X[tr], table.feature_names,
                                                monotone=spec.parties[me].monotone, categorical=list(table.categories), **hooks)
        ctx.log.info("trained; %d of this party's features used in %d trees; phases %s", len(est.model_.importance),
                     len(est.model_.trees), {k: round(v, 3) for k, v in est.model_.phases.items()})
        score_feature_holder(ctx.channel, est.model_, X[tr], lh, tag="train")
        if test.any():
            score_feature_holder(ctx.channel, est.model_, X[test], lh, tag="test")
        write_json(ctx.out / model_file(me, lh), {"format": FORMAT + ".part", **header, **est.model_.to_json()})
        return

    y = table.y[idx].astype(np.float64)
    refuse_one_class(me, y[tr])

    def on_tree(t: int, rec: dict) -> None:
        ctx.progress.update(t, cfg.n_trees, stage="train", **{k: v for k, v in rec.items() if k != "tree"})

    est = SecureBoostLabelHolder(cfg, on_tree=on_tree).fit(ctx.channel, hosts, X[tr], y[tr], table.feature_names,
                                                           monotone=spec.parties[me].monotone,
                                                           categorical=list(table.categories), **hooks)
    model = est.model_
    for note in est.warnings_:
        ctx.log.warning(note)
    ctx.log.info("trained %d trees (best iteration %d); phases %s", len(model.history), model.best_iteration,
                 {k: round(v, 3) for k, v in model.phases.items()})
    from fedrisk.algorithms.vertical.secureboost_reasons import add_covers, score_with_paths

    # the same scoring messages; the walk also gives each node's training cover, which the
    # reason codes of `fedrisk predict` need (see secureboost_reasons)
    p_tr, paths = score_with_paths(ctx.channel, model, X[tr], hosts, tag="train")
    add_covers(model, paths)
    p_te, paths_te = score_with_paths(ctx.channel, model, X[test], hosts, tag="test") if test.any() else (None, None)
    if p_te is not None:  # reason codes of the test applicants, for the report's reason-code summary
        from fedrisk.algorithms.vertical.secureboost_reasons import contributions, reason_codes
        from fedrisk.finance.scorecard import reason_columns
        from fedrisk.runtime.predict import write_predictions
        import pandas as pd

        names, _, contrib = contributions(model, paths_te, X[test])
        cols = {k.replace("points_lost_", "contribution_"): v for k, v in reason_columns(reason_codes(names, contrib, 3), 3).items()}
        write_predictions(ctx.out / "scores" / "test_reasons.csv", ids[test], pd.DataFrame({"score": p_te, **cols}))
    # the label holder's own label coding (its file only: label values never go to partners)
    write_json(ctx.out / model_file(me, lh), {"format": FORMAT, **header, **model.to_json(),
                                               **({"classes": table.label_coding} if table.label_coding else {})})
    from fedrisk.runtime.evaluation import write_evaluation

    phases = {k: round(v, 4) for k, v in model.phases.items()}
    extra = {
        "parties": [lh, *hosts], "label_holder": lh,
        "intersection": al.summary(),
        "rows": {"train": int(tr.sum() - est.n_val_), "validation": est.n_val_, "test": int(test.sum())},
        "split": rule,
        "trees": len(model.trees), "trees_built": len(model.history), "best_iteration": model.best_iteration,
        "timing": phases,
        "feature_holder_timing": {h: {k: round(v, 4) for k, v in t.items()} for h, t in model.host_phases.items()},
        "importance": model.importance.get(lh, {}),
        "bytes_sent": ctx.channel.ledger.bytes_sent,
        "protocol": f"SecureBoost, {cfg.scheme} {cfg.key_bits}-bit, packed (g, h), compressed histograms",
        "rows_per_ciphertext": est.rows.rows if hasattr(est, "rows") else 1,
    }
    if p_te is not None:  # the floor: the label holder's own features alone, same trees, locally
        from fedrisk.finance.reference import boosting_alone, comparison
        from fedrisk.runtime.evaluation import weights_for

        w_te = weights_for(ctx, "test", ids[test])  # [evaluation] weight: the label holder's own, never sent
        extra["comparison"] = comparison(lh, y[test], p_te, boosting_alone(
            X[tr], y[tr], X[test], y[test], n_trees=cfg.n_trees, max_depth=cfg.max_depth,
            learning_rate=cfg.learning_rate, seed=spec.federation.seed, sample_weight=w_te), sample_weight=w_te)
    write_evaluation(ctx, ids[tr], y[tr], p_tr, ids[test] if p_te is not None else None,
                     y[test] if p_te is not None else None, p_te,
                     [{"round": r["tree"], **{k: v for k, v in r.items() if k != "tree"}} for r in model.history],
                     extra=extra)


# ------------------------------------------------------------------------------------------------
# Federated inference hooks (see fedrisk.runtime.inference)
# ------------------------------------------------------------------------------------------------
def infer(channel, role_model: dict, X: np.ndarray, label_holder: str, feature_holders: list[str]) -> np.ndarray | None:
    """This party's part of scoring aligned rows; the label holder gets probabilities, others ``None``."""
    if channel.me == label_holder:
        return score_label_holder(channel, LabelHolderModel.from_json(role_model), X, feature_holders, tag="predict")
    score_feature_holder(channel, FeatureHolderModel.from_json(role_model), X, label_holder, tag="predict")
    return None


def infer_table(channel, role_model: dict, X: np.ndarray, label_holder: str, feature_holders: list[str]):
    """Scoring with reason codes (same messages as :func:`infer`): the label holder gets ``score``
    (default probability), ``reason_1..k`` and ``contribution_1..k`` (log-odds each reason added),
    its own features by name and each partner as one aggregated reason; others ``None``.

    A model trained before node covers were recorded gets scores only.
    """
    import pandas as pd

    from fedrisk.algorithms.vertical.secureboost_reasons import contributions, has_covers, reason_codes, score_with_paths
    from fedrisk.finance.scorecard import reason_columns

    if channel.me != label_holder:
        score_feature_holder(channel, FeatureHolderModel.from_json(role_model), X, label_holder, tag="predict")
        return None
    model = LabelHolderModel.from_json(role_model)
    p, paths = score_with_paths(channel, model, X, feature_holders, tag="predict")
    if not has_covers(model):
        return pd.DataFrame({"score": p})
    n = int(role_model.get("n_reasons", 3))
    names, _, contrib = contributions(model, paths, X)
    cols = reason_columns(reason_codes(names, contrib, n), n)
    cols = {k.replace("points_lost_", "contribution_"): v for k, v in cols.items()}
    return pd.DataFrame({"score": p, **cols})


__all__ = ["KIND", "HANDLES_MISSING", "FORMAT", "TAG_PREFIXES", "INFERENCE_TAG_PREFIXES", "Params", "validate_spec", "driver", "run",
           "infer", "infer_table", "inference_features", "load_table"]
