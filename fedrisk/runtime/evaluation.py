"""Writing a run's evaluation: scores, ``metrics.json``, and the figures a risk team reads first.

Called by whichever participant holds the test rows and the final scores (a horizontal bank, the
vertical label holder). Everything here is local to that participant: no message is sent.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from fedrisk.runtime.context import PartyContext

#: a headline AUC at or above this gets a leakage warning (fraud models may reach it honestly; the log says why)
LEAKAGE_AUC = 0.98

__all__ = ["write_evaluation", "write_scores", "run_header", "stability_labels", "check_test_labels"]


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
                 status: Sequence[str] | None = None, id_name: str = "id") -> None:
    """Write ``id[,y],score[,status]`` atomically (temp file + rename): never half a scores file.

    ``status`` says per row whether it was scored (``"scored"``) or why not; unscored rows have
    an empty score.
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
    if status is not None:
        cols["status"] = np.asarray(status, dtype=object)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pd.DataFrame(cols).to_csv(tmp, index=False, float_format="%.8g")
    tmp.replace(path)


def _evaluate_own_rows(ctx: PartyContext, y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """The ``train`` block: the evaluation holder's own training rows, which in a horizontal job
    are one bank's. A small bank may hold no default at all; the federation's model is fine, so
    the block says why it has no AUC instead of failing a finished run."""
    from fedrisk.finance.metrics import evaluate

    y = np.asarray(y)
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
    note = (f"{ctx.name}'s {n} training rows hold only {'defaults' if bads else 'non-defaults'}: no AUC/KS "
            "on them (the test block evaluates the model)")
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

    write_scores(ctx.out / "scores" / "train.csv", train_ids, train_y, train_p)
    metrics: dict[str, Any] = {
        "task": ctx.spec.task["kind"],
        "job": ctx.spec.job_id,
        "written_by": ctx.name,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **run_header(ctx),
        "train": _evaluate_own_rows(ctx, train_y, train_p),
    }
    if test_y is not None:
        write_scores(ctx.out / "scores" / "test.csv", test_ids, test_y, test_p)
        metrics["test"] = evaluate(test_y, test_p)
        metrics["stability"] = population_stability_index(np.asarray(train_p), np.asarray(test_p))
        # a vertical job says which rule chose its test rows (test_rule, test_fraction or test_column)
        rule = (extra or {}).get("split") or "evaluation.test_rule"
        src = "the evaluation.test file" if ctx.spec.test_path() is not None else f"the test rows ({rule})"
        metrics["stability"].update(stability_labels(ctx, len(train_p), f"{src} ({len(test_p):,})"))
    metrics["rounds"] = rounds
    metrics.update(extra or {})
    ctx.write_json("metrics.json", metrics)
    t = metrics.get("test", metrics["train"])
    ctx.log.info("evaluation: AUC %.4f, KS %.4f (%s)", t["auc"], t["ks"], "test" if "test" in metrics else "train")
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
