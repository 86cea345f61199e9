"""Task ``horizontal.lr``: banks with the same schema train one logistic model.

Solvers (``[task] solver``):

* ``"newton"`` (default): damped Newton over secure aggregation
  (:mod:`fedrisk.algorithms.horizontal.newton_lr`); converges (7 rounds on the shipped data, 9-12
  on the heavy-tailed non-IID stress cases) to the pooled penalised maximum-likelihood estimate:
  the coefficients on the standardised scale are scikit-learn's
  ``LogisticRegression(C = 1 / (l2 * n_pooled))`` on the pooled standardised rows.
  Sends a (d+1)x(d+1) Hessian per bank and round: fine up to a few hundred features.
* ``"fedavg"``: FedAvg / FedProx (:mod:`fedrisk.algorithms.horizontal.fedavg_lr`); APPROXIMATE
  (local SGD drifts on non-IID banks); for many parties or very wide data. Only it reads
  ``local_epochs``, ``batch_size``, ``learning_rate``, ``lr_decay`` and ``mu``.

Participants: every ``[parties.*]`` is a bank with labels; ``[coordinator]`` holds no data and
sees only sums (secure aggregation by default). The evaluation holder — the bank named by
``evaluation.holder``, default the first — also reads the held-out ``evaluation.test`` file,
scores it with each round's global model, and writes ``metrics.json`` and ``scores/``.

Outputs in the run directory: ``model.json`` (every participant writes the same global model),
``metrics.json``, ``scores/{train,test}.csv`` (evaluation holder), ``checkpoints/coordinator.json``.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fedrisk.algorithms.horizontal.aggregation import Aggregation, PlainAggregation
from fedrisk.algorithms.horizontal.label_coding import (bank_agreement, bank_coding, coordinator_agreement,
                                                         rejoin_admit, rejoined_agreement, rejoined_coding)
from fedrisk.errors import ConfigError
from fedrisk.model_files import save_lr_model
from fedrisk.runtime.context import PartyContext
from fedrisk.runtime.evaluation import write_evaluation
from fedrisk.runtime.spec import COORDINATOR, JobSpec
from fedrisk.runtime.tasks import parse_params
from fedrisk.tasks.horizontal_categories import CategoryParams, agreed_categories, refuse_with_privacy

KIND = "horizontal.lr"
TAG_PREFIXES = ("hlr.", "secagg.", "hcat.")
#: text columns become one-hot columns of levels agreed by the banks (see tasks/horizontal_categories.py)
CATEGORY_ENCODING = "onehot"
#: a bank that dies or is cut off after the agreement is dropped; the job goes on while the
#: secure-aggregation threshold holds (read by the runtime and ``simulate``)
DROPOUT_TOLERANT = True
#: ``[privacy]`` (newton solver): noisy Newton on clipped rows, budget by the accountant
SUPPORTS_PRIVACY = True


#: settings only the FedAvg solver reads
FEDAVG_ONLY = ("local_epochs", "batch_size", "learning_rate", "lr_decay", "mu")


class DropoutParams(BaseModel):
    """How long a horizontal coordinator waits for a bank before treating it as dropped out (every
    horizontal task aggregates through :func:`make_aggregation`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    dropout_timeout: float = Field(30.0, gt=0, description="seconds the coordinator waits for a bank's masked vector")


class LRParams(BaseModel):
    """The logistic-regression settings of ``horizontal.lr`` and ``horizontal.scorecard``, declared once.

    ``l2`` multiplies ``0.5 * ||w||^2`` (standardised coefficients, intercept unpenalised) added
    to the MEAN log-loss over the pooled rows, so scikit-learn's equivalent is
    ``C = 1 / (l2 * n_pooled)`` on the pooled standardised rows (l2 = 1e-4 with 10,000 rows is
    scikit-learn's default C = 1).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    solver: Literal["newton", "fedavg"] = Field(
        "newton", description="newton: exact pooled optimum (default); fedavg: FedAvg/FedProx, approximate")
    rounds: int = Field(20, ge=1, le=10000, description="most rounds; newton stops when converged")
    l2: float = Field(1e-4, ge=0, description="weight of 0.5*||w||^2 added to the mean log-loss")
    tol: float = Field(1e-6, ge=0, description="newton: largest standardised step; fedavg: relative model change")
    local_epochs: int = Field(1, ge=1, le=1000, description="fedavg only")
    batch_size: int = Field(64, ge=1, description="fedavg only")
    learning_rate: float = Field(0.1, gt=0, description="fedavg only")
    lr_decay: float = Field(1.0, gt=0, le=1, description="fedavg only")
    mu: float = Field(0.0, ge=0, description="fedavg only: FedProx proximal weight; 0 = plain FedAvg")
    privacy_rounds: int = Field(6, ge=1, le=100, description="newton under [privacy]: noisy Newton steps, fixed in advance")

    def ignored_settings(self) -> list[str]:
        """FedAvg-only settings the spec gives although the Newton solver will not read them."""
        return [k for k in FEDAVG_ONLY if k in self.model_fields_set] if self.solver == "newton" else []

    def check_solver_settings(self, where: str) -> None:
        """Refuse FedAvg settings next to an explicit ``solver = "newton"``; a defaulted solver only warns."""
        extra = self.ignored_settings()
        if extra and "solver" in self.model_fields_set:
            raise ConfigError(f"{where}: task.{', task.'.join(extra)} only apply to solver = 'fedavg'; "
                              f"remove them, or set solver = 'fedavg' (approximate) to use them")

    def warn_ignored(self, log: Any) -> None:
        extra = self.ignored_settings()
        if extra:
            log.warning("task settings %s only apply to solver = 'fedavg' and are IGNORED: the default solver is "
                        "'newton' (exact pooled optimum); remove them, or set solver = 'fedavg'", ", ".join(extra))

    def solver_config(self, seed: int):
        """The algorithm's config for the chosen solver."""
        if self.solver == "fedavg":
            from fedrisk.algorithms.horizontal.fedavg_lr import FedAvgConfig

            return FedAvgConfig(rounds=self.rounds, local_epochs=self.local_epochs, batch_size=self.batch_size,
                                learning_rate=self.learning_rate, lr_decay=self.lr_decay, l2=self.l2, mu=self.mu,
                                tol=self.tol, seed=seed)
        from fedrisk.algorithms.horizontal.newton_lr import NewtonConfig

        return NewtonConfig(rounds=self.rounds, l2=self.l2, tol=self.tol, privacy_rounds=self.privacy_rounds)

    def solver_roles(self) -> tuple[Callable[..., Any], Callable[..., Any]]:
        """``(run_bank, run_coordinator)`` of the chosen solver (same signatures for both)."""
        if self.solver == "fedavg":
            from fedrisk.algorithms.horizontal import fedavg_lr as mod
        else:
            from fedrisk.algorithms.horizontal import newton_lr as mod
        return mod.run_bank, mod.run_coordinator


class Params(DropoutParams, LRParams, CategoryParams):
    """``[task]`` settings of ``horizontal.lr`` (see :class:`LRParams`; categories: :class:`CategoryParams`)."""


def progress_fields(rec: dict) -> dict:
    """What the coordinator's progress line shows for a round of either solver."""
    keys = ("loss", "change", "banks", "step_size", "grad_norm")
    out = {k: rec[k] for k in keys if rec.get(k) is not None}
    if rec.get("contributors"):
        out["contributors"] = ",".join(rec["contributors"])  # who is in this round's sums (issue 14)
    return out


def validate_horizontal(spec: JobSpec, where: str, kind: str) -> None:
    """The shape every horizontal job needs: a coordinator, labelled banks, a test file."""
    if spec.coordinator is None:
        raise ConfigError(f"{where}: {kind} needs a [coordinator] table with an address (it holds no data)")
    unlabelled = [n for n, p in spec.parties.items() if not p.label]
    if unlabelled:
        raise ConfigError(f"{where}: {kind}: every bank needs label = '...'; missing at {unlabelled}")
    vertical_only = [k for k in ("test_rule", "test_fraction", "test_column") if getattr(spec.evaluation, k) is not None]
    if vertical_only:
        raise ConfigError(f"{where}: evaluation.{vertical_only[0]} is for vertical jobs; horizontal jobs use evaluation.test = 'file'")


def validate_spec(spec: JobSpec, where: str) -> None:
    params = parse_params(Params, spec.task, where)
    params.check_solver_settings(where)
    validate_horizontal(spec, where, "horizontal.lr")
    privacy_plan(spec, params, where)


def privacy_plan(spec: JobSpec, params: LRParams, where: str = "job spec"):
    """The noise and budget of a private ``horizontal.lr`` job (``None`` without ``[privacy]``).

    Refuses, before anything starts, a budget the run cannot meet and a solver without DP.
    """
    pv = spec.privacy
    if pv is None:
        return None
    refuse_with_privacy(params, KIND, where)
    if params.solver != "newton":
        raise ConfigError(f"{where}: the privacy table applies to solver = 'newton' (noisy Newton on clipped rows); "
                          f"remove solver = {params.solver!r} or the privacy table")
    from fedrisk.algorithms.horizontal.newton_lr import private_mechanisms
    from fedrisk.crypto.dp import plan_privacy

    cfg = params.solver_config(spec.federation.seed)
    what = f"3 standardisation sums + {cfg.privacy_rounds} Newton steps (task.privacy_rounds)"
    try:
        return plan_privacy(private_mechanisms(cfg), epsilon=pv.epsilon, delta=pv.delta,
                            noise_multiplier=pv.noise_multiplier, clip=pv.clip, what=what)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def privacy_line(summary: dict) -> str:
    """The log line of a private run's spent budget."""
    return (f"differential privacy: epsilon = {summary['epsilon']:.3f} (delta = {summary['delta']:g}, budget "
            f"{summary.get('epsilon_budget', 'none')}) over {summary['mechanisms_run']} noisy sums, noise multiplier "
            f"{summary['noise_multiplier']:.3f}; {summary['accountant']}")


def driver(spec: JobSpec) -> str:
    return COORDINATOR


def make_aggregation(ctx: PartyContext, params: Any, rounds: int | None = None) -> Aggregation:
    """Secure aggregation unless the spec explicitly turns it off (``security.secure_aggregation = false``).

    Session mode (:class:`~fedrisk.crypto.secagg_session.SessionSecureAggregation`) by default:
    one key setup per ``security.secure_aggregation_rounds`` aggregations, then three messages per
    bank per aggregation; ``secure_aggregation_rounds = 0`` selects the single-round protocol
    (fresh keys every aggregation, seven to nine messages per bank). ``security.secure_aggregation_graph``
    picks the mask graph of session mode (complete up to 10 banks by default, SecAgg+'s sparse graph above).
    """
    if not ctx.spec.security.secure_aggregation:
        ctx.log.warning("secure aggregation is OFF: the coordinator sees every bank's individual update")
        return PlainAggregation()
    from fedrisk.crypto.secagg_session import SessionSecureAggregation
    from fedrisk.crypto.secure_aggregation import SecureAggregation

    peer_certs = {}
    signing_key = None
    if ctx.certs_dir is not None:
        for p in ctx.spec.participants():
            f = ctx.certs_dir / f"{p}.pem"
            if f.is_file():
                peer_certs[p] = f.read_bytes()
        key = ctx.certs_dir / f"{ctx.name}-key.pem"
        signing_key = key.read_bytes() if key.is_file() else None
    common = dict(signing_key_pem=signing_key, peer_certs_pem=peer_certs or None,
                  dropout_timeout=params.dropout_timeout, parties=list(ctx.spec.parties))
    if rounds is None:  # a caller's own one-off step passes 0
        rounds = getattr(ctx.spec.security, "secure_aggregation_rounds", 0)
    if rounds:
        return SessionSecureAggregation(rounds=rounds, round_timeout=params.dropout_timeout,
                                        graph=getattr(ctx.spec.security, "secure_aggregation_graph", "auto"), **common)
    return SecureAggregation(**common)


def solver_aggregation(params: Any, agg: Aggregation) -> Aggregation:
    """Newton's session aggregation runs one-shot sums where the solver can redo a failed one elsewhere.

    :class:`~fedrisk.crypto.secagg_oneshot.OptimisticSessionAggregation` (same settings): a Newton
    round that moves (``p != 0``) costs one message per bank instead of three; a dropout in such a
    round makes the next round re-evaluate at a fresh point with in-round recovery from then on
    (:mod:`fedrisk.algorithms.horizontal.newton_lr`, "One-shot rounds"). Other solvers and
    aggregations are returned as they are.
    """
    from fedrisk.crypto.secagg_oneshot import OptimisticSessionAggregation
    from fedrisk.crypto.secagg_session import SessionSecureAggregation

    if getattr(params, "solver", None) != "newton" or type(agg) is not SessionSecureAggregation:
        return agg
    return OptimisticSessionAggregation.like(agg)


def rejoin_policy(ctx: PartyContext) -> Callable[[str, int], bool] | None:
    """``admit(bank, round)`` for the coordinator: a dropped bank that restarted may come back.

    Session secure aggregation keeps a returning bank ``excluded`` until its next key setup, so
    there the answer is a refusal naming the setting; single-round secure aggregation and plain
    sums take it back at the next round.
    """
    admit = ctx.extra.get("admit")
    if admit is None:
        return None
    sec = ctx.spec.security
    if ctx.spec.privacy is not None:
        why = ("a job with [privacy] cannot take a bank back: its noise shares and privacy accounting assume the "
               "banks of the start")
        return lambda bank, at: admit(bank, at, why)
    if sec.secure_aggregation and sec.secure_aggregation_rounds:
        why = ("session secure aggregation (security.secure_aggregation_rounds > 0) cannot take a bank back "
               "mid-session; set security.secure_aggregation_rounds = 0 to let dropped banks rejoin")
        return lambda bank, at: admit(bank, at, why)
    return admit


def pooled_mean(spec: JobSpec) -> bool:
    """Whether the job fills empty cells: some bank loads with ``missing = "mean"``.

    Then every bank keeps its empty cells as NaN and the standardisation agrees the POOLED mean of the
    observed values to fill them with (the same at every bank, as pooled mean imputation does), not
    each bank's own means. Decided from the spec, so every participant agrees on the message layout."""
    return any(p.missing == "mean" for p in spec.parties.values())


def imputation(spec: JobSpec, model: Any) -> dict[str, float] | None:
    """What ``fedrisk predict`` fills blank cells with: the federation's mean of each column (the agreed
    standardisation's), when any bank trained with ``missing = "mean"``; ``None`` otherwise (blanks refused).

    Decided from the job spec, which every participant reads, so every participant's copy of the
    model file is the same (``simulate`` writes them all to one run directory)."""
    if not pooled_mean(spec):
        return None
    return dict(zip(model.feature_names, map(float, model.mean)))


def agree_classes(ctx: PartyContext, coding: list | None, prefix: str) -> list | None:
    """A bank's label coding agreed with the others (:mod:`~fedrisk.algorithms.horizontal.label_coding`), for
    the model file's ``classes``; a bank taken back mid-job (it missed the agreement) is sent the agreed one."""
    if ctx.extra.get("rejoin") is not None:
        return rejoined_coding(ctx.channel, COORDINATOR, prefix)
    return bank_coding(ctx.channel, COORDINATOR, coding, prefix)


def agree_schema(ctx: PartyContext, table: Any, prefix: str) -> list | None:
    """The label coding (as :func:`agree_classes`) and one column order for every bank: ``table`` (a loaded
    :class:`~fedrisk.data.loading.PartyTable`) is put in the agreed order when its file lists the same
    features in another order. Returns the agreed coding."""
    if ctx.extra.get("rejoin") is not None:
        classes, order = rejoined_agreement(ctx.channel, COORDINATOR, prefix, table.feature_names)
    else:
        classes, order = bank_agreement(ctx.channel, COORDINATOR, table.label_coding, table.feature_names, prefix)
    if order is not None and order != list(table.feature_names):
        ctx.log.info("this file lists the federation's features in another order; using the first bank's order")
        idx = [list(table.feature_names).index(f) for f in order]
        table.X = np.ascontiguousarray(table.X[:, idx])
        table.feature_names = order
    return classes


def run(ctx: PartyContext) -> None:
    spec = ctx.spec
    params = parse_params(Params, spec.task)
    params.warn_ignored(ctx.log)
    cfg = replace(params.solver_config(spec.federation.seed), pooled_mean=pooled_mean(spec))
    run_bank, run_coordinator = params.solver_roles()
    agg = solver_aggregation(params, make_aggregation(ctx, params))
    banks = list(spec.parties)
    privacy = privacy_plan(spec, params)
    dp = {} if privacy is None else {"privacy": privacy}
    if privacy is not None:
        ctx.log.info("privacy plan: noise multiplier %.4f for %d noisy sums; epsilon %.4f at delta %g",
                     privacy.noise_multiplier, privacy.mechanisms, privacy.epsilon, privacy.delta)
    categories = agreed_categories(ctx, params, banks, COORDINATOR)
    if ctx.name == COORDINATOR:
        # resume: only the coordinator holds training state (banks compute from the broadcast model);
        # a private run starts afresh (repeating rounds would spend the privacy budget again)
        step, state = ctx.checkpoints.start("train", [COORDINATOR]) if privacy is None else (0, None)
        if ctx.resume and privacy is not None:
            ctx.log.warning("resume: a job with [privacy] starts afresh (its noisy rounds would spend the budget again)")
        start = (step, state) if state is not None else None
        if start is not None:
            ctx.log.info("resuming after round %d", step)

        def on_round(r: int, rec: dict) -> None:
            ctx.progress.update(r, cfg.rounds, **progress_fields(rec))

        classes, order = coordinator_agreement(ctx.channel, banks, "hlr.", params.dropout_timeout)
        model = run_coordinator(ctx.channel, banks, cfg, agg, on_round=on_round, start=start,
                                checkpoint=ctx.checkpoints.saver("train"),
                                admit=rejoin_admit(rejoin_policy(ctx), ctx.channel, "hlr.", classes, order),
                                log=ctx.log.warning, **dp)
        if privacy is not None:
            ctx.log.info(privacy_line(privacy.summary()))
        if model.membership.get("dropped"):
            ctx.log.warning("finished without banks %s; contributors per round: %s", sorted(model.membership["dropped"]),
                            model.membership["contributors"])
        ctx.write_json("membership.json", model.membership)
        if model.constant_features:
            ctx.log.warning("constant features across the federation (weight stays 0): %s", model.constant_features)
        save_lr_model(ctx.out / "model.json", model, KIND, spec.job_id, categories=categories,
                      imputation=imputation(spec, model), classes=classes,
                      privacy=privacy.summary() if privacy is not None else None)
        return

    from fedrisk.data.loading import EVALUATION_SETTINGS, load_party_table

    p = spec.parties[ctx.name]
    cat = dict(categorical=list(categories), encoding=CATEGORY_ENCODING, categories=categories) if categories else {}
    table = load_party_table(spec.data_path(ctx.name), party=ctx.name, id_col=p.id, label_col=p.label,
                             features=p.features, exclude=p.exclude, missing=p.missing, fill_later=True,
                             **p.read_options(), **cat)
    ctx.log.info("loaded %d rows x %d features from %s", table.X.shape[0], table.X.shape[1], table.path)
    for note in table.notes:
        ctx.log.warning(note)
    classes = agree_schema(ctx, table, "hlr.")
    evaluator = ctx.name == spec.evaluation_holder() and spec.test_path() is not None
    test = test_w = None
    rounds: list[dict] = []
    if evaluator:
        # missing = "mean": the test file's blanks are kept here and filled with the federation's means once they
        # are agreed, as `fedrisk predict` fills new rows (this file's own means would score them differently)
        # (in its own dialect: [evaluation] sep / decimal / na_values, else the holder's)
        from fedrisk.runtime.evaluation import check_test_labels, register_test_weights, weight_keep

        test = load_party_table(spec.test_path(), party=ctx.name, id_col=p.id, label_col=p.label,
                                features=table.feature_names, missing="keep" if p.missing == "mean" else p.missing,
                                settings_at=EVALUATION_SETTINGS, keep=weight_keep(spec, ctx.name),
                                **spec.test_read_options(), **cat)
        for note in test.read_notes:
            ctx.log.warning("evaluation.test: %s", note)
        check_test_labels(ctx.name, test.path, test.y)
        test_w = register_test_weights(ctx, test)  # [evaluation] weight: local to this bank, never sent

    def test_matrix(model) -> Any:
        return np.where(np.isnan(test.X), np.asarray(model.mean)[None, :], test.X)

    def on_round(r: int, model) -> None:
        if test is not None and r > 1:
            from fedrisk.finance.metrics import auc, ks

            score = model.predict_proba(test_matrix(model))
            rec = {"round": r - 1, "test_auc": auc(test.y, score, test_w), "test_ks": ks(test.y, score, test_w)}
            if model.history and model.history[-1]["round"] == r - 1:
                rec["loss"] = model.history[-1]["loss"]
                if "contributors" in model.history[-1]:
                    rec["contributors"] = model.history[-1]["contributors"]
            rounds.append(rec)

    if privacy is not None:
        dp["n_banks"] = len(banks)
        ctx.log.info(privacy_line(privacy.summary()))
    model = run_bank(ctx.channel, COORDINATOR, table.X, table.y, table.feature_names, cfg, agg, on_round=on_round,
                     rejoining=ctx.extra.get("rejoin") is not None, **dp)
    from fedrisk.algorithms.horizontal.standardisation import fill_missing

    table.X = fill_missing(table.X, model.mean)  # the pooled means the model trained on (missing = "mean")
    save_lr_model(ctx.out / "model.json", model, KIND, spec.job_id, categories=categories, imputation=imputation(spec, model),
                  classes=classes, privacy=privacy.summary() if privacy is not None else None)
    if evaluator:
        from fedrisk.finance.reference import comparison, logistic_alone

        test.X = test_matrix(model)

        # the floor this bank can compute without anyone's help: its own rows alone (the others'
        # single-bank figures would need their rows or a test file they do not hold)
        p_te = model.predict_proba(test.X)
        last = next((h["contributors"] for h in reversed(model.history) if "contributors" in h), banks)
        extra = {"banks": banks, "train_rows_at_holder": len(table.y),
                 "contributors_last_round": last, "dropped_banks": sorted(set(banks) - set(last)),
                 "comparison": comparison(ctx.name, test.y, p_te,
                                          logistic_alone(table.X, table.y, test.X, test.y, l2=params.l2,
                                                         sample_weight=test_w), sample_weight=test_w),
                 "solver": params.solver}
        if privacy is not None:
            extra["privacy"] = privacy.summary()
        write_evaluation(ctx, table.ids, table.y, model.predict_proba(table.X), test.ids, test.y, p_te, rounds,
                         extra=extra)
        # the test applicants' reason codes (local: the bank holds the whole model), for the report's summary
        from fedrisk.model_files import load_model
        from fedrisk.runtime.predict import lr_predictions, write_predictions

        write_predictions(ctx.out / "scores" / "test_reasons.csv", test.ids,
                          lr_predictions(load_model(ctx.out / "model.json"), test.X, p_te))
