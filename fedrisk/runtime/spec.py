"""The job spec: one TOML file that every party of a federation runs.

Example::

    [federation]
    name = "default-credit-horizontal"

    [coordinator]                       # horizontal jobs: holds no data
    address = "127.0.0.1:50100"

    [parties.bank1]
    address = "127.0.0.1:50101"
    data = "../data/bank1.csv"          # relative to this file
    id = "id"
    label = "y"
    # sep = ";"  decimal = ","          # CSV dialect of this party's files
    # positive = "bad"                  # label coding when not 0/1 (or 2, a list, a value -> 0/1 map)

    [task]
    kind = "horizontal.lr"
    rounds = 20

    [evaluation]
    test = "../data/test.csv"           # horizontal: a held-out file, read by `holder`
    holder = "bank1"
    # sep = ","  decimal = "."          # the test file's dialect, if not the holder's (default: the holder's)
    # vertical, one of: test_fraction = 0.2 (any ids; keyed hash of the id, see fedrisk.data.split)
    #                   test_rule = "id % 5 == 0" (integer ids)
    #                   test_column = "is_test" (0/1 column at the label holder)
    # weight = "w"                      # sampling weight / exposure per row: weighted metrics (vertical: a column
    #                                   # of the label holder's file; horizontal: of the evaluation.test file)

    [security]
    certs = "certs/"                    # CA + per-party cert/key; `simulate` makes dev certs if absent

    [psi]                               # vertical jobs: how rows are aligned (optional table)
    protocol = "ecdh"                   # default; "rr22" is ~20x cheaper, needs `pip install 'fedrisk[psi]'`
                                        # "unbalanced": small lender vs a bureau's big pre-encoded set,
                                        # with key_holder = "bureau" and [parties.X] psi_store = "DIR"
    min_intersection = 20               # default; training stops, naming the size, below it

In a real deployment each institution has its own copy and only its own ``data`` path is read;
everything else (names, addresses, task settings) must be identical, and the runtime refuses to
start when it is not (see :func:`shared_settings`).

Invariant: a :class:`JobSpec` that loaded without error has unique party names and addresses,
valid ``host:port`` addresses, a known task kind and task parameters that the task accepts.
"""
from __future__ import annotations

import difflib
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedrisk.errors import ConfigError

__all__ = ["JobSpec", "PartySpec", "load_spec", "shared_settings", "COORDINATOR", "parse_test_rule"]

COORDINATOR = "coordinator"
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_ADDRESS = re.compile(r"^(?P<host>[A-Za-z0-9.\-]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})$")
_RULE = re.compile(r"^\s*id\s*%\s*(\d+)\s*==\s*(\d+)\s*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_address(v: str) -> str:
    m = _ADDRESS.match(v or "")
    if not m or not (0 < int(m.group("port")) < 65536):
        raise ValueError(f"{v!r} is not a host:port address (e.g. '127.0.0.1:50051')")
    return v


def _na_values_as_text(v: Any) -> Any:
    """``na_values = [-999]`` (unquoted) or ``na_values = "?"`` (one text) as a list of texts: what was meant is
    clear, as in the Python API."""
    items = [v] if isinstance(v, (str, int, float)) and not isinstance(v, bool) else v
    if isinstance(items, list):
        return [str(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x for x in items]
    return v


class FederationSpec(_Strict):
    name: str = Field(description="job id; every message carries it")
    seed: int = 0

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$", v):
            raise ValueError(f"{v!r}: use letters, digits, '-', '_' or '.' (at most 64)")
        return v


class CoordinatorSpec(_Strict):
    address: str
    #: where this participant's server binds when it differs from ``address`` (what peers dial):
    #: NAT, a load balancer, a TLS-passthrough proxy. Local: partners need not agree on it
    listen: str | None = None
    #: this participant's own CA certificate (its institution's PKI); see PartySpec.ca
    ca: Path | None = None

    _addr = field_validator("address")(lambda cls, v: _check_address(v))
    _listen = field_validator("listen")(lambda cls, v: v if v is None else _check_address(v))


class PartySpec(_Strict):
    address: str
    #: where this party's server binds when it differs from ``address`` (see CoordinatorSpec.listen)
    listen: str | None = None
    data: Path | None = None
    id: str = "id"
    label: str | None = None
    features: list[str] | None = None
    exclude: list[str] = []
    missing: Literal["reject", "mean", "keep"] = "reject"
    #: the CA that issues this party's certificate (its institution's own PKI). When set, a
    #: certificate for this party's name is accepted only if that CA issued it, so one
    #: institution's CA can never mint another institution's identity
    ca: Path | None = None
    #: CSV dialect of this party's files: field separator (``delimiter`` is a synonym) and decimal mark
    sep: str | None = None
    delimiter: str | None = None
    decimal: str = "."
    #: what this party's exports write for "no value" in any column (``["?", ".", "-999"]``: SAS ".", UCI "?",
    #: a number sentinel): such cells are missing values in CSV and Parquet alike (exact text; spaces around
    #: it ignored; a number also matches number cells)
    na_values: list[str] = []
    #: label coding when it is not 0/1: the value(s) meaning default ("bad", 2) or a value -> 0/1 map
    positive: str | int | float | list[str | int | float] | dict[str, int] | None = None
    #: monotone constraints of tree tasks, XGBoost semantics: ``{feature = 1}`` (score never falls
    #: as the feature rises), ``-1`` (never rises), ``0`` (free); the owner's features only
    monotone: dict[str, int] = {}
    #: text category columns, encoded at this party (trees: level codes; LR: one-hot); see
    #: fedrisk.data.categorical. Undeclared text columns are treated as categorical with a warning
    categorical: list[str] = []
    #: where this party's heavy batch kernels run: "local" (this machine's process pool) or "ray"
    #: (its own Ray cluster at ``ray_address``, else the RAY_ADDRESS environment variable; see
    #: docs/ray.md). Local: partners need not agree, and results are the same either way
    compute: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    #: unbalanced PSI (``[psi] protocol = "unbalanced"``): this party's local store, the OPRF key and
    #: encoded set at the key holder, the cached encoded set at the other party (see
    #: fedrisk.algorithms.vertical.ub_store). Local, like ``data``: partners need not agree
    psi_store: Path | None = None

    _addr = field_validator("address")(lambda cls, v: _check_address(v))
    _listen = field_validator("listen")(lambda cls, v: v if v is None else _check_address(v))

    _na_text = field_validator("na_values", mode="before")(lambda cls, v: _na_values_as_text(v))

    @field_validator("ray_address")
    @classmethod
    def _ray_address(cls, v: str | None) -> str | None:
        if v is None or v == "auto":
            return v
        try:
            return _check_address(v)
        except ValueError:
            raise ValueError(f"{v!r} is not a Ray cluster address: use its head's 'host:port' "
                             "(e.g. '10.0.0.5:6379', what `ray start --head` printed) or 'auto'") from None

    @model_validator(mode="after")
    def _compute(self) -> "PartySpec":
        if self.ray_address is not None and self.compute != "ray":
            raise ValueError('ray_address is set but compute is "local"; add compute = "ray" (or remove ray_address)')
        return self

    @model_validator(mode="after")
    def _dialect(self) -> "PartySpec":
        if self.sep is not None and self.delimiter is not None and self.sep != self.delimiter:
            raise ValueError("set sep or delimiter, not both (they are the same setting)")
        sep = self.sep or self.delimiter
        if sep is not None and len(sep) != 1:
            raise ValueError(f"sep {sep!r} must be one character, e.g. ';' or '\\t'")
        if len(self.decimal) != 1 or self.decimal == (sep or ","):
            raise ValueError(f"decimal {self.decimal!r} must be one character other than the separator")
        blank = [v for v in self.na_values if not v.strip()]
        if blank:
            raise ValueError("na_values lists an empty text; empty cells are missing values already, list only "
                             "placeholders such as '?' or '.'")
        for c in self.categorical:
            if c in (self.id, self.label):
                raise ValueError(f"categorical {c!r} is the {'id' if c == self.id else 'label'} column, not a feature")
            if self.features is not None and c not in self.features:
                raise ValueError(f"categorical {c!r} is not in this party's features {self.features}")
            if c in self.exclude:
                raise ValueError(f"categorical {c!r} is also excluded; keep it in one list")
            if c in self.monotone:
                raise ValueError(f"{c!r} is both categorical and monotone; categories have no order to be monotone in")
        for feat, d in self.monotone.items():
            if d not in (-1, 0, 1):
                raise ValueError(f"monotone {feat} = {d}: use 1 (score rises with it), -1 (falls) or 0")
            if feat in (self.id, self.label):
                raise ValueError(f"monotone {feat!r} is the {'id' if feat == self.id else 'label'} column, not a feature")
            if self.features is not None and feat not in self.features:
                raise ValueError(f"monotone {feat!r} is not in this party's features {self.features}")
            if feat in self.exclude:
                raise ValueError(f"monotone {feat!r} is excluded (exclude = [...]); constrain a feature this party uses")
        return self

    def read_options(self) -> dict[str, Any]:
        """Keyword arguments of the data loaders for this party's files (dialect and label coding)."""
        return {"sep": self.sep or self.delimiter, "decimal": self.decimal, "positive": self.positive,
                **({"na_values": list(self.na_values)} if self.na_values else {})}


class EvaluationSpec(_Strict):
    test: Path | None = None
    holder: str | None = None
    #: integer ids only: ``"id % K == R"`` marks test rows
    test_rule: str | None = None
    #: any id type: share of test rows, chosen by a keyed hash of the id (see fedrisk.data.split)
    test_fraction: float | None = Field(None, gt=0, lt=1)
    #: a 0/1 column (1 = test) in the label holder's file; the label holder tells the others
    test_column: str | None = None
    #: a column of non-negative sampling weights (a row of weight w counts as w rows: a down-sampled development
    #: sample, or exposure) in the evaluating party's file -- the label holder's data (vertical), the
    #: ``evaluation.test`` file (horizontal). Evaluation only: never a feature, never sent; local to that party
    weight: str | None = None
    #: CSV dialect of the ``test`` file when it differs from the holder's own (``[parties.HOLDER]``): a held-out
    #: file exported by another system. Unset: the holder's ``sep`` / ``decimal`` / ``na_values``. Local to the
    #: holder, like ``test`` itself: partners need not agree on them
    sep: str | None = None
    decimal: str | None = None
    na_values: list[str] | None = None

    _na_text = field_validator("na_values", mode="before")(lambda cls, v: _na_values_as_text(v))

    @model_validator(mode="before")
    @classmethod
    def _delimiter(cls, data: Any) -> Any:
        # ``delimiter`` is a synonym of ``sep``, as in a party's table (and pandas)
        if isinstance(data, dict) and "delimiter" in data:
            data = dict(data)
            delim = data.pop("delimiter")
            if data.get("sep", delim) != delim:
                raise ValueError("set sep or delimiter, not both (they are the same setting)")
            data["sep"] = delim
        return data

    @model_validator(mode="after")
    def _dialect(self) -> "EvaluationSpec":
        # the party table's rules (PartySpec._dialect), field by field; the decimal mark is checked against the
        # separator the test file is read with in JobSpec, which knows the holder's
        if self.sep is not None and len(self.sep) != 1:
            raise ValueError(f"sep {self.sep!r} must be one character, e.g. ';' or '\\t'")
        if self.decimal is not None and len(self.decimal) != 1:
            raise ValueError(f"decimal {self.decimal!r} must be one character other than the separator")
        if any(not v.strip() for v in self.na_values or ()):
            raise ValueError("na_values lists an empty text; empty cells are missing values already, list only "
                             "placeholders such as '?' or '.'")
        return self

    @field_validator("weight")
    @classmethod
    def _weight(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("weight is empty; name the column of sampling weights, or remove the setting")
        return v

    @model_validator(mode="after")
    def _one_rule(self) -> "EvaluationSpec":
        set_ = [k for k in ("test_rule", "test_fraction", "test_column") if getattr(self, k) is not None]
        if len(set_) > 1:
            raise ValueError(f"set only one of {', '.join(set_)}: each chooses the test rows on its own")
        return self

    @field_validator("test_rule")
    @classmethod
    def _rule(cls, v: str | None) -> str | None:
        if v is not None:
            m = _RULE.match(v)
            if not m:
                raise ValueError(f"{v!r}: write the split as 'id % K == R', e.g. 'id % 5 == 0'")
            k, r = int(m.group(1)), int(m.group(2))
            if k < 2 or r >= k:
                raise ValueError(f"{v!r}: K must be at least 2 and R between 0 and K-1")
        return v


class SecuritySpec(_Strict):
    certs: Path | None = None
    secure_aggregation: bool = True
    #: aggregations per secure-aggregation setup (session mode, fedrisk.crypto.secagg_session);
    #: 0 = the single-round protocol with fresh keys for every aggregation
    secure_aggregation_rounds: int = Field(64, ge=0, le=4096)
    #: who masks with whom in session mode (fedrisk.crypto.secagg_graph): "complete" (Bonawitz),
    #: "sparse" (SecAgg+: k ~ 2 log2 n neighbours per bank), "auto" = complete up to 10 banks
    secure_aggregation_graph: Literal["auto", "complete", "sparse"] = "auto"
    connect_timeout: float = Field(60.0, gt=0)
    recv_timeout: float = Field(600.0, gt=0)
    #: per peer: unread data it may park in this party's mailbox (MiB) and how long an unread
    #: message is kept (seconds; default max(3600, 4 x recv_timeout)); see fedrisk.transport.channel
    max_queued_mib: int = Field(1024, ge=1)
    unread_ttl: float | None = Field(None, gt=0)


class PrivacySpec(_Strict):
    """``[privacy]``: differential privacy of horizontal trainers (see :mod:`fedrisk.crypto.dp`).

    Either a budget ``epsilon`` (with ``delta``), to which the noise is calibrated, or a fixed
    ``noise_multiplier``; with both, a run that would spend more than ``epsilon`` refuses to
    start. ``clip`` bounds one row's (trees: one gradient's) or one update's contribution.
    """

    epsilon: float | None = Field(None, gt=0)
    delta: float = Field(1e-5, gt=0, lt=1)
    noise_multiplier: float | None = Field(None, gt=0)
    clip: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _something(self) -> "PrivacySpec":
        if self.epsilon is None and self.noise_multiplier is None:
            raise ValueError("set epsilon = ... (with delta) or noise_multiplier = ... in the privacy table")
        return self


class PsiSpec(_Strict):
    """How vertical jobs align rows: ``ecdh`` (ristretto255, no extra dependency) or ``rr22``."""

    protocol: Literal["ecdh", "rr22", "unbalanced"] = "ecdh"
    #: ``unbalanced`` only: the party with the big set, which holds the OPRF key and encodes its set
    #: once per key epoch (fedrisk.algorithms.vertical.unbalanced_psi)
    key_holder: str | None = None
    #: ``unbalanced`` only: the other party fetches the key holder's encoded set over the job's
    #: channel when its cache is missing or stale; when false such a job is refused instead
    fetch_encoded: bool = True
    #: memory budget of a party's ECDH-PSI in MB; larger sets stream through the run's tmp dir
    memory_mb: float | None = Field(default=None, gt=0)
    #: a vertical training job stops, naming the size, when fewer ids are common to all parties
    #: (fewer rows cannot train or evaluate a model; a tiny intersection is usually an id-format mismatch)
    min_intersection: int = Field(default=20, ge=1)


class JobSpec(_Strict):
    federation: FederationSpec
    coordinator: CoordinatorSpec | None = None
    parties: dict[str, PartySpec]
    task: dict[str, Any]
    evaluation: EvaluationSpec = EvaluationSpec()
    security: SecuritySpec = SecuritySpec()
    privacy: PrivacySpec | None = None
    psi: PsiSpec = PsiSpec()
    #: directory of the spec file; relative paths are resolved against it
    base_dir: Path = Path(".")

    @model_validator(mode="after")
    def _consistent(self) -> "JobSpec":
        if not self.parties:
            raise ValueError("[parties] is empty: declare at least one [parties.NAME] table")
        for name in self.parties:
            if name == COORDINATOR:
                raise ValueError(f"party name {COORDINATOR!r} is reserved for the [coordinator] table")
            if not _NAME.match(name):
                raise ValueError(f"party name {name!r}: use lower-case letters, digits, '_' and '-' (it becomes a certificate name)")
        seen: dict[str, str] = {}
        for name, addr in self.addresses().items():
            if addr in seen:
                raise ValueError(f"parties {seen[addr]!r} and {name!r} both use address {addr}; give each its own port")
            seen[addr] = name
        if "kind" not in self.task:
            raise ValueError("[task] needs kind = '...' (e.g. 'horizontal.lr', 'vertical.lr', 'vertical.secureboost')")
        holder = self.evaluation.holder
        if holder is not None and holder not in self.parties:
            raise ValueError(f"evaluation.holder {holder!r} is not one of the parties {sorted(self.parties)}")
        ev = self.evaluation
        dialect = [k for k in ("sep", "decimal", "na_values") if getattr(ev, k) is not None]
        if dialect and ev.test is None:
            raise ValueError(f"evaluation.{dialect[0]} describes the evaluation.test file, and this job has none; "
                             f"remove it (a party's own files take sep / decimal / na_values in [parties.NAME])")
        if ev.weight is not None:
            self._check_weight()
        if dialect:
            opts = self.test_read_options()
            if opts["decimal"] == (opts["sep"] or ","):
                raise ValueError(f"evaluation.decimal {opts['decimal']!r} must be one character other than the "
                                 "test file's separator")
        return self

    def _check_weight(self) -> None:
        """``evaluation.weight`` names a column of the evaluating party's file that is neither its id, its label,
        the test-row column nor one of its listed features."""
        ev, kind = self.evaluation, str(self.task.get("kind", ""))
        if kind.startswith("horizontal") and ev.test is None:
            raise ValueError(f"evaluation.weight {ev.weight!r} names a column of the evaluation.test file, and this "
                             "job has none; add evaluation.test = 'file' or remove weight")
        if ev.weight == ev.test_column:
            raise ValueError(f"evaluation.weight and evaluation.test_column are both {ev.weight!r}; the weights and the "
                             "test-row marks need two columns")
        holders = self.label_holders()
        who = holders[0] if kind.startswith("vertical") and holders else self.evaluation_holder()
        p = self.parties.get(who)
        if p is None:
            return
        if ev.weight in (p.id, p.label):
            raise ValueError(f"evaluation.weight {ev.weight!r} is the {'id' if ev.weight == p.id else 'label'} column of "
                             f"party {who!r}; name the column of sampling weights")
        if p.features and ev.weight in p.features:
            raise ValueError(f"evaluation.weight {ev.weight!r} is listed in features of [parties.{who}]; a weight "
                             "column is for evaluation only: remove it from the features")

    # -- derived views -------------------------------------------------------------------------
    @property
    def job_id(self) -> str:
        return self.federation.name

    def addresses(self) -> dict[str, str]:
        out = {n: p.address for n, p in self.parties.items()}
        if self.coordinator is not None:
            out[COORDINATOR] = self.coordinator.address
        return out

    def listen_address(self, name: str) -> str:
        """Where participant ``name``'s server binds: its ``listen`` if set, else its ``address``."""
        table = self.coordinator if name == COORDINATOR else self.parties[name]
        return table.listen or table.address

    def participants(self) -> list[str]:
        """Every process of the job: the parties, then the coordinator if there is one."""
        return list(self.parties) + ([COORDINATOR] if self.coordinator is not None else [])

    def resolve(self, p: Path | None) -> Path | None:
        if p is None:
            return None
        p = p.expanduser()  # "~/data/x.csv": the user's home, as in a shell
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    def data_path(self, party: str) -> Path | None:
        return self.resolve(self.parties[party].data)

    def pinned_cas(self) -> dict[str, bytes]:
        """PEM of each participant's own CA, for those whose spec names one (``ca = "..."``)."""
        out = {}
        tables = dict(self.parties)
        if self.coordinator is not None:
            tables[COORDINATOR] = self.coordinator
        for name, t in tables.items():
            path = self.resolve(t.ca)
            if path is None:
                continue
            try:
                out[name] = path.read_bytes()
            except OSError as e:
                raise ConfigError(f"participant {name!r}: CA file {path} cannot be read ({e.strerror})") from None
        return out

    def label_holders(self) -> list[str]:
        return [n for n, p in self.parties.items() if p.label]

    def check_files(self, party: str | None = None) -> None:
        """Raise ConfigError when a data/test file this process will read is missing."""
        names = [party] if party else list(self.parties)
        for n in names:
            if n == COORDINATOR:
                continue
            p = self.data_path(n)
            if p is None:
                raise ConfigError(f"party {n!r} has no data = '...' file in the job spec")
            if p.is_dir():
                raise ConfigError(f"party {n!r}: data = {p} is a folder, not a file; name the CSV or Parquet file itself")
            if not p.is_file():
                raise ConfigError(f"party {n!r}: data file {p} does not exist (paths are relative to the job spec's folder)")
        test = self.resolve(self.evaluation.test)
        holder = self.evaluation_holder()
        if test is not None and (party is None or party == holder) and not test.is_file():
            raise ConfigError(f"evaluation.test file {test} does not exist (paths are relative to the job spec's folder)")

    def check_compute(self, party: str | None = None) -> None:
        """Raise ConfigError when a party this process runs asks for a compute backend it cannot use.

        Checked where the party runs (``fedrisk party``, ``simulate``), not at load: a partner's
        copy of the spec may say ``compute = "ray"`` for a party whose cluster only it can reach.
        """
        names = [party] if party else list(self.parties)
        for n in names:
            if n == COORDINATOR or self.parties[n].compute != "ray":
                continue
            import importlib.util

            if importlib.util.find_spec("ray") is None:
                raise ConfigError(f'party {n}: compute = "ray" needs `pip install fedrisk[ray]`')
            if self.compute_address(n) is None:
                raise ConfigError(f'party {n}: compute = "ray" needs the cluster address: ray_address = "host:port" '
                                  f"in [parties.{n}], or the RAY_ADDRESS environment variable")

    def compute_address(self, party: str) -> str | None:
        """The Ray cluster of a ``compute = "ray"`` party: its ``ray_address``, else RAY_ADDRESS."""
        import os

        table = self.parties.get(party)
        if table is None or table.compute != "ray":
            return None
        return table.ray_address or os.environ.get("RAY_ADDRESS") or None

    def test_path(self) -> Path | None:
        return self.resolve(self.evaluation.test)

    def test_read_options(self) -> dict[str, Any]:
        """Keyword arguments of the data loaders for the ``evaluation.test`` file: the evaluation holder's own
        (:meth:`PartySpec.read_options`), with the ``[evaluation]`` table's ``sep`` / ``decimal`` / ``na_values``
        where it sets them. The label coding (``positive``) stays the holder's: the test file holds its customers.

        A test file given another separator without a decimal mark keeps the holder's mark unless that is the new
        separator (a ``;`` bank with decimal commas, a plain ``,`` test file): then ``'.'``, as for any party.
        """
        opts = self.parties[self.evaluation_holder()].read_options()
        ev = self.evaluation
        if ev.sep is not None:
            opts["sep"] = ev.sep
        if ev.decimal is not None:
            opts["decimal"] = ev.decimal
        elif ev.sep is not None and opts["decimal"] == ev.sep:
            opts["decimal"] = "."
        if ev.na_values is not None:
            opts.pop("na_values", None)
            if ev.na_values:
                opts["na_values"] = list(ev.na_values)
        return opts

    def evaluation_holder(self) -> str:
        return self.evaluation.holder or (self.label_holders() or list(self.parties))[0]


def parse_test_rule(rule: str) -> tuple[int, int]:
    m = _RULE.match(rule)
    if not m:
        raise ConfigError(f"test_rule {rule!r}: write it as 'id % K == R'")
    return int(m.group(1)), int(m.group(2))


def _numeric(ann: Any) -> bool:
    """True when a field takes only numbers (``int``, ``float``, optionally ``None``)."""
    import typing

    args = [a for a in typing.get_args(ann) if a is not type(None)] if typing.get_args(ann) else [ann]
    return bool(args) and all(a in (int, float) for a in args)


def bool_where_number(model: type[BaseModel], data: Any, prefix: str = "") -> str | None:
    """The first ``key: true`` given where ``model`` wants a number, as an error text, else None.

    pydantic turns ``true``/``false`` into 1/0 for numeric fields, so ``rounds = true`` would
    silently run one round and ``seed = true`` seed 1.
    """
    import typing

    if not isinstance(data, dict):
        return None
    for key, value in data.items():
        field = model.model_fields.get(str(key))
        if field is None:
            continue
        ann = field.annotation
        if isinstance(value, bool) and _numeric(ann):
            return (f"{prefix}{key}: {str(value).lower()} is a yes/no value; give a number "
                    f"(e.g. {key} = {field.default if isinstance(field.default, (int, float)) and not isinstance(field.default, bool) else 1})")
        subs = [a for a in (typing.get_args(ann) or (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if subs and isinstance(value, dict):
            found = bool_where_number(subs[0], value, f"{prefix}{key}.")
        elif typing.get_origin(ann) is dict and isinstance(value, dict):
            inner = [a for a in typing.get_args(ann)[1:] if isinstance(a, type) and issubclass(a, BaseModel)]
            found = next((f for n, v in value.items() if inner and (f := bool_where_number(inner[0], v, f"{prefix}{key}.{n}."))),
                         None)
        else:
            found = None
        if found:
            return found
    return None


def _suggest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def format_errors(where: str | Path, e: ValidationError) -> str:
    """One line for a spec validation error: each key's dotted path and what is wrong, unknown keys
    with the closest known one. ``e`` must come from :class:`JobSpec` or a model validated at the
    same place in it (``loc`` starting from the spec's root, e.g. ``("privacy", "budget")``)."""
    lines = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"] if not str(x).startswith("function-after"))
        if err["type"] == "extra_forbidden":
            parent = err["loc"][:-1]
            model = _model_at(parent)
            options = list(model.model_fields) if model else []
            lines.append(f"{loc}: unknown key{_suggest(str(err['loc'][-1]), options)}")
        elif err["type"] == "missing":
            lines.append(f"{loc}: required key is missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{loc}: {msg}" if loc else msg)
    return f"{where}: " + "; ".join(lines)


def _model_at(loc: tuple) -> type[BaseModel] | None:
    model: Any = JobSpec
    i = 0
    while i < len(loc):
        key = loc[i]
        field = model.model_fields.get(str(key)) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return None
        ann = field.annotation
        if key == "parties":
            model, i = PartySpec, i + 2
            continue
        for cand in (FederationSpec, CoordinatorSpec, EvaluationSpec, SecuritySpec, PrivacySpec, PsiSpec):
            if ann is cand or cand in getattr(ann, "__args__", ()):
                model = cand
        i += 1
    return model


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> JobSpec:
    """Read and validate a job spec; every problem becomes one :class:`ConfigError` line.

    ``overrides`` replaces top-level tables (used by ``fedrisk demo`` to point at generated data).
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"job spec {path} does not exist") from None
    except OSError as e:
        raise ConfigError(f"job spec {path} cannot be read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        if "Cannot declare" in msg or "redefine" in msg.lower() or "overwrite" in msg.lower():
            raise ConfigError(f"{path}: a table or party is declared twice ({msg}); party names must be unique") from None
        raise ConfigError(f"{path}: not valid TOML: {msg}") from None
    if overrides:
        raw.update(overrides)
    if "base_dir" in raw:
        raise ConfigError(f"{path}: base_dir: unknown key")
    raw["base_dir"] = path.resolve().parent
    wrong = bool_where_number(JobSpec, raw)
    if wrong:
        raise ConfigError(f"{path}: {wrong}")
    try:
        spec = JobSpec.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_errors(path, e)) from None
    from fedrisk.runtime.tasks import get_task  # late: tasks import algorithms

    task = get_task(spec.task["kind"], where=str(path))
    task.validate_spec(spec, where=str(path))
    _check_psi(spec, str(path))
    keep = [n for n, p in spec.parties.items() if p.missing == "keep"]
    if keep and not getattr(task, "HANDLES_MISSING", False):
        from fedrisk.runtime.tasks import TASKS

        keepers = " and ".join(k for k in sorted(TASKS) if getattr(get_task(k), "HANDLES_MISSING", False))
        raise ConfigError(f"{path}: parties {keep} set missing = 'keep', but task {spec.task['kind']!r} cannot use "
                          f"missing values; use 'reject' or 'mean' (only {keepers} learn where they go)")
    mono = [n for n, p in spec.parties.items() if p.monotone]
    if mono and not getattr(task, "SUPPORTS_MONOTONE", False):
        raise ConfigError(f"{path}: parties {mono} set monotone constraints, but task {spec.task['kind']!r} grows no trees; "
                          "remove them (vertical.secureboost and horizontal.gbdt support monotone = {...})")
    cats = [n for n, p in spec.parties.items() if p.categorical]
    if cats and getattr(task, "CATEGORY_ENCODING", None) is None and not getattr(task, "PARTY_CATEGORICAL", False):
        raise ConfigError(f"{path}: parties {cats} declare categorical columns, but task {spec.task['kind']!r} takes them "
                          "from [task] categorical = [...] (it bins text columns itself): move them there, or encode them "
                          "first (vertical.secureboost, vertical.lr, vertical.woe and vertical.scorecard take a party's own list)")
    if spec.privacy is not None and not getattr(task, "SUPPORTS_PRIVACY", False):
        raise ConfigError(f"{path}: a privacy table is set, but task {spec.task['kind']!r} does not apply differential privacy; "
                          "remove the privacy table (horizontal.gbdt and horizontal.lr support it)")
    return spec


def _check_psi(spec: JobSpec, where: str) -> None:
    """``[psi] protocol = "rr22"`` only where a PSI runs, and only with the optional extra installed."""
    if spec.psi.protocol == "ecdh":
        return
    if not str(spec.task["kind"]).startswith("vertical."):
        raise ConfigError(f"{where}: psi.protocol = {spec.psi.protocol!r} applies to vertical jobs only "
                          f"({spec.task['kind']!r} runs no PSI); remove the [psi] table")
    if spec.psi.protocol == "unbalanced":
        _check_unbalanced(spec, where)
        return
    from fedrisk.crypto.spu_binding import load

    load(purpose=f"{where}: psi.protocol = {spec.psi.protocol!r}")


def _check_unbalanced(spec: JobSpec, where: str) -> None:
    """``unbalanced`` needs exactly two parties and names one of them as ``key_holder``."""
    names = sorted(spec.parties)
    if len(names) != 2:
        raise ConfigError(f"{where}: psi.protocol = 'unbalanced' aligns exactly two parties (a lender and a bureau), "
                          f"this job has {len(names)}; use 'ecdh' or 'rr22'")
    if spec.psi.key_holder not in spec.parties:
        raise ConfigError(f"{where}: psi.protocol = 'unbalanced' needs key_holder = one of {names} (the party with "
                          f"the big set, which holds the OPRF key), got {spec.psi.key_holder!r}")


def shared_settings(spec: JobSpec) -> dict[str, Any]:
    """The settings every party must agree on: all but local file paths and local options."""
    return {
        "federation": spec.federation.model_dump(mode="json"),
        # ``listen`` and ``ca`` are local (a bind address, a file on this host): never compared, never sent
        "coordinator": spec.coordinator.model_dump(mode="json", exclude={"listen", "ca"}) if spec.coordinator else None,
        "parties": {n: {"address": p.address, "id": p.id, "label": bool(p.label)} for n, p in sorted(spec.parties.items())},
        "task": spec.task,
        "evaluation": {"holder": spec.evaluation.holder, "test_rule": spec.evaluation.test_rule,
                       **{k: v for k in ("test_fraction", "test_column")
                          if (v := getattr(spec.evaluation, k)) is not None}},
        "security": {"secure_aggregation": spec.security.secure_aggregation,
                     "secure_aggregation_rounds": spec.security.secure_aggregation_rounds,
                     "secure_aggregation_graph": spec.security.secure_aggregation_graph},
        "psi": spec.psi.model_dump(mode="json"),
        "privacy": spec.privacy.model_dump(mode="json") if spec.privacy is not None else None,
    }
