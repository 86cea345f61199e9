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
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["reference_scores", "batch_stability", "stability_line"]

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
