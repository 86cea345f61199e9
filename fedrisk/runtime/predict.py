"""``fedrisk predict``: score new rows with a trained model.

Horizontal models are held whole by every bank, so scoring is local: no message leaves. Vertical
models are split across parties; their files name the job, and scoring runs the federated
inference protocol (each feature holder contributes only its partial score, only the label
holder sees the result).

Output columns
--------------
* logistic regression: ``id, score, reason_1..k, contribution_1..k, status`` (score = default
  probability; ``contribution_i`` is the log-odds the column added against the federation's
  average applicant, one-hot text columns summed per column; for a vertical LR the partners'
  columns are one aggregated ``partner features (<parties>)`` reason, see ``vertical_lr.infer_table``);
* tree models (``horizontal.gbdt``, SecureBoost): ``id, score, reason_1..k, contribution_1..k,
  status`` — ``contribution_i`` is the log-odds the reason added (exact TreeSHAP; for SecureBoost
  a partner's features are one aggregated reason, see ``secureboost_reasons``);
* scorecards (horizontal and vertical): ``id, points, probability, reason_1..k,
  points_lost_1..k, status`` — one row per input row, in input order. ``reason_i`` reads
  ``feature = bin`` in the label holder's terms (a vertical partner's contribution is one
  aggregated ``partner features (<party>)`` reason unless it opted in to name its features);
  ``status`` is ``scored`` or says why a row has no score (e.g. its id is not at every feature
  holder), so no applicant silently disappears from the file.

Warnings about the batch (a feature column blank in every row, categories the model never saw, rows
not at every feature holder) are logged where they are found; :func:`batch_warnings` collects them
so ``fedrisk predict`` prints them in its output, whichever federation scored: a vertical feature
holder's blank column reaches the label holder through :mod:`~fedrisk.algorithms.vertical.blank_columns`.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from fedrisk.errors import ConfigError
from fedrisk.model_files import load_model, score_gbdt, score_lr

#: the loggers scoring reports batch warnings on (horizontal scoring; the vertical label holder's session)
BATCH_LOGGERS = ("fedrisk.predict", "fedrisk.inference")

__all__ = ["predict_file", "batch_warnings", "BATCH_LOGGERS", "write_predictions", "scorecard_predictions", "blank_columns_note", "warn_blank_columns", "gbdt_predictions", "lr_predictions",
           "run_model_file"]


def write_predictions(out: Path, ids: Sequence[Any], table, scored_rows: np.ndarray | None = None,
                      unscored: str = "not scored") -> None:
    """Write ``id`` + ``table``'s columns + ``status`` for every input row, in input order.

    Parameters
    ----------
    out : Path
        CSV to write.
    ids : sequence
        Ids of all input rows.
    table : pandas.DataFrame
        One row per scored input row (points, probability, reasons, ...).
    scored_rows : ndarray of int, optional
        Positions in ``ids`` of ``table``'s rows (default: all rows, in order).
    unscored : str
        ``status`` of input rows that have no score.
    """
    import pandas as pd

    ids = np.asarray(ids)
    rows = np.arange(len(ids)) if scored_rows is None else np.asarray(scored_rows, dtype=np.int64)
    if len(rows) != len(table):
        raise ValueError(f"{len(table)} scored rows for {len(rows)} positions")
    full = pd.DataFrame(index=np.arange(len(ids)), columns=list(table.columns), dtype=object)
    if len(rows):
        full.iloc[rows] = table.to_numpy(dtype=object)
    status = np.full(len(ids), unscored, dtype=object)
    status[rows] = "scored"
    for c in table.columns:  # keep numbers numeric where every scored value is
        if pd.api.types.is_numeric_dtype(table[c]):
            full[c] = pd.to_numeric(full[c])
    full.insert(0, "id", ids)
    full["status"] = status
    from fedrisk.runtime.context import replaced_when_done

    with replaced_when_done(out) as tmp:  # an interrupted predict never leaves half a scores file
        full.to_csv(tmp, index=False, float_format="%.8g")


def scorecard_predictions(card: dict[str, Any], X, n_reasons: int | None = None, who: str | None = None):
    """Points, probability and reason codes of every row of ``X`` under a saved (whole) scorecard. ``who``: the
    notebook method scoring (``Scorecard.explain``), for the unseen-category warning (see :func:`warn_unseen_bins`)."""
    import pandas as pd

    from fedrisk.finance.scorecard import Scorecard, reason_columns

    sc = Scorecard.from_dict(card)
    n = int(n_reasons or card.get("n_reasons") or 3)
    warn_unseen_bins(sc.bins_, X, who)
    warn_blank_columns(X, sc.features_, "predict")
    warn_characteristic_shift(card, sc.bins_, X, who)
    points = sc.score(X)
    return pd.DataFrame({"points": points, "probability": sc.probability(points),
                         **reason_columns(sc.reason_codes(X, n=n), n)})


def warn_characteristic_shift(card: dict[str, Any], bins, X, who: str | None = None) -> None:
    """Log the features whose batch rows moved between the scorecard's bins against its training rows (the
    points table's ``n``; see :func:`fedrisk.runtime.batch_stability.characteristic_note`)."""
    import logging

    from fedrisk.runtime.batch_stability import characteristic_note

    counts: dict[str, dict[int, int]] = {}
    for row in card.get("table") or ():
        if "n" in row:
            counts.setdefault(row["feature"], {})[int(row["bin"])] = int(row["n"])
    per_bin = {f: [c.get(i, 0) for i in range(max(c) + 1)] for f, c in counts.items() if c}
    note = characteristic_note(bins, per_bin, X, who or "predict")
    if note:
        logging.getLogger("fedrisk.predict").warning(note)


def warn_unseen_bins(bins, X, who: str | None = None) -> None:
    """Log how many rows hold categories the scorecard's bins never saw (scored as the ``"(other)"`` bin, or
    as the missing bin where there is none: reason ``feature = missing``), as vertical scorecards log at
    their owner. Counts only. ``who``: the notebook method scoring (``Scorecard.predict_proba``), which starts
    the line as the other estimators' notes do; ``None``: ``fedrisk predict``."""
    import logging

    from fedrisk.data.categorical import unseen_note
    from fedrisk.finance.binning import unseen_categories

    note = unseen_note(unseen_categories(bins, X), len(X), who or "predict",
                       scored_as="the '(other)' bin, or the missing bin where there is none", notebook=who is not None)
    if note:
        logging.getLogger("fedrisk.predict").warning(note)


def blank_columns_note(X, features: Sequence[str], party: str) -> str | None:
    """The warning for feature columns blank in every row of a batch of more than one row, or ``None``
    (:mod:`fedrisk.data.blank_batch`: a whole batch without a column is more likely a broken data feed
    than chance). Column names and a row count only, for the log of the party holding the column.
    """
    from fedrisk.data.blank_batch import blank_columns, blank_columns_line

    blank = blank_columns(X, features)
    return blank_columns_line(party, len(X), blank) if blank else None


def warn_blank_columns(X, features: Sequence[str], party: str, logger_name: str = "fedrisk.predict") -> str | None:
    """Log :func:`blank_columns_note` (a warning, at this party) and return it."""
    import logging

    note = blank_columns_note(X, features, party)
    if note:
        logging.getLogger(logger_name).warning(note)
    return note


def gbdt_predictions(model: dict[str, Any], X: np.ndarray, score: np.ndarray, n_reasons: int | None = None):
    """``score, reason_1..k, contribution_1..k`` of a whole tree model: exact TreeSHAP per feature,
    computed locally (the bank holds the whole model), reasons = largest pushes towards default."""
    from fedrisk.finance.tree_reasons import gbdt_contributions, reason_table

    names, _, contrib = gbdt_contributions(model, X)
    return reason_table(score, names, contrib, int(n_reasons or model.get("n_reasons") or 3))


def lr_contributions(model: dict[str, Any], X: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Each column's push on the default log-odds away from the training's average applicant.

    ``coef * (x - mean) / scale`` per model feature (for a linear model this is its exact SHAP value
    with the training means as the baseline), the dummies of a one-hot text column summed into that
    column, so a reason names a column (``housing``) as a scorecard's or a tree model's does.
    Returns the column names and an ``(n_rows, n_columns)`` array; the terms add up to the row's
    log-odds minus the intercept. ``model``: a whole horizontal LR or a vertical LR party's part
    (its own columns only).
    """
    mean, scale, coef = (np.asarray(model[k], dtype=np.float64) for k in ("mean", "scale", "coef"))
    z = np.where(scale > 0, (np.asarray(X, dtype=np.float64) - mean) / np.where(scale > 0, scale, 1.0), 0.0)
    per_feature = z * coef
    cats = model.get("categories") or {}
    column = [f.split("=", 1)[0] if "=" in f and f.split("=", 1)[0] in cats else f for f in model["features"]]
    names = list(dict.fromkeys(column))
    group = np.array([names.index(c) for c in column], dtype=np.int64)
    contrib = np.zeros((per_feature.shape[0], len(names)))
    np.add.at(contrib.T, group, per_feature.T)
    return names, contrib


def lr_predictions(model: dict[str, Any], X: np.ndarray, score: np.ndarray, n_reasons: int | None = None):
    """``score, reason_1..k, contribution_1..k`` of a logistic-regression model, computed locally.

    Contributions as :func:`lr_contributions` (against the federation's average applicant; they add up
    to the row's log-odds minus the average's); reasons = largest pushes towards default.
    """
    from fedrisk.finance.tree_reasons import reason_table

    names, contrib = lr_contributions(model, X)
    return reason_table(score, names, contrib, int(n_reasons or model.get("n_reasons") or 3))


#: the whole-model files a run directory may hold, in the order ``predict RUN_DIR`` looks for them
_RUN_MODELS = ("model.json", "scorecard.json")


def run_model_file(folder: Path) -> Path | None:
    """The main model file of a run directory (or a saved model folder), or ``None``.

    ``model.json``, else ``scorecard.json``, else the label holder's ``scorecard-<party>.json`` of a
    vertical scorecard run (it names the other parts), as ``fr.load(RUN_DIR)`` and ``fedrisk predict RUN_DIR``
    read a run.
    """
    for name in _RUN_MODELS:
        if (folder / name).is_file():
            return folder / name
    for p in sorted(folder.glob("scorecard-*.json")):
        if load_model(p).get("format") == "fedrisk.vertical.scorecard":
            return p
    return None


def _model_file(path: Path) -> Path:
    """``path``, or the model file of the run directory ``path`` (as ``fr.load(RUN_DIR)`` reads a run).

    A missing ``RUN/model.json`` beside a ``scorecard.json`` or a vertical scorecard's ``scorecard-<party>.json``
    (a scorecard run writes no model.json) is named, so the user is told which file to score with.
    """
    if path.is_dir():
        found = run_model_file(path)
        if found is None:
            raise ConfigError(f"{path} is a folder with no model file ({', '.join(_RUN_MODELS)} or the label holder's "
                              "scorecard-<party>.json); give the run directory of a finished job or its model file")
        return found
    if not path.exists() and path.parent.is_dir():
        beside = run_model_file(path.parent)
        if beside is not None:
            raise ConfigError(f"model file {path} does not exist; this run's model is {beside}")
    return path


def scoring_id_column(model_path: str | Path, id_col: str | None = None, model: dict | None = None) -> str:
    """The id column of a file scored with ``model_path``: ``--id`` if given, else the model's, else the run's."""
    if id_col:
        return id_col
    model_path = _model_file(Path(model_path))
    model = model if model is not None else load_model(model_path)
    return model.get("id") or _run_id_column(Path(model_path)) or "id"


def _run_id_column(model_path: Path) -> str | None:
    """The id column every party of the run beside ``model_path`` used (its ``job.toml``), if one.

    Horizontal model files do not name it (every bank may call it differently); a run directory's
    spec does, so ``fedrisk predict RUN/scorecard.json NEW.csv`` reads ids as training did.
    """
    import tomllib

    try:
        doc = tomllib.loads((model_path.parent / "job.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    parties = doc.get("parties")
    ids = {str(p.get("id", "id")) for p in parties.values() if isinstance(p, dict)} if isinstance(parties, dict) else set()
    return ids.pop() if len(ids) == 1 else None


@contextmanager
def batch_warnings() -> Iterator[list[str]]:
    """Collect the warnings scoring logs about the batch (:data:`BATCH_LOGGERS`, WARNING and above) into the
    yielded list, for the caller to show with its result.

    ``fedrisk predict`` prints them in its output: without this they reached stderr only through Python's
    last-resort handler, a line a scheduled job's log easily drops, and a vertical feature holder's only its
    own log. While collected they are not printed by that handler (handlers the caller configured still
    see them).
    """
    notes: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            notes.append(record.getMessage())

    keep = _Keep(logging.WARNING)
    loggers = [logging.getLogger(n) for n in BATCH_LOGGERS]
    for lg in loggers:
        lg.addHandler(keep)
    try:
        yield notes
    finally:
        for lg in loggers:
            lg.removeHandler(keep)


def _scoring_na_values(given: Sequence[str] | None, run_folder: Path) -> list[str]:
    """``--na-values`` when given, else the training job's (its spec copy in the run folder)."""
    from fedrisk.data.na_values import run_na_values

    return [str(v) for v in given] if given else run_na_values(run_folder)


def predict_file(model_path: str | Path, data: str | Path, out: str | Path, id_col: str | None = None, *,
                 session: str | None = None, spawn: bool = True, certs: str | Path | None = None,
                 sep: str | None = None, decimal: str = ".", na_values: Sequence[str] | None = None) -> int:
    """Score ``data`` with ``model_path`` and write the scores to ``out``; return the scored row count.

    ``id_col`` defaults to the id column the model was trained with (``"id"`` for older models).
    ``sep`` and ``decimal`` are the CSV dialect of ``data`` (horizontal models; ``None`` = ``","``).
    ``na_values``: cells of ``data`` that mean "no value" (horizontal models; default: every party's
    ``na_values`` in the run folder's ``job.toml``, as training read them).
    """
    from fedrisk.data.loading import load_party_table
    from fedrisk.runtime.inference import warn_unseen
    from fedrisk.runtime.context import make_dir

    model_path = _model_file(Path(model_path))
    model = load_model(model_path)
    make_dir(Path(out).parent, "--out folder")  # before scoring: a federated session is not run for nothing
    fmt = model["format"]
    id_col = scoring_id_column(model_path, id_col, model)
    cats = model.get("categories") or None
    # a horizontal model trained with text columns encodes new rows with the agreed levels
    cat = dict(categorical=list(cats), encoding=model.get("category_encoding"), categories=cats) if cats else {}
    dialect = {"sep": sep, "decimal": decimal, "na_values": _scoring_na_values(na_values, Path(model_path).parent)}
    if fmt == "fedrisk.lr":
        # a job in which a bank trained with missing = "mean" stored the federation's means to fill blanks with;
        # without them a blank cell has no score, and the fix is the user's
        fill = model.get("imputation") or None
        table = load_party_table(data, party="predict", id_col=id_col, label_col=None, features=model["features"],
                                 fill=fill, missing_advice="this model has no fill values for missing cells (no bank "
                                 "trained with missing = 'mean'): fill them or drop those rows before scoring",
                                 **dialect, **cat)
        warn_unseen(table, "predict", logging.getLogger("fedrisk.predict"))  # counts only, as scorecards do
        score = score_lr(model, table.X)
        write_predictions(Path(out), table.ids, lr_predictions(model, table.X, score))
        return len(score)
    if fmt == "fedrisk.gbdt":
        # trees learn where missing values go, so rows with empty cells are scored, not refused; a model trained
        # with missing = "mean" fills them with the federation's pooled means first, as training did
        table = load_party_table(data, party="predict", id_col=id_col, label_col=None, features=model["features"],
                                 missing="keep", fill=model.get("imputation") or None, **dialect, **cat)
        warn_unseen(table, "predict", logging.getLogger("fedrisk.predict"))  # counts only, as scorecards do
        score = score_gbdt(model, table.X)
        write_predictions(Path(out), table.ids, gbdt_predictions(model, table.X, score))
        return len(score)
    if fmt == "fedrisk.scorecard":
        from fedrisk.data.loading import load_party_frame

        # raw columns as at training: text categories and missing values have bins of their own, so a column
        # blank in every row (one applicant without that field) scores as its missing bin, as in a larger batch
        numeric = [f for f in model["features"] if model["bins"][f]["bins"]["kind"] == "numeric"]
        frame = load_party_frame(data, party="predict", id_col=id_col, features=model["features"], require_label=False,
                                 allow_empty=True, numeric=numeric, **dialect)
        write_predictions(Path(out), frame.ids, scorecard_predictions(model, frame.X))
        return frame.n_rows
    if fmt.startswith("fedrisk.vertical"):
        from fedrisk.runtime.inference import predict_vertical

        return predict_vertical(Path(model_path), model, Path(data), Path(out), id_col=id_col, session=session,
                                spawn=spawn, certs=certs)
    raise ConfigError(f"model file {model_path} has format {fmt!r}, which this version cannot score")
