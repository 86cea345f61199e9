"""Task ``horizontal.lr``: banks with the same schema train one logistic model by FedAvg.

Participants: every ``[parties.*]`` is a bank with labels; ``[coordinator]`` holds no data and
averages (securely by default). The evaluation holder — the bank named by
``evaluation.holder``, default the first — also reads the held-out ``evaluation.test`` file,
scores it with each round's global model, and writes ``metrics.json`` and ``scores/``.

Outputs in the run directory: ``model.json`` (every participant writes the same global model),
``metrics.json``, ``scores/{train,test}.csv`` (evaluation holder), ``checkpoints/coordinator.json``.
"""
from __future__ import annotations

import json

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fedrisk.algorithms.horizontal.aggregation import Aggregation, PlainAggregation
from fedrisk.algorithms.horizontal.fedavg_lr import FedAvgConfig, run_bank, run_coordinator
from fedrisk.errors import ConfigError
from fedrisk.model_files import save_lr_model
from fedrisk.runtime.context import PartyContext
from fedrisk.runtime.evaluation import write_evaluation
from fedrisk.runtime.spec import COORDINATOR, JobSpec
from fedrisk.runtime.tasks import parse_params

KIND = "horizontal.lr"
TAG_PREFIXES = ("hlr.", "secagg.")


class Params(BaseModel):
    """``[task]`` settings of ``horizontal.lr``; see :class:`FedAvgConfig` for their meaning."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rounds: int = Field(20, ge=1, le=10000)
    local_epochs: int = Field(1, ge=1, le=1000)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(0.1, gt=0)
    lr_decay: float = Field(1.0, gt=0, le=1)
    l2: float = Field(1e-4, ge=0)
    mu: float = Field(0.0, ge=0, description="FedProx proximal weight; 0 = plain FedAvg")
    tol: float = Field(1e-6, ge=0)
    dropout_timeout: float = Field(30.0, gt=0, description="seconds the coordinator waits for a bank's masked update")

    def config(self, seed: int) -> FedAvgConfig:
        return FedAvgConfig(**self.model_dump(exclude={"dropout_timeout"}), seed=seed)


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
    parse_params(Params, spec.task, where)
    validate_horizontal(spec, where, "horizontal.lr")


def driver(spec: JobSpec) -> str:
    return COORDINATOR


def make_aggregation(ctx: PartyContext, params: Params) -> Aggregation:
    """Secure aggregation unless the spec explicitly turns it off (``security.secure_aggregation = false``)."""
    if not ctx.spec.security.secure_aggregation:
        ctx.log.warning("secure aggregation is OFF: the coordinator sees every bank's individual update")
        return PlainAggregation()
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
    return SecureAggregation(signing_key_pem=signing_key, peer_certs_pem=peer_certs or None,
                             dropout_timeout=params.dropout_timeout, parties=list(ctx.spec.parties))


def run(ctx: PartyContext) -> None:
    spec = ctx.spec
    params = parse_params(Params, spec.task)
    cfg = params.config(spec.federation.seed)
    agg = make_aggregation(ctx, params)
    banks = list(spec.parties)
    if ctx.name == COORDINATOR:
        ckpt_path = ctx.out / "checkpoints" / "coordinator.json"
        start = None
        if ctx.resume and ckpt_path.exists():
            state = json.loads(ckpt_path.read_text())
            start = (int(state["round"]), np.asarray(state["w"]))
            ctx.log.info("resuming after round %d from %s", start[0], ckpt_path)

        def on_round(r: int, rec: dict) -> None:
            ctx.progress.update(r, cfg.rounds, loss=rec["loss"], change=rec["change"], banks=rec["banks"])

        def checkpoint(r: int, state: dict) -> None:
            ctx.write_json("checkpoints/coordinator.json", {"round": r, **state})

        model = run_coordinator(ctx.channel, banks, cfg, agg, on_round=on_round, start=start, checkpoint=checkpoint)
        if model.constant_features:
            ctx.log.warning("constant features across the federation (weight stays 0): %s", model.constant_features)
        save_lr_model(ctx.out / "model.json", model, KIND, spec.job_id)
        return

    from fedrisk.data.loading import load_party_table

    p = spec.parties[ctx.name]
    table = load_party_table(spec.data_path(ctx.name), party=ctx.name, id_col=p.id, label_col=p.label,
                             features=p.features, exclude=p.exclude, missing=p.missing, **p.read_options())
    ctx.log.info("loaded %d rows x %d features from %s", table.X.shape[0], table.X.shape[1], table.path)
    evaluator = ctx.name == spec.evaluation_holder() and spec.test_path() is not None
    test = None
    rounds: list[dict] = []
    if evaluator:
        test = load_party_table(spec.test_path(), party=ctx.name, id_col=p.id, label_col=p.label,
                                features=table.feature_names, missing=p.missing, **p.read_options())

    def on_round(r: int, model) -> None:
        if test is not None and r > 1:
            from fedrisk.finance.metrics import auc, ks

            score = model.predict_proba(test.X)
            rec = {"round": r - 1, "test_auc": auc(test.y, score), "test_ks": ks(test.y, score)}
            if model.history and model.history[-1]["round"] == r - 1:
                rec["loss"] = model.history[-1]["loss"]
            rounds.append(rec)

    model = run_bank(ctx.channel, COORDINATOR, table.X, table.y, table.feature_names, cfg, agg, on_round=on_round)
    save_lr_model(ctx.out / "model.json", model, KIND, spec.job_id)
    if evaluator:
        write_evaluation(ctx, table.ids, table.y, model.predict_proba(table.X), test.ids, test.y,
                         model.predict_proba(test.X), rounds, extra={"banks": banks, "train_rows_at_holder": len(table.y)})
