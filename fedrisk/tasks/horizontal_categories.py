"""Task glue: text categorical columns in horizontal jobs (``horizontal.lr``, ``horizontal.gbdt``;
``horizontal.woe``/``horizontal.scorecard`` take the same settings and run the agreement inside their
protocol, :mod:`fedrisk.algorithms.horizontal.woe`).

The vocabulary is declared once in the job spec and the levels agreed by secure sums of counts
(:mod:`fedrisk.algorithms.horizontal.category_levels`)::

    [task]
    categories = { purpose = ["car (new)", "car (used)", "furniture/equipment", ...] }
    min_category_count = 20     # rarer categories (federation-wide) pool into "(other)"

A bank's ``categorical = [...]`` must name columns listed there; a text column a bank did not
declare but the spec lists is categorical too (with a warning in the bank's log); a text column
the spec does not list is refused with one line saying how to declare it. Logistic regression
one-hot encodes the agreed levels (reference: the first level), trees split on them natively.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fedrisk.errors import ConfigError, DataError
from fedrisk.runtime.context import PartyContext

__all__ = ["CategoryCountParams", "CategoryParams", "agreed_categories", "refuse_with_privacy"]

TAG = "hcat"


class CategoryCountParams(BaseModel):
    """The smallest category kept on its own (horizontal jobs, and ``vertical.woe``/``vertical.scorecard``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_category_count: int = Field(20, ge=1, description=(
        "categories with fewer rows pool into (other): rows federation-wide in a horizontal job, the aligned "
        "training rows in a vertical one"))


class CategoryParams(CategoryCountParams):
    """The ``[task]`` settings of categorical columns in a horizontal job."""

    categories: dict[str, list[str]] = Field(
        default_factory=dict, description="vocabulary of each text categorical column (public, the same at every bank)")


def refuse_with_privacy(params: Any, kind: str, where: str) -> None:
    """Refuse ``[task] categories`` in a job with ``[privacy]``: the level agreement's counts carry no
    noise, so they would sit outside the epsilon spent."""
    if getattr(params, "categories", None):
        raise ConfigError(f"{where}: {kind}: [task] categories cannot be combined with [privacy] yet; encode the "
                          f"categories as numbers before the job or drop the [privacy] table")


def _aggregation(ctx: PartyContext, params: Any):
    """A single-round aggregation of its own, so the step does not use up the training's session rounds."""
    from fedrisk.tasks.horizontal_lr import make_aggregation

    return make_aggregation(ctx, params, rounds=0)


def agreed_categories(ctx: PartyContext, params: Any, banks: list[str], coordinator: str) -> dict[str, dict] | None:
    """Run the level agreement at this participant and return the agreed encoders (``None`` without categories).

    Every participant calls this before training when ``[task] categories`` is set (all know it
    from the spec, so all take part or none does).
    """
    vocab = dict(params.categories)
    if not vocab:
        return None
    from fedrisk.algorithms.horizontal.category_levels import agree_levels_bank, agree_levels_coordinator

    agg = _aggregation(ctx, params)
    if ctx.name == coordinator:
        levels = agree_levels_coordinator(ctx.channel, banks, vocab, agg, params.min_category_count, tag=TAG)
        ctx.log.info("category levels agreed: %s", {c: len(v["kept"]) + int(v["other"]) + int(v["missing"])
                                                     for c, v in levels.items()})
        from fedrisk.algorithms.horizontal.category_levels import encoders_from_levels

        return encoders_from_levels(levels, vocab)  # for the coordinator's copy of the model file
    from fedrisk.data.loading import load_party_frame

    p = ctx.spec.parties[ctx.name]
    # allow_empty: a numeric column a bank does not collect is the missing-values policy's business (the
    # table load after this step fills, keeps or refuses it), not a reason to refuse the bank here
    frame = load_party_frame(ctx.spec.data_path(ctx.name), party=ctx.name, id_col=p.id, label_col=p.label,
                             features=p.features, exclude=p.exclude, allow_empty=True, **p.read_options())
    from fedrisk.data.loading import HORIZONTAL_CATEGORIES, declaring, numbers_in_text, text_dates, text_display_numbers

    missing_cols = [c for c in vocab if c not in frame.feature_names]
    if missing_cols:
        raise DataError(f"bank {ctx.name!r}: [task] categories lists {missing_cols}, which are not feature columns of "
                        f"its file {frame.path}")
    undeclared_cols = [c for c in p.categorical if c not in vocab]
    if undeclared_cols:
        raise DataError(f"bank {ctx.name!r}: categorical {undeclared_cols} has no vocabulary; list its categories in "
                        f"{declaring(HORIZONTAL_CATEGORIES, undeclared_cols[0])} (horizontal banks must agree on them)")
    import pandas as pd

    decimal = p.read_options().get("decimal", ".")
    # (numbers kept as text, and a column blank in every row, load as numbers: the table load after this step)
    text = [c for c in frame.feature_names if c not in vocab and not pd.api.types.is_numeric_dtype(frame.X[c])
            and numbers_in_text(frame.X[c], decimal) is None]
    refusal = text_display_numbers(frame.X, text, decimal, p.read_options().get("sep")) or text_dates(
        frame.X, text, HORIZONTAL_CATEGORIES)
    if refusal:
        raise DataError(f"bank {ctx.name!r}, file {str(frame.path)!r}: {refusal}")
    if text:
        raise DataError(f"bank {ctx.name!r}: text columns {text} are not numeric and have no vocabulary; list their "
                        f"categories in {declaring(HORIZONTAL_CATEGORIES, text[0])} or exclude them")
    blank = [c for c in vocab if frame.X[c].isna().all()]
    if blank:  # trains whatever the missing policy: a field a bank does not collect must keep the shared schema
        ctx.log.warning("category columns %s are blank in every row here: this bank's rows go to their missing "
                        "level", blank)
    inferred = [c for c in vocab if c not in p.categorical]
    if inferred and p.categorical:
        ctx.log.warning("columns %s are categorical because [task] categories lists them; add them to this bank's "
                        "categorical = [...] to silence this warning", inferred)
    encoders, undeclared = agree_levels_bank(ctx.channel, coordinator, frame.X, vocab, agg, tag=TAG)
    for c, k in undeclared.items():
        ctx.log.warning("column %r: %d rows hold categories [task] categories does not list; they are encoded as "
                        "'(other)' (the values stay here)", c, k)
    return encoders
