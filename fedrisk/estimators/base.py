"""What every federated estimator shares: its hyper-parameters come from the task ``Params``.

An estimator stands for one or more task kinds (``LogisticRegression``: ``horizontal.lr`` on a
horizontal federation, ``vertical.lr`` on a vertical one). Its ``__init__`` signature is *built*
from those tasks' pydantic ``Params`` when the class is defined, so there is one declaration of
every setting — the one ``fedrisk simulate`` validates a job spec's ``[task]`` table against:

* a setting every kind declares with the same default gets that default;
* a setting only some kinds declare, or with different defaults, defaults to ``None``, meaning
  "the declared default of the kind this federation runs" (the fitted ``params_`` shows the
  values used); setting it for a kind that does not declare it is a one-line ``ConfigError``.

``fit`` validates the set values through the kind's ``Params`` (same messages as a job spec),
runs the task in-process (:func:`fedrisk.estimators.engine.run_task`) and reads the learned state
from the files the task wrote. scikit-learn's ``get_params``/``set_params``/``clone`` work
because the built signature lists every setting as a keyword.
"""
from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from fedrisk.errors import ConfigError
from fedrisk.estimators.federation import Federation

__all__ = ["FederatedEstimator", "FederatedClassifier", "declared_params"]



def _task_params(kind: str):
    from fedrisk.runtime.tasks import TASKS, get_task

    if kind not in TASKS:
        return None
    try:
        return get_task(kind).Params
    except Exception:  # noqa: BLE001 - a kind whose module is absent in this build is skipped
        return None


def _doc_meanings(*docs: str | None) -> dict[str, str]:
    """``name : type`` + indented meaning pairs from numpydoc ``Parameters`` sections."""
    out: dict[str, str] = {}
    for doc in docs:
        if not doc:
            continue
        lines = inspect.cleandoc(doc).splitlines()
        for i, line in enumerate(lines):
            m = re.match(r"^([A-Za-z_][A-Za-z0-9_, ]*) : ", line)
            if not m:
                continue
            body = []
            for nxt in lines[i + 1:]:
                if nxt.startswith("    "):
                    body.append(nxt.strip())
                else:
                    break
            for name in m.group(1).split(","):
                out.setdefault(name.strip(), " ".join(body))
    return out


def declared_params(kinds: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Every setting the estimator's task kinds declare: ``{name: {"default", "kinds", "annotation", "doc"}}``."""
    out: dict[str, dict[str, Any]] = {}
    for fed_kind, kind in kinds.items():
        model = _task_params(kind)
        if model is None:
            continue
        meanings = _doc_meanings(model.__doc__, *(c.__doc__ for t in _config_types(model) for c in t.__mro__[:-1]))
        for name, f in model.model_fields.items():
            default = f.get_default(call_default_factory=True)
            rec = out.setdefault(name, {"default": default, "kinds": {}, "annotation": f.annotation,
                                        "doc": f.description or meanings.get(name, "")})
            if rec["kinds"] and rec["default"] != default:
                rec["default"] = None
            rec["kinds"][fed_kind] = default
    n = len([k for k in kinds.values() if _task_params(k) is not None])
    for rec in out.values():
        if len(rec["kinds"]) < n:
            rec["default"] = None
    return out


def _config_types(model) -> list[type]:
    """The algorithm config classes a Params builds (for their parameter docs, theirs and their bases')."""
    types = []
    for meth in ("config", "hetero", "binning"):
        fn = getattr(model, meth, None)
        ann = getattr(fn, "__annotations__", {}).get("return") if fn else None
        if isinstance(ann, str):
            mod = inspect.getmodule(fn)
            ann = getattr(mod, ann, None) if mod else None
        if isinstance(ann, type):
            types.append(ann)
    return types


def _type_name(a: Any) -> str:
    return getattr(a, "__name__", None) or str(a).replace("typing.", "")


class FederatedEstimator(BaseEstimator):
    """Base of the federated estimators; see the module docstring for how parameters are declared."""

    #: federation kind -> task kind
    _TASKS: ClassVar[dict[str, str]] = {}
    #: settings of the estimator itself (not of a task), with defaults
    _OWN: ClassVar[dict[str, Any]] = {}
    _declared: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if not cls._TASKS:
            return
        cls._declared = declared_params(cls._TASKS)
        defaults = {n: rec["default"] for n, rec in cls._declared.items()}
        defaults.update(cls._OWN)
        names = tuple(defaults)

        def __init__(self, **params: Any) -> None:
            unknown = [k for k in params if k not in defaults]
            if unknown:
                import difflib

                hint = difflib.get_close_matches(unknown[0], names, n=1)
                raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {unknown[0]!r}"
                                + (f" (did you mean {hint[0]!r}?)" if hint else f"; known: {', '.join(names)}"))
            for k in names:
                setattr(self, k, params.get(k, defaults[k]))

        __init__.__signature__ = inspect.Signature(
            [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
            + [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in defaults.items()])
        __init__.__qualname__ = f"{cls.__name__}.__init__"
        __init__.__doc__ = f"Store the hyper-parameters; no work is done until ``fit``. See :class:`{cls.__name__}`."
        cls.__init__ = __init__
        if cls.__doc__ and "{parameters}" in cls.__doc__:
            cls.__doc__ = cls.__doc__.replace("{parameters}", cls._parameters_doc())

    @classmethod
    def _parameters_doc(cls) -> str:
        lines = []
        for name, rec in cls._declared.items():
            kinds = rec["kinds"]
            if rec["default"] is None and any(v is not None for v in kinds.values()):
                where = ", ".join(f"{k}: {v!r}" for k, v in kinds.items())
                default = f"None (declared default — {where})"
            else:
                default = repr(rec["default"])
            lines.append(f"    {name} : {_type_name(rec['annotation'])}, default {default}")
            if rec["doc"]:
                lines.append(f"        {rec['doc']}")
        return "\n".join(lines).lstrip()

    # -- the task behind a federation -------------------------------------------------------
    def _kind(self, fed: Federation) -> str:
        if not isinstance(fed, Federation):
            raise ConfigError(f"{type(self).__name__}.fit takes a fedrisk Federation (Federation.vertical(...) or "
                              f"Federation.horizontal(...)), not {type(fed).__name__}")
        kind = self._TASKS.get(fed.kind)
        if kind is None or _task_params(kind) is None:
            have = [k for k, t in self._TASKS.items() if _task_params(t) is not None]
            raise ConfigError(f"{type(self).__name__} runs on {' or '.join(have)} federations; this one is {fed.kind}")
        if fed.kind == "vertical" and fed.label_holder is None:
            raise ConfigError(f"{type(self).__name__}.fit needs a label holder: no party has the label column {fed.label!r}")
        return kind

    def _task_table(self, fed: Federation) -> dict[str, Any]:
        """The ``[task]`` settings (without ``kind``) for ``fed``, validated by the kind's ``Params``."""
        from fedrisk.runtime.tasks import parse_params

        kind = self._kind(fed)
        params = self.get_params(deep=False)
        table = {}
        for name, value in params.items():
            if name in self._OWN or value is None:
                continue
            if fed.kind not in self._declared[name]["kinds"]:
                raise ConfigError(f"{type(self).__name__}({name}={value!r}): this setting applies to "
                                  f"{' and '.join(self._declared[name]['kinds'])} federations, not {fed.kind}; leave it None")
            table[name] = value.tolist() if isinstance(value, np.ndarray) else value
        try:
            parsed = parse_params(_task_params(kind), table, where=f"{type(self).__name__}")
        except ConfigError as e:  # the spec's "task.x" reads as the estimator's keyword "x" here
            raise ConfigError(str(e).replace(": task.", ": ").replace("; task.", "; ")) from None
        self._validated = parsed
        return table

    def _run(self, fed: Federation, capture: bool = False):
        from fedrisk.estimators.engine import run_task

        table = self._task_table(fed)
        run = run_task(fed, self._kind(fed), table, capture=capture)
        self.params_ = self._validated.model_dump(mode="json")
        self.task_ = run.kind
        self.metrics_ = run.metrics
        self.ledger_ = run.ledger
        self.run_ = run
        # the differential-privacy budget spent (horizontal trainers under Federation(privacy=...)), else None
        self.privacy_ = (run.files.get("model.json") or {}).get("privacy") or run.metrics.get("privacy")
        return run

    # -- files -----------------------------------------------------------------------------
    def _model_files(self) -> dict[str, dict[str, Any]]:
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "files_")
        return self.files_

    def save(self, folder: str | Path) -> Path:
        """Write the model files the CLI writes for this task (one per party for split models).

        The folder then looks like a ``fedrisk simulate`` run directory's model files, plus
        ``job.toml`` describing the federation (data paths omitted: each party points its own
        copy at its own data). ``fedrisk predict`` reads a horizontal model directly; a split
        model's parts go to their parties.
        """
        from fedrisk.runtime.context import write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for rel, doc in self._model_files().items():
            doc = dict(doc)
            if "spec_dir" in doc:
                doc["spec_dir"] = str(folder.resolve())
            write_json(folder / rel, doc)
        spec = getattr(self, "run_", None)
        if spec is not None and spec.spec:
            text = "\n".join(l for l in spec.spec.splitlines() if not l.startswith("data = "))
            (folder / "job.toml").write_text(text + "\n", encoding="utf-8")
        return folder

    def report(self, title: str | None = None):
        """The HTML report of this fit, as ``fedrisk report`` writes it for a CLI run; renders inline in Jupyter.

        Built from the run the fit made (its ``metrics.json``, scores, model files and every
        participant's ledger), so a validator reads the same page for a notebook fit as for a job:
        discrimination, stability, IV and points tables, and the communication ledger. ``.save(path)``
        writes it. For a ``Federation.connect`` fit it shows this party's files only.
        """
        import tempfile

        from fedrisk.estimators.results import Report
        from fedrisk.finance.report import load_run, render_report
        from fedrisk.runtime.context import write_json

        run = getattr(self, "run_", None)
        if run is None:
            raise ConfigError(f"{type(self).__name__}.report(): fit it first (a model read by fr.load has no run; "
                              "use fr.run(spec).report() or `fedrisk report RUN_DIR` for a CLI run)")
        with tempfile.TemporaryDirectory(prefix="fedrisk-report-") as tmp:
            root = Path(tmp)
            for rel, doc in run.files.items():
                write_json(root / rel, doc)
            for split, frame in run.scores.items():
                (root / "scores").mkdir(exist_ok=True)
                frame.to_csv(root / "scores" / f"{split}.csv", index=False)
            if run.spec:
                (root / "job.toml").write_text(run.spec, encoding="utf-8")
            (root / "ledger").mkdir()
            for party, rows in run.ledger.groupby("from", sort=True):
                lines = (json.dumps({k: v for k, v in r.items() if v == v}, default=str)
                         for r in rows.to_dict("records"))
                (root / "ledger" / f"{party}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
            return Report(render_report(load_run(root), title=title or f"{type(self).__name__} ({run.kind})"))

    # -- helpers for subclasses -------------------------------------------------------------
    @staticmethod
    def _proba(p1: np.ndarray) -> np.ndarray:
        p1 = np.asarray(p1, dtype=np.float64)
        return np.column_stack([1.0 - p1, p1])

    def _with_na_values(self, X: Any) -> Any:
        """``X`` with the cells the fit data's ``na_values`` name ("?", "-999") missing, as training read them."""
        from fedrisk.data.na_values import declare_missing

        na = getattr(self, "na_values_", None)
        return declare_missing(X.copy(), na) if na and isinstance(X, pd.DataFrame) else X

    def _frame_matrix(self, X: Any, features: list[str], who: str, allow_nan: bool = False,
                      doc: dict[str, Any] | None = None) -> np.ndarray:
        """The model's feature matrix of ``X``; ``doc``: a horizontal model file whose text columns
        (``categories``) encode raw DataFrame columns with the agreed levels, as ``fedrisk predict`` does.
        Cells the fit's ``na_values`` name are missing first (:meth:`_with_na_values`)."""
        from fedrisk.errors import DataError

        _refuse_duplicate_columns(X, [*features, *((doc or {}).get("categories") or {})], who)  # before pandas sees them
        X = self._with_na_values(X)
        cats = (doc or {}).get("categories") or None
        if cats and isinstance(X, pd.DataFrame):
            from fedrisk.data.categorical import encode_columns, raw_columns

            raw = raw_columns(features, cats)
            absent = [c for c in raw if c not in X.columns]
            if absent:
                raise DataError(f"{who}: the data lacks the model's feature columns {absent[:8]}")
            M, names, _, unseen = encode_columns(X, raw, list(cats), doc["category_encoding"], cats, who)
            _warn_unseen_rows(unseen, len(M), who)
            M = M[:, [names.index(f) for f in features]]
            _refuse_non_finite(M, features, who, allow_nan)
            return M
        if isinstance(X, pd.DataFrame):
            missing = [f for f in features if f not in X.columns]
            if missing:
                raise DataError(f"{who}: the data lacks the model's feature columns {missing[:8]}")
            text = [f for f in features if not (pd.api.types.is_numeric_dtype(X[f]) or pd.api.types.is_bool_dtype(X[f]))
                    and pd.to_numeric(X[f], errors="coerce").isna().gt(X[f].isna()).any()]
            if text:
                raise DataError(f"{who}: the model's numeric feature columns {text[:8]} hold text in this data (e.g. "
                                f"{str(X[text[0]][pd.to_numeric(X[text[0]], errors='coerce').isna() & X[text[0]].notna()].iloc[0])[:20]!r}); "
                                "convert them to numbers as at training")
            M = X[features].apply(pd.to_numeric).to_numpy(dtype=np.float64)
        else:
            try:
                M = np.asarray(X, dtype=np.float64)
            except (TypeError, ValueError):
                raise DataError(f"{who}: the array holds non-numeric values; pass a DataFrame with the model's "
                                f"feature columns ({', '.join(features[:6])}...) or a numeric array in that order") from None
            if M.ndim != 2 or M.shape[1] != len(features):
                raise DataError(f"{who}: expected {len(features)} feature columns ({', '.join(features[:6])}...), "
                                f"got an array of shape {M.shape}")
        _refuse_non_finite(M, features, who, allow_nan)
        return M


def _warn_unseen_rows(unseen: dict[str, int], n_rows: int, who: str) -> None:
    """Warn, as ``fedrisk predict`` does, how many rows per column hold categories the model never saw (they
    score as the '(other)' or reference level): a notebook's scores moved silently. Counts only."""
    import logging

    from fedrisk.data.categorical import unseen_note

    note = unseen_note(unseen, n_rows, who, notebook=True)
    if note:
        logging.getLogger("fedrisk.predict").warning(note)


def _refuse_non_finite(M: np.ndarray, features: list[str], who: str, allow_nan: bool) -> None:
    """One line naming the feature columns (and how many rows) holding infinities, or blanks a model cannot score."""
    from fedrisk.errors import DataError

    bad = np.isinf(M) if allow_nan else ~np.isfinite(M)
    if not bad.any():
        return
    cols = [f"{features[j]!r} ({int(bad[:, j].sum())})" for j in np.flatnonzero(bad.any(axis=0))]
    kind = "infinite values" if allow_nan else "blank (NaN) or infinite values"
    raise DataError(f"{who}: {int(bad.any(axis=1).sum())} of {len(M)} rows have {kind} in the model's feature columns "
                    f"{', '.join(cols[:8])}{' ...' if len(cols) > 8 else ''}; fill or drop them first")


def _refuse_duplicate_columns(X: Any, names: list[str], who: str) -> None:
    """One line naming the model's columns that DataFrame ``X`` holds more than once (pandas' own errors on
    a doubled column, "The truth value of a Series is ambiguous", name nothing)."""
    from fedrisk.errors import DataError

    if not isinstance(X, pd.DataFrame):
        return
    wanted = set(names)
    twice = sorted({str(c) for c in X.columns[X.columns.duplicated()] if c in wanted})
    if twice:
        raise DataError(f"{who}: the data has the model's feature columns {twice[:8]} more than once; "
                        "keep one copy of each (e.g. X.loc[:, ~X.columns.duplicated()])")


class FederatedClassifier(ClassifierMixin, FederatedEstimator):
    """A federated default classifier: ``fit`` runs the task, ``_learn`` reads its model files.

    Subclasses implement ``_learn(files)`` (also what ``fr.load`` calls on a CLI run's files) and
    ``predict_proba``; ``classes_`` is ``[non-default, default]`` in the fit data's label coding
    (``[0, 1]`` for 0/1 labels; ``["good", "bad"]`` under ``positive = "bad"``), so column 1 of
    ``predict_proba`` is always P(default), as everywhere in fedrisk. They are scikit-learn
    classifiers (``is_classifier``; ``score(X, y)`` is accuracy). scikit-learn's scorers take
    ``classes_[-1]`` as the positive class: give them 0/1 targets (1 = default), since with raw
    labels whose default value sorts first (``"bad" < "good"``) ``roc_auc_score`` counts goods as positives.
    """

    def fit(self, fed: Federation, y: Any = None):
        """Train on every party's rows of ``fed`` (the train half of a split, or all rows); returns self.

        ``y`` is ignored: the labels stay with the label holder (vertical) or each bank (horizontal).
        """
        from fedrisk.data.na_values import options_na_values

        self._learn(self._run(fed).files)
        self.classes_ = label_classes(fed)
        self.na_values_ = options_na_values(fed.party_options.values())  # scoring reads cells as training did
        # (a split model scores each party's rows with that party's own placeholders)
        self.party_na_values_ = {n: options_na_values([o]) for n, o in fed.party_options.items() if o.get("na_values")}
        return self

    def _learn(self, files: dict[str, dict[str, Any]]):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def predict(self, X: Any) -> np.ndarray:
        """``classes_[1]`` (default) where P(default) >= 0.5, else ``classes_[0]``: the fit data's own label coding.

        A row without a score (a vertical model's row whose id is not at every feature holder: NaN
        probability) is ``None`` (the array is then of dtype object), never a class it was not scored as.
        """
        p1 = self.predict_proba(X)[:, 1]
        labels = np.asarray(self.classes_)[(p1 >= 0.5).astype(int)]
        unscored = np.isnan(p1)
        if unscored.any():
            labels = labels.astype(object)
            labels[unscored] = None
        return labels


def label_classes(fed: Federation) -> np.ndarray:
    """``[non-default, default]`` label values in the coding of ``fed``'s label column(s).

    ``predict`` returns these and ``predict_proba``'s columns follow them, as scikit-learn's
    ``classes_`` does. Labels coded with ``positive`` (e.g. ``"good"``/``"bad"``, ``1``/``2``)
    keep that coding (:func:`fedrisk.data.loading.label_coding`, which the model files store too);
    0/1 labels, several coding schemes across banks, or labels this process does not hold
    (``Federation.connect`` at a feature holder) give ``[0, 1]``.
    """
    from fedrisk.data.loading import label_coding

    if fed.kind == "vertical":
        holders = [fed.label_holder] if fed.label_holder in fed.parties else []
    else:
        holders = list(fed.parties)
    found = set()
    for name in holders:
        frame = fed.parties[name]
        if fed.label not in frame.columns:
            return np.array([0, 1])
        coding = label_coding(frame[fed.label], fed.party_options.get(name, {}).get("positive"))
        found.add(tuple(coding) if coding else (0, 1))
    return classes_array(next(iter(found)) if len(found) == 1 else None)


def classes_array(coding: Any) -> np.ndarray:
    """``classes_`` of a label coding (``[non-default, default]``; ``None`` for 0/1), e.g. a model file's ``classes``."""
    classes = tuple(coding) if coding else (0, 1)
    return np.array(classes, dtype=object if any(isinstance(c, str) for c in classes) else None)


def stored_classes(files: Mapping[str, Mapping[str, Any]]) -> np.ndarray:
    """``classes_`` of a model read from its files: the label coding a file stores as ``classes`` (the
    horizontal model file, or the label holder's part of a split model); ``[0, 1]`` for 0/1 labels and
    for files written before the coding was stored."""
    return classes_array(next((d["classes"] for d in files.values() if d.get("classes")), None))
