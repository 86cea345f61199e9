"""Score stability of a scored batch against the training scores, after ``fedrisk predict``.

Credit models are monitored batch by batch: the population stability index (PSI) of a new batch's
scores against the development sample's says whether the applicants still look like those the model
was built on (< 0.1 stable, 0.1-0.25 watch, > 0.25 shift; :func:`fedrisk.finance.metrics.psi_band`).
A model validator asks for it with every scoring run, so ``fedrisk predict`` prints it whenever the
model's run directory holds the training scores, ``scores/train.csv`` (written at the party that
evaluated the run: a horizontal job's evaluation holder, a vertical job's label holder). Both samples
are this party's own, so nothing crosses the wire; a model file without them (a saved notebook
model, a feature holder's part) gets no line.

The scores compared are default probabilities: ``score`` of LR and tree models, ``probability`` of
scorecards. Rows ``fedrisk predict`` could not score (``status`` other than ``scored``) are left out.

Scorecards are monitored feature by feature too: a scorecard's file keeps its training rows per bin
(the points table's ``n``; a vertical party's ``counts`` of its own features), so each party scoring
a batch logs the characteristic stability index (CSI, :func:`characteristic_note`) of its own features
that moved: in its own log (a vertical partner's feature names stay with it), the label holder's and a
horizontal scorer's in ``fedrisk predict``'s output.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["reference_scores", "batch_stability", "stability_line", "characteristic_note"]

#: the probability column of ``fedrisk predict``'s output, per kind of model
_PROBABILITY_COLUMNS = ("probability", "score")


def reference_scores(model_path: str | Path) -> Path | None:
    """``scores/train.csv`` of the run directory a model file (or the directory itself) belongs to."""
    path = Path(model_path)
    folder = path if path.is_dir() else path.parent
    ref = folder / "scores" / "train.csv"
    return ref if ref.is_file() else None


def _probabilities(frame: pd.DataFrame) -> np.ndarray | None:
    col = next((c for c in _PROBABILITY_COLUMNS if c in frame.columns), None)
    if col is None:
        return None
    if "status" in frame.columns:
        frame = frame[frame["status"] == "scored"]
    values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)
    return values[np.isfinite(values)]


def batch_stability(model_path: str | Path, scores_csv: str | Path) -> dict[str, Any] | None:
    """PSI of the scored batch ``scores_csv`` against the run's training scores, or ``None`` without them.

    Returns :func:`~fedrisk.finance.metrics.population_stability_index`'s dict (``psi``, ``band``, ``bins``,
    ``chance_psi``, ``small_sample`` ...) plus ``reference``: the training scores file compared with.
    """
    from fedrisk.finance.metrics import population_stability_index

    ref = reference_scores(model_path)
    if ref is None:
        return None
    train = _probabilities(pd.read_csv(ref))
    new = _probabilities(pd.read_csv(scores_csv))
    if train is None or new is None or len(train) == 0 or len(new) == 0:
        return None
    return {**population_stability_index(train, new), "reference": str(ref)}


def stability_line(st: dict[str, Any]) -> str:
    """One line for the person scoring: the PSI, its reading, the two sample sizes and, when the batch is too
    small for the band to mean anything, that sentence instead of a verdict."""
    line = (f"score stability of this batch against the training scores ({st['reference']}): PSI {st['psi']:.3f}, "
            f"{st['band']} ({st['n_actual']:,} scored rows against {st['n_expected']:,} training rows; "
            "< 0.1 stable, 0.1-0.25 watch, > 0.25 shift)")
    return f"{line}; {st['small_sample']}" if st.get("small_sample") else line


def characteristic_note(bins: dict[str, Any], counts: dict[str, Any], X: pd.DataFrame, party: str) -> str | None:
    """One line naming the features whose batch rows moved between the model's bins (CSI of 0.1 or more), or
    ``None``.

    ``bins``: feature -> :class:`~fedrisk.finance.binning.FeatureBins`; ``counts``: feature -> training rows per
    bin (missing bin last, as ``FeatureBins.assign`` numbers it); ``X``: the batch. A feature is named only when its
    CSI is above what a batch this size reaches by chance (``chance_csi``), so a handful of rows does not read as a
    shift; a column blank in every row is left to its own warning (``blank_columns_note``). Feature names, CSI
    values and the row count only.
    """
    from fedrisk.finance.binning import is_missing
    from fedrisk.finance.metrics import characteristic_stability

    moved = []
    for f, train in counts.items():
        if f not in bins or f not in X.columns or len(X) == 0 or bool(is_missing(X[f]).all()):
            continue
        train = np.asarray(train, dtype=float)
        new = np.bincount(bins[f].assign(X[f]), minlength=len(train))[: len(train)]
        if train.sum() <= 0 or new.sum() <= 0:
            continue
        st = characteristic_stability(train, new)
        if st["band"] != "stable" and st["csi"] > 2 * st["chance_csi"]:
            moved.append((f, st))
    if not moved:
        return None
    moved.sort(key=lambda t: -t[1]["csi"])
    shown = ", ".join(f"{f!r} CSI {st['csi']:.2f} ({st['band']})" for f, st in moved[:10])
    more = f" and {len(moved) - 10} more" if len(moved) > 10 else ""
    return (f"{party}: characteristic stability of this batch ({len(X):,} rows) against the training rows: {shown}{more} "
            "(the shares of rows per bin moved: < 0.1 stable, 0.1-0.25 watch, > 0.25 shift; check the data feed or "
            "the population before relying on these scores)")
