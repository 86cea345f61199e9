"""Task ``vertical.woe``: IV of every party's features, the label never leaving the label holder.

Participants: exactly one ``[parties.*]`` has ``label = "..."`` (the label holder, which drives
and writes ``metrics.json``); the others are feature holders. No coordinator.

Steps, at every party:

1. load its file (text columns kept; a feature holder must not carry the label column); with
   ``[task] categorical`` set, each feature holder tells the label holder which of those (public)
   names it holds, one bit a name, and waits for its go-ahead: a name no party holds stops the job
   here, in one line, before anything is matched or encrypted (:func:`refuse_unheld_categorical`);
2. ECDH-PSI alignment (:mod:`fedrisk.algorithms.vertical.alignment`); rows outside the
   intersection are ignored;
3. with an ``[evaluation]`` rule set (``test_fraction``, ``test_rule`` or ``test_column``; see
   :func:`~fedrisk.tasks.vertical_roles.choose_test_rows`), keep the training rows only;
4. label holder: bins and WOE/IV of its own features locally, selection among them;
   feature holders: :mod:`fedrisk.algorithms.vertical.woe` — the label holder sends Paillier-encrypted
   labels, each feature holder returns re-randomised encrypted per-prebin label sums, the label
   holder decrypts counts, merges bins and computes WOE/IV; a feature holder gets back its IV
   (``reveal = "iv"``, default), its merged bins (``"bins"``) or also the WOE per bin (``"woe"``),
   and reports its own selection (IV threshold, then correlation among its own features).

What each party learns is that of the two protocols (see their docstrings): the label holder
learns, per feature of a feature holder, rows and bads per (numbered) prebin — not edges, not
categories, not which customer is in which bin; a feature holder learns what ``reveal`` says.
Correlation is filtered within each party only: cross-party correlation would need the other
party's rows.

Outputs: ``metrics.json`` (label holder) with ``"iv": {party: [{"feature", "iv", "bins",
"kind"?, "iv_p_value", "iv_noise_95", "iv_null", "selected", "reason"}]}`` (the noise figures from the labels
permuted over each feature's prebins and its binning re-run, partners' features included:
:mod:`fedrisk.finance.iv_noise`) and ``"intersection"``; ``woe/<party>.json`` at each party
with its own features only — the label holder's full bin tables, a feature holder's IV, selection
and, when revealed, its bins and WOE.
"""
from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fedrisk.errors import DataError, ProtocolError
from fedrisk.algorithms.vertical.woe import ReleaseRule
from fedrisk.runtime.abort_reason import private
from fedrisk.runtime.context import PartyContext
from fedrisk.runtime.spec import JobSpec
from fedrisk.runtime.tasks import parse_params
from fedrisk.tasks.horizontal_woe import (BinningParams, CategoryBinningParams, encoder_noise, iv_noise_check, iv_rows,
                                          load_frame, woe_document)
from fedrisk.tasks.vertical_roles import (  # noqa: F401 (hooks)
    aligned_kept, driver, refuse_one_class, roles, split_keep, choose_test_rows, validate_vertical)

__all__ = ["KIND", "TAG_PREFIXES", "Params", "ReleaseParams", "LabelKeyParams", "validate_spec", "driver", "run", "roles", "aligned_frames",
           "party_categorical", "refuse_unheld_categorical", "holder_woe_document"]

KIND = "vertical.woe"
TAG_PREFIXES = ("vcat.", "psi.", "vwoe.")
#: a party's own ``categorical = [...]`` in its ``[parties.NAME]`` table (as vertical LR and SecureBoost
#: take it) is honoured, next to ``[task] categorical`` (see :func:`party_categorical`)
PARTY_CATEGORICAL = True


class ReleaseParams(BaseModel):
    """What a feature holder may be told about its bins: every released bin covers enough customers.

    A bin (its group, its WOE) needs at least ``min(min_bin_rows, ceil(min_bin_share * rows))``
    rows and ``min_bin_class`` goods and bads; rarer categories and smaller prebins are pooled
    before anything is encrypted (see :mod:`fedrisk.algorithms.vertical.woe`). Lowering these lets a
    feature holder with a near-unique column read labels off its bins.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_bin_rows: int = Field(50, ge=1, description="rows a released bin needs (or min_bin_share of the rows if fewer)")
    min_bin_share: float = Field(0.05, ge=0, lt=0.5, description="share of rows that also suffices for a released bin")
    min_bin_class: int = Field(5, ge=0, description="goods and bads each released bin needs")
    max_category_share: float = Field(0.5, gt=0, le=1, description="distinct/rows above which a text column is flagged")

    def release(self) -> ReleaseRule:
        return ReleaseRule(self.min_bin_rows, self.min_bin_share, self.min_bin_class, self.max_category_share)


class LabelKeyParams(BaseModel):
    """The label holder's additively homomorphic key for encrypted labels (``vertical.woe`` and
    ``vertical.scorecard``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    scheme: Literal["paillier", "ou"] = Field(
        "paillier", description="encryption of the labels: 'paillier' or 'ou' (Okamoto-Uchiyama, faster)")
    key_bits: Literal[2048, 3072] = Field(2048, description="modulus bits of the label holder's key")


class Params(LabelKeyParams, ReleaseParams, CategoryBinningParams, BinningParams):
    """``[task]`` settings of ``vertical.woe`` (categorical columns: :class:`CategoryBinningParams`, applied by the
    label holder to the pooled prebins' counts, its own columns' and each feature holder's alike)."""

    reveal: Literal["iv", "bins", "woe"] = Field("iv", description="what feature holders get back about their bins")


def validate_spec(spec: JobSpec, where: str) -> None:
    parse_params(Params, spec.task, where)
    validate_vertical(spec, where, KIND)


def party_categorical(spec: JobSpec, name: str, categorical: list[str]) -> list[str]:
    """The columns party ``name`` bins as categories: ``[task] categorical`` plus its own ``categorical = [...]``.

    Each party of a vertical job holds different columns, so a ``[task] categorical`` name may be
    another party's column (it is then not this party's concern); the party's own list names its
    own columns, checked against its file, as in vertical LR and SecureBoost.
    """
    return list(dict.fromkeys([*categorical, *spec.parties[name].categorical]))


def refuse_unheld_categorical(ctx: PartyContext, categorical: list[str], own: list[str]) -> None:
    """Stop the job, before any row is matched or encrypted, if a ``[task] categorical`` name is held by no party.

    Each party skips the ``[task] categorical`` names it does not hold (another party may), so a misspelt
    name would otherwise be ignored everywhere. The list is in the shared spec, so its names are public
    among the parties; each feature holder tells the label holder only which of them it holds (one bit a
    name, tag ``vcat.held``; no other column name), the label holder adds its own and either refuses in
    one line naming the column and the setting, or lets every feature holder go on (``vcat.go``). A
    feature holder waits for that answer, so nothing of PSI or the WOE stage starts before the check
    passes (``tests/tasks/test_vertical_categorical_early.py``). No list, no messages.
    """
    names = list(dict.fromkeys(categorical))
    if not names:
        return
    lh, hosts = roles(ctx.spec)
    have = set(own)
    mine = [c in have for c in names]
    if ctx.name != lh:
        ctx.channel.send(lh, "vcat.held", mine, kind="plaintext-by-design")
        if ctx.channel.recv(lh, "vcat.go") is not True:
            raise ProtocolError(f"party {ctx.name!r}: the label holder {lh!r} answered the task.categorical check "
                                "(vcat.go) with something other than go-ahead; stopping")
        return
    held = mine
    for h in hosts:
        bits = ctx.channel.recv(h, "vcat.held")
        if not (isinstance(bits, list) and len(bits) == len(names) and all(isinstance(b, bool) for b in bits)):
            raise ProtocolError(f"party {ctx.name!r}: party {h!r} sent a malformed answer (vcat.held) to which of "
                                f"the {len(names)} task.categorical names it holds; refused")
        held = [a or b for a, b in zip(held, bits)]
    unheld = [c for c, k in zip(names, held) if not k]
    if unheld:
        import difflib

        close = [m for c in unheld for m in difflib.get_close_matches(c, list(own), n=1)]
        hint = f" (the label holder has {close[0]!r})" if len(close) == 1 else (
            f" (the label holder has {close})" if close else "")
        it = "it" if len(unheld) == 1 else "them"

        def line(hint: str) -> str:
            return (f"party {lh!r} (label holder): task.categorical names {unheld}, which no party holds as a "
                    f"feature column; correct the spelling{hint} or remove {it} (checked against its own columns "
                    f"and the {len(hosts)} feature holder(s)' answers, before any row was matched or encrypted)")
        # the spelling hint comes from the label holder's own (private) columns: its log only. Partners
        # get the declared (public) names and the setting, never whether a similar private column exists.
        raise private(DataError(line(hint)), line(""))
    for h in hosts:
        ctx.channel.send(h, "vcat.go", True, kind="control")


def aligned_frames(ctx: PartyContext, categorical: list[str], default_split: bool = False):
    """Load this party's frame and PSI-align it; return (ids, X, y or None, is_test mask or None, alignment,
    label coding: the label holder's ``[non-default, default]`` or None, for its model file's ``classes``,
    the name of the rule that chose the test rows, for the report).

    ``categorical``: the ``[task] categorical`` names; those this party does not hold are another party's."""
    from fedrisk.runtime.psi_checkpoint import aligned_rows
    from fedrisk.crypto.workers import warm_up

    spec = ctx.spec
    lh, hosts = roles(spec)
    warm_up()  # PSI's workers start while the file loads
    frame = load_frame(spec, ctx.name, party_categorical(spec, ctx.name, categorical), label=ctx.name == lh,
                       elsewhere=categorical,
                       forbid_label=spec.parties[lh].label if ctx.name != lh else None, keep=split_keep(spec, ctx.name),
                       allow_no_features=ctx.name == lh)  # a label holder may bring the labels only
    ctx.log.info("loaded %d rows x %d features from %s", frame.n_rows, frame.n_features, frame.path)
    for note in frame.notes:
        ctx.log.warning(note)
    refuse_unheld_categorical(ctx, categorical, list(frame.feature_names))  # before PSI and WOE
    al = aligned_rows(ctx, frame.ids)  # PSI, or its checkpoint under --resume
    idx = al.indices
    X = frame.X.iloc[idx].reset_index(drop=True)
    y = frame.y[idx] if frame.y is not None else None
    ids = frame.ids[idx]
    test, rule = choose_test_rows(ctx, ids, aligned_kept(ctx, frame.extra, idx, ids, frame.path),
                                  default=default_split, labels=y if default_split else None)
    if test is not None:
        ctx.log.info("test rows: %d of %d aligned rows, by %s", int(test.sum()), len(ids), rule)
    return ids, X, y, test, al, frame.label_coding, rule


def local_woe(params: BinningParams, X, y, party: str, log=None, spec: JobSpec | None = None):
    """The label holder's own features: local bins, WOE/IV and selection (nothing is sent).

    Text columns are binned as at a feature holder (rare categories pooled under the release rule's
    row minimum), so a column's bins do not depend on which party holds it
    (:func:`~fedrisk.algorithms.vertical.woe.label_holder_bins`)."""
    from fedrisk.algorithms.vertical.woe import label_holder_bins
    from fedrisk.finance.woe import WoeEncoder, select_features

    warnings: list[str] = []
    release = params.release() if isinstance(params, ReleaseParams) else None
    cats = params.categorical if spec is None else party_categorical(spec, party, params.categorical)
    seed = spec.federation.seed if spec is not None else 0
    nulls: dict[str, Any] = {}  # the IV's permutation null of each column's binning (iv_p_value)
    bins = label_holder_bins(X, y, categorical=cats, config=params.binning(), release=release,
                             warnings=warnings, nulls=nulls, noise_seed=seed)
    for w in warnings if log is not None else ():
        log.warning(w)  # this party's own log (its own column names only)
    enc = WoeEncoder(params.method, params.max_bins, params.n_prebins, params.min_bin_frac,
                     categorical=cats, smoothing=params.smoothing, random_state=seed).fit_bins(X, y, bins, nulls=nulls)
    sel = select_features(enc.iv_, enc.transform(X), iv_threshold=params.iv_threshold,
                          max_corr=params.corr_or_none(), party=party)
    return enc, sel


def holder_iv_rows(res, party: str) -> list[dict[str, Any]]:
    """IV rows of a feature holder's features as the label holder knows them (no labels, no edges)."""
    return iv_rows(res.iv[party], res.selection.get(party, {}),
                   bins={f: len(t) - 1 for f, t in res.tables[party].items()}, noise=res.noise.get(party))


def holder_woe_document(ctx: PartyContext, res, X, **extra: Any) -> dict[str, Any]:
    """``woe/<feature holder>.json``: its IV, bins, bin labels, its own counts per bin and the WOE it was sent."""
    doc: dict[str, Any] = {"task": ctx.spec.task["kind"], "job": ctx.spec.job_id, "party": ctx.name, **extra,
                           "features": {f: {"iv": v} for f, v in res.iv.items()}, "selection": res.selection}
    for f, b in res.bins.items():
        doc["features"][f].update(kind=b.kind, bins=b.to_dict(), labels=b.labels(),
                                  n=np.bincount(b.assign(X[f]), minlength=b.n_bins + 1).tolist())
    for f, w in (res.woe or {}).items():
        doc["features"][f]["woe"] = np.asarray(w).tolist()
    return doc


def run(ctx: PartyContext) -> None:
    from fedrisk.algorithms.vertical.woe import unsplittable, vertical_woe_feature_holder, vertical_woe_label_holder

    spec = ctx.spec
    params = parse_params(Params, spec.task)
    lh, hosts = roles(spec)
    t0 = time.perf_counter()
    ids, X, y, test, al, _, _ = aligned_frames(ctx, params.categorical)
    if test is not None:
        if test.all():
            raise DataError(f"party {ctx.name!r}: every aligned row is a test row under the [evaluation] rule")
        X, y = X[~test].reset_index(drop=True), (y[~test] if y is not None else None)
    if ctx.name != lh:
        res = vertical_woe_feature_holder(ctx.channel, lh, X, categorical=party_categorical(spec, ctx.name, params.categorical),
                                          config=params.binning(),
                                          iv_threshold=params.iv_threshold, max_corr=params.corr_or_none(),
                                          min_key_bits=2048, release=params.release())
        for w in res.warnings:
            ctx.log.warning(w)
        ctx.write_json(f"woe/{ctx.name}.json", holder_woe_document(ctx, res, X, reveal=params.reveal))
        return
    refuse_one_class(lh, y, "the aligned rows", "WOE needs goods and bads")
    enc, sel = local_woe(params, X, y, lh, ctx.log, spec)
    ctx.write_json(f"woe/{lh}.json", woe_document(ctx, enc.woe_, sel))
    ctx.progress.update(1, 2, stage="woe", party=lh, features=len(enc.iv_))
    res = vertical_woe_label_holder(ctx.channel, hosts, y, config=params.binning(), smoothing=params.smoothing,
                                    reveal=params.reveal, scheme=params.scheme, key_bits=params.key_bits,
                                    release=params.release(), noise_seed=spec.federation.seed)
    ctx.progress.update(2, 2, stage="woe", parties=len(hosts) + 1)
    for w in res.warnings:  # (partners' features the release rule made one bin: this log only)
        ctx.log.warning(w)
    for h in hosts:
        few = unsplittable(lh, h, res.iv[h], y, params.release())
        if few:  # (the label holder's own log only: the counts are its labels')
            ctx.log.warning(f"{few}; train on rows with more defaults, or lower task.min_bin_class")
    iv = {lh: iv_rows(enc.iv_, sel, bins={f: w.bins.n_bins for f, w in enc.woe_.items()},
                      kinds={f: w.bins.kind for f, w in enc.woe_.items()}, noise=encoder_noise(enc))}
    for h in hosts:
        iv[h] = holder_iv_rows(res, h)
    ctx.write_json("metrics.json", {**iv_noise_check(ctx.log, iv, y),
        "task": KIND, "job": spec.job_id, "written_by": lh,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "iv": iv, "selection": {lh: sel, **res.selection}, "parties": [lh, *hosts], "label_holder": lh,
        "intersection": al.summary(), "rows": int(len(y)), "reveal": params.reveal,
        "binning": params.model_dump(), "seconds": round(time.perf_counter() - t0, 3),
    })
    ctx.log.info("IV of %d own and %d partner features", len(enc.iv_), sum(len(res.iv[h]) for h in hosts))
