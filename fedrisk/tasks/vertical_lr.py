"""Task ``vertical.lr``: a label holder and one or more feature holders train one logistic model.

Participants: exactly one ``[parties.*]`` has ``label = "..."`` (the label holder, which drives
the job and writes ``metrics.json``); every other party is a feature holder. No coordinator.

Steps, at every party:

1. load its file (a feature holder must not carry the label holder's label column);
2. ECDH-PSI alignment with all parties (:mod:`fedrisk.algorithms.vertical.alignment`); rows outside
   the intersection are ignored; the intersection size is logged and written to ``metrics.json``;
   alignment returns the rows in a **canonical order** (:func:`fedrisk.algorithms.vertical.row_order.canonical_order`:
   sorted by a job-keyed hash of the id, computed by each party alone), because the order PSI
   produces is random per run and the result must not depend on it (same seed, same model);
3. choose test rows among the aligned rows (:func:`~fedrisk.tasks.vertical_roles.choose_test_rows`:
   ``evaluation.test_fraction``, ``test_rule`` or ``test_column``; default ``id % 5 == 0`` for
   integer ids, a keyed-hash 20 % otherwise);
4. standardise its own columns on its training rows (nothing is exchanged);
5. train with :func:`fedrisk.algorithms.vertical.hetero_lr.train`;
6. score train and test rows with the scoring protocol (only the label holder gets scores).

Data policy: NaN/inf follow the party's ``missing`` setting (``reject`` by default; an all-NaN
column is refused under either policy); a column that is constant on the aligned training rows
is dropped with a warning (it cannot move a logistic model) and listed under ``dropped`` in the
party's model file; a feature holder left with no usable column is refused.

Model files (JSON, no pickle), one per party, each holding only that party's part::

    model.json (label holder)        {"format": "fedrisk.vertical.lr", "version": 1 or 2, "task", "job",
                                      "label_holder", "parties": {name: model file}, "party",
                                      "features", "mean", "scale", "coef", "intercept", "dropped",
                                      "id", "history", "spec_dir", "created",
                                      "imputation": {feature: training mean}}  # not empty: version 2
    model-<party>.json (each holder) {"format": "fedrisk.vertical.lr.part", same fields, no intercept}

Partial score of a party: ``((x - mean) / scale) @ coef`` (+ ``intercept`` at the label holder);
probability ``sigmoid(sum of partial scores)``. ``fedrisk predict RUN_DIR/model.json NEW.csv``
runs federated inference with these files (:mod:`fedrisk.runtime.inference`).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fedrisk.algorithms.vertical.hetero_lr import HeteroLRConfig, score, sigmoid, train
from fedrisk.errors import DataError
from fedrisk.model_files import imputation_version
from fedrisk.runtime.context import PartyContext, write_json
from fedrisk.runtime.psi_checkpoint import aligned_rows
from fedrisk.runtime.spec import JobSpec
from fedrisk.runtime.tasks import parse_params
from fedrisk.tasks.vertical_roles import (  # noqa: F401 (driver, load_table, inference_features are hooks)
    DEFAULT_TEST_RULE, driver, fill_training_means, inference_features, refuse_one_class, load_table, model_file, roles,
    aligned_kept, choose_test_rows, validate_vertical)

KIND = "vertical.lr"
FORMAT = "fedrisk.vertical.lr"
#: text columns (``categorical = [...]``) become one-hot columns at their owner (no label needed;
#: see fedrisk.data.categorical for why not WOE)
CATEGORY_ENCODING = "onehot"
TAG_PREFIXES = ("psi.", "vlr.")
INFERENCE_TAG_PREFIXES = ("psi.", "vlr.")


class HeteroLRParams(BaseModel):
    """The vertical-LR training settings (see :class:`HeteroLRConfig`), shared by every task that
    trains one (``vertical.lr``, ``vertical.scorecard``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    solver: Literal["auto", "exact", "surrogate"] = Field(
        "auto", description="auto: exact; exact: full-batch L-BFGS on the exact log-loss, any number of feature holders "
        "(Chebyshev sigmoid under CKKS with one, Fourier sigmoid on period-masked scores with several); surrogate: fast "
        "mini-batch descent on a majorising surrogate (approximate)")
    max_iter: int = Field(100, ge=1, le=1000, description="exact: most L-BFGS iterations")
    step_tol: float = Field(2e-5, ge=0, description="exact: stop when the joint step's max-norm is below this")
    epochs: int = Field(10, ge=1, le=10000)
    batch_size: int = Field(4096, ge=256, description="rows per mini-batch, a multiple of 256")
    learning_rate: float = Field(0.5, gt=0)
    lr_decay: float = Field(0.9, gt=0, le=1)
    l2: float = Field(1e-4, ge=0)
    tol: float = Field(1e-4, ge=0)
    early_stopping_rounds: int = Field(3, ge=0)
    validation_fraction: float = Field(0.1, ge=0, lt=0.5)
    max_features: int = Field(64, ge=1, le=4096, description="most feature columns a party may bring; "
                              "bounds what a peer can decrypt per result (checked at every party)")
    min_rows_per_feature: int = Field(10, ge=1, description="at most one feature column per this many aligned rows")

    def hetero(self, seed: int) -> HeteroLRConfig:
        return HeteroLRConfig(**{f: getattr(self, f) for f in HeteroLRParams.model_fields}, seed=seed)


class Params(HeteroLRParams):
    """``[task]`` settings of ``vertical.lr``."""

    def config(self, seed: int) -> HeteroLRConfig:
        return self.hetero(seed)


def validate_spec(spec: JobSpec, where: str) -> None:
    parse_params(Params, spec.task, where)
    validate_vertical(spec, where, KIND)


def _standardise(ctx_name: str, X: np.ndarray, names: list[str], is_lh: bool) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    mean = X.mean(axis=0)
    sd = X.std(axis=0)
    keep = sd > 1e-12 * np.maximum(1.0, np.abs(mean))
    dropped = [n for n, k in zip(names, keep) if not k]
    if not keep.any() and not is_lh:
        raise DataError(f"party {ctx_name!r}: no usable feature columns: every column ({', '.join(names)}) is "
                        "constant on the aligned training rows; a feature holder must bring at least one varying column")
    return mean[keep], sd[keep], [n for n, k in zip(names, keep) if k], dropped


def not_converged_note(history: list[dict[str, Any]], best_epoch: int, cfg: Any, exact: bool) -> str | None:
    """A line for the label holder's log when training ended at its iteration cap, not at convergence.

    Exact solver: ``max_iter`` iterations and the last joint step still above ``step_tol``. Surrogate:
    the validation loss still fell at the last epoch (without validation rows there is nothing to tell).
    """
    if not history:
        return None
    last = history[-1]
    if exact:
        if len(history) >= cfg.max_iter and float(last.get("step", 0.0)) >= cfg.step_tol:
            return (f"not converged: stopped at max_iter = {cfg.max_iter} with a step of {float(last['step']):.2g} "
                    f"(step_tol = {cfg.step_tol:g}); raise task.max_iter for the pooled optimum")
        return None
    if "val_loss" in last and not last.get("converged") and best_epoch == last.get("epoch"):
        return (f"not converged: the validation loss still fell at the last of epochs = {cfg.epochs}; raise "
                "task.epochs, or use the default exact solver (the pooled optimum)")
    return None


def run(ctx: PartyContext) -> None:
    from fedrisk.crypto.workers import warm_up

    spec = ctx.spec
    params = parse_params(Params, spec.task)
    cfg = params.config(spec.federation.seed)
    lh, hosts = roles(spec)
    me = ctx.name
    is_lh = me == lh
    warm_up()  # PSI's workers start while the table loads
    table = load_table(spec, me)
    ctx.log.info("loaded %d rows x %d features from %s", table.n_rows, table.n_features, table.path)
    for note in table.notes:
        ctx.log.warning(note)

    al = aligned_rows(ctx, table.ids)  # PSI (in the job's canonical row order), or its checkpoint under --resume
    idx = al.indices
    ids = table.ids[idx]
    X_all = table.X[idx]
    y_all = table.y[idx] if is_lh else None
    test, rule = choose_test_rows(ctx, ids, aligned_kept(ctx, table.extra, idx, ids, table.path),
                                  labels=y_all)
    ctx.log.info("test rows: %d of %d aligned rows, by %s", int(test.sum()), len(ids), rule)
    if test.all():
        raise DataError(f"party {me!r}: every aligned row is a test row under {rule!r}; nothing to train on")
    tr = ~test
    X_all, fill, filled = fill_training_means(spec, me, X_all, tr, table.feature_names)
    if filled:
        ctx.log.info(filled)
    mean, scale, feats, dropped = _standardise(me, X_all[tr], table.feature_names, is_lh)
    ctx.phase("training")
    if dropped:
        ctx.log.warning("dropping constant columns (on the aligned training rows): %s", ", ".join(dropped))
    if len(feats) > cfg.max_features:
        raise DataError(f"party {me!r}: {len(feats)} usable feature columns, more than task.max_features = "
                        f"{cfg.max_features}; select columns (parties.{me}.features) or raise task.max_features")
    cols = [table.feature_names.index(f) for f in feats]
    Z = (X_all[:, cols] - mean) / scale
    if is_lh:
        ytr = y_all[tr]
        refuse_one_class(me, ytr)

    exact = cfg.solver in ("exact", "auto")
    total = cfg.max_iter if exact else cfg.epochs

    def on_epoch(e: int, rec: dict) -> None:
        if is_lh:
            ctx.progress.update(e, total, stage="train", **{k: v for k, v in rec.items() if k in ("val_loss",)})

    # resume: every party continues from the last iteration all of them checkpointed (own state only)
    _, state = ctx.checkpoints.start("train", [lh, *hosts])
    model = train(ctx.channel, lh, hosts, Z[tr], y_all[tr] if is_lh else None, cfg, on_epoch=on_epoch,
                  start=state, checkpoint=ctx.checkpoints.saver("train"))
    ctx.log.info("trained: best epoch %d of %d; phases %s", model.best_epoch, len(model.history),
                 {k: round(v, 3) for k, v in model.phases.items()})
    note = not_converged_note(model.history, model.best_epoch, cfg, exact)
    if note and is_lh:
        ctx.log.warning(note)

    u = model.partial_score(Z)
    p_tr = score(ctx.channel, lh, hosts, u[tr], tag="vlr.score.train")
    # the test rows' log-odds (the same message as probabilities), for their reason codes below
    z_te = score(ctx.channel, lh, hosts, u[test], tag="vlr.score.test", logits=True) if test.any() else None
    p_te = sigmoid(z_te) if z_te is not None else None

    imputation = {f: fill[f] for f in feats} if fill else {}
    doc: dict[str, Any] = {
        # version 2 when scoring must fill blanks with the training means (fedrisk.model_files.imputation_version)
        "format": FORMAT if is_lh else FORMAT + ".part", "version": imputation_version({"imputation": imputation}),
        "task": KIND, "job": spec.job_id,
        "label_holder": lh, "party": me, "id": spec.parties[me].id, "run_id": ctx.run_id,
        "parties": {p: model_file(p, lh) for p in [lh, *hosts]},
        "features": feats, "mean": mean, "scale": scale, "coef": model.coef,
        "intercept": model.intercept, "dropped": dropped,
        # training means used for missing = "mean"; scoring fills with these, not the new file's means
        "imputation": imputation,
        # this party's category levels (its own file only), so predict encodes new rows the same way
        "categories": table.categories, "category_encoding": CATEGORY_ENCODING,
        "history": model.history, "best_epoch": model.best_epoch,
        "spec_dir": str(spec.base_dir),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        # the label holder's own label coding (its file only: label values never go to partners)
        **({"classes": table.label_coding} if is_lh and table.label_coding else {}),
    }
    if not is_lh:
        doc.pop("intercept")
    write_json(ctx.out / model_file(me, lh), doc)
    if not is_lh:
        return
    if z_te is not None:  # the test applicants' reason codes, for the report's reason-code summary
        from fedrisk.runtime.predict import write_predictions

        write_predictions(ctx.out / "scores" / "test_reasons.csv", ids[test],
                          reason_table_of(doc, X_all[test][:, cols], u[test], z_te, hosts))
    from fedrisk.runtime.evaluation import write_evaluation

    extra = {
        "parties": [lh, *hosts], "label_holder": lh,
        "intersection": al.summary(),
        "rows": {"train": int(tr.sum() - model.n_val), "validation": model.n_val, "test": int(test.sum())},
        "split": rule,
        "best_epoch": model.best_epoch, "epochs_run": len(model.history),
        "timing": {k: round(v, 4) for k, v in model.phases.items()},
        "bytes_sent": ctx.channel.ledger.bytes_sent,
        "dropped_columns": dropped,
        "solver": model.solver, "iterations": len(model.history),
        "protocol": ("exact sigmoid: per-row Chebyshev expansion under CKKS into masked shares, full-batch L-BFGS "
                     "(see hetero_lr)" if model.solver == "exact" and len(hosts) == 1 else
                     "exact sigmoid: Fourier series on scores masked modulo its period, under CKKS into masked shares, "
                     "full-batch L-BFGS (see hetero_lr_multi)" if model.solver == "exact" else
                     "CKKS cross-products over locally computed residual shares, majorising surrogate (see hetero_lr)"),
    }
    if p_te is not None:  # the floor: the label holder's own features alone, locally
        from fedrisk.finance.reference import comparison, logistic_alone

        from fedrisk.runtime.evaluation import weights_for

        w_te = weights_for(ctx, "test", ids[test])  # [evaluation] weight: the label holder's own, never sent
        extra["comparison"] = comparison(lh, y_all[test], p_te,
                                         logistic_alone(Z[tr], y_all[tr], Z[test], y_all[test], l2=params.l2,
                                                        sample_weight=w_te), sample_weight=w_te)
    write_evaluation(ctx, ids[tr], y_all[tr], p_tr, ids[test] if p_te is not None else None,
                     y_all[test] if p_te is not None else None, p_te,
                     [{"round": r["epoch"], **{k: v for k, v in r.items() if k != "epoch"}} for r in model.history],
                     extra=extra)


# ------------------------------------------------------------------------------------------------
# Federated inference hooks (see fedrisk.runtime.inference)
# ------------------------------------------------------------------------------------------------
def partial_score(role_model: dict, X: np.ndarray) -> np.ndarray:
    mean, scale, coef = (np.asarray(role_model[k], dtype=np.float64) for k in ("mean", "scale", "coef"))
    if X.shape[1] != coef.shape[0]:
        raise DataError(f"party {role_model.get('party')!r}: data has {X.shape[1]} feature columns, the model expects {coef.shape[0]}")
    u = ((X - mean) / scale) @ coef
    if role_model.get("intercept") is not None:
        u = u + float(role_model["intercept"])
    return u


def infer(channel, role_model: dict, X: np.ndarray, label_holder: str, feature_holders: list[str]) -> np.ndarray | None:
    """This party's part of scoring aligned rows; the label holder gets probabilities, others ``None``."""
    return score(channel, label_holder, feature_holders, partial_score(role_model, X), tag="vlr.score.predict")


def partner_reason(feature_holders: list[str]) -> str:
    """The one reason that stands for every feature holder's columns at the label holder."""
    return f"partner features ({', '.join(feature_holders)})"


def infer_table(channel, role_model: dict, X: np.ndarray, label_holder: str, feature_holders: list[str]):
    """Scoring with reason codes (the same messages as :func:`infer`): the label holder gets ``score``
    (default probability), ``reason_1..k`` and ``contribution_1..k``; others ``None``.

    A contribution is a push on the default log-odds against the training's average applicant (a
    linear model's exact SHAP value with the training means as the baseline). The label holder's
    own columns are named (:func:`fedrisk.runtime.predict.lr_contributions` on its part); the
    feature holders' columns are one ``partner features (<parties>)`` reason worth
    ``z - u_G = sum_h u_h``, the sum the label holder already receives to score (with two or more
    feature holders their pairwise masks hide each ``u_h``, so their parts stay summed). The terms
    add up to the row's log-odds minus the intercept, as a horizontal LR's do.
    """
    u = partial_score(role_model, X)
    z = score(channel, label_holder, feature_holders, u, tag="vlr.score.predict", logits=True)
    return None if z is None else reason_table_of(role_model, X, u, z, feature_holders)


def reason_table_of(role_model: dict, X: np.ndarray, u: np.ndarray, z: np.ndarray, feature_holders: list[str]):
    """``score, reason_1..k, contribution_1..k`` at the label holder from its part ``role_model``, its
    rows ``X`` (model columns), its partial scores ``u`` and the combined log-odds ``z`` (see :func:`infer_table`)."""
    from fedrisk.finance.tree_reasons import reason_table
    from fedrisk.runtime.predict import lr_contributions

    names, own = lr_contributions(role_model, X)
    return reason_table(sigmoid(z), [*names, partner_reason(list(feature_holders))], np.column_stack([own, z - u]),
                        int(role_model.get("n_reasons") or 3))


__all__ = ["KIND", "FORMAT", "TAG_PREFIXES", "Params", "validate_spec", "driver", "run", "infer", "infer_table",
           "inference_features", "partial_score", "partner_reason", "reason_table_of", "sigmoid"]
