"""Task ``horizontal.woe``: banks with the same schema agree bins and compute global WOE/IV.

Participants: every ``[parties.*]`` is a bank with labels; ``[coordinator]`` holds no data. The
protocol is :mod:`fedrisk.algorithms.horizontal.woe`: bin edges are agreed from securely summed
histograms (no row leaves a bank), good/bad counts per bin are securely summed, and the
coordinator computes the global WOE, IV, pooled WOE correlation and the feature selection
(IV threshold, then correlation). Secure aggregation is on unless ``security.secure_aggregation
= false``.

Text columns: as in ``horizontal.lr``/``horizontal.gbdt`` the vocabulary is declared in the spec
(``[task] categories = { purpose = [...] }``, ``min_category_count``; see
:mod:`fedrisk.tasks.horizontal_categories`) and only secure counts per declared category cross; a text
column without one is refused at its bank before anything is sent. ``category_pvalue``: a column with
more categories than ``max_bins`` whose categories' bad rates do not differ (chi-square) gets one bin.

Outputs in the run directory:

* ``metrics.json`` (coordinator): ``{"task", "job", "iv": {"federation": [rows]}, "selection",
  "banks", "binning"}``; a row is ``{"feature", "iv", "bins", "kind", "iv_p_value", "iv_noise_95", "iv_null",
  "selected", "reason"}`` (``iv_noise_95``: the IV a pure-noise column exceeds 5 % of the time; ``iv_null``
  ``"permutation"``: from the labels permuted over the pooled prebin counts and the binning re-run,
  :mod:`fedrisk.finance.iv_noise`, seeded by ``[federation] seed``; the same figures as single-party binning of
  the pooled rows), the shape :mod:`fedrisk.finance.report` renders as the IV table; ``iv_noise_note`` (also
  logged) names selected features whose IV does not beat noise;
* ``woe/<bank>.json`` (each bank): the global bins and WOE table of every feature (pooled counts
  per bin), the global selection, and this bank's own IV on the global bins and its own selection
  (``local``) — which no other participant sees.
"""
from __future__ import annotations

import time
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fedrisk.errors import DataError
from fedrisk.finance.binning import BinningConfig
from fedrisk.finance.woe import DEFAULT_SMOOTHING, FeatureWoe
from fedrisk.runtime.context import PartyContext
from fedrisk.runtime.spec import COORDINATOR, JobSpec
from fedrisk.runtime.tasks import parse_params
from fedrisk.tasks.horizontal_categories import CategoryCountParams, CategoryParams
from fedrisk.tasks.horizontal_lr import DropoutParams, validate_horizontal

__all__ = ["KIND", "TAG_PREFIXES", "Params", "BinningParams", "HistogramParams", "HorizontalCategoryParams",
           "CategoryBinningParams",
           "validate_spec", "driver", "run", "iv_rows", "woe_document", "load_frame", "encoder_noise",
           "pooled_bads", "iv_noise_check"]

KIND = "horizontal.woe"
TAG_PREFIXES = ("hwoe.",)


class BinningParams(BaseModel):
    """Binning, WOE and selection settings shared by the WOE and scorecard tasks.

    ``max_corr = 1.0`` turns the correlation filter off (no correlation exceeds 1).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    method: Literal["monotonic", "quantile"] = "monotonic"
    max_bins: int = Field(6, ge=1, le=100, description=(
        "most bins per feature (missing bin excluded); a categorical column with at most this many categories "
        "is not tested at category_pvalue"))
    n_prebins: int = Field(20, ge=2, le=1000)
    min_bin_frac: float = Field(0.05, ge=0, lt=0.5)
    smoothing: float = Field(DEFAULT_SMOOTHING, ge=0, description=(
        "added to both counts of a non-empty bin that lacks goods or bads, so its WOE stays finite"))
    iv_threshold: float = Field(0.02, ge=0, description="features whose IV is below this are not selected")
    max_corr: float = Field(0.7, gt=0, le=1, description="|corr| of WOE values above which the weaker feature goes")
    categorical: list[str] = Field(default_factory=list, description="columns forced categorical")

    def binning(self) -> BinningConfig:
        # category settings: those of the tasks that declare them (CategoryBinningParams), else the defaults
        extra = {k: getattr(self, k) for k in ("min_category_count", "category_pvalue") if hasattr(self, k)}
        return BinningConfig(self.method, self.max_bins, self.n_prebins, self.min_bin_frac, **extra,
                             smoothing=self.smoothing)

    def corr_or_none(self) -> float | None:
        return None if self.max_corr >= 1.0 else self.max_corr


class HistogramParams(BaseModel):
    """Resolution of the federated bin-edge search (``horizontal.woe`` and ``horizontal.scorecard``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    grid_cells: int = Field(256, ge=8, le=65536, description="first histogram round's resolution")
    sub_cells: int = Field(256, ge=8, le=65536, description="second histogram round's resolution")


class CategoryBinningParams(CategoryCountParams):
    """How a categorical column is binned, as single-party :class:`~fedrisk.finance.woe.WoeEncoder` does
    (:func:`~fedrisk.finance.binning.group_categories`): categories under ``min_category_count`` rows pooled,
    then the chi-square gate. Every WOE and scorecard task, horizontal and vertical, takes these two."""

    category_pvalue: float = Field(0.01, gt=0, le=1, description=(
        "a categorical column with more categories (after pooling) than max_bins whose categories' bad rates "
        "do not differ at this significance (chi-square; on sparse tables a Monte Carlo p-value of the same "
        "statistic) gets one bin and IV 0, so a many-level code with no relation to the label is not fitted "
        "level by level; columns with at most max_bins categories are not tested; 1.0 turns the test off"))


class HorizontalCategoryParams(CategoryParams, CategoryBinningParams):
    """Text columns of ``horizontal.woe`` / ``horizontal.scorecard``: the vocabulary and minimum count of
    ``horizontal.lr``/``gbdt`` (:class:`~fedrisk.tasks.horizontal_categories.CategoryParams`), and the test
    a categorical column must pass to get more than one bin (:class:`CategoryBinningParams`)."""


class Params(DropoutParams, HistogramParams, BinningParams, HorizontalCategoryParams):
    """``[task]`` settings of ``horizontal.woe``."""



def validate_spec(spec: JobSpec, where: str) -> None:
    parse_params(Params, spec.task, where)
    validate_horizontal(spec, where, KIND)


def driver(spec: JobSpec) -> str:
    return COORDINATOR


def load_frame(spec: JobSpec, name: str, categorical: list[str], path=None, features=None, label: bool = True,
               forbid_label: str | None = None, keep=(), allow_empty: bool = False, allow_no_features: bool = False,
               elsewhere: Sequence[str] | None = None, declare: str = "[task] categorical = [...]",
               test_file: bool = False):
    """This party's raw frame (text columns kept); ``categorical`` names must be columns of it, except those
    in ``elsewhere`` (a vertical job's ``[task] categorical``: another party may hold them).
    ``allow_empty``: keep columns blank in every row; ``declare``: where a category column is declared, for the
    refusal of an undeclared one (both: see :func:`~fedrisk.data.loading.load_party_frame`). ``test_file``:
    ``path`` is the ``evaluation.test`` file, read in the dialect of the ``[evaluation]`` table (else the holder's)."""
    from fedrisk.data.loading import EVALUATION_SETTINGS, PARTY_SETTINGS, load_party_frame

    p = spec.parties[name]
    options = spec.test_read_options() if test_file else p.read_options()
    frame = load_party_frame(path or spec.data_path(name), party=name, id_col=p.id,
                             label_col=p.label if label else None, features=features or p.features,
                             exclude=p.exclude if not features else (), forbid_label=forbid_label, keep=keep,
                             allow_empty=allow_empty, categorical=None if features or path else categorical,
                             allow_no_features=allow_no_features, declare=declare,
                             settings_at=EVALUATION_SETTINGS if test_file else PARTY_SETTINGS, **options)
    unknown = [c for c in categorical if c not in frame.feature_names and c not in (elsewhere or ())]
    if unknown and not features:
        where = "its categorical = [...]" if elsewhere is not None else "[task] categorical / categories"
        raise DataError(f"party {name!r}: {where} names {unknown}, which are not feature columns of "
                        f"{frame.path} (it has {frame.feature_names[:12]})")
    return frame


def iv_rows(iv: dict[str, float], selection: dict[str, Any], *, bins: dict[str, int] | None = None,
            kinds: dict[str, str] | None = None,
            noise: dict[str, dict[str, float]] | None = None) -> list[dict[str, Any]]:
    """Rows of ``metrics.json["iv"][party]``, by descending IV: feature, iv, bins, kind, selected, reason, and
    with ``noise`` (``{feature: FeatureWoe.significance()}``) ``iv_p_value``, ``iv_noise_95`` and ``iv_null``: how
    the IV compares with a pure-noise column's, and from which null
    (:meth:`~fedrisk.finance.woe.FeatureWoe.significance`)."""
    kept = set(selection.get("selected", []))
    dropped = selection.get("dropped", {})
    rows = []
    for f, v in sorted(iv.items(), key=lambda t: -t[1]):
        row: dict[str, Any] = {"feature": f, "iv": float(v)}
        if bins is not None:
            row["bins"] = int(bins[f])
        if kinds is not None:
            row["kind"] = kinds[f]
        if noise is not None and f in noise:
            row.update(noise[f])
        row["selected"] = f in kept
        row["reason"] = "selected" if f in kept else dropped.get(f, "not selected")
        rows.append(row)
    return rows


def encoder_noise(fitted: Any) -> dict[str, dict[str, float]]:
    """``{feature: {"iv_p_value", "iv_noise_95", "iv_null"}}`` of a fitted :class:`~fedrisk.finance.woe.WoeEncoder`
    or a federated WOE result (anything with ``woe_`` or ``woe``: ``{feature: FeatureWoe}``), for :func:`iv_rows`:
    the permutation null where the prebin counts are known (the coordinator's result, an encoder from ``fit`` or
    given ``nulls``), else the chi-square figure of the final bins (a bank's copy of the federated result)."""
    woe = getattr(fitted, "woe_", None) or getattr(fitted, "woe", None) or {}
    return {f: w.significance() for f, w in woe.items()}


def pooled_bads(res: Any) -> int:
    """The federation's count of defaults, from a federated WOE result's pooled counts (every bank received them
    with the WOE tables)."""
    return int(next(iter(res.woe.values())).bads.sum()) if res.woe else 0


def iv_noise_check(log: Any, iv: dict[str, list[dict[str, Any]]], y_or_bads: Any) -> dict[str, str]:
    """The warning on selected features whose IV does not beat noise (:func:`~fedrisk.finance.woe.noise_note`):
    logged here (the label holder's / coordinator's own log) and returned as ``{"iv_noise_note": line}`` for
    ``metrics.json`` (the report shows it in its notes); ``{}`` when every selected feature beats noise.
    ``y_or_bads``: the labels (1 = default) or the count of defaults; names features and that count only."""
    from fedrisk.finance.woe import noise_note

    n_bads = int(np.sum(y_or_bads)) if np.ndim(y_or_bads) else int(y_or_bads)
    note = noise_note([r for rows in iv.values() for r in rows], n_bads)
    if note is None:
        return {}
    log.warning(note)
    return {"iv_noise_note": note}


def woe_document(ctx: PartyContext, woe: dict[str, FeatureWoe], selection: dict[str, Any], **extra: Any) -> dict:
    """``woe/<party>.json``: bins and per-bin WOE table of this party's features."""
    return {"task": ctx.spec.task["kind"], "job": ctx.spec.job_id, "party": ctx.name,
            "features": {f: {"kind": w.bins.kind, "iv": w.iv, "bins": w.bins.to_dict(), "table": w.table()}
                         for f, w in woe.items()},
            "selection": selection, **extra}


def run_woe(ctx: PartyContext, params: Any, agg) -> tuple[Any, Any]:
    """Both roles of federated binning; return (HorizontalWoeResult, this bank's frame or None).

    ``params``: :class:`BinningParams` and :class:`HorizontalCategoryParams` (the vocabulary of text
    columns: no category value leaves a bank unless the job spec lists it)."""
    from fedrisk.algorithms.horizontal.woe import horizontal_woe_coordinator, horizontal_woe_party

    spec = ctx.spec
    banks = list(spec.parties)
    if ctx.name == COORDINATOR:
        res = horizontal_woe_coordinator(ctx.channel, banks, categories=params.categories, aggregation=agg,
                                         config=params.binning(),
                                         smoothing=params.smoothing, iv_threshold=params.iv_threshold,
                                         max_corr=params.corr_or_none(), grid_cells=params.grid_cells,
                                         sub_cells=params.sub_cells, noise_seed=spec.federation.seed)
        return res, None
    # a bank that does not collect a field its partners have keeps the column blank: those rows get the missing bin
    # a column with a vocabulary is declared categorical (a cohort written "2020-01" is not a date column then)
    from fedrisk.data.loading import HORIZONTAL_CATEGORIES

    declared = [*params.categorical, *[c for c in params.categories if c not in params.categorical]]
    frame = load_frame(spec, ctx.name, declared, allow_empty=True, declare=HORIZONTAL_CATEGORIES)
    blank = [c for c in frame.feature_names if frame.X[c].isna().all()]
    if blank:
        ctx.log.warning("columns %s are blank in every row here: this bank's rows go to their missing bins", blank)
    ctx.log.info("loaded %d rows x %d features from %s", frame.n_rows, frame.n_features, frame.path)
    for note in frame.notes:
        ctx.log.warning(note)
    res = horizontal_woe_party(ctx.channel, COORDINATOR, frame.X, frame.y, categorical=params.categorical,
                               categories=params.categories, aggregation=agg, smoothing=params.smoothing)
    for c, k in res.local["undeclared"].items():
        ctx.log.warning("column %r: %d rows hold categories [task] categories does not list; they are binned as "
                        "'(other)' (the values stay here)", c, k)
    ctx.write_json(f"woe/{ctx.name}.json", woe_document(ctx, res.woe, res.selection, local=res.local))
    return res, frame


def run(ctx: PartyContext) -> None:
    from fedrisk.tasks.horizontal_lr import make_aggregation

    params = parse_params(Params, ctx.spec.task)
    agg = make_aggregation(ctx, params)
    t0 = time.perf_counter()
    res, _ = run_woe(ctx, params, agg)
    if ctx.name != COORDINATOR:
        return
    ctx.progress.update(1, 1, stage="woe", features=len(res.iv), selected=len(res.selection["selected"]))
    iv = {"federation": iv_rows(res.iv, res.selection, bins={f: w.bins.n_bins for f, w in res.woe.items()},
                                kinds={f: w.bins.kind for f, w in res.woe.items()}, noise=encoder_noise(res))}
    ctx.write_json("metrics.json", {
        "task": KIND, "job": ctx.spec.job_id, "written_by": ctx.name,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "iv": iv, **iv_noise_check(ctx.log, iv, pooled_bads(res)),
        "selection": res.selection, "banks": list(ctx.spec.parties),
        "binning": params.model_dump(), "secure_aggregation": ctx.spec.security.secure_aggregation,
        "seconds": round(time.perf_counter() - t0, 3),
    })
    ctx.log.info("WOE/IV of %d features; %d selected", len(res.iv), len(res.selection["selected"]))
