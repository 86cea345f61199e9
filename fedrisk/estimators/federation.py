"""A federation in a notebook: each party's own table, and who plays which role.

A :class:`Federation` is the Python counterpart of a job spec's ``[parties]`` (plus
``[coordinator]`` for horizontal jobs): it names the parties, holds each party's rows as a
pandas DataFrame, and knows which party holds the label. Estimators ``fit`` on it. In-process
federations run every party as a thread of this process over the in-memory network, with the
same role code, codec, ledger and protocols (PSI, secure aggregation, CKKS, OU) as
``fedrisk simulate`` — see :mod:`fedrisk.estimators.engine`.

Nothing here moves a row between parties: the Federation object is the simulation's god view
(the notebook holds every party's table because it simulates all of them); each party's role only
ever reads its own table.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from fedrisk.errors import ConfigError, DataError

__all__ = ["Federation", "COORDINATOR"]

COORDINATOR = "coordinator"
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


def _toml_value(v: Any) -> str:
    """One TOML value (the spec holds strings, numbers, booleans, and lists and tables of those)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not math.isfinite(f):
            raise ConfigError(f"setting value {f!r} is not a finite number")
        return repr(f)
    if isinstance(v, (str, Path)):
        s = str(v)
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):  # e.g. categories = {column = [levels]}: an inline table, keys quoted
        return "{ " + ", ".join(f"{_toml_value(str(k))} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise ConfigError(f"setting value {v!r} ({type(v).__name__}) cannot go into a job spec")


def toml_table(name: str, values: Mapping[str, Any]) -> list[str]:
    lines = [f"[{name}]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    return lines + [""]


class Federation:
    """Parties that train together, each with its own rows.

    Build one with :meth:`vertical` (same customers, different columns: a label holder and
    feature holders) or :meth:`horizontal` (same columns, different customers: banks, plus a
    coordinator that holds no data). Estimators' ``fit`` takes a Federation.

    Attributes
    ----------
    kind : {"vertical", "horizontal"}
    parties : dict of str to pandas.DataFrame
        Each party's rows, by party name (the names become certificate and ledger names).
    id : str
        The customer-key column, in every party's table.
    label : str
        The 0/1 default label column (1 = default).
    label_holder : str or None
        Vertical: the one party whose table has the label column.
    test_rule : str or None
        Set on the halves :meth:`split` returns: the ``id % K == R`` rule that made them.
    test_fraction : float or None
        Set on the halves :meth:`split` returns for a hashed split (any id type) instead.
    """

    def __init__(self, kind: Literal["vertical", "horizontal"], parties: Mapping[str, pd.DataFrame], *, id: str = "id",
                 label: str = "y", name: str | None = None, seed: int = 0, secure_aggregation: bool = True,
                 missing: str | Mapping[str, str] = "reject", progress: bool = False,
                 test_rule: str | None = None, part: str | None = None, spec_path: str | Path | None = None,
                 test_fraction: float | None = None,
                 party_options: Mapping[str, Mapping[str, Any]] | None = None, free_ports: bool = False,
                 remote: Mapping[str, Any] | None = None, positive: Any = None,
                 na_values: Sequence[str] | None = None, privacy: Mapping[str, Any] | None = None) -> None:
        if kind not in ("vertical", "horizontal"):
            raise ConfigError(f"federation kind {kind!r}: use Federation.vertical(...) or Federation.horizontal(...)")
        if not parties:
            raise ConfigError("a federation needs at least one party: pass {'name': DataFrame, ...}")
        frames: dict[str, pd.DataFrame] = {}
        for n, df in parties.items():
            if not isinstance(n, str) or not _NAME.match(n) or n == COORDINATOR:
                raise ConfigError(f"party name {n!r}: use lower-case letters, digits, '_' and '-', starting with a "
                                  f"letter (not {COORDINATOR!r}); it becomes a certificate and ledger name")
            if not isinstance(df, pd.DataFrame):
                raise ConfigError(f"party {n!r}: pass a pandas DataFrame, not {type(df).__name__}")
            twice = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
            if twice:
                raise DataError(f"party {n!r}: its DataFrame has the columns {twice[:8]} more than once; keep one copy "
                                "of each (e.g. df.loc[:, ~df.columns.duplicated()]) or rename them")
            if id not in df.columns and df.index.name == id:
                df = df.reset_index()  # the ids as the index (df.set_index(id)): the id column it names
            if id not in df.columns:
                raise DataError(f"party {n!r}: no id column {id!r}; its columns are {list(df.columns)[:12]}")
            frames[n] = df
        self.kind = kind
        self.parties = frames
        self.id = id
        self.label = label
        self.name = name or f"notebook-{kind}"
        self.seed = int(seed)
        self.secure_aggregation = bool(secure_aggregation)
        self.missing = missing
        self.progress = bool(progress)
        self.test_rule = test_rule
        self.test_fraction = test_fraction
        self.part = part
        #: set by from_spec(processes=True): fit runs `fedrisk simulate` on (a copy of) this spec
        self.spec_path = Path(spec_path).resolve() if spec_path is not None else None
        self.free_ports = bool(free_ports)
        #: per-party loader settings of the spec (features, exclude), written into every job
        self.party_options = {n: dict(o) for n, o in (party_options or {}).items()}
        if positive is not None:  # one label coding for every party holding the label (party_options win)
            for n, df in frames.items():
                if label in df.columns:
                    self.party_options.setdefault(n, {}).setdefault("positive", positive)
        if na_values:  # placeholders meaning "no value" in every party's table (party_options win)
            for n in frames:
                self.party_options.setdefault(n, {}).setdefault("na_values", [str(v) for v in na_values])
        #: the job's [privacy] table (differential privacy of the horizontal trainers), or None
        self.privacy = _privacy_table(kind, privacy)
        self.label_holder = None
        #: set by connect(): this process runs one participant of a job whose others run elsewhere
        self.remote = dict(remote) if remote else None
        if self.remote is not None:
            self.label_holder = self.remote["label_holder"]
            return
        if kind == "vertical":
            holders = [n for n, df in frames.items() if label in df.columns]
            if len(holders) > 1:
                raise ConfigError(f"a vertical federation has one label holder, but {holders} all have the label "
                                  f"column {label!r}; drop it from the feature holders' tables")
            if len(frames) < 2:
                raise ConfigError("a vertical federation needs at least one feature holder besides the label holder")
            # no label anywhere: rows to score (new applicants); fit needs a label holder
            self.label_holder = holders[0] if holders else None
        else:
            unlabelled = [n for n, df in frames.items() if label not in df.columns]
            if unlabelled:
                raise DataError(f"horizontal federation: every bank needs the label column {label!r}; missing at {unlabelled}")

    # -- constructors ------------------------------------------------------------------------
    @classmethod
    def vertical(cls, parties: Mapping[str, pd.DataFrame], *, id: str = "id", label: str = "y", **kw: Any) -> "Federation":
        """Same customers, different columns: the party whose table has ``label`` is the label holder.

        Parameters
        ----------
        parties : dict of str to DataFrame
            Each party's table; the label holder first is customary, not required.
        id, label : str
            The customer key (in every table) and the 0/1 label (only in the label holder's).
        name : str, optional
            Job id (salts the PSI; named in every message). Default ``"notebook-vertical"``.
        seed : int, default 0
            The job's public seed (``federation.seed``): shuffles, validation splits.
        missing : str or dict, default "reject"
            NaN policy per party (``"reject"``, ``"mean"``, ``"keep"``), as ``missing`` in the spec.
        progress : bool, default False
            Show a progress bar (rich) while training.
        positive : str, int, list or dict, optional
            The label coding of every party holding the label, as ``positive`` in the spec: the
            value(s) meaning default (``"bad"`` for "good"/"bad" labels, ``2`` for a 1/2 coding) or
            a value -> 0/1 map (``{"bad": 1, "good": 0}``, also for a bank without defaults).
        party_options : dict of str to dict, optional
            Per-party settings of the spec's ``[parties.NAME]`` table: ``positive`` (the label
            coding, e.g. ``{"bank1": {"positive": "bad"}}``; overrides ``positive`` for that party),
            ``features``, ``exclude``, ``categorical``, ``monotone``, ``na_values``.
        na_values : list of str, optional
            Text that means "no value" in every party's table (``["?", "."]``), as ``na_values`` in the
            spec: such cells are missing values (a number column with ``"?"`` cells is refused without it).
        """
        return cls("vertical", parties, id=id, label=label, **kw)

    @classmethod
    def horizontal(cls, parties: Mapping[str, pd.DataFrame], *, id: str = "id", label: str = "y", **kw: Any) -> "Federation":
        """Same columns, different customers: every party is a bank; a coordinator (no data) averages.

        Parameters are those of :meth:`vertical`, plus ``secure_aggregation`` (default ``True``:
        the coordinator sees only sums of the banks' updates) and ``privacy``: the job spec's
        ``[privacy]`` table as a dict, e.g. ``{"epsilon": 4.0, "delta": 1e-5}`` (differential
        privacy of ``horizontal.gbdt`` and ``horizontal.lr``: the banks' sums are noised so that the
        released model spends at most that budget; ``noise_multiplier`` and ``clip`` as in the spec).
        The budget spent is the fitted estimator's ``privacy_``.
        """
        return cls("horizontal", parties, id=id, label=label, **kw)

    @classmethod
    def from_spec(cls, spec: str | Path, *, processes: bool = True, free_ports: bool = False,
                  progress: bool = False) -> "Federation":
        """The federation of a job spec: its parties, their data files (read into DataFrames), roles and seed.

        Parameters
        ----------
        spec : str or Path
            A job spec (``fedrisk simulate`` input); its ``[task]`` is ignored — the estimator
            says what to run.
        processes : bool, default True
            ``fit`` then runs every participant as its own process over mTLS, exactly as
            ``fedrisk simulate`` (on a copy of the spec with the estimator's ``[task]``); with
            ``False`` the participants run in-process like :meth:`vertical`/:meth:`horizontal`.
            Federated scoring (``predict_proba`` of a split model) runs in-process either way.
        free_ports : bool, default False
            Processes listen on free loopback ports instead of the spec's addresses.
        """
        from fedrisk.runtime.spec import load_spec

        job = load_spec(spec)
        job.check_files()
        holders = job.label_holders()
        kind = "horizontal" if job.coordinator is not None else "vertical"
        # partners rarely name the customer key (or banks the label) alike: each party's own id and label columns
        # take the federation's names (the first label holder's); with processes, the parties still read their own
        # files by their own names
        common = job.parties[holders[0]].id if holders else next(iter(job.parties.values())).id
        label = job.parties[holders[0]].label if holders else "y"
        frames = {}
        for n, p in job.parties.items():
            df = _read_table(job.data_path(n), p.id, n, **p.read_options())
            renames = {p.id: common, **({p.label: label} if p.label else {})}
            renames = {a: b for a, b in renames.items() if a != b}
            for own, theirs in renames.items():
                if theirs in df.columns:
                    raise ConfigError(f"{spec}: party {n!r} names its column {own!r}, and its table also has a column "
                                      f"{theirs!r}, the name the other parties' tables use for it; a Federation uses "
                                      f"one name per column: rename one of them in {n}'s file")
            frames[n] = df.rename(columns=renames)
        ids = [common]
        # the party's own reading settings travel with its table (its dialect was applied just above)
        options = {n: {k: v for k, v in (("features", p.features), ("exclude", list(p.exclude) or None),
                                         ("positive", p.positive), ("categorical", list(p.categorical) or None),
                                         ("monotone", dict(p.monotone) or None),
                                         ("na_values", list(p.na_values) or None)) if v is not None and v != []}
                   for n, p in job.parties.items()}
        return cls(kind, frames, id=ids[0], label=label, name=job.job_id, seed=job.federation.seed,
                   secure_aggregation=job.security.secure_aggregation,
                   missing={n: p.missing for n, p in job.parties.items()}, progress=progress,
                   spec_path=Path(spec) if processes else None, party_options=options, free_ports=free_ports,
                   privacy=job.privacy.model_dump(exclude_none=True) if job.privacy is not None else None)

    @classmethod
    def connect(cls, spec: str | Path, *, me: str, data: pd.DataFrame, certs: str | Path | None = None,
                out: str | Path | None = None) -> "Federation":
        """Take part in a job across hosts as participant ``me``, with this notebook's table.

        The partners run ``fedrisk party job.toml --as NAME --out RUN_DIR`` on their own hosts with
        their copies of the same spec; ``fit`` here runs this participant's role over gRPC + mTLS
        (the handshake refuses partners whose spec differs). The estimator's settings must equal
        the spec's ``[task]`` (every party trains what the spec says), and training follows the
        spec's ``evaluation`` (e.g. its ``test_rule``). Only this party's files come back: a label
        holder gets its part of the model and ``metrics_``; scoring new rows is ``fedrisk predict
        RUN_DIR/model.json NEW.csv --session S --no-spawn`` with partners running ``fedrisk serve``.

        Parameters
        ----------
        spec : str or Path
            The job spec every participant shares.
        me : str
            This participant's name in the spec.
        data : DataFrame
            This participant's rows (instead of its ``data`` file).
        certs : str or Path, optional
            Folder with ``ca.pem``, ``<me>.pem``, ``<me>-key.pem`` (default: the spec's ``security.certs``).
        out : str or Path, optional
            Run directory for this participant's files, log and ledger (default: a temporary one).
        """
        from fedrisk.runtime.spec import load_spec

        job = load_spec(spec)
        if me not in job.parties:
            raise ConfigError(f"me={me!r}: the job has no such party; choose one of {list(job.parties)}")
        kind = "horizontal" if job.coordinator is not None else "vertical"
        holders = job.label_holders()
        p = job.parties[me]
        return cls(kind, {me: data}, id=p.id, label=p.label or (job.parties[holders[0]].label if holders else "y"),
                   name=job.job_id, seed=job.federation.seed, secure_aggregation=job.security.secure_aggregation,
                   spec_path=Path(spec),
                   remote={"me": me, "certs": Path(certs) if certs is not None else None,
                           "out": Path(out) if out is not None else None,
                           "label_holder": holders[0] if (kind == "vertical" and holders) else None})

    def _with(self, parties: Mapping[str, pd.DataFrame], **changes: Any) -> "Federation":
        kw = dict(id=self.id, label=self.label, name=self.name, seed=self.seed,
                  secure_aggregation=self.secure_aggregation, missing=self.missing, progress=self.progress,
                  test_rule=self.test_rule, test_fraction=self.test_fraction, part=self.part, spec_path=self.spec_path,
                  party_options=self.party_options, free_ports=self.free_ports, privacy=self.privacy)
        kw.update(changes)
        return Federation(self.kind, parties, **kw)

    # -- views -------------------------------------------------------------------------------
    def split(self, test_rule: str | None = None, *, test_fraction: float | None = None
              ) -> tuple["Federation", "Federation"]:
        """(train, test) by a rule every party applies to its own ids alone, as ``[evaluation]`` does.

        No message is exchanged. ``test_rule = "id % K == R"`` (integer ids) keeps the rows whose id
        does (test) or does not (train) satisfy it; ``test_fraction = 0.2`` (any id type: text,
        zero-padded, UUIDs) picks the rows whose keyed hash of the id falls below the fraction,
        exactly as ``evaluation.test_fraction`` (keyed by this federation's ``name`` and ``seed``).
        With neither: ``id % 5 == 0`` when every party's ids are integers, ``test_fraction = 0.2``
        otherwise -- the job spec's default. Fitting on ``train`` trains exactly as ``fedrisk
        simulate`` with that rule; ``predict_proba(test)`` scores the test rows federatedly.
        """
        from fedrisk.data.loading import id_test_mask
        from fedrisk.data.split import DEFAULT_FRACTION, all_integer_ids, hashed_test_mask, split_key
        from fedrisk.runtime.spec import EvaluationSpec, parse_test_rule

        if self.kind != "vertical":
            raise ConfigError("split(...) is for vertical federations; a horizontal job is tested on a "
                              "held-out DataFrame: pass it to predict_proba")
        lh = self.label_holder
        blank = int(self.parties[lh][self.label].isna().sum()) if lh is not None else 0
        if blank:  # (the fit would count only the training part's blanks)
            from fedrisk.data.loading import blank_labels

            raise DataError(f"party {lh!r} (its DataFrame): {blank_labels(self.label, blank)}")
        if test_rule is not None and test_fraction is not None:
            raise ConfigError("split: pass test_rule or test_fraction, not both (each chooses the test rows on its own)")
        if test_rule is None and test_fraction is None:
            if all(all_integer_ids(df[self.id].to_numpy()) for df in self.parties.values()):
                test_rule = "id % 5 == 0"
            else:
                test_fraction = DEFAULT_FRACTION
        if test_rule is not None:
            try:
                EvaluationSpec(test_rule=test_rule)
            except ValueError as e:
                raise ConfigError(f"test_rule {test_rule!r}: write it as 'id % K == R', e.g. 'id % 5 == 0'") from e
            k, r = parse_test_rule(test_rule)
            fix = "use split(test_fraction=0.2) instead (a keyed hash of the id: any id type)"
            masks = {n: id_test_mask(df[self.id].to_numpy(), k, r, party=n, advice=fix) for n, df in self.parties.items()}
        else:
            try:
                EvaluationSpec(test_fraction=test_fraction)
            except ValueError as e:
                raise ConfigError(f"test_fraction {test_fraction!r}: use a share strictly between 0 and 1, e.g. 0.2") from e
            key = split_key(self.name, self.seed)
            masks = {n: hashed_test_mask(df[self.id].to_numpy(), float(test_fraction), key)
                     for n, df in self.parties.items()}
        how = dict(test_rule=test_rule, test_fraction=float(test_fraction) if test_fraction is not None else None)
        train = self._with({n: df[~masks[n]].reset_index(drop=True) for n, df in self.parties.items()},
                           part="train", **how)
        test = self._with({n: df[masks[n]].reset_index(drop=True) for n, df in self.parties.items()},
                          part="test", **how)
        return train, test

    @property
    def y(self) -> pd.Series:
        """The labels: the label holder's (vertical) or every bank's, concatenated (horizontal)."""
        if self.kind == "vertical":
            if self.label_holder is None:
                raise DataError(f"no party of this federation has the label column {self.label!r}")
            raw = self.parties[self.label_holder][self.label]
            positive = self.party_options.get(self.label_holder, {}).get("positive")
            if positive is None:
                return raw
            # the label coding of the spec (positive = "bad" ...), as the loader maps it: 1 = default
            from fedrisk.data.loading import _Ctx, _mapped_labels

            ctx = _Ctx(self.label_holder, Path("(notebook table)"))
            return pd.Series(_mapped_labels(ctx, raw, self.label, positive).astype(int), index=raw.index, name=raw.name)
        return pd.concat([df[self.label] for df in self.parties.values()], ignore_index=True)

    @property
    def participants(self) -> list[str]:
        return list(self.parties) + ([COORDINATOR] if self.kind == "horizontal" else [])

    def __repr__(self) -> str:
        rows = ", ".join(f"{n}: {len(df)}x{df.shape[1]}" for n, df in self.parties.items())
        how = repr(self.test_rule) if self.test_rule else f"test_fraction = {self.test_fraction}"
        extra = f", {self.part} rows of {how}" if self.part else ""
        return f"Federation.{self.kind}({rows}{extra})"

    def _missing(self, party: str) -> str:
        if isinstance(self.missing, str):
            return self.missing
        return self.missing.get(party, "reject")

    # -- the job spec this federation stands for --------------------------------------------
    def training_evaluation(self) -> dict[str, Any]:
        """The vertical ``[evaluation]`` under which a job trains on exactly these rows.

        The train half keeps its rule (``test_rule`` or ``test_fraction``): it selects none of its
        rows, and training then runs exactly as ``fedrisk simulate`` with that rule runs on the
        whole tables. Any other federation trains on every row (:meth:`no_test_evaluation`).
        """
        if self.part == "train" and self.test_rule:
            return {"test_rule": self.test_rule}
        if self.part == "train" and self.test_fraction:
            return {"test_fraction": self.test_fraction}
        return self.no_test_evaluation()

    def training_rule(self) -> str:
        """The ``id % K == R`` rule of :meth:`training_evaluation` (integer ids only)."""
        ev = self.training_evaluation()
        if "test_rule" not in ev:
            raise ConfigError("this federation's ids are not all integers: it trains under test_fraction, not an "
                              "id % K == R rule; use training_evaluation()")
        return ev["test_rule"]

    def no_test_evaluation(self) -> dict[str, Any]:
        """An ``[evaluation]`` rule that holds out none of this federation's rows, from the ids alone.

        Integer ids: :meth:`no_test_rule`. Any other ids: a ``test_fraction`` below the smallest
        keyed hash of every party's ids (the same hash as ``evaluation.test_fraction``), so no row
        is a test row -- computed by each party from its ids, like any rule.
        """
        from fedrisk.data.split import all_integer_ids, id_hashes, split_key

        if all(all_integer_ids(df[self.id].to_numpy()) for df in self.parties.values()):
            return {"test_rule": self.no_test_rule()}
        key = split_key(self.name, self.seed)
        lowest = min(int(id_hashes(df[self.id].to_numpy(), key).min()) for df in self.parties.values() if len(df))
        fraction = lowest / 2.0 ** 65  # half the smallest hash: strictly below every id's
        if not fraction > 0:
            raise ConfigError("no hashed split holds out none of these ids; change the federation's seed")
        return {"test_fraction": fraction}

    def no_test_rule(self) -> str:
        """An ``id % K == R`` rule that holds out none of this federation's rows.

        The vertical tasks always hold out the rows of ``evaluation.test_rule`` (default
        ``id % 5 == 0``); to train on every row of an unsplit federation we pick ``K`` larger than
        the number of ids, so some remainder ``R`` is taken by no id (pigeonhole) — computed by
        each party from ids alone, like any rule.
        """
        ids: set[int] = set()
        for n, df in self.parties.items():
            try:
                ids.update(int(str(v).strip()) for v in df[self.id].tolist())
            except ValueError:
                raise ConfigError(f"party {n!r}: an id % K == R rule needs integer ids; this federation trains "
                                  "under a hashed test_fraction instead (no_test_evaluation)") from None
        k = max(2, len(ids) + 1)
        used = {i % k for i in ids}
        r = next(r for r in range(k) if r not in used)
        return f"id % {k} == {r}"

    def write_job(self, folder: Path, task: Mapping[str, Any], *, fmt: str = "parquet",
                  addresses: Mapping[str, str] | None = None, label_holder: str | None = None,
                  evaluation: bool = True) -> Path:
        """Write each party's table and a job spec for ``task`` into ``folder``; return the spec path.

        Each table goes to its own file (``data/<party>.parquet``: parquet keeps every value
        bit-for-bit), read back by the task's own loader with the spec's data policy, exactly as
        ``fedrisk party`` reads a file. Addresses default to ``in-process:<n>`` (no socket is opened).
        """
        folder = Path(folder)
        (folder / "data").mkdir(parents=True, exist_ok=True)
        addr = dict(addresses or {n: f"in-process:{i + 1}" for i, n in enumerate(self.participants)})
        lines = toml_table("federation", {"name": self.name, "seed": self.seed})
        if self.kind == "horizontal":
            lines += toml_table("coordinator", {"address": addr[COORDINATOR]})
        first = next(iter(self.parties.values())).columns
        for n, df in self.parties.items():
            path = folder / "data" / f"{n}.{fmt}"
            if self.kind == "horizontal" and set(df.columns) == set(first) and list(df.columns) != list(first):
                df = df[list(first)]  # DataFrames match by column name, as predict_proba does; files by position
            if fmt == "parquet":
                write_parquet(df, path, party=n)
            else:
                df.to_csv(path, index=False)
            has_label = self.kind == "horizontal" or n == (label_holder or self.label_holder)
            lines += toml_table(f"parties.{n}", {"address": addr[n], "data": f"data/{path.name}", "id": self.id,
                                                 "label": self.label if has_label else None,
                                                 "missing": self._missing(n), **self.party_options.get(n, {})})
        lines += toml_table("task", dict(task))
        if self.kind == "vertical" and evaluation:
            lines += toml_table("evaluation", self.training_evaluation())
        lines += toml_table("security", {"secure_aggregation": self.secure_aggregation})
        if self.privacy:
            lines += toml_table("privacy", self.privacy)
        spec = folder / "job.toml"
        spec.write_text("\n".join(lines), encoding="utf-8")
        return spec


def _privacy_table(kind: str, privacy: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``privacy=`` argument checked as the spec's ``[privacy]`` table is, in the spec's one-line terms."""
    from pydantic import ValidationError, create_model

    from fedrisk.runtime.spec import PrivacySpec, format_errors

    if privacy is None:
        return None
    if not isinstance(privacy, Mapping):
        raise ConfigError(f"privacy={privacy!r}: pass a dict such as {{'epsilon': 4.0, 'delta': 1e-5}}")
    if kind != "horizontal":
        raise ConfigError("privacy=...: differential privacy applies to horizontal trainers (horizontal.gbdt, "
                          "horizontal.lr); a vertical federation has no privacy setting")
    table = create_model("PrivacyTable", privacy=(PrivacySpec, ...))  # errors located as in a spec: privacy.KEY
    try:
        table.model_validate({"privacy": dict(privacy)})
    except ValidationError as e:
        raise ConfigError(f"{format_errors('Federation(privacy=...)', e)} (keys: {', '.join(PrivacySpec.model_fields)})") from None
    return dict(privacy)


def write_parquet(df: pd.DataFrame, path: Path, *, party: str) -> None:
    """Write a notebook table to Parquet for a party's loader, as a CSV of it would read.

    A column mixing numbers and text (``"?"`` cells put into an amount column) has no Parquet type:
    pyarrow refused it with its own exception. Such a column is written as text, exactly what a CSV
    export of it holds, so the loader answers as for the file (``na_values``, or a category column).
    """
    df = df.copy(deep=False)
    for c in df.columns:
        col = df[c]
        if col.dtype != object:
            continue
        kinds = {isinstance(v, str) for v in col[col.notna()].tolist()}
        if kinds == {True, False}:
            df[c] = col.where(col.isna(), col.astype(str))
    try:
        df.to_parquet(path, index=False)
    except (TypeError, ValueError) as exc:  # (pyarrow's ArrowInvalid / ArrowTypeError are ValueError / TypeError)
        raise DataError(f"party {party!r} (its DataFrame): a column cannot be stored as a table "
                        f"({str(exc).splitlines()[0][:200]}); give each column one type (numbers, text or dates)") from None


def _read_table(path: Path, id_col: str, party: str, sep: str | None = None, decimal: str = ".",
                **_: Any) -> pd.DataFrame:
    """A party's data file as a DataFrame, read as ``fedrisk party`` reads it (the loader's own reader: the spec's
    CSV dialect, the id column as text so ``"007"`` stays ``"007"``, trailing separators, a ``sep=;`` line)."""
    from fedrisk.data.loading import read_party_file

    return read_party_file(path, party=party, id_col=id_col, sep=sep, decimal=decimal)


def rewrite_spec(spec: Path, out: Path, *, free_ports: bool = False, task: Mapping[str, Any] | None = None,
                 evaluation: Mapping[str, Any] | None = None, data: Mapping[str, Path] | None = None) -> Path:
    """Write ``out/job.toml``: ``spec`` with absolute paths and, optionally, free loopback ports,
    another ``[task]`` table, ``[evaluation]`` settings or parties' data files; return its path."""
    import tomllib

    from fedrisk.runtime.spec import load_spec

    job = load_spec(spec)
    raw = tomllib.loads(Path(spec).read_text(encoding="utf-8"))
    if free_ports:
        from fedrisk.runtime.demo import free_ports as _free

        ports = iter(_free(len(job.participants())))
    addr = (lambda a: f"127.0.0.1:{next(ports)}") if free_ports else (lambda a: a)
    lines = toml_table("federation", raw["federation"])
    if "coordinator" in raw:
        lines += toml_table("coordinator", {**raw["coordinator"], "address": addr(raw["coordinator"]["address"])})
    for name, p in raw["parties"].items():
        table = {**p, "address": addr(p["address"])}
        if data and name in data:
            table["data"] = str(data[name])
        elif p.get("data"):
            table["data"] = str(job.data_path(name))
        if p.get("ca"):
            table["ca"] = str(job.resolve(job.parties[name].ca))
        lines += toml_table(f"parties.{name}", table)
    lines += toml_table("task", dict(task) if task is not None else raw["task"])
    ev = {**raw.get("evaluation", {}), **(evaluation or {})}
    if ev.get("test"):
        ev["test"] = str(job.test_path())
    if ev:
        lines += toml_table("evaluation", ev)
    if "security" in raw:
        sec = dict(raw["security"])
        if sec.get("certs"):
            sec["certs"] = str(job.resolve(job.security.certs))
        lines += toml_table("security", sec)
    out.mkdir(parents=True, exist_ok=True)
    copy = out / "job.toml"
    copy.write_text("\n".join(lines), encoding="utf-8")
    return copy
