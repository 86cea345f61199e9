"""Load one party's table from CSV or Parquet and refuse anything a protocol would choke on later.

Why this module is strict: in a federation a bad row is expensive. A NaN that reaches an encrypted
gradient poisons every party's model; a duplicate id silently breaks PSI alignment; a string label
``"bad"`` becomes a model that predicts nothing. None of those show up as a clear error once the
data is inside a protocol, and the operator who can fix them sits at one institution looking at
one file. So every check here runs before anything leaves the premises, and every failure is a
one-line :class:`~fedrisk.errors.DataError` that names the party, the file, the column and what to
do — never a pandas or numpy traceback.

Conventions
-----------
* Ids are kept as strings (``ids`` is an object array of ``str``): they are join keys, not numbers,
  and ``"00123"`` must not turn into ``123`` at one bank and stay ``"00123"`` at another. Numeric
  id columns in Parquet become the decimal string of the integer, and so does a text column whose
  every id is an integer written with a decimal part of zeros (``"123.0"``, a spreadsheet's export);
  a column mixing both forms stays as written (see :func:`_normalise_ids`).
* Rows with no value in any cell (``;;;``: a spreadsheet's empty rows) are left out, with a count in
  the table's notes (:func:`_without_blank_rows`).
* Features are float64, labels int8 0/1.
* The whole table is held in memory. Chunked reading for files larger than memory belongs to the
  kernels that need it (PSI, histograms) and is not done here.
"""
from __future__ import annotations

import csv
import itertools
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from fedrisk.errors import ConfigError, DataError
from fedrisk.data.na_values import declare_missing

__all__ = [
    "PartyTable",
    "PartyFrame",
    "load_party_table",
    "load_party_frame",
    "check_same_features",
    "numbers_in_text",
    "read_party_file",
    "text_display_numbers",
    "numbers_in_another_format",
    "id_test_mask",
    "MISSING_POLICIES",
    "label_coding",
    "PARTY_SETTINGS",
    "EVALUATION_SETTINGS",
]

#: accepted values of ``missing`` in :func:`load_party_table`: reject rows with missing values,
#: fill them with column means, or keep NaN for tasks that handle it (vertical.secureboost)
MISSING_POLICIES = ("reject", "mean", "keep")

_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_MAX_LISTED = 8  # how many column names / values an error message lists before "..."
#: where a file's read settings (``sep``, ``decimal``, ``na_values``) are set, for the advice of a refusal
#: (``settings_at`` of the loaders): a party's own files, and the evaluation holder's ``evaluation.test`` file,
#: whose dialect the ``[evaluation]`` table may set apart from the holder's (a held-out file from another system)
PARTY_SETTINGS = "for this party in the job spec"
EVALUATION_SETTINGS = "in the [evaluation] table of the job spec"


@dataclass
class PartyTable:
    """One party's validated data, ready for a protocol.

    Attributes
    ----------
    party : str
        Name of the party that owns the table (used in every error message downstream).
    path : Path
        File it was read from.
    ids : numpy.ndarray
        Object array of ``str``, one per row, unique and non-empty.
    X : numpy.ndarray
        ``float64`` array of shape ``(n, d)``, all finite.
    y : numpy.ndarray or None
        ``int8`` array of 0/1 of shape ``(n,)``, or ``None`` for a party without labels.
    feature_names : list of str
        Column names of ``X``, in file order unless ``features`` fixed the order.
    imputed : dict of str to float
        Columns whose missing values were filled under ``missing="mean"``, with the fill value.
        Empty under the default ``missing="reject"``. Kept so a report can show what was changed.
    """

    party: str
    path: Path
    ids: np.ndarray
    X: np.ndarray
    y: np.ndarray | None
    feature_names: list[str]
    imputed: dict[str, float] = field(default_factory=dict)
    #: raw values of the ``keep`` columns (e.g. a test-split column), never used as features
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    #: encoders of the categorical columns (:mod:`fedrisk.data.categorical`), JSON, for the model file
    categories: dict[str, dict] = field(default_factory=dict)
    #: per categorical column, how many values were never seen when its encoder was fitted
    unseen: dict[str, int] = field(default_factory=dict)
    #: warnings for the party's log (e.g. text columns treated as categorical without being declared)
    notes: list[str] = field(default_factory=list)
    #: ``[non-default, default]`` in the file's label coding (:func:`label_coding`); ``None`` for 0/1
    label_coding: list | None = None
    #: the notes (also in ``notes``) on what reading the file changed: blank rows left out, ids written as decimals
    #: read as integers; scoring logs these (its other notes are the scorer's own warnings)
    read_notes: list[str] = field(default_factory=list)

    @property
    def n_rows(self) -> int:
        """Number of rows (customers)."""
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        """Number of feature columns."""
        return int(self.X.shape[1])


def _listing(items: Iterable[object], limit: int = _MAX_LISTED) -> str:
    """Render up to ``limit`` items as a comma-separated list, for one-line messages."""
    items = list(items)
    shown = ", ".join(repr(i) for i in items[:limit])
    if len(items) > limit:
        shown += f", ... ({len(items) - limit} more)"
    return shown


def _one_line(text: object) -> str:
    """Collapse a library's (possibly multi-line) message into one line."""
    return " ".join(str(text).split())


class _Ctx:
    """Error factory that prefixes every message with the party and the file; ``settings_at``: where the advice
    of its refusals sends the user to set ``sep`` / ``decimal`` / ``na_values`` (:data:`PARTY_SETTINGS`)."""

    def __init__(self, party: str, path: Path, settings_at: str = PARTY_SETTINGS) -> None:
        self.party = party
        self.path = path
        self.settings_at = settings_at
        #: what reading the file changed, for the party's own log (counts only): blank rows left out, ids
        #: written as decimals read as integers
        self.notes: list[str] = []

    def error(self, message: str) -> DataError:
        return DataError(f"party {self.party!r}, file {str(self.path)!r}: {_one_line(message)}")

    def label_error(self, message: str) -> DataError:
        """:meth:`error` about the label column: its counts and values are the labels' own, so partners get
        the labels summary of :func:`~fedrisk.runtime.abort_reason.label_error` in the abort, not this line."""
        from fedrisk.runtime.abort_reason import label_error

        return label_error(str(self.error(message)))


def _file_kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(_CSV_SUFFIXES):
        return "csv"
    if name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    return None


def _csv_header(path: Path, sep: str = ",", skip: int = 0) -> list[str] | None:
    """The raw header of a plain CSV, or ``None`` when it cannot be read cheaply (compressed).

    pandas renames duplicate headers (``a``, ``a.1``); reading the first line ourselves is how a
    duplicated column name is caught instead of silently becoming two features. ``skip``: lines before the
    header (a spreadsheet's ``sep=;`` line).
    """
    if path.suffix.lower() != ".csv":
        return None
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = csv.reader(fh, delimiter=sep)
        for _ in range(skip):
            next(rows, None)
        row = next(rows, None)
    return [c.strip() for c in row] if row is not None else []


def _separator_line(path: Path) -> str | None:
    """The separator a plain CSV's first line names in a spreadsheet's hint ``sep=;`` (Excel writes and reads
    it), else ``None``: that line is neither the header nor a row."""
    if path.suffix.lower() != ".csv":
        return None
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        first = fh.readline().rstrip("\r\n")
    return first[4] if len(first) == 5 and first[:4].lower() == "sep=" else None


#: separators a one-column CSV is checked for, to say "set sep = ';'" instead of "id column not found"
_OTHER_SEPARATORS = (",", ";", "\t", "|")


def _read_frame(ctx: _Ctx, path: Path, id_col: str, sep: str | None = None, decimal: str = ".",
                na_values: Sequence[str] = ()) -> pd.DataFrame:
    """Read the file into a DataFrame with the id column as strings; map every failure to DataError.

    ``sep`` and ``decimal`` are the CSV dialect (per party in the job spec): European exports are
    often ``;``-separated with decimal commas. Parquet files carry types and ignore both.
    ``na_values``: cells that mean "no value" in this party's exports (the spec's ``na_values``),
    missing in CSV and Parquet alike (see :func:`~fedrisk.data.na_values.declare_missing`).
    """
    if not path.exists():
        raise ctx.error("file not found; check the data path in the job spec (relative paths are "
                        "resolved from the working directory)")
    if path.is_dir():
        raise ctx.error("this is a directory, not a data file; point the job spec at a .csv or "
                        ".parquet file")
    kind = _file_kind(path)
    if kind is None:
        raise ctx.error(f"unsupported file type {path.suffix or '(no extension)'!r}; use .csv "
                        "(optionally .gz/.bz2/.zip/.xz) or .parquet")
    try:
        if kind == "csv":
            if path.stat().st_size == 0:
                raise ctx.error("file is empty (0 bytes); export the table with a header row and "
                                "at least one data row")
            hinted = _separator_line(path)
            if hinted is not None and hinted != (sep or ","):
                shown = "\\t" if hinted == "\t" else hinted
                raise ctx.error(f"the file's first line 'sep={shown}' is a spreadsheet's separator hint: set sep = "
                                f"'{shown}' {ctx.settings_at} (fedrisk predict: --sep '{shown}')")
            sep, skip = sep or ",", int(hinted is not None)
            header = _csv_header(path, sep, skip)
            if header is not None:
                dupes = sorted({c for c in header if c and header.count(c) > 1})
                if dupes:
                    raise ctx.error(f"duplicate column names {_listing(dupes)}; rename them so "
                                    "every column is unique")
            with warnings.catch_warnings():
                # index_col=False: a separator closing every data row (not the header) is an empty last field, not
                # a sign that the first column is an index (pandas' default shifts every column one to the left);
                # a row with a *filled* field beyond the header is refused below instead of silently cut
                warnings.simplefilter("error", pd.errors.ParserWarning)
                try:
                    df = pd.read_csv(path, dtype={id_col: str}, keep_default_na=True, skipinitialspace=True, sep=sep,
                                     decimal=decimal, na_values=list(na_values) or None, index_col=False,
                                     skiprows=skip)
                except pd.errors.ParserWarning:
                    raise ctx.error("some rows hold more fields than the header has names; " + (
                        _header_separator_hint(path, sep, ctx.settings_at) or "check the separator and the quoting of the export, or "
                        "name every column in the header")) from None
            df.columns = [str(c).strip() for c in df.columns]
            df = _without_nameless_columns(ctx, df, header)
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            names = list(table.schema.names)
            dupes = sorted({c for c in names if names.count(c) > 1})
            if dupes:
                raise ctx.error(f"duplicate column names {_listing(dupes)}; rename them so every "
                                "column is unique")
            df = table.to_pandas()
            df.columns = [str(c) for c in df.columns]
    except DataError:
        raise
    except pd.errors.EmptyDataError:
        raise ctx.error("file has no header and no rows; export the table with a header row and "
                        "at least one data row") from None
    except PermissionError:
        raise ctx.error("permission denied; make the file readable by the user running fedrisk") from None
    except UnicodeDecodeError as exc:
        raise ctx.error(f"not valid UTF-8 text ({_one_line(exc)}); re-export the CSV as UTF-8") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        # pyarrow's ArrowInvalid is a ValueError; malformed CSV rows raise ParserError.
        hint = _header_separator_hint(path, sep, ctx.settings_at) if kind == "csv" else ""
        raise ctx.error(f"cannot read {kind.upper()}: {_one_line(exc)}; "
                        + (hint or f"check that the file is a valid {kind.upper()} export")) from None
    if len(df) == 0:
        raise ctx.error(f"file has a header ({len(df.columns)} columns) but no data rows; export "
                        "the table with its rows")
    df = declare_missing(df, na_values) if na_values else df
    return _without_blank_rows(ctx, df, id_col)


def _no_value_cells(df: pd.DataFrame) -> np.ndarray:
    """``(rows, columns)`` bool: the cells holding no value, missing or text of spaces only (as read: the
    reader's missing markers and the party's ``na_values`` are missing already)."""
    out = df.isna().to_numpy(dtype=bool).copy()
    for j in range(df.shape[1]):
        col = df.iloc[:, j]
        if col.dtype == object or isinstance(col.dtype, pd.StringDtype):
            out[:, j] |= col.astype("string").str.strip().eq("").fillna(False).to_numpy(dtype=bool)
    return out


def _without_blank_rows(ctx: _Ctx, df: pd.DataFrame, id_col: str) -> pd.DataFrame:
    """``df`` without the rows that have no value in any cell, with a count note in ``ctx.notes``.

    Spreadsheets export the empty rows below (or between) a table as lines of separators only (``;;;``); such a
    row is no customer, and refusing it as "id empty" sends the bank to its export for nothing. A row with any
    value but no id is still refused (by the id check): it is a customer whose key is missing. Only rows without
    an id are looked at, so a file without such rows costs one pass over its id column.
    """
    if id_col not in df.columns:
        return df  # refused by the caller, naming the missing column
    ids = df[id_col]
    idless = ids.isna().to_numpy(dtype=bool).copy()
    if ids.dtype == object or isinstance(ids.dtype, pd.StringDtype):
        idless |= ids.astype("string").str.strip().eq("").fillna(False).to_numpy(dtype=bool)
    rows = np.flatnonzero(idless)
    if not len(rows):
        return df
    blank = rows[_no_value_cells(df.iloc[rows]).all(axis=1)]
    if not len(blank):
        return df
    if len(blank) == len(df):
        raise ctx.error(f"file has a header ({len(df.columns)} columns) but no data rows: its {len(blank)} rows have "
                        "no value in any cell; export the table with its rows")
    ctx.notes.append(f"{len(blank)} rows with no value in any cell (a spreadsheet's empty rows, lines of separators "
                     "only) are left out")
    return df.drop(index=df.index[blank]).reset_index(drop=True)


def _without_nameless_columns(ctx: _Ctx, df: pd.DataFrame, header: list[str] | None) -> pd.DataFrame:
    """Drop the columns a CSV header leaves unnamed and the rows leave blank; refuse one that holds values.

    A separator closing every line (``a;b;``) is common in bank exports and makes an unnamed, empty column:
    as a feature it would stop the job (no values) at one bank and not at another. An unnamed column with
    values is data nobody can refer to (pandas calls it ``Unnamed: k``), so it is named by its position.
    ``header``: the file's own header cells (``None`` for a compressed file: pandas' names are used).
    """
    if header is not None and len(header) == len(df.columns):
        nameless = [j for j, c in enumerate(header) if not c]
    else:
        nameless = [j for j, c in enumerate(df.columns) if re.fullmatch(r"Unnamed: \d+", c)]
    filled = [j for j in nameless if df.iloc[:, j].notna().any()]
    if filled:
        raise ctx.error(f"column {filled[0] + 1} has no name in the header but holds values; name it in the "
                        "header or remove it from the export")
    return df.iloc[:, np.setdiff1d(np.arange(df.shape[1]), nameless)] if nameless else df


def read_party_file(path: str | Path, *, party: str, id_col: str, sep: str | None = None,
                    decimal: str = ".") -> pd.DataFrame:
    """A party's CSV or Parquet file as a DataFrame, read exactly as :func:`load_party_table` reads it (the
    dialect, the id column as text, trailing separators, a spreadsheet's ``sep=;`` line, unnamed blank
    columns), before any check of its columns: for a notebook that takes a job spec's files
    (``Federation.from_spec``), so its tables hold what the party processes load."""
    path = Path(path)
    return _read_frame(_Ctx(party, path), path, id_col, sep=sep, decimal=decimal)


#: an integer written with a decimal part of zeros ("123.0"): what a spreadsheet makes of an integer id column.
#: The rule of an integral float id in Parquet (an optional sign); no leading zeros ("00123.0" is a code with its
#: zeros, and codes are never rewritten)
_INTEGRAL_DECIMAL = r"[+-]?(?:0|[1-9][0-9]*)\.0+"


def _all_integral_decimals(ids: np.ndarray) -> bool:
    """Whether every one of ``ids`` (stripped text) is an integer written as a decimal (:data:`_INTEGRAL_DECIMAL`);
    ``True`` for none. Decided at the first id when it is not one (the usual id column costs one match)."""
    if not len(ids):
        return True
    if not re.fullmatch(_INTEGRAL_DECIMAL, str(ids[0])):
        return False
    return bool(pd.Series(ids, dtype=object).astype(str).str.fullmatch(_INTEGRAL_DECIMAL).all())


def _integer_texts(ids: np.ndarray) -> np.ndarray:
    """``"123.0"`` -> ``"123"``, ``"-5.00"`` -> ``"-5"``, ``"+7.0"`` -> ``"7"``, ``"-0.0"`` -> ``"0"``: the text
    Parquet's integral float ids become (``str(int(value))``), computed on the text, so exact beyond 2**53."""
    text = pd.Series(ids, dtype=object).astype(str).str.replace(r"\.0+$", "", regex=True).str.lstrip("+")
    return text.mask(text == "-0", "0").to_numpy(dtype=object)


def _normalise_ids(ctx: _Ctx, raw: pd.Series, id_col: str, integral: bool | None = None) -> np.ndarray:
    """Turn the id column into unique, non-empty strings, or explain why that is impossible.

    Ids written as integers with a decimal part of zeros (``"123.0"``: an Excel export of an integer column) are
    read as the integers when *every* id of the column is written so, as integral floats in Parquet always were
    (a partner's ``"123"`` then matches), with one count note in ``ctx.notes``. A column where only some are
    written so stays as written: whether a partner writes ``"123.0"`` or ``"123"`` is unknowable, and the PSI's
    small-intersection warning names the mix. ``integral``: the decision made over the whole file by a caller
    that sees it in chunks (:func:`iter_id_chunks`); ``None``: decided from ``raw``.
    """
    if pd.api.types.is_bool_dtype(raw.dtype):
        raise ctx.error(f"id column {id_col!r} is boolean; it must hold one customer key per row")
    if pd.api.types.is_float_dtype(raw.dtype):
        # Parquet writers turn integer columns with gaps into floats; integral floats are ids.
        vals = raw.to_numpy(dtype=np.float64, na_value=np.nan)
        finite = np.isfinite(vals)
        if finite.all() and np.all(vals == np.floor(vals)):
            raw = pd.Series(vals.astype(np.int64), index=raw.index)
        elif finite.all():
            bad = vals[vals != np.floor(vals)][0]
            raise ctx.error(f"id column {id_col!r} holds non-integer numbers (e.g. {bad!r}); ids "
                            "must be integers or strings — store them as text")
    missing = raw.isna().to_numpy()
    as_str = raw.astype(object).where(~missing, "")
    ids = np.array([str(v).strip() for v in as_str], dtype=object)
    empty = (ids == "") | missing
    filled = ids[~empty]
    if len(filled) and (integral if integral is not None else _all_integral_decimals(filled)):
        ids[~empty] = _integer_texts(filled)
        ctx.notes.append(f"id column {id_col!r}: {len(filled)} ids written as integers with a decimal part of zeros "
                         "(a spreadsheet's export of whole numbers) are read as those integers, as in Parquet files")
    if empty.any():
        first = int(np.flatnonzero(empty)[0])
        raise ctx.error(f"id column {id_col!r} is empty in {int(empty.sum())} rows (first at data "
                        f"row {first + 1}); every row needs a customer key — drop or fill those rows")
    uniq, counts = np.unique(ids.astype(str), return_counts=True)
    dup = counts > 1
    if dup.any():
        example = uniq[dup][0]
        raise ctx.error(f"id column {id_col!r} has {int(dup.sum())} duplicated ids "
                        f"({int(counts[dup].sum() - dup.sum())} extra rows), e.g. {str(example)!r} "
                        f"appears {int(counts[dup][0])} times; deduplicate the file so each "
                        "customer appears once")
    return ids


def _label_key(v: object) -> str:
    """Text form of a label value for matching ``positive``: ``2``, ``2.0`` and ``"2"`` agree."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v)).lower()
    if isinstance(v, (int, float, np.integer, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v).strip()


def label_coding(raw: Any, positive: object = None) -> list | None:
    """``[non-default, default]`` label values in the data's own coding, or ``None`` for plain 0/1.

    What a model file stores as ``classes`` (and the estimators' ``classes_``) so that a model read
    back predicts in the user's coding: ``["good", "bad"]`` under ``positive = "bad"``, ``[1, 2]``
    under ``positive = 2``, ``[False, True]`` for a boolean column. ``None`` (meaning ``[0, 1]``)
    when the coding has no single value per class (several default values) or is plain 0/1. Values
    are JSON scalars (``str``, ``int``, ``float``, ``bool``).
    """
    values = pd.unique(pd.Series(raw).dropna())
    if positive is None:
        if len(values) and all(isinstance(v, (bool, np.bool_)) for v in values):
            return [False, True]
        return None
    if isinstance(positive, Mapping):
        # from the mapping, not from which values this file holds: a bank without defaults must not
        # send a different coding (the coordinator would learn its count is 0); the data's value is
        # preferred only for its type (4 in the file, "4" as a TOML key)
        table = {_label_key(k): v for k, v in positive.items()}
        spec = {c: [k for k, v in positive.items() if v == c] for c in (0, 1)}
        if len(spec[0]) != 1 or len(spec[1]) != 1:
            return None
        neg = [v for v in values if table.get(_label_key(v)) == 0] or spec[0]
        pos = [v for v in values if table.get(_label_key(v)) == 1] or spec[1]
    else:
        keys = {_label_key(p) for p in (positive if isinstance(positive, (list, tuple)) else [positive])}
        pos = [v for v in values if _label_key(v) in keys]
        neg = [v for v in values if _label_key(v) not in keys]
    if len(neg) != 1 or len(pos) != 1:
        return None
    return [v.item() if isinstance(v, np.generic) else v for v in (neg[0], pos[0])]


def declaring(declare: str, column: str) -> str:
    """The setting ``declare`` (``<col>`` for the column) that declares ``column`` a category, the column quoted
    as a TOML key: an advice line crosses to partners in an abort reason, which redacts quoted names only."""
    return declare.replace("<col>", _toml_key(column))


def _toml_key(value: object) -> str:
    """``value`` as a quoted key of a TOML inline table, for advice lines (quoted, so the abort reason a
    partner receives redacts it like every other value: see :mod:`fedrisk.runtime.abort_reason`)."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _mapped_labels(ctx: _Ctx, raw: pd.Series, label_col: str, positive: object) -> np.ndarray:
    """Labels under an explicit coding: ``positive`` is the default value(s), or a value -> 0/1 map."""
    keys = raw.map(_label_key)
    found = sorted(set(keys))
    if isinstance(positive, Mapping):
        table = {_label_key(k): v for k, v in positive.items()}
        if any(v not in (0, 1) for v in table.values()):
            raise ConfigError(f"party {ctx.party!r}: positive = {{...}} must map each label value to 0 or 1")
        unmapped = [k for k in found if k not in table]
        if unmapped:
            raise ctx.label_error(f"label column {label_col!r} holds values the positive mapping does not cover "
                            f"({_listing(unmapped)}); map every value to 0 or 1")
        return keys.map(table).to_numpy(dtype=np.int8)
    pos = {_label_key(p) for p in (positive if isinstance(positive, (list, tuple)) else [positive])}
    if not pos & set(found):
        hint = ""
        if len(found) == 1 and not isinstance(positive, (list, tuple)):
            # one value only: a typo in positive, or a party that simply has no defaults (fine in a
            # horizontal federation); declaring both values says which, without guessing
            hint = (f"; if this party simply has no defaults, map both values: positive = {{ "
                    f"{_toml_key(positive)} = 1, {_toml_key(found[0])} = 0 }}")
        raise ctx.label_error(f"label column {label_col!r} never holds positive = {positive!r} (values found: "
                        f"{_listing(found)}); set positive to the value that means default/bad{hint}")
    if len(set(found) - pos) > 1:
        raise ctx.label_error(f"label column {label_col!r} has more than two classes ({_listing(found)}); with "
                        "positive = ... every other value is 0, so list all default values or map them")
    return keys.isin(pos).to_numpy(dtype=np.int8)


def blank_labels(label_col: str, n_missing: int) -> str:
    """The refusal of a label column with ``n_missing`` empty cells (the loader's, and ``Federation.split``'s
    on the whole table, so a notebook user is told every blank at once, not the training part's)."""
    return f"label column {label_col!r} is empty in {n_missing} rows; drop unlabelled rows or use a party without a label"


def _labels(ctx: _Ctx, raw: pd.Series, label_col: str, positive: object = None) -> np.ndarray:
    """Validate a binary label column and return it as int8 0/1.

    Without ``positive`` only numeric 0/1 and booleans are accepted. Strings such as
    ``"good"/"bad"`` or a 1/2 coding are refused rather than guessed: which one is the positive
    (default) class is a business decision, and guessing wrong inverts the model without any
    error. The job spec says it with ``positive = "bad"`` (or ``2``, a list, or a value -> 0/1 map).
    """
    n_missing = int(raw.isna().sum())
    if n_missing:
        raise ctx.label_error(blank_labels(label_col, n_missing))
    if positive is not None:
        return _mapped_labels(ctx, raw, label_col, positive)
    if pd.api.types.is_bool_dtype(raw.dtype):
        return raw.to_numpy(dtype=np.int8)
    if not pd.api.types.is_numeric_dtype(raw.dtype) and not isinstance(raw.dtype, pd.CategoricalDtype):
        # numbers kept as text ("0"/"1": a frame read with dtype=str, a Parquet export of text columns) are read as
        # the features' are, so the checks below apply to them (a 1/2 coding still asks for positive = 2)
        text = raw.astype(str).str.strip()
        as_numbers = pd.to_numeric(text.where(text.str.fullmatch(_PLAIN_NUMBER)), errors="coerce")
        if as_numbers.notna().all():
            raw = as_numbers
    if not pd.api.types.is_numeric_dtype(raw.dtype):
        values = sorted({str(v) for v in raw.unique()[: _MAX_LISTED + 1]})
        raise ctx.label_error(f"label column {label_col!r} is not numeric (values found: {_listing(values)}); "
                        "set positive = '<the value meaning default>' for this party in the job spec "
                        "(or map it to 0/1, with 1 = default/bad, before loading)")
    vals = raw.to_numpy(dtype=np.float64)
    distinct = np.unique(vals)
    if not np.all(np.isin(distinct, (0.0, 1.0))):
        shown = [int(v) if float(v).is_integer() else float(v) for v in distinct[: _MAX_LISTED + 1]]
        raise ctx.label_error(f"label column {label_col!r} is not binary (distinct values: "
                        f"{_listing(shown)}{'' if len(distinct) <= _MAX_LISTED + 1 else ', ...'}); it "
                        "must hold only 0 and 1, with 1 = default/bad, or set positive = <the default "
                        "value> for this party in the job spec (e.g. positive = 2 for a 1/2 coding)")
    return vals.astype(np.int8)


#: a currency written next to an amount: a sign, or one of the ISO codes bank exports use most
_CURRENCY = r"(?:[$€£¥]|USD|EUR|GBP|CHF|JPY|CAD|AUD|SEK|NOK|DKK|PLN|CZK|HUF|INR|CNY|HKD|SGD|NZD|ZAR|BRL|MXN|TRY)"
#: what separates thousands in exports: ',' '.' "'" (Swiss), a space, or the no-break spaces spreadsheets write
_GROUP = "[,.' \u00a0\u202f]"
_AMOUNT = rf"-?(?:\d{{1,3}}(?:{_GROUP}\d{{3}})+(?:[.,]\d+)?|\d+(?:[.,]\d+)?)"
#: a number formatted for reading: thousands separators with a decimal part, a currency before or after it, a
#: percent sign, an accounting negative in parentheses ("(120.50)") or a trailing minus ("120,50-", as SAP writes)
_FORMATTED = (rf"\s*(?:-?\d{{1,3}}(?:{_GROUP}\d{{3}})+[.,]\d+|{_CURRENCY}\s*-?[\d,.' ]*\d[\d,.' ]*|{_AMOUNT}\s*{_CURRENCY}"
              rf"|{_AMOUNT}\s*%|\(\s*{_CURRENCY}?\s*{_AMOUNT}\s*{_CURRENCY}?\s*\)|{_AMOUNT}-)\s*")
#: thousands separators without a decimal part ("12,629"): in a ','-separated file only a quoted amount; in a
#: ';' file it may also be a decimal comma with three decimals, which only the bank can tell
_THOUSANDS = r"\s*-?[1-9]\d{0,2}(?:[,'\u00a0\u202f]\d{3})+\s*"
#: the same in a decimal-comma file, where '.' separates thousands ("12.629" in a German export is 12629)
_DOT_THOUSANDS = r"\s*-?[1-9]\d{0,2}(?:[.']\d{3})+\s*"


def _decimal_comma_mask(col: pd.Series) -> pd.Series:
    return col.astype(str).str.fullmatch(r"\s*-?\d+,\d+\s*")


#: a plain number: ASCII digits only (``\d`` would take other scripts' digits, which the parser then
#: turns into missing values), no "inf"/"nan" spellings (those are text a person wrote, not amounts)
_PLAIN_NUMBER = r"\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*"
#: how many filled cells a text column is first judged on, and the share of numbers that makes it "mostly numbers"
_SAMPLE, _MOSTLY = 1000, 0.9


@dataclass(frozen=True)
class _TextNumbers:
    """One parse of a text column's cells as numbers, which both questions the loader asks are answered from:
    is every cell a number (:func:`numbers_in_text`), and is it mostly numbers with a few text cells
    (:func:`_not_categories`)."""

    #: the filled cells (not missing, not blank), stripped, in row order (index as the column's)
    text: pd.Series
    #: the filled cells as floats, NaN where a cell is not a plain number; ``None`` when a sample of the
    #: first cells is already mostly text (a real text column costs one small regex pass)
    numbers: pd.Series | None
    #: the column as floats (blanks NaN) when every filled cell is a number and none is a code with a leading zero
    all_numbers: pd.Series | None


def _parse_text_numbers(col: pd.Series, decimal: str = ".") -> _TextNumbers | None:
    """Parse a text column as numbers once; ``None`` for a column that is not text (numbers, dates, and
    category-typed columns, which are the file saying "codes")."""
    if (pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_datetime64_any_dtype(col.dtype)
            or pd.api.types.is_bool_dtype(col.dtype) or isinstance(col.dtype, pd.CategoricalDtype)):
        return None
    text = col.astype("string").str.strip()
    filled = (text.notna() & (text != "")).to_numpy(dtype=bool)
    text = text[filled]
    marked = text.str.replace(decimal, ".", regex=False) if decimal != "." else text
    if not len(text):  # blank in every row (an object column of None, a Parquet string column of nulls): a
        # column this party does not collect, missing values as a CSV reads it, for the missing-values policy
        return _TextNumbers(text, pd.Series([], dtype=np.float64), pd.Series(np.nan, index=col.index, name=col.name))
    head = marked.head(_SAMPLE)
    if float(head.str.fullmatch(_PLAIN_NUMBER).mean()) < _MOSTLY:
        return _TextNumbers(text, None, None)
    plain = marked.str.fullmatch(_PLAIN_NUMBER).astype(bool)
    if decimal != ".":  # "12.629" in a decimal-comma file: '.' separates thousands there, it is no decimal mark
        plain &= ~text.str.fullmatch(_DOT_THOUSANDS).astype(bool)
    numbers = pd.to_numeric(marked.where(plain), errors="coerce").astype(np.float64)
    every = bool(plain.all()) and not bool(marked.str.match(r"[-+]?0[0-9]").any())
    # ("01", "007": codes written with their leading zeros -- a region, a branch -- not amounts)
    if not every:
        return _TextNumbers(text, numbers, None)
    full = np.full(len(col), np.nan)
    full[filled] = numbers.to_numpy(dtype=np.float64)  # by position: an index may repeat labels
    return _TextNumbers(text, numbers, pd.Series(full, index=col.index, name=col.name))


def _no_value(col: pd.Series) -> bool:
    """Whether no cell of a non-numeric column holds a value: every cell missing, or blank text (``""``, spaces).

    Parquet keeps a column's type when every row is null (a string, dictionary-encoded or null column); a CSV
    reader makes the same empty column floats."""
    missing = col.isna().to_numpy(dtype=bool)
    if missing.all():
        return True
    if pd.api.types.is_datetime64_any_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype):
        return False
    rest = col[~missing]
    blank = (lambda v: isinstance(v, str) and not v.strip())
    return blank(rest.iloc[0]) and bool(rest.map(blank).all())  # (a text column: decided at its first value)


def numbers_in_text(col: pd.Series, decimal: str = ".") -> pd.Series | None:
    """A text column whose every filled cell is a plain number (``"1169.0"``, ``" 5951 "``, ``"-2.5e3"``;
    blanks allowed) as floats, else ``None``.

    What a CSV reader makes of the same cells: a bank whose Parquet export keeps an amount as text
    then loads the numbers its partners store as floats, instead of a text column to refuse (or to
    cut into categories). ``decimal = ","`` reads ``"1169,5"``. Codes written with leading zeros
    (``"01"``) stay text.
    """
    parsed = _parse_text_numbers(col, decimal)
    return parsed.all_numbers if parsed is not None else None


def _display_example(col: pd.Series, decimal: str = ".") -> str | None:
    """A cell of a text column whose filled cells are numbers formatted for display ("1,234.56", "$ 1,200",
    "12,629", "12.5%", "(120.50)"), else ``None``: not categories (one per amount), and not a decimal-comma file
    either; the export should be fixed. Judged on a sample (this runs on every text column of the file): half the
    cells formatted, or a few formatted among plain numbers (amounts under 1000 need no thousands separator)."""
    if pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype) \
            or pd.api.types.is_datetime64_any_dtype(col.dtype):
        return None
    text = col.dropna().astype(str).str.strip()
    text = text[text != ""].head(_SAMPLE)
    if not len(text):
        return None
    thousands = text.str.fullmatch(_THOUSANDS if decimal == "." else _DOT_THOUSANDS)
    other_mark = r"-?\d+,\d+" if decimal == "." else r"-?\d+\.\d+"  # the mark that is not this file's decimal
    if (text.str.fullmatch(other_mark) & ~thousands).any():  # "12,5" too: that mark is a decimal mark after all
        thousands = thousands & False
    shown = text.str.fullmatch(_FORMATTED) | thousands
    plain = (text.str.replace(decimal, ".", regex=False) if decimal != "." else text).str.fullmatch(_PLAIN_NUMBER)
    if float(shown.mean()) >= 0.5 or (bool(shown.any()) and float((shown | plain).mean()) >= _MOSTLY):
        return str(text[shown].iloc[0])
    return None


def numbers_in_another_format(cells: pd.Series) -> str | None:
    """What text cells met in a numeric column are when they are numbers in another format, for a scoring refusal:
    decimal commas ("0,5": a ';' file read without its decimal mark) or numbers written for display ("$1,200.00",
    "12.5%"); ``None`` otherwise (a placeholder such as "?", or real text). Such cells are no placeholders to declare
    missing: with ``na_values = ["0,0"]`` every zero would score as a blank."""
    text = cells.dropna().astype(str).str.strip()
    comma = text[text.str.fullmatch(r"-?\d+,\d+")]
    if len(comma):
        either = bool(comma.str.fullmatch(_THOUSANDS).all())
        return (f"numbers with decimal commas (e.g. {comma.iloc[0]!r}): read the file with decimal = ',' (fedrisk "
                "predict: --decimal ','; pandas: read_csv(..., decimal=','))"
                + ("; or, if the comma separates thousands, export plain numbers" if either else ""))
    shown = _display_example(text)
    if shown is not None:
        return (f"numbers written for display (e.g. {shown!r}: thousands separators, a currency, a percent sign or "
                "parentheses for negatives); export them as plain numbers")
    return None


def text_display_numbers(df: pd.DataFrame, columns: Sequence[str], decimal: str = ".",
                         sep: str | None = None, settings_at: str = PARTY_SETTINGS) -> str | None:
    """The refusal line for those of ``columns`` that hold numbers written for display ("12,629", "$1,200",
    "12.5%", "(120.50)"), else ``None``: neither categories (one per amount) nor a CSV dialect. A lone thousands
    group ("12,629") in a file not separated by ',' may be a three-decimal comma, so that reading is offered too
    (in a ','-separated file ``decimal = ','`` cannot be set). ``settings_at``: where ``decimal`` is set for this
    file (:data:`PARTY_SETTINGS`, :data:`EVALUATION_SETTINGS`)."""
    shown = {c: ex for c in columns for ex in [_display_example(df[c], decimal)] if ex}
    if not shown:
        return None
    example = next(iter(shown.values()))
    line = (f"feature columns {_listing(list(shown))} look like numbers written for display (e.g. {example!r}: "
            "thousands separators, a currency, a percent sign or parentheses for negatives); export them as plain "
            "numbers")
    if decimal == "." and (sep or ",") != "," and re.fullmatch(r"\s*-?[1-9]\d{0,2},\d{3}\s*", example):
        line += (f"; if the comma is the decimal mark, set decimal = ',' {settings_at} (fedrisk "
                 "predict: --decimal ',')")
    elif decimal == "," and re.fullmatch(r"\s*-?[1-9]\d{0,2}\.\d{3}\s*", example):
        line += (f"; if '.' is the decimal mark, remove decimal = ',' {settings_at} (fedrisk predict: "
                 "leave out --decimal ',')")
    return line


#: text cells that stand for "no value" in exports (SAS ".", UCI "?", "unknown", "n/a", "-", spreadsheet errors
#: such as "#DIV/0!" or "#VALUE!")
_PLACEHOLDER_TEXT = r"\W+|unknown|unk|n/?a|none|null|missing|not available|nan|#[a-z0-9/]+[!?]?"
#: a mostly numeric column with more distinct numbers than this is an amount, not a list of codes
_MAX_CODE_LEVELS = 50

#: dates written as text: 2024-01-31, 2024/01/31, 2024-01, 31/01/2024, 01/31/24, 31.01.2024 (an optional time
#: after); years 19xx/20xx and months 1-12, so codes such as "1234-56" are not taken for dates, and a day-first
#: date with dots has a four-digit year: "3.10.12" is a version far more often than 3 October 2012
_DAY, _MONTH, _YEAR = r"(?:0?[1-9]|[12]\d|3[01])", r"(?:0?[1-9]|1[0-2])", r"(?:19|20)\d{2}"
_DATE_TEXT = (rf"\s*(?:{_YEAR}[-/.]{_MONTH}(?:[-/.]{_DAY})?|{_DAY}[-/]{_DAY}[-/](?:{_YEAR}|\d{{2}})"
              rf"|{_DAY}\.{_DAY}\.{_YEAR})"
              r"(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?\s*")
#: a month without its day ("2020-01"): a vintage or cohort, which may well be a category
_YEAR_MONTH_TEXT = rf"\s*{_YEAR}[-/.]{_MONTH}\s*"
#: where a horizontal job declares a category column (``<col>``: the column), for refusals
HORIZONTAL_CATEGORIES = "[task] categories = { <col> = [...] }"


def _text_among_numbers(p: _TextNumbers | None) -> pd.Series | None:
    """The text cells of a column that is numbers except in a few cells (at most a tenth), else ``None``."""
    if p is None or p.numbers is None:
        return None
    odd = p.text[p.numbers.isna()]
    return odd if len(odd) and len(odd) <= 0.1 * len(p.text) else None


def _placeholders_among_numbers(col: pd.Series, decimal: str = ".") -> pd.Series | None:
    """The text cells of a column that is mostly numbers and otherwise placeholders only ("?", "n/a"), whatever
    their share (an error path: the whole column is parsed), else ``None``."""
    if pd.api.types.is_numeric_dtype(col.dtype) or isinstance(col.dtype, pd.CategoricalDtype):
        return None
    text = col.astype("string").str.strip()
    text = text[text.notna() & (text != "")]
    marked = text.str.replace(decimal, ".", regex=False) if decimal != "." else text
    plain = marked.str.fullmatch(_PLAIN_NUMBER).astype(bool)
    odd = text[~plain]
    if not len(odd) or float(plain.mean()) < 0.5 or not bool(odd.str.fullmatch(_PLACEHOLDER_TEXT, case=False).all()):
        return None
    return odd


def _missing_advice(odd: pd.Series, settings_at: str = PARTY_SETTINGS) -> str:
    """How to make a numeric column's text cells missing: empty them, or declare them with ``na_values`` (set
    ``settings_at``: :data:`PARTY_SETTINGS`, :data:`EVALUATION_SETTINGS`)."""
    shown = list(dict.fromkeys(odd.astype(str)))[:3]
    return (f"empty those cells (they become missing values) or declare them missing with na_values = "
            f"[{', '.join(_toml_key(v) for v in shown)}] {settings_at} (fedrisk predict: "
            + " ".join(f"--na-values {_shell_word(v)}" for v in shown) + ")")


def _shell_word(value: str) -> str:
    """``value`` single-quoted for a shell, always: ``shlex.quote`` leaves ``unknown`` bare, and a bare cell
    text in advice crosses to partners in an abort reason, which redacts quoted text only."""
    import shlex

    quoted = shlex.quote(value)
    return quoted if quoted.startswith("'") else f"'{value}'"


def _not_categories(ctx: _Ctx, df: pd.DataFrame, columns: Sequence[str], declare: str, decimal: str = ".",
                    parsed: Mapping[str, _TextNumbers | None] | None = None, sep: str | None = None) -> None:
    """Refuse undeclared text columns that would be taken for categories but are numbers with a few text
    cells ("?", "unknown": an amount becomes one category per value) or dates written as text.

    ``declare`` says where this task declares categories. ``parsed``: the columns' parse as numbers when the
    caller already made it (:func:`_parse_text_numbers`, for :func:`numbers_in_text`), so no column is
    parsed twice.
    """
    shown = text_display_numbers(df, columns, decimal, sep, ctx.settings_at)
    if shown:  # amounts exported for reading ("12,629", "12.5%"): one category per amount otherwise
        raise ctx.error(shown)
    dates = []
    for c in columns:
        p = (parsed or {}).get(c) or _parse_text_numbers(df[c], decimal)
        if _is_date_column(df[c], p):
            dates.append(c)
            continue
        if p is None or not len(p.text):
            continue  # not text (numbers, bools, or a Parquet/pandas category column: the file says "categories")
        odd = _text_among_numbers(p)
        # an amount with placeholders ("?", "unknown") -- not a code list ("01".."19" and a few "A1"), which
        # stays a category as before
        placeholder = odd is not None and bool(odd.str.fullmatch(_PLACEHOLDER_TEXT, case=False).all())
        if odd is not None and (placeholder or p.numbers.nunique() > _MAX_CODE_LEVELS):
            raise ctx.error(f"feature column {c!r} holds numbers except in {len(odd)} rows with text (e.g. "
                            f"{odd.iloc[0]!r}); {_missing_advice(odd, ctx.settings_at)}, or, if the column is a category, declare "
                            f"it in {declaring(declare, c)}")
    if dates:
        raise ctx.error(f"{_dates_named(df, dates)}, or, if a column is a category (a vintage, a cohort), declare it "
                        f"in {declaring(declare, dates[0])}")


def _is_date_column(col: pd.Series, parsed: _TextNumbers | None = None) -> bool:
    """Whether a column holds dates: a date-typed (Parquet) column with values, or text whose first filled
    cells are mostly dates written as text (:data:`_DATE_TEXT`). ``parsed``: the column's
    :func:`_parse_text_numbers`, when the caller already has it."""
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        return bool(col.notna().any())
    p = parsed if parsed is not None else _parse_text_numbers(col)
    return p is not None and bool(len(p.text)) and float(p.text.head(_SAMPLE).str.fullmatch(_DATE_TEXT).mean()) >= _MOSTLY


def _dates_named(df: pd.DataFrame, dates: Sequence[str], declare: str | None = None) -> str:
    """The start of the refusal of date columns: which, one example cell (the party's own log or notebook:
    errors at load are not sent to partners), and the fix. ``declare``: where this job declares a category,
    offered for months without a day ("2020-01": a vintage or cohort is a category; a day is not)."""
    example = str(df[dates[0]].dropna().iloc[0]).strip()
    cells = df[dates[0]].dropna().astype(str).head(_SAMPLE)
    months = declare is not None and float(cells.str.fullmatch(_YEAR_MONTH_TEXT).mean()) >= _MOSTLY
    return (f"feature columns {_listing(dates)} are dates (e.g. {example!r}); turn them into numbers (e.g. months "
            "since the date, or its year) or list them in exclude"
            + (f", or, if it is a category (a vintage, a cohort), declare it in {declaring(declare, dates[0])}"
               if months else ""))


def text_dates(df: pd.DataFrame, columns: Sequence[str], declare: str | None = None) -> str | None:
    """The refusal line's text for those of ``columns`` that hold dates (typed or written as text), else
    ``None``: a job that allows no undeclared text column (horizontal LR and trees) names a date as a date,
    not as a text column to give categories (``declare``: see :func:`_dates_named`)."""
    dates = [c for c in columns if _is_date_column(df[c])]
    return _dates_named(df, dates, declare) if dates else None


def _available(df: pd.DataFrame) -> str:
    return f"available columns: {_listing(list(df.columns), limit=12)}"


def _header_separator_hint(path: Path, sep: str | None, settings_at: str = PARTY_SETTINGS) -> str:
    """For a CSV that does not parse: "the file looks ';'-separated ..." when its header line holds more of
    another separator than of ``sep`` (decimal commas in a ';' file break a ','-read row by row)."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            head = fh.readline()
    except OSError:
        return ""
    counts = {c: head.count(c) for c in _OTHER_SEPARATORS}
    best = max(counts, key=lambda c: counts[c])
    if best == (sep or ",") or counts[best] <= counts.get(sep or ",", 0):
        return ""
    shown = "\\t" if best == "\t" else best
    return (f"the file looks '{shown}'-separated: set sep = '{shown}' {settings_at} "
            f"(fedrisk predict: --sep '{shown}')")


def _separator_hint(df: pd.DataFrame, sep: str | None, settings_at: str = PARTY_SETTINGS) -> str:
    """``"; the file looks ';'-separated: set sep = ';'"`` when a one-column frame hides separators."""
    if len(df.columns) != 1:
        return ""
    head = str(df.columns[0])
    for cand in _OTHER_SEPARATORS:
        if cand != (sep or ",") and cand in head:
            shown = "\\t" if cand == "\t" else cand
            return (f"; the file looks '{shown}'-separated: set sep = '{shown}' {settings_at} "
                    f"(fedrisk predict: --sep '{shown}')")
    return ""


def _resolve_columns(ctx: "_Ctx", path: Path, id_col: str, label_col: str | None, features: Sequence[str] | None,
                     exclude: Sequence[str], require_label: bool | None, forbid_label: str | None,
                     sep: str | None = None, decimal: str = ".", positive: object = None,
                     keep: Sequence[str] = (), allow_no_features: bool = False, na_values: Sequence[str] = ()):
    """Read the file and settle which columns are the id, the label and the features.

    Shared by the numeric and the raw-frame loaders so both refuse the same mistakes the same way.
    Returns ``(frame, feature_names, ids, y or None)``. ``keep`` columns must exist and are left
    out of the features (the caller reads them from the frame). ``allow_no_features``: a vertical
    label holder may bring labels only (every feature is at its partners).
    """
    if require_label is None:
        require_label = label_col is not None
    if require_label and label_col is None:
        raise ConfigError(f"party {ctx.party!r}: require_label=True but no label column was named; "
                          "set the label column in the job spec")
    df = _read_frame(ctx, path, id_col, sep=sep, decimal=decimal, na_values=na_values)
    if id_col not in df.columns:
        hint = _separator_hint(df, sep, ctx.settings_at)
        if hint:
            raise ctx.error(f"id column {id_col!r} not found{hint}")
        raise ctx.error(f"id column {id_col!r} not found; {_available(df)}; set the id column in "
                        "the job spec (fedrisk predict: --id COLUMN)")
    absent_keep = [c for c in keep if c not in df.columns]
    if absent_keep:
        raise ctx.error(f"column {_listing(absent_keep)} (evaluation.test_column or evaluation.weight) not found; "
                        f"{_available(df)}")
    if forbid_label is not None and forbid_label in df.columns:
        raise ctx.error(f"column {forbid_label!r} is present but this party must not hold the "
                        "label; remove it from the export before joining the federation")
    has_label = label_col is not None and label_col in df.columns
    if label_col is not None and not has_label and require_label:
        raise ctx.error(f"label column {label_col!r} not found; {_available(df)}; set the label "
                        "column in the job spec or load this party without a label")
    if label_col is not None and label_col == id_col:
        raise ctx.error(f"the id column and the label column are both {id_col!r}; name two "
                        "different columns")
    reserved = {id_col} | ({label_col} if label_col is not None else set()) | set(keep)
    unknown_ex = [c for c in exclude if c not in df.columns]
    if unknown_ex:
        raise ctx.error(f"exclude names columns that are not in the file: {_listing(unknown_ex)}; "
                        f"{_available(df)}")
    if features is None:
        feature_names = [c for c in df.columns if c not in reserved and c not in set(exclude)]
    else:
        feature_names = [str(c) for c in features]
        absent = [c for c in feature_names if c not in df.columns]
        if absent:
            raise ctx.error(f"feature columns not found: {_listing(absent)}; {_available(df)}")
        clash = [c for c in feature_names if c in reserved]
        kept = [c for c in clash if c in set(keep) and c not in (id_col, label_col)]
        if kept:
            raise ctx.error(f"feature list includes {_listing(kept)}, a column the [evaluation] table keeps out of the "
                            "features (test_column or weight); remove it from the features")
        if clash:
            raise ctx.error(f"feature list includes the id/label column {_listing(clash)}; remove "
                            "it from the features (using the label as a feature leaks the answer)")
        dup = sorted({c for c in feature_names if feature_names.count(c) > 1})
        if dup:
            raise ctx.error(f"feature list names {_listing(dup)} more than once; list each column once")
    if not feature_names and not allow_no_features:
        raise ctx.error(f"no feature columns left after removing id/label/exclude; {_available(df)}")
    ids = _normalise_ids(ctx, df[id_col], id_col)
    y = _labels(ctx, df[label_col], label_col, positive) if has_label else None
    return df, feature_names, ids, y


def load_party_table(
    path: str | Path,
    *,
    party: str,
    id_col: str,
    label_col: str | None = None,
    features: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    missing: str = "reject",
    require_label: bool | None = None,
    forbid_label: str | None = None,
    sep: str | None = None,
    decimal: str = ".",
    positive: object = None,
    keep: Sequence[str] = (),
    fill: Mapping[str, float] | None = None,
    categorical: Sequence[str] | None = None,
    encoding: str | None = None,
    categories: Mapping[str, Mapping] | None = None,
    missing_advice: str | None = None,
    allow_no_features: bool = False,
    fill_later: bool = False,
    na_values: Sequence[str] = (),
    settings_at: str = PARTY_SETTINGS,
) -> PartyTable:
    """Read and validate one party's CSV or Parquet file.

    Parameters
    ----------
    path : str or Path
        ``.csv`` (optionally compressed: ``.csv.gz`` ...) or ``.parquet``/``.pq``; chosen by extension.
    party : str
        The party's name; it prefixes every error so an operator reading a coordinator log knows
        whose file is at fault.
    id_col : str
        Customer key column. Read as text, stripped, must be non-empty and unique.
    label_col : str, optional
        Name of the 0/1 label column (1 = default). ``None`` for a feature-only party.
    features : sequence of str, optional
        Exact feature columns, in this order. Default: every column except the id, the label and
        ``exclude``, in file order.
    exclude : sequence of str
        Columns to leave out of the default feature set (e.g. a date or a free-text column).
        Every name must exist in the file: a typo here would otherwise silently keep the column.
    missing : {"reject", "mean", "keep"}
        What to do with NaN/inf in features. ``"reject"`` (default) refuses the file and says how
        many rows and which columns are affected. ``"mean"`` fills each column with the mean of
        its finite values *in this file* (unless ``fill_later``). ``"keep"``
        leaves missing cells as NaN (infinities are still refused) for tasks that handle them:
        SecureBoost gives them a bin of their own and learns which side of each split they take.
    require_label : bool, optional
        Whether ``label_col`` must be present. Default: ``True`` when ``label_col`` is given. Pass
        ``False`` to read a label if present (``y`` is ``None`` otherwise), e.g. for scoring files.
    forbid_label : str, optional
        A column that must *not* be in this file — the label name, for a vertical feature holder.
        Catches a partner that exported the label by mistake before it is ever used as a feature.
    sep, decimal : str, optional
        CSV dialect: field separator (default ``","``) and decimal mark (default ``"."``). A
        ``;``-separated file read with the default gets a message saying so, not "id column not found".
    positive : scalar, list or mapping, optional
        Label coding when it is not 0/1: the value(s) meaning default (``"bad"``, ``2``), or a map
        from every label value to 0/1. Default: the label must already be 0/1 or boolean.
    keep : sequence of str
        Columns to read but never use as features (returned in :attr:`PartyTable.extra`), such as
        the label holder's ``evaluation.test_column`` and the evaluating party's ``evaluation.weight``.
    fill : mapping of str to float, optional
        Scoring with a model trained under ``missing="mean"``: the training means stored in the
        model. Empty and infinite cells of these columns (training filled both) get these values,
        not this file's means, so a row scores the same whichever batch it arrives in. They count
        as filled in ``imputed``.
    categorical : sequence of str, optional
        Text category columns (the party's ``categorical = [...]``), encoded at this party by
        :mod:`fedrisk.data.categorical`; with an ``encoding``, undeclared non-numeric columns are
        categorical too (with a note in ``notes``).
    encoding : {"codes", "onehot"}, optional
        How the task wants categories (trees: codes, LR: one-hot). ``None``: a task without
        categorical support, which refuses non-numeric columns as before.
    categories : mapping, optional
        Scoring: the encoders the model stored (``PartyTable.categories`` at training), so new rows
        get the training levels; ``features`` may then name one-hot columns (``name=level``).
    missing_advice : str, optional
        What the user can do about missing values refused under ``missing="reject"``, when the
        default advice (set ``missing`` in the job spec) does not apply: scoring has no such setting.
    allow_no_features : bool
        Accept a file with no feature column (a vertical label holder that brings labels only).
    fill_later : bool
        With ``missing="mean"``: leave every missing or infinite cell as NaN, to be filled with means the
        federation agrees (horizontal jobs fill with the POOLED mean, not this file's), and accept a
        column with no finite value here (other banks may have some).
    na_values : sequence of str
        Placeholders this party's exports write for "no value" (``"?"``, ``"."``, ``"unknown"``: the
        spec's ``na_values``): such cells are missing values in CSV and Parquet alike (exact text, spaces
        around it ignored), on top of the CSV reader's own ("", "NA", "NaN", ...). A numeric column with
        placeholder cells is refused without it, naming this setting.
    settings_at : str
        Where the advice of a refusal says ``sep`` / ``decimal`` / ``na_values`` are set for this file:
        :data:`PARTY_SETTINGS` (a party's own data, the default) or :data:`EVALUATION_SETTINGS` (the
        ``evaluation.test`` file, whose dialect ``[evaluation]`` may set apart from the holder's).

    Returns
    -------
    PartyTable

    Raises
    ------
    DataError
        For any problem with the file's contents, with a one-line message naming the party, the
        file, the column and the fix.
    ConfigError
        For an unknown ``missing`` policy (a job-spec error, not a data error).
    """
    if missing not in MISSING_POLICIES:
        raise ConfigError(f"party {party!r}: missing={missing!r} is not a policy; use one of "
                          f"{', '.join(MISSING_POLICIES)}")
    path = Path(path)
    ctx = _Ctx(party, path, settings_at)
    declared = list(categorical or []) + [c for c in (categories or {}) if c not in (categorical or [])]
    if declared and encoding is None:
        raise ConfigError(f"party {party!r}: categorical columns {_listing(declared)} are declared, but this task "
                          "takes numeric features only; encode them first or remove categorical = [...]")
    wanted = list(features) if features is not None and categories is not None else None
    if categories and features is not None:
        from fedrisk.data.categorical import raw_columns

        features = raw_columns(features, categories)
        if any(c in categories for c in wanted):
            # the file's own columns (a bank's features = [...] in the spec), not a model's encoded names:
            # they fix which columns load, in which order; the encoding names the result
            wanted = None

    df, feature_names, ids, y = _resolve_columns(ctx, path, id_col, label_col, features, exclude,
                                                 require_label, forbid_label, sep, decimal, positive, keep,
                                                 allow_no_features, na_values)

    non_numeric = [c for c in feature_names if not pd.api.types.is_numeric_dtype(df[c].dtype)]
    parsed = {}  # each undeclared text column parsed as numbers once, for both questions asked of it
    no_value: list[str] = []  # said in the table's notes: a whole file without a field is more likely a broken export
    for c in [c for c in non_numeric if c not in declared]:
        if _no_value(df[c]):
            no_value.append(c)
            # a column without a value in any row is what a CSV reader makes of an empty column (floats, all
            # missing) whatever type the Parquet writer gave it (string, dictionary, null): the missing policy
            # decides, as for CSV (refused under "reject", kept or filled with the federation's means otherwise)
            df[c] = np.full(len(df), np.nan)
            non_numeric.remove(c)
            continue
        parsed[c] = _parse_text_numbers(df[c], decimal)
        if parsed[c] is not None and parsed[c].all_numbers is not None:
            # numbers kept as text (e.g. a Parquet string column): load them as numbers
            df[c] = parsed[c].all_numbers.to_numpy()
            non_numeric.remove(c)
    dates = [c for c in non_numeric if c not in declared and pd.api.types.is_datetime64_any_dtype(df[c].dtype)]
    if dates:  # (Parquet keeps dates as dates) neither a number a model can use as is, nor a category
        raise ctx.error(_dates_named(df, dates))
    shown = text_display_numbers(df, [c for c in non_numeric if c not in declared], decimal, sep, ctx.settings_at)
    if shown:  # amounts exported for reading: neither categories nor a decimal-comma dialect
        raise ctx.error(shown)
    if encoding is not None:
        from fedrisk.data.categorical import encode_columns

        unknown = [c for c in declared if c not in feature_names]
        if unknown:
            raise ctx.error(f"categorical names columns that are not features of this file: {_listing(unknown)}; "
                            f"{_available(df)}")
        commas = [c for c in non_numeric if c not in declared and _decimal_comma_mask(df[c]).any()]
        if commas and decimal == ".":
            example = str(df[commas[0]][_decimal_comma_mask(df[commas[0]])].iloc[0]).strip()
            raise ctx.error(f"feature columns {_listing(commas)} hold numbers with decimal commas (e.g. {example!r}): "
                            f"set decimal = ',' {ctx.settings_at} (fedrisk predict: --decimal ',')")
        inferred = [c for c in non_numeric if c not in declared and c not in commas]
        if categories is None:
            _not_categories(ctx, df, inferred, "categorical = [...] in this party's table", decimal, parsed)
        notes = []
        if inferred and categories is None:
            notes.append(f"text columns {_listing(inferred)} are treated as categorical; declare them with "
                         f"categorical = [...] in this party's table to silence this warning")
        cat_cols = [c for c in feature_names if c in set(declared) | set(inferred)]
        if cat_cols:
            X, names, encoders, unseen = encode_columns(df, feature_names, cat_cols, encoding, categories, party)
            if wanted is not None and names != wanted:  # scoring: the model's columns, in its order
                lost = [f for f in wanted if f not in names]
                if lost:
                    raise ctx.error(f"the model's columns {_listing(lost)} cannot be made from this file's categories")
                X, names = X[:, [names.index(f) for f in wanted]], wanted
            table = _finish(ctx, party, path, ids, X, y, names, missing, fill, df, keep, missing_advice,
                            fill_later)
            table.categories, table.unseen = encoders, unseen
            table.notes = [*ctx.notes, *notes, *table.notes, *_no_value_notes(no_value, missing)]
            table.read_notes = list(ctx.notes)
            table.label_coding = label_coding(df[label_col], positive) if y is not None else None
            return table
    if non_numeric:
        # dates written as text: not categories either (one per day), so not the advice below
        dates = [c for c in non_numeric if _is_date_column(df[c], parsed.get(c))]
        if len(dates) == len(non_numeric):
            raise ctx.error(_dates_named(df, dates, HORIZONTAL_CATEGORIES + " in a horizontal job"))
        kinds = ", ".join(f"{c!r} ({df[c].dtype})" for c in non_numeric[:_MAX_LISTED])
        more = f", ... ({len(non_numeric) - _MAX_LISTED} more)" if len(non_numeric) > _MAX_LISTED else ""
        hint = ""
        placeholders = [(c, odd) for c in non_numeric for odd in [_placeholders_among_numbers(df[c], decimal)]
                        if odd is not None]
        if placeholders:  # numbers with "?" cells: not a column to encode or exclude
            c, odd = placeholders[0]
            hint = (f"; {c!r} holds numbers except in {len(odd)} rows with text (e.g. {odd.iloc[0]!r}): "
                    + _missing_advice(odd, ctx.settings_at))
        elif decimal == "." and any(df[c].astype(str).str.fullmatch(r"\s*-?\d+,\d+\s*").any() for c in non_numeric):
            hint = (f"; they look like numbers with decimal commas: set decimal = ',' {ctx.settings_at} "
                    "(fedrisk predict: --decimal ',')")
        first = next(c for c in non_numeric if c not in dates)
        advice = ("; encode them as numbers (e.g. WOE or one-hot), list them in exclude, or have the job treat them as "
                  f"categories ({declaring(HORIZONTAL_CATEGORIES, first)} in a horizontal job, categorical = "
                  "[...] in a vertical party's table)") + (f"; of them, {_dates_named(df, dates)}" if dates else "")
        raise ctx.error(f"non-numeric feature columns: {kinds}{more}{hint or advice}")
    try:
        X = df[feature_names].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:  # e.g. nullable dtypes with exotic contents
        raise ctx.error(f"feature columns cannot be converted to float64: {_one_line(exc)}") from None
    table = _finish(ctx, party, path, ids, np.ascontiguousarray(X), y, feature_names, missing, fill, df, keep,
                    missing_advice, fill_later)
    table.notes = [*ctx.notes, *table.notes, *_no_value_notes(no_value, missing)]
    table.read_notes = list(ctx.notes)
    table.label_coding = label_coding(df[label_col], positive) if y is not None else None
    return table


def _no_value_notes(columns: list[str], missing: str) -> list[str]:
    """The note for text-typed feature columns without a value in any row (loaded as missing)."""
    if not columns:
        return []
    return [f"feature columns {_listing(columns)} have no value in any row of this file; they load as missing "
            f"(missing = {missing!r}) -- check the export if this party should have them"]


def _finish(ctx: _Ctx, party: str, path: Path, ids: np.ndarray, X: np.ndarray, y: np.ndarray | None,
            feature_names: list[str], missing: str, fill: Mapping[str, float] | None, df: pd.DataFrame,
            keep: Sequence[str], missing_advice: str | None = None, fill_later: bool = False) -> PartyTable:
    """Missing-value policy over the numeric matrix, then the table."""
    # filled in place below: a one-column frame's to_numpy can be a read-only view of the file's buffer
    X = np.require(X, dtype=np.float64, requirements=["C", "W"])
    imputed: dict[str, float] = {}
    inf = np.isinf(X)  # before the fill below, which (as training did under "mean") fills them too
    for name, value in (fill or {}).items():
        if name in feature_names:
            j = feature_names.index(name)
            gaps = ~np.isfinite(X[:, j])
            if gaps.any():
                X[gaps, j] = float(value)
                imputed[name] = float(value)
    # under "keep" NaN is a legitimate value; infinities are never missing values
    bad = np.isinf(X) if missing == "keep" else ~np.isfinite(X)
    notes = _infinity_notes(inf, feature_names) if missing == "mean" or (fill and inf.any()) else []
    if missing == "mean" and not fill:  # training: say how many blanks the policy fills (scoring fills are counted
        notes += _blank_notes(np.isnan(X), feature_names, pooled=fill_later)  # by the scorer's own warnings)
    if missing == "mean" and fill_later:  # the federation fills them with agreed (pooled) means
        X[bad] = np.nan
        bad = np.zeros_like(bad)
    if bad.any():
        bad_cols = np.flatnonzero(bad.any(axis=0))
        kind = "infinite" if missing == "keep" else "missing or infinite"
        where = f"{int(bad.any(axis=1).sum())} rows have {kind} feature values, in columns {_cell_counts(bad, feature_names)}"
        if missing == "keep":
            raise ctx.error(where + "; missing='keep' keeps empty cells (NaN), not "
                            "infinities: fix the export or leave those cells empty")
        empty = [feature_names[j] for j in bad_cols if bad[:, j].all()]
        if missing == "reject" and empty:  # filling it would not help: there is no value to fill with
            raise ctx.error(f"feature columns {_listing(empty)} are empty in every row; list them in exclude or fix "
                            "the export")
        if missing == "reject" and missing_advice:
            raise ctx.error(f"{where}; {missing_advice}")
        if missing == "reject":
            raise ctx.error(where + "; clean them, or load with "
                            "missing='mean' to fill them with column means (in a horizontal job the federation's "
                            "pooled means) (or missing='keep' for gradient-boosted trees, which learn where missing "
                            "values go)")
        for j in bad_cols:
            col = X[:, j]
            ok = np.isfinite(col)
            if not ok.any():
                raise ctx.error(f"feature column {feature_names[j]!r} has no finite values, so "
                                "there is no mean to fill with; drop it (exclude) or fix the export")
            fill = float(col[ok].mean())
            col[~ok] = fill
            imputed[feature_names[j]] = fill

    return PartyTable(party=party, path=path, ids=ids, X=X, y=y, feature_names=list(feature_names),
                      imputed=imputed, extra={c: df[c].to_numpy() for c in keep}, notes=notes)


def _infinity_notes(inf: np.ndarray, feature_names: Sequence[str]) -> list[str]:
    """The note for infinite cells that ``missing = "mean"`` fills like blanks.

    An infinity is rarely "no value": it is a ratio over zero (utilisation on a zero limit), a value
    beyond every other one that the mean turns into an average one. Filling it stays the documented
    behaviour; the note (counts per column, no values) lets the party see that its export had them.
    """
    counts = _cell_counts(inf, feature_names)
    if not counts:
        return []
    return [f"infinite cells (e.g. a ratio over zero) in columns {counts} are filled "
            "like blanks under missing = 'mean'; if they mean 'very large', cap them in the export instead"]


def _blank_notes(blank: np.ndarray, feature_names: Sequence[str], pooled: bool) -> list[str]:
    """The note for the blank cells ``missing = "mean"`` fills at training (counts per column, no values).

    Filling is the policy the party chose, but a model validator asks how much of each column was
    imputed, and a column mostly blank at one bank (a field it does not collect) should be seen in
    its own log rather than discovered in the model.
    """
    counts = _cell_counts(blank, feature_names)
    if not counts:
        return []
    what = "the federation's pooled column means" if pooled else "this file's column means"
    return [f"missing = 'mean' fills blank cells with {what}: columns {counts} (of {blank.shape[0]} rows)"]


def _cell_counts(mask: np.ndarray, feature_names: Sequence[str]) -> str:
    """``'a' (2), 'b' (1)``: the columns where ``mask`` (rows x columns) holds cells, with their counts."""
    cols = np.flatnonzero(mask.any(axis=0))
    per_col = [f"{feature_names[j]!r} ({int(mask[:, j].sum())})" for j in cols]
    more = f", ... ({len(per_col) - _MAX_LISTED} more)" if len(per_col) > _MAX_LISTED else ""
    return ", ".join(per_col[:_MAX_LISTED]) + more if per_col else ""


@dataclass
class PartyFrame:
    """One party's validated raw features (numeric and categorical), for binning and scorecards.

    Attributes
    ----------
    party : str
        Name of the party that owns the frame.
    path : Path
        File it was read from.
    ids : numpy.ndarray
        Object array of ``str``, one per row, unique and non-empty (as in :class:`PartyTable`).
    X : pandas.DataFrame
        The feature columns as read: numbers stay numbers, text stays text, missing values stay
        missing (binning gives them their own bin). Index ``0..n-1``.
    y : numpy.ndarray or None
        ``int8`` 0/1 labels, or ``None`` for a party without labels.
    feature_names : list of str
        Columns of ``X``.
    """

    party: str
    path: Path
    ids: np.ndarray
    X: pd.DataFrame
    y: np.ndarray | None
    feature_names: list[str]
    #: raw values of the ``keep`` columns (see :func:`load_party_table`)
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    #: ``[non-default, default]`` in the file's label coding (:func:`label_coding`); ``None`` for 0/1
    label_coding: list | None = None
    #: warnings for the party's log on what reading the file changed (as :attr:`PartyTable.read_notes`)
    notes: list[str] = field(default_factory=list)

    @property
    def n_rows(self) -> int:
        """Number of rows (customers)."""
        return int(len(self.X))

    @property
    def n_features(self) -> int:
        """Number of feature columns."""
        return int(self.X.shape[1])


def load_party_frame(
    path: str | Path,
    *,
    party: str,
    id_col: str,
    label_col: str | None = None,
    features: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    require_label: bool | None = None,
    forbid_label: str | None = None,
    sep: str | None = None,
    decimal: str = ".",
    positive: object = None,
    keep: Sequence[str] = (),
    allow_empty: bool = False,
    categorical: Sequence[str] | None = None,
    allow_no_features: bool = False,
    na_values: Sequence[str] = (),
    declare: str = "[task] categorical = [...]",
    numeric: Sequence[str] = (),
    settings_at: str = PARTY_SETTINGS,
) -> PartyFrame:
    """Read and validate one party's file keeping raw (numeric *and* categorical) feature columns.

    The sibling of :func:`load_party_table` for WOE binning and scorecards, where text columns
    (``"housing" = "own"``) and missing values are legitimate inputs: each category and the
    missing values get bins of their own. Ids, labels and column selection are checked exactly
    as in :func:`load_party_table`; parameters have the same meaning.

    allow_empty : bool
        Accept a feature column with no value at all. A horizontal bank that does not collect a
        field its partners have (WOE binning gives its rows the missing bin) must keep the column
        to keep the shared schema; a single party would rather drop it.
    categorical : sequence of str, optional
        Training: the task's declared category columns (``[task] categorical``). Every other text
        column is checked for numbers with a few text cells and for dates written as text, which
        binning would otherwise take for categories. ``None`` (scoring): no check.
    allow_no_features : bool
        Accept a file with no feature column (a vertical label holder that brings labels only).
    na_values : sequence of str
        As in :func:`load_party_table`.
    declare : str
        Where this job declares a category column, for the refusal of an undeclared one (``<col>``
        stands for the column): ``[task] categorical = [...]``, or a horizontal job's vocabulary
        ``[task] categories = { <col> = [...] }``.
    numeric : sequence of str
        Scoring: the model's numeric columns. A text cell in one of them is binned as the number it reads as, so
        numbers written for display ("12.629" thousands in a decimal-comma file) are refused here, as at training.
    settings_at : str
        As in :func:`load_party_table`.

    Returns
    -------
    PartyFrame

    Raises
    ------
    DataError
        One line naming the party, the file, the column and the fix: unreadable file, missing
        or duplicated ids, a non-binary label, unknown feature/exclude columns, a feature column
        that is entirely empty.
    ConfigError
        ``require_label=True`` without a label column.
    """
    path = Path(path)
    ctx = _Ctx(party, path, settings_at)
    df, feature_names, ids, y = _resolve_columns(ctx, path, id_col, label_col, features, exclude,
                                                 require_label, forbid_label, sep, decimal, positive, keep,
                                                 allow_no_features, na_values)
    X = df[feature_names].reset_index(drop=True)
    if categorical is not None:
        _not_categories(ctx, X, [c for c in feature_names if c not in set(categorical)
                                 and not pd.api.types.is_numeric_dtype(X[c].dtype)], declare, decimal, sep=sep)
    shown = text_display_numbers(X, [c for c in numeric if c in X and not pd.api.types.is_numeric_dtype(X[c].dtype)],
                                 decimal, sep, ctx.settings_at)
    if shown:
        raise ctx.error(shown)
    empty = [c for c in feature_names if X[c].isna().all()]
    if empty and not allow_empty:
        raise ctx.error(f"feature columns {_listing(empty)} have no values at all; drop them (exclude) "
                        "or fix the export")
    return PartyFrame(party=party, path=path, ids=ids, X=X, y=y, feature_names=list(feature_names),
                      extra={c: df[c].to_numpy() for c in keep},
                      label_coding=label_coding(df[label_col], positive) if y is not None else None, notes=list(ctx.notes))


def check_same_features(tables_or_name_lists: Mapping[str, PartyTable | Sequence[str]]) -> None:
    """Check that every horizontal party has the same feature columns in the same order.

    Horizontal training averages weight vectors position by position, so a bank whose column 3
    is ``income_k`` while another's is ``age`` produces a model that is silently wrong. The check
    compares every party with the first one and reports the first difference.

    Parameters
    ----------
    tables_or_name_lists : mapping of str to PartyTable or sequence of str
        Party name -> its table or its feature names.

    Raises
    ------
    DataError
        Naming both parties, the counts if they differ, and the first position where they disagree.
    """
    named: list[tuple[str, list[str]]] = []
    for party, item in tables_or_name_lists.items():
        names = item.feature_names if isinstance(item, PartyTable) else [str(n) for n in item]
        named.append((str(party), names))
    if len(named) < 2:
        return
    ref_party, ref = named[0]
    for party, names in named[1:]:
        if names == ref:
            continue
        parts = []
        if len(names) != len(ref):
            parts.append(f"{len(ref)} features at {ref_party!r} vs {len(names)} at {party!r}")
        for i in range(max(len(ref), len(names))):
            a = ref[i] if i < len(ref) else None
            b = names[i] if i < len(names) else None
            if a != b:
                hint = ""
                if a is not None and b is not None and set(ref) == set(names):
                    hint = " (same columns, different order)"
                a_txt = repr(a) if a is not None else "(nothing)"
                b_txt = repr(b) if b is not None else "(nothing)"
                parts.append(f"first difference at position {i}: {a_txt} at {ref_party!r} vs "
                             f"{b_txt} at {party!r}{hint}")
                break
        raise DataError(f"parties {ref_party!r} and {party!r} have different feature columns: "
                        f"{'; '.join(parts)}; every bank must export the same columns in the same "
                        "order (pass features=[...] to fix the order)")


def id_test_mask(ids: Sequence[object] | np.ndarray, modulus: int = 5, remainder: int = 0, *,
                 party: str | None = None, advice: str | None = None) -> np.ndarray:
    """Boolean mask of the rows whose integer id satisfies ``id % modulus == remainder``.

    This is the project's vertical train/test rule (``id % 5 == 0`` is test). It is computed from
    the id alone so every party derives the same split locally, with no message exchanged and
    whatever row order its file has.

    Parameters
    ----------
    ids : array-like
        Integer ids, or strings holding integers (as in :attr:`PartyTable.ids`). Leading zeros and
        surrounding spaces are allowed; ids beyond 64 bits are handled exactly.
    modulus, remainder : int
        The rule; ``0 <= remainder < modulus``.
    party : str, optional
        Named in the error message, so the operator knows whose ids broke the rule.
    advice : str, optional
        The fix the error message offers for ids that are not integers, in the caller's terms
        (default: the job spec's ``evaluation.test_fraction`` or ``test_column``).

    Returns
    -------
    numpy.ndarray of bool

    Raises
    ------
    DataError
        When an id is not an integer (the rule is undefined for ``"C-17"`` or ``3.5``); the
        message shows an example and suggests an explicit split column instead.
    ConfigError
        For a modulus < 1 or a remainder outside ``[0, modulus)``.
    """
    if int(modulus) < 1 or not 0 <= int(remainder) < int(modulus):
        raise ConfigError(f"id split rule id % {modulus} == {remainder} is invalid; need modulus >= 1 "
                          "and 0 <= remainder < modulus")
    who = f"party {party!r}: " if party is not None else ""
    fix = advice or "use evaluation.test_fraction (any id type) or a test_column instead"
    arr = np.asarray(ids)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.size == 0:
        return np.zeros(0, dtype=bool)
    if arr.dtype.kind in "iu":
        return (arr % modulus) == remainder
    if arr.dtype.kind == "b":
        raise DataError(f"{who}ids are booleans, not integers; the id % 5 split needs integer ids")
    if arr.dtype.kind == "f":
        ok = np.isfinite(arr) & (arr == np.floor(arr))
        if not ok.all():
            raise DataError(f"{who}id {arr[~ok][0]!r} is not an integer; the id % {modulus} split rule "
                            f"needs integer ids — {fix}")
        return (arr.astype(np.int64) % modulus) == remainder
    if arr.dtype == object:
        # Going through str makes floats ("1.5") and bools ("True") fail the integer parse
        # instead of being truncated to an int silently.
        arr = np.array([str(v) for v in arr.tolist()], dtype=str)
    try:
        nums = arr.astype(np.int64)
    except (ValueError, TypeError, OverflowError):
        nums = None
    if nums is not None:
        return (nums % modulus) == remainder
    # Slow path: find the offending id for the message, or handle ids wider than 64 bits exactly.
    out = np.empty(arr.size, dtype=bool)
    for i, v in enumerate(arr.tolist()):
        try:
            n = int(str(v).strip())
        except (ValueError, TypeError, AttributeError):
            raise DataError(f"{who}id {v!r} (row {i}) is not an integer; the id % {modulus} split rule "
                            f"needs integer ids — {fix}") from None
        out[i] = (n % modulus) == remainder
    return out


def iter_id_chunks(path: str | Path, id_col: str, *, party: str, rows: int = 262144,
                   sep: str | None = None, na_values: Sequence[str] = (),
                   notes: list[str] | None = None) -> Iterator[np.ndarray]:
    """Yield a party's id column in chunks of ``rows``, without loading the file (for streaming PSI).

    CSV is read with pandas' ``chunksize`` (only the id column, as strings, exactly as
    :func:`load_party_table` reads it); Parquet by record batches of the id column. The chunks
    concatenate to the loaded table's ids: stripped strings, integral floats as integers, ids written
    as decimals (``"123.0"``) read as integers when every id of the *file* is (a chunk cannot tell, so
    a first chunk of such ids is followed by one more pass over the id column to decide), rows with no
    value in any cell left out (looked up in the whole rows only where an id is missing). A missing id
    in a row with values is one :class:`DataError` naming the file, column and row. Duplicates are
    checked by the PSI itself over the whole set. ``na_values``: the party's (missing, as at load).
    ``notes``: gets, once the file is read, the load's notes on what reading changed (blank rows left
    out, decimal ids read as integers), counts only, for the caller to show its own user.
    """
    path = Path(path)
    ctx = _Ctx(party, path)
    kind = _file_kind(path)
    if not path.is_file() or kind is None:
        raise ctx.error("not a readable .csv or .parquet file; check the data path in the job spec")
    try:
        frames = _id_chunks(ctx, path, kind, id_col, rows, sep, na_values)
        first = next(frames, None)
        integral = False
        if first is not None and _all_integral_decimals(_filled_ids(first)):
            integral = all(_all_integral_decimals(_filled_ids(c))
                           for c in _id_chunks(ctx, path, kind, id_col, rows, sep, na_values))
        blank = _BlankRows(lambda: _row_chunks(path, kind, sep, na_values))
        offset = read = 0  # rows yielded (the loaded table's numbering: blank rows left out), rows read
        for chunk in itertools.chain([first] if first is not None else [], frames):
            chunk = chunk.reset_index(drop=True)
            idless = chunk.isna().to_numpy(dtype=bool) | chunk.astype("string").str.strip().eq("").fillna(False).to_numpy()
            if idless.any():
                kept = ~(idless & blank.take(read, len(chunk)))
                if (idless & kept).any():
                    at = int(np.flatnonzero(idless & kept)[0])
                    raise ctx.error(f"id column {id_col!r} is empty at data row {offset + int(kept[:at].sum()) + 1}; "
                                    "every row needs a customer key — drop or fill those rows")
            read += len(chunk)
            if idless.any():
                chunk = chunk[kept].reset_index(drop=True)
            if not len(chunk):
                continue
            ids = _normalise_ids(ctx, chunk, id_col, integral=integral)
            offset += len(ids)
            yield ids
        if notes is not None:
            if read > offset:
                notes.append(f"{read - offset} rows with no value in any cell (a spreadsheet's empty rows, lines of "
                             "separators only) are left out")
            if integral and offset:
                notes.append(f"id column {id_col!r}: {offset} ids written as integers with a decimal part of zeros "
                             "(a spreadsheet's export of whole numbers) are read as those integers, as in Parquet files")
    except DataError:
        raise
    except (ValueError, OSError) as exc:
        raise ctx.error(f"cannot read the id column {id_col!r}: {_one_line(exc)}") from None


def _filled_ids(raw: pd.Series) -> np.ndarray:
    """A chunk's ids that are there (stripped text), for :func:`_all_integral_decimals`."""
    text = raw.dropna().astype(str).str.strip()
    return text[text != ""].to_numpy(dtype=object)


def _id_chunks(ctx: _Ctx, path: Path, kind: str, id_col: str, rows: int, sep: str | None,
               na_values: Sequence[str]) -> Iterator[pd.Series]:
    """The raw id column of a file in chunks, read as :func:`_read_frame` reads it (text, the party's missing
    markers); one :class:`DataError` when the file has no such column."""
    if kind == "csv":
        reader = pd.read_csv(path, usecols=lambda c: str(c).strip() == id_col, dtype=str, sep=sep or ",",
                             skipinitialspace=True, chunksize=rows, index_col=False, na_values=list(na_values) or None,
                             skiprows=int(_separator_line(path) is not None))  # as the table load reads it
        for f in reader:
            if not f.shape[1]:
                raise ctx.error(f"no id column {id_col!r}; set the party's id column in the job spec")
            yield (declare_missing(f, na_values) if na_values else f).iloc[:, 0]  # (spaces around, as at load)
        return
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    if id_col not in pf.schema_arrow.names:
        raise ctx.error(f"no id column {id_col!r}; set the party's id column in the job spec")
    for b in pf.iter_batches(batch_size=rows, columns=[id_col]):
        col = b.column(0).to_pandas()
        yield declare_missing(col.to_frame(), na_values).iloc[:, 0] if na_values else col


def _row_chunks(path: Path, kind: str, sep: str | None, na_values: Sequence[str],
                rows: int = 16384) -> Iterator[pd.DataFrame]:
    """Every column of a file in chunks (text, as read at load), for :class:`_BlankRows`."""
    if kind == "csv":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pd.errors.ParserWarning)  # (refused at load, not this reader's business)
            for df in pd.read_csv(path, dtype=str, sep=sep or ",", skipinitialspace=True, chunksize=rows,
                                  index_col=False, na_values=list(na_values) or None,
                                  skiprows=int(_separator_line(path) is not None)):
                yield declare_missing(df, na_values) if na_values else df
        return
    import pyarrow.parquet as pq

    for b in pq.ParquetFile(path).iter_batches(batch_size=rows):
        df = b.to_pandas()
        yield declare_missing(df, na_values) if na_values else df


class _BlankRows:
    """Which rows of a file have no value in any cell, read in order and only when asked: the chunked id reader
    asks only for the rows of a chunk with a missing id (usually none, or the empty rows at the file's end)."""

    def __init__(self, open_chunks) -> None:
        self._open, self._chunks = open_chunks, None
        self._end, self._flags = 0, np.zeros(0, dtype=bool)  # flags of rows [_end - len(_flags), _end)

    def take(self, start: int, n: int) -> np.ndarray:
        """Flags of the data rows ``start .. start + n - 1`` (0-based); a later call must not ask for earlier rows."""
        if self._chunks is None:
            self._chunks = iter(self._open())
        while self._end < start + n:
            df = next(self._chunks, None)
            if df is None:
                break
            flags = _no_value_cells(df).all(axis=1)
            self._flags = np.concatenate([self._flags[max(0, start - (self._end - len(self._flags))):], flags])
            self._end += len(flags)
        lo = start - (self._end - len(self._flags))
        out = self._flags[max(0, lo):max(0, lo) + n]
        return np.concatenate([out, np.zeros(n - len(out), dtype=bool)])


def count_id_rows(path: str | Path) -> int:
    """Data rows of a CSV (line count minus the header; quoted newlines count extra) or Parquet file.

    A cheap estimate for sizing streaming PSI's spill partitions, not a validation.
    """
    path = Path(path)
    if _file_kind(path) == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    n = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            n += block.count(b"\n")
    return max(0, n - 1)
