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

Weights: a run evaluated with ``[evaluation] weight`` keeps its training rows' weights in
``scores/train.csv`` (a down-sampled development sample stands for its population only weighted), and
the PSI's expected side uses them; ``fedrisk predict --weight COLUMN`` weights the batch's side by a
column of the scored file (read by the party scoring, never sent; :func:`batch_weights`). The line
says which sides are weighted.

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

__all__ = ["reference_scores", "batch_stability", "batch_weights", "stability_line", "characteristic_note"]

#: the probability column of ``fedrisk predict``'s output, per kind of model
_PROBABILITY_COLUMNS = ("probability", "score")


def reference_scores(model_path: str | Path) -> Path | None:
    """``scores/train.csv`` of the run directory a model file (or the directory itself) belongs to."""
    path = Path(model_path)
    folder = path if path.is_dir() else path.parent
    ref = folder / "scores" / "train.csv"
    return ref if ref.is_file() else None


def _probabilities(frame: pd.DataFrame, weights: np.ndarray | None = None, weight_column: bool = False
                   ) -> tuple[np.ndarray, np.ndarray | None] | tuple[None, None]:
    """The scored rows' probabilities and their weights: ``weights`` (one per row of ``frame``), or with
    ``weight_column`` the ``weight`` column a weighted run's ``scores/train.csv`` has."""
    col = next((c for c in _PROBABILITY_COLUMNS if c in frame.columns), None)
    if col is None:
        return None, None
    if weights is None and weight_column and "weight" in frame.columns:
        weights = pd.to_numeric(frame["weight"], errors="coerce").to_numpy(dtype=float)
    keep = (frame["status"] == "scored").to_numpy(copy=True) if "status" in frame.columns else np.ones(len(frame), dtype=bool)
    values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)
    keep &= np.isfinite(values)
    if weights is None:
        return values[keep], None
    return values[keep], np.asarray(weights, dtype=float)[keep]


def batch_weights(data: str | Path, column: str, scores_csv: str | Path, *, id_col: str, sep: str | None = None,
                  decimal: str = ".", na_values=()) -> np.ndarray:
    """``fedrisk predict --weight COLUMN``: that column of the scored file, one weight per row of ``scores_csv``.

    Read at the party scoring (its own file, never sent) like ``[evaluation] weight``, and checked the same way
    (a blank, text, negative or infinite weight: one line naming the file and column). Matched to the scores
    file's rows by position when the ids agree row for row (``fedrisk predict`` writes every input row in input
    order), else by id.
    """
    from fedrisk.data.loading import load_party_frame
    from fedrisk.errors import DataError
    from fedrisk.runtime.evaluation import check_weights

    frame = load_party_frame(data, party="predict", id_col=id_col, features=[], keep=(column,), require_label=False,
                             allow_no_features=True, allow_empty=True, sep=sep, decimal=decimal,
                             na_values=list(na_values or ()))
    w = check_weights("predict", frame.path, column, frame.extra[column], setting="--weight")
    scored_ids = pd.read_csv(scores_csv, dtype=str, usecols=[0]).iloc[:, 0].to_numpy()
    ids = np.asarray(frame.ids).astype(str)
    if ids.shape == scored_ids.shape and np.array_equal(ids, scored_ids):
        return w
    pos = pd.Index(ids).get_indexer(scored_ids) if pd.Index(ids).is_unique else None
    if pos is None or (pos < 0).any():
        raise DataError(f"file {str(data)!r}: the --weight column {column!r} cannot be matched to the scored rows by "
                        f"{id_col!r} (ids repeated or missing); give each row one id")
    return w[pos]


def batch_stability(model_path: str | Path, scores_csv: str | Path,
                    weights: np.ndarray | None = None) -> dict[str, Any] | None:
    """PSI of the scored batch ``scores_csv`` against the run's training scores, or ``None`` without them.

    Returns :func:`~fedrisk.finance.metrics.population_stability_index`'s dict (``psi``, ``band``, ``bins``,
    ``chance_psi``, ``small_sample`` ...) plus ``reference``: the training scores file compared with. The
    training side is weighted when ``scores/train.csv`` has the run's ``weight`` column; the batch side by
    ``weights`` (one per row of ``scores_csv``: :func:`batch_weights`).
    """
    from fedrisk.finance.metrics import population_stability_index

    ref = reference_scores(model_path)
    if ref is None:
        return None
    train, train_w = _probabilities(pd.read_csv(ref), weight_column=True)
    new, new_w = _probabilities(pd.read_csv(scores_csv), weights)
    if train is None or new is None or len(train) == 0 or len(new) == 0:
        return None
    if new_w is not None and not (new_w > 0).any():
        return None
    st = population_stability_index(train, new, expected_weight=train_w, actual_weight=new_w)
    return {**st, "reference": str(ref), "train_weighted": train_w is not None, "batch_weighted": new_w is not None,
            "train_rows": len(train), "batch_rows": len(new)}


def stability_line(st: dict[str, Any]) -> str:
    """One line for the person scoring: the PSI, its reading, the two sample sizes and, when the batch is too
    small for the band to mean anything, that sentence instead of a verdict."""
    batch = f"{int(st.get('batch_rows', st['n_actual'])):,} scored rows"
    if st.get("batch_weighted"):
        batch += f" (weighted by --weight: {st['n_actual']:,.1f})"
    train = f"{int(st.get('train_rows', st['n_expected'])):,} training rows"
    if st.get("train_weighted"):
        train += f" (weighted by the run's evaluation weight: {st['n_expected']:,.1f})"
    line = (f"score stability of this batch against the training scores ({st['reference']}): PSI {st['psi']:.3f}, "
            f"{st['band']} ({batch} against {train}; "
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
