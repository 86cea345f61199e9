"""Who is who in a vertical job, shared by every vertical task kind, and which rows are test rows.

Exactly one party holds the label (the label holder drives the job and writes metrics); every
other party is a feature holder; there is no coordinator.

Test rows (:func:`choose_test_rows`) are chosen after PSI alignment, over the aligned rows, by one of the
``[evaluation]`` rules of :mod:`fedrisk.data.split`: ``test_rule`` (integer ids) and
``test_fraction`` (keyed hash of any id) are computed locally by every party from the ids alone;
``test_column`` is a 0/1 column only the label holder has, so the label holder sends it:

    label holder -> each feature holder : psi.split   uint8[n_aligned], 1 = test row   (plaintext-by-design)

What a feature holder learns from it: which aligned rows are test rows — what it computes itself
under the other two rules. It learns nothing about labels or the label holder's features.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fedrisk.errors import ConfigError, DataError, ProtocolError
# one label-error mechanism for every label holder (the full line stays local, partners read a summary)
from fedrisk.runtime.abort_reason import label_error, refuse_one_class
from fedrisk.runtime.spec import JobSpec

__all__ = ["validate_vertical", "driver", "roles", "model_file", "load_table", "inference_features", "split_keep",
           "fill_training_means", "label_error", "refuse_one_class",
           "choose_test_rows", "aligned_kept", "DEFAULT_TEST_RULE", "SPLIT_TAG"]

#: the split vertical tasks use without an [evaluation] rule when every aligned id is an integer
DEFAULT_TEST_RULE = "id % 5 == 0"
SPLIT_TAG = "psi.split"


def validate_vertical(spec: JobSpec, where: str, kind: str) -> None:
    """The role checks every vertical task makes, with one-line errors naming the fix."""
    holders = spec.label_holders()
    if len(holders) != 1:
        raise ConfigError(f"{where}: {kind} needs exactly one party with label = '...' (the label holder); "
                          f"found {len(holders)}: {holders}")
    if len(spec.parties) < 2:
        raise ConfigError(f"{where}: {kind} needs at least one feature holder besides the label holder")
    if spec.coordinator is not None:
        raise ConfigError(f"{where}: {kind} has no coordinator (the label holder drives); remove the [coordinator] table")
    if spec.evaluation.test is not None:
        raise ConfigError(f"{where}: vertical jobs choose test rows among the aligned rows; use evaluation.test_fraction "
                          "= 0.2 (any ids), test_rule = 'id % 5 == 0' (integer ids) or test_column = '...', not evaluation.test")


def driver(spec: JobSpec) -> str:
    """The label holder."""
    return spec.label_holders()[0]


def roles(spec: JobSpec) -> tuple[str, list[str]]:
    """(label holder, feature holders in spec order)."""
    lh = driver(spec)
    return lh, [p for p in spec.parties if p != lh]


def model_file(party: str, label_holder: str) -> str:
    return "model.json" if party == label_holder else f"model-{party}.json"


#: how each vertical task encodes text categories (see fedrisk.data.categorical)
CATEGORY_ENCODINGS = {"vertical.secureboost": "codes", "vertical.lr": "onehot"}


def load_table(spec: JobSpec, name: str, path=None, features=None, require_label: bool | None = None, fill=None,
               categories=None):
    """Load a party's numeric table with the vertical rules (a feature holder must not hold the label).

    ``fill``: at scoring, the training means a model stored (``"imputation"``) for ``missing = "mean"``.
    ``categories``: at scoring, the category encoders the party's model part stored; categorical
    columns are encoded as the job's task kind wants (:data:`CATEGORY_ENCODINGS`).
    ``features``: at scoring, the model part's columns -- possibly none: the label holder may bring
    labels only (every feature at its partners), which these task kinds handle.
    """
    from fedrisk.data.loading import load_party_table

    p = spec.parties[name]
    lh = driver(spec)
    forbid = spec.parties[lh].label if name != lh else None
    scoring = features is not None
    return load_party_table(path or spec.data_path(name), party=name, id_col=p.id,
                            label_col=p.label if name == lh else None, features=features if scoring else p.features,
                            exclude=p.exclude if not scoring else (), missing=p.missing, forbid_label=forbid,
                            require_label=require_label, keep=() if scoring else split_keep(spec, name),
                            fill=fill, categorical=p.categorical, encoding=CATEGORY_ENCODINGS.get(spec.task["kind"]),
                            categories=categories if categories is not None else ({} if scoring else None),
                            allow_no_features=name == lh, missing_advice=None if scoring else _missing_advice(spec, name),
                            # training under missing = "mean": blanks stay NaN until the aligned training rows are
                            # known (fill_training_means); the whole file's means would include test rows
                            fill_later=p.missing == "mean" and not scoring, **p.read_options())


def _missing_advice(spec: JobSpec, name: str) -> str:
    """The fix for blank cells under ``missing = "reject"`` in this task kind's terms (spec and notebook)."""
    policy = "keep" if spec.task["kind"] == "vertical.secureboost" else "mean"
    what = ("trees learn where blanks go; 'mean' fills with the column means of its aligned training rows" if policy == "keep"
            else "fills with the column means of its aligned training rows")
    return (f"fill them, or set missing = '{policy}' in [parties.{name}] of the job spec ({what}; in Python: "
            f"Federation(..., missing={{'{name}': '{policy}'}}))")


def fill_training_means(spec: JobSpec, name: str, X: np.ndarray, train: np.ndarray,
                        feature_names: Sequence[str]) -> tuple[np.ndarray, dict[str, float], str | None]:
    """Under ``missing = "mean"``: fill the blank cells of the aligned rows ``X`` with the means of this
    party's aligned *training* rows; return the filled matrix, every column's fill value (for the model
    file) and a note for this party's log (``None`` without blanks). Other policies: ``X`` unchanged.

    Why the training rows: the test rows must not shape the model (their feature values would reach
    training through the fill value, as a scaler fitted on all rows would), and rows outside the
    intersection are other customers. Scoring fills a blank with these same means, not the scoring
    batch's own, so a row scores the same whichever batch it arrives in -- also in a column that had no
    gap in training. Filling with the mean keeps the mean, so the training rows' column means after the
    fill are these values. Values stay at this party: they go into its own model file only.
    """
    if spec.parties[name].missing != "mean":
        return X, {}, None
    X = np.array(X, dtype=np.float64, copy=True)
    rows = X[np.asarray(train, dtype=bool)]
    seen = np.isfinite(rows)
    empty = [f for j, f in enumerate(feature_names) if not seen[:, j].any()]
    if empty:
        raise DataError(f"party {name!r}: feature column{'s' if len(empty) > 1 else ''} "
                        f"{', '.join(repr(f) for f in empty[:6])} {'have' if len(empty) > 1 else 'has'} no value in any "
                        "aligned training row, so there is no training mean to fill blanks with (missing = 'mean'); "
                        f"list {'them' if len(empty) > 1 else 'it'} in exclude of [parties.{name}] or fix the export")
    means = np.where(seen, rows, 0.0).sum(axis=0) / seen.sum(axis=0)
    gaps = ~np.isfinite(X)
    filled = [f"{feature_names[j]!r} ({int(gaps[:, j].sum())})" for j in np.flatnonzero(gaps.any(axis=0))]
    X[gaps] = np.broadcast_to(means, X.shape)[gaps]
    note = (f"filled {int(gaps.sum())} blank cells of the aligned rows with the training rows' column means "
            f"(missing = 'mean'), in {', '.join(filled[:6])}{', ...' if len(filled) > 6 else ''}") if filled else None
    return X, {f: float(means[j]) for j, f in enumerate(feature_names)}, note


def split_keep(spec: JobSpec, name: str) -> tuple[str, ...]:
    """Columns a party reads but never uses as features: the label holder's ``evaluation.test_column`` and
    ``evaluation.weight``."""
    if name != driver(spec):
        return ()
    return tuple(c for c in (spec.evaluation.test_column, spec.evaluation.weight) if c)


def aligned_kept(ctx: Any, extra: dict[str, np.ndarray] | None, idx: np.ndarray, ids: np.ndarray,
                 path: Any) -> np.ndarray | None:
    """The aligned rows' ``evaluation.test_column`` values (``None`` without one, or at a feature holder).

    At the label holder with an ``evaluation.weight``, that column's values of the aligned rows are checked and
    registered for the evaluation (:func:`fedrisk.runtime.evaluation.register_weights`): local, never sent.
    """
    ev = ctx.spec.evaluation
    if extra and ev.weight and ev.weight in extra:
        from fedrisk.runtime.evaluation import register_weights

        register_weights(ctx, ids, np.asarray(extra[ev.weight])[idx], path)
    return np.asarray(extra[ev.test_column])[idx] if extra and ev.test_column and ev.test_column in extra else None


def choose_test_rows(ctx: Any, ids: np.ndarray, column: np.ndarray | None = None, *,
              default: bool = True, labels: np.ndarray | None = None) -> tuple[np.ndarray | None, str]:
    """Mask of the aligned rows that are test rows, identical at every party, and the rule's name.

    Parameters
    ----------
    ctx : PartyContext
        This party (its spec, name and channel).
    ids : numpy.ndarray
        This party's ids of the aligned rows, in the common order.
    column : numpy.ndarray, optional
        At the label holder under ``test_column``: that column's values of the aligned rows.
    default : bool
        Without an ``[evaluation]`` rule: ``True`` picks ``id % 5 == 0`` for integer ids and
        ``test_fraction = 0.2`` otherwise; ``False`` returns ``(None, "none")`` (all rows train).
    labels : numpy.ndarray, optional
        At the label holder: the 0/1 labels of the aligned rows. Test rows of one class only are
        refused here, before training, with the fix -- not after the whole training, when AUC
        and KS of the test rows cannot be computed (rare bads and small samples hit this).
    """
    mask, rule = _choose_test_rows(ctx, ids, column, default)
    if labels is not None and mask is not None and mask.any():
        yt = np.asarray(labels)[mask]
        if yt.min() == yt.max():
            only = "bads (1)" if int(yt[0]) == 1 else "goods (0)"
            raise label_error(f"party {ctx.name!r}: all {int(mask.sum())} test rows ({rule}) are {only}, so their "
                              f"AUC and KS cannot be computed; choose test rows holding both classes: a larger "
                              f"evaluation.test_fraction, another federation.seed, or an evaluation.test_column")
        _check_test_weights(ctx, ids[mask], yt, rule)
    return mask, rule


def _check_test_weights(ctx: Any, ids: np.ndarray, yt: np.ndarray, rule: str) -> None:
    """With ``evaluation.weight``: the test rows need goods and bads of positive weight, checked before training."""
    from fedrisk.runtime.evaluation import weights_for

    w = weights_for(ctx, "test", ids)
    if w is None:
        return
    for cls, name in ((1, "bads (1)"), (0, "goods (0)")):
        if not (w[yt == cls] > 0).any():
            raise label_error(f"party {ctx.name!r}: every test row ({rule}) of the {name} has weight 0 in "
                              f"evaluation.weight {ctx.spec.evaluation.weight!r}, so the weighted AUC and KS cannot be "
                              "computed; give those rows positive weights or choose other test rows")


def _choose_test_rows(ctx: Any, ids: np.ndarray, column: np.ndarray | None, default: bool
                      ) -> tuple[np.ndarray | None, str]:
    from fedrisk.data.loading import id_test_mask
    from fedrisk.data.split import DEFAULT_FRACTION, all_integer_ids, column_test_mask, hashed_test_mask, split_key
    from fedrisk.runtime.spec import parse_test_rule

    spec, me = ctx.spec, ctx.name
    ev = spec.evaluation
    lh, hosts = roles(spec)
    if ev.test_column:
        if me == lh:
            if column is None:
                raise ConfigError(f"party {me!r}: evaluation.test_column {ev.test_column!r} was not loaded")
            mask = column_test_mask(column, ev.test_column, me)
            ctx.channel.broadcast(hosts, SPLIT_TAG, mask.astype(np.uint8), kind="plaintext-by-design")
        else:
            got = np.asarray(ctx.channel.recv(lh, SPLIT_TAG))
            if got.shape != (len(ids),) or not np.isin(got, (0, 1)).all():
                raise ProtocolError(f"{lh!r} sent a test-row mask of shape {got.shape} for {len(ids)} aligned rows")
            mask = got.astype(bool)
        return mask, f"test_column {ev.test_column!r}"
    fraction = ev.test_fraction
    rule = ev.test_rule
    if fraction is None and rule is None:
        if not default:
            return None, "none"
        if all_integer_ids(ids):
            rule = DEFAULT_TEST_RULE
        else:
            fraction = DEFAULT_FRACTION
    if rule is not None:
        return id_test_mask(ids, *parse_test_rule(rule), party=me), f"test_rule {rule!r}"
    key = split_key(spec.federation.name, spec.federation.seed)
    return hashed_test_mask(ids, fraction, key), f"test_fraction {fraction} (keyed hash of the id)"


def inference_features(role_model: dict) -> list[str]:
    """Inference hook: the columns a party loads from its scoring file (those its model part uses)."""
    return list(role_model["features"])
