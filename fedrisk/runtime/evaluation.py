"""Writing a run's evaluation: scores, ``metrics.json``, and the figures a risk team reads first.

Called by whichever participant holds the test rows and the final scores (a horizontal bank, the
vertical label holder). Everything here is local to that participant: no message is sent.

Sample weights (``[evaluation] weight = "COLUMN"``): a stratified or down-sampled development sample
(every default, one good in ten) is evaluated with sampling weights, and validators weight by exposure.
The column is read by the party that evaluates -- a vertical job's label holder from its own data file
(weights for its training and test rows), a horizontal job's evaluation holder from the
``evaluation.test`` file (test rows only: its training file is a bank's share of the federation's
schema, where an extra column would be a feature) -- kept out of the features like
``evaluation.test_column``, checked at load (:func:`register_weights`), and used here only: it never
leaves that party. ``metrics.json`` then holds weighted figures and says so in each block's
``weighted`` entry (column, source file); ``scores/*.csv`` get a ``weight`` column.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from fedrisk.runtime.context import PartyContext

#: a headline AUC at or above this gets a leakage warning (fraud models may reach it honestly; the log says why)
LEAKAGE_AUC = 0.98

__all__ = ["write_evaluation", "write_scores", "run_header", "stability_labels", "check_test_labels",
           "weight_keep", "check_weights", "register_weights", "register_test_weights", "weights_for"]

#: ``ctx.extra`` key of the evaluation weights a party registered (:func:`register_weights`)
WEIGHTS_KEY = "evaluation_weights"


def weight_keep(spec: Any, party: str) -> tuple[str, ...]:
    """``(evaluation.weight,)`` when ``party`` reads a horizontal job's ``evaluation.test`` file, else ``()``: the
    ``keep`` columns of that file's loader (a vertical label holder's come from ``vertical_roles.split_keep``)."""
    col = spec.evaluation.weight
    return (col,) if col and party == spec.evaluation_holder() else ()


def check_weights(party: str, path: Any, column: str, raw: Any, setting: str = "evaluation.weight") -> np.ndarray:
    """A weight column's values as floats, or one line naming the party, file and column (counts, no values).

    ``setting``: what named the column (``evaluation.weight``, or ``fedrisk predict --weight``)."""
    import pandas as pd

    from fedrisk.errors import DataError

    where = f"party {party!r}, file {str(path)!r}: {setting} column {column!r}"
    raw = pd.Series(np.asarray(raw, dtype=object).ravel())
    blank = raw.isna()
    w = pd.to_numeric(raw.where(~raw.map(lambda v: isinstance(v, bool))), errors="coerce").to_numpy(dtype=float)
    text = np.isnan(w) & ~blank.to_numpy()
    n = len(w)
    if text.any():
        raise DataError(f"{where} holds {int(text.sum())} of {n} values that are not numbers; give every row a "
                        "non-negative number (its sampling weight or exposure)")
    if blank.any():
        raise DataError(f"{where} is blank in {int(blank.sum())} of {n} rows; give every row a weight (0 leaves a "
                        "row out of the evaluation)")
    if np.isinf(w).any():
        raise DataError(f"{where} is infinite in {int(np.isinf(w).sum())} of {n} rows; give every row a finite weight")
    if (w < 0).any():
        raise DataError(f"{where} is negative in {int((w < 0).sum())} of {n} rows; weights count rows (a weight w is "
                        "w copies of the row): use 0 or more")
    if n and not (w > 0).any():
        raise DataError(f"{where} is 0 in all {n} rows; at least one row needs a positive weight")
    return w


def register_weights(ctx: PartyContext, ids: Sequence[str], raw: Any, path: Any,
                     splits: Sequence[str] = ("train", "test")) -> np.ndarray:
    """Check the ``evaluation.weight`` values of rows ``ids`` and keep them for :func:`write_evaluation`.

    Called where the evaluating party loads the column: the label holder with its aligned rows (``splits``
    train and test), a horizontal evaluation holder with its test file (test only). Stored in ``ctx.extra``,
    looked up by id (:func:`weights_for`); returns the checked weights.
    """
    from pathlib import Path

    col = ctx.spec.evaluation.weight
    w = check_weights(ctx.name, path, col, raw)
    # the file's name only: metrics.json names the column's file, not where this party keeps it
    ctx.extra[WEIGHTS_KEY] = {"column": col, "source": Path(str(path)).name, "ids": np.asarray(ids), "w": w,
                              "splits": tuple(splits)}
    return w


def register_test_weights(ctx: PartyContext, table: Any) -> np.ndarray | None:
    """A horizontal evaluation holder's ``evaluation.test`` weights: checked and registered (test rows only), and the
    test rows must keep goods and bads of positive weight -- refused before training, as :func:`check_test_labels`.
    ``None`` without ``evaluation.weight``."""
    from fedrisk.errors import DataError

    col = ctx.spec.evaluation.weight
    if not col or not getattr(table, "extra", None) or col not in table.extra:
        return None
    w = register_weights(ctx, table.ids, table.extra[col], table.path, splits=("test",))
    y = getattr(table, "y", None)
    if y is not None:
        for cls, name in ((1, "default"), (0, "non-default")):
            if not (w[np.asarray(y) == cls] > 0).any():
                raise DataError(f"party {ctx.name!r}, file {str(table.path)!r}: every {name} row has weight 0 in "
                                f"evaluation.weight {col!r}, so the weighted AUC and KS cannot be computed; give those "
                                "rows positive weights")
    return w


def weights_for(ctx: PartyContext, split: str, ids: Sequence[str] | None) -> np.ndarray | None:
    """The registered weights of rows ``ids`` of ``split`` (``"train"`` / ``"test"``), or ``None`` if unweighted."""
    reg = getattr(ctx, "extra", {}).get(WEIGHTS_KEY)
    if reg is None or ids is None or split not in reg["splits"]:
        return None
    ids = np.asarray(ids)
    if ids.shape == reg["ids"].shape and np.array_equal(ids, reg["ids"]):
        return reg["w"]
    import pandas as pd

    pos = pd.Index(reg["ids"]).get_indexer(ids)
    if (pos < 0).any():  # a programming error: the rows evaluated are rows this party registered
        raise RuntimeError(f"{int((pos < 0).sum())} {split} rows have no registered evaluation weight")
    return reg["w"][pos]


def _weight_note(ctx: PartyContext, block: dict[str, Any], split: str) -> None:
    """Name the column and file a weighted block was weighted by (``block["weighted"]``), or say why a block of a
    weighted run is not weighted (a horizontal holder's training rows: the column is in its test file only)."""
    reg = getattr(ctx, "extra", {}).get(WEIGHTS_KEY)
    if reg is None:
        return
    if isinstance(block.get("weighted"), dict):
        block["weighted"].update({"column": reg["column"], "source": reg["source"], "party": ctx.name})
    elif split == "train" and "train" not in reg["splits"]:
        block["unweighted"] = (f"evaluation.weight {reg['column']!r} is read from the evaluation.test file only; "
                               f"{ctx.name}'s own training rows are evaluated unweighted")


def check_test_labels(party: str, path: Any, y: np.ndarray | None) -> None:
    """Refuse, before training, a test file whose labels hold one class: its AUC and KS do not exist,
    and finding out after the model is trained wastes the whole federation's run."""
    from fedrisk.errors import DataError

    if y is None:
        return
    y = np.asarray(y)
    bads = int(np.sum(y == 1))
    if bads == 0 or bads == y.size:
        raise DataError(f"party {party!r}, file {str(path)!r}: the test rows hold only "
                        f"{'non-defaults' if bads == 0 else 'defaults'} ({y.size} rows); AUC and KS need both: "
                        "use a larger or stratified holdout (evaluation.test)")


def write_scores(path, ids: Sequence[str], y: np.ndarray | None, score: np.ndarray,
                 status: Sequence[str] | None = None, id_name: str = "id", weight: np.ndarray | None = None) -> None:
    """Write ``id[,y],score[,weight][,status]`` atomically (temp file + rename): never half a scores file.

    ``status`` says per row whether it was scored (``"scored"``) or why not; unscored rows have
    an empty score. ``weight``: the rows' ``evaluation.weight`` (the report and ``fedrisk predict``'s
    stability line weight by it).
    """
    import os
    from pathlib import Path

    import pandas as pd  # late: the coordinator never writes scores and need not pay for pandas

    from fedrisk.runtime.context import make_dir

    path = Path(path)
    make_dir(path.parent, "folder")
    cols: dict[str, Any] = {id_name: np.asarray(ids)}
    if y is not None:
        cols["y"] = np.asarray(y, dtype=int)
    cols["score"] = np.asarray(score, dtype=float)
    if weight is not None:
        # in full (an exposure of 12,345,678.91 keeps its cents): the report recomputes weighted figures from it
        cols["weight"] = np.array([format(float(v), ".17g") for v in np.asarray(weight, dtype=float)], dtype=object)
    if status is not None:
        cols["status"] = np.asarray(status, dtype=object)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pd.DataFrame(cols).to_csv(tmp, index=False, float_format="%.8g")
    tmp.replace(path)


def _evaluate_own_rows(ctx: PartyContext, y: np.ndarray, p: np.ndarray, w: np.ndarray | None = None) -> dict[str, Any]:
    """The ``train`` block: the evaluation holder's own training rows, which in a horizontal job
    are one bank's. A small bank may hold no default at all; the federation's model is fine, so
    the block says why it has no AUC instead of failing a finished run. ``w``: their evaluation
    weights (rows of weight 0 count as absent, here too)."""
    from fedrisk.finance.metrics import evaluate

    y = np.asarray(y)
    if w is not None:
        if (w > 0).any() and 0 < int(np.sum(y[w > 0] == 1)) < int(np.sum(w > 0)):
            return evaluate(y, p, sample_weight=w)
        y = y[w > 0]
    n, bads = int(y.size), int(np.sum(y == 1))
    if bads > 0.6 * n:
        # defaults are the minority of any credit book (a development sample balanced 50/50 by design stays under
        # the 60 %): a positive naming the non-default value flips every label, and the inverted model's AUC
        # looks as good as the right one's
        ctx.log.warning("%d %% of the training rows are defaults (label 1 under this party's positive setting); if "
                        "positive names the value meaning no default, every label is flipped and the model scores the "
                        "chance of not defaulting: set positive to the value meaning default", round(100 * bads / n))
    if 0 < bads < n:
        return evaluate(y, p)
    note = (f"{ctx.name}'s {n} training rows{' of positive weight' if w is not None else ''} hold only "
            f"{'defaults' if bads else 'non-defaults'}: no AUC/KS on them (the test block evaluates the model)")
    ctx.log.warning("%s", note)
    return {"n": n, "positives": bads, "bad_rate": bads / n if n else 0.0, "note": note}


def run_header(ctx: PartyContext) -> dict[str, Any]:
    """What identifies a run in ``metrics.json`` and in the report: run id, seed, fedrisk version."""
    from fedrisk import __version__

    return {"run_id": getattr(ctx, "run_id", "") or None, "seed": ctx.spec.federation.seed, "fedrisk_version": __version__}


def stability_labels(ctx: PartyContext, n_train: int, test_source: str) -> dict[str, str]:
    """Say what the PSI compares: whose training rows (expected) against which test rows (actual).

    The evaluation holder sees only its own training rows; in a horizontal job they are one bank's
    segment, not the federation's population, so a PSI against a market-wide test file measures
    that segment's difference, not drift. The caveat says so in ``metrics.json`` and the report.
    """
    me = ctx.name
    if ctx.spec.task["kind"].startswith("vertical"):  # every party's columns, the same aligned rows
        return {"expected_label": "train", "actual_label": "test",
                "expected": f"the aligned training rows ({n_train:,})", "actual": test_source}
    out = {"expected_label": f"{me} train", "actual_label": "test",
           "expected": f"{me}'s own training rows ({n_train:,})", "actual": test_source}
    banks = [p for p in ctx.spec.parties if ctx.spec.parties[p].label]
    if ctx.spec.task["kind"].startswith("horizontal") and len(banks) > 1:
        out["caveat"] = (f"{me}'s training rows are one bank's customers, not the federation's {len(banks)} banks; "
                         "if the banks serve different segments this PSI measures that difference, not drift over time.")
    return out


def write_evaluation(ctx: PartyContext, train_ids, train_y, train_p, test_ids, test_y, test_p,
                     rounds: list[dict], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``scores/train.csv``, ``scores/test.csv`` and ``metrics.json``; return the metrics."""
    from fedrisk.finance.metrics import evaluate, population_stability_index

    # [evaluation] weight: the rows' weights as this party registered them (None: unweighted, as before)
    train_w, test_w = weights_for(ctx, "train", train_ids), weights_for(ctx, "test", test_ids)
    write_scores(ctx.out / "scores" / "train.csv", train_ids, train_y, train_p, weight=train_w)
    metrics: dict[str, Any] = {
        "task": ctx.spec.task["kind"],
        "job": ctx.spec.job_id,
        "written_by": ctx.name,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **run_header(ctx),
        "train": _evaluate_own_rows(ctx, train_y, train_p, train_w),
    }
    _weight_note(ctx, metrics["train"], "train")
    if test_y is not None:
        write_scores(ctx.out / "scores" / "test.csv", test_ids, test_y, test_p, weight=test_w)
        metrics["test"] = evaluate(test_y, test_p, sample_weight=test_w)
        _weight_note(ctx, metrics["test"], "test")
        metrics["stability"] = population_stability_index(np.asarray(train_p), np.asarray(test_p),
                                                          expected_weight=train_w, actual_weight=test_w)
        _weight_note(ctx, metrics["stability"], "stability")
        # a vertical job says which rule chose its test rows (test_rule, test_fraction or test_column)
        rule = (extra or {}).get("split") or "evaluation.test_rule"
        src = "the evaluation.test file" if ctx.spec.test_path() is not None else f"the test rows ({rule})"
        metrics["stability"].update(stability_labels(ctx, len(train_p), f"{src} ({len(test_p):,})"))
    metrics["rounds"] = rounds
    metrics.update(extra or {})
    ctx.write_json("metrics.json", metrics)
    t = metrics.get("test", metrics["train"])
    wt = t.get("weighted") or {}
    ctx.log.info("evaluation: AUC %.4f, KS %.4f (%s%s)", t["auc"], t["ks"], "test" if "test" in metrics else "train",
                 f"; weighted by column {wt['column']!r}, {wt['rows']:,} rows of positive weight" if wt.get("column") else "")
    if t.get("small_sample"):
        ctx.log.warning("evaluation (%s rows): %s", "test" if "test" in metrics else "train", t["small_sample"])
    if t.get("auc", 0.0) >= LEAKAGE_AUC:
        # a default model this good almost always has a feature written after the outcome (a collections flag, a
        # write-off date) at some party; in a vertical job the label holder cannot see the partners' columns
        ctx.log.warning("evaluation: AUC %.4f (%s rows) is rarely reached by a credit default model without a feature "
                        "recorded after the outcome (leakage); check each party's strongest features (vertical.woe / "
                        "horizontal.woe IV above 0.5 reads 'suspicious') before using the model",
                        t["auc"], "test" if "test" in metrics else "train")
    return metrics
