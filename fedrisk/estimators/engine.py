"""The one engine under the Python API: a task's own ``run(ctx)``, every participant a thread.

``fedrisk party`` runs one participant of a job: load the spec, open a gRPC channel with a
ledger, handshake, ``task.run(ctx)``. :func:`run_task` does exactly that for every participant
of an in-process :class:`~fedrisk.estimators.federation.Federation`, with one change: the channel
is an :class:`~fedrisk.transport.channel.InMemoryNetwork` channel (same codec, same tag
allow-list, same ledger) instead of gRPC. The spec is a real job spec written next to each
party's table and loaded by :func:`~fedrisk.runtime.spec.load_spec`, so a notebook fit is validated
and trained by the same code as ``fedrisk simulate`` — the estimators never train anything
themselves, and a new solver behind a task kind is picked up without touching this layer.

:func:`score_vertical` is the in-process ``fedrisk predict`` for split models: PSI alignment of
the rows to score and the model format's ``infer`` (:func:`fedrisk.runtime.inference.run_inference`).
"""
from __future__ import annotations

import json
import logging
import re
import secrets
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from fedrisk.errors import ConfigError
from fedrisk.estimators.federation import Federation

__all__ = ["JobRun", "run_task", "score_vertical", "ledger_frame", "capturing"]

LEDGER_COLUMNS = ["time", "from", "to", "tag", "kind", "bytes"]

_CAPTURE = threading.local()


@contextmanager
def capturing():
    """Within this block, in-process jobs keep every envelope each participant received
    (``JobRun.captured``; an estimator's ``run_.captured``): what privacy tests inspect."""
    before = getattr(_CAPTURE, "on", False)
    _CAPTURE.on = True
    try:
        yield
    finally:
        _CAPTURE.on = before


def _capture(explicit: bool) -> bool:
    return explicit or getattr(_CAPTURE, "on", False)


def ledger_frame(entries: list[dict[str, Any]]) -> pd.DataFrame:
    """Ledger lines (``{"time", "from", "to", "tag", "kind", "bytes"}``) as a DataFrame in time order."""
    df = pd.DataFrame(entries, columns=LEDGER_COLUMNS)
    return df.sort_values("time", kind="stable").reset_index(drop=True)


@dataclass
class JobRun:
    """What an in-process job left behind: its files (as the CLI writes them), ledger and timings.

    Attributes
    ----------
    kind : str
        The task kind (``vertical.secureboost`` ...).
    spec : str
        The job spec's TOML text (data paths are the run's temporary files).
    files : dict of str to dict
        Every JSON file the participants wrote, by path relative to the run directory
        (``model.json``, ``model-payco.json``, ``metrics.json``, ``woe/bank1.json`` ...).
    ledger : pandas.DataFrame
        Every outbound message of every participant.
    captured : dict of str to list, optional
        With ``capture=True``: every envelope each participant received.
    wall_s, cpu_s : float
        Wall time and this process's CPU time (all threads) of the job.
    scores : dict of str to DataFrame
        ``scores/*.csv`` the evaluation holder wrote (``train``, ``test``), by file stem.
    """

    kind: str
    spec: str
    files: dict[str, dict[str, Any]]
    ledger: pd.DataFrame
    captured: dict[str, list] | None = None
    wall_s: float = 0.0
    cpu_s: float = 0.0
    scores: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, Any]:
        return self.files.get("metrics.json", {})


class _Progress:
    """``ProgressLog`` that also draws a rich progress bar (notebook or terminal) at the driver."""

    def __init__(self, log: logging.Logger, title: str) -> None:
        from fedrisk.runtime.context import ProgressLog

        self._log = ProgressLog(None, log)
        self._title = title
        self._bar = None
        self._task = None

    def update(self, step: int, total: int, stage: str = "train", **metrics: Any) -> None:
        self._log.update(step, total, stage, **metrics)
        if self._bar is None:
            from rich.progress import Progress

            self._bar = Progress(transient=False)
            self._bar.start()
            self._task = self._bar.add_task(self._title, total=total)
        shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        self._bar.update(self._task, completed=step, total=total, description=f"{self._title} {shown}".strip())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _logger(name: str) -> logging.Logger:
    # a library logger: silent unless the notebook configures logging (warnings still show)
    return logging.getLogger(f"fedrisk.inprocess.{name}")


def _read_outputs(out: Path) -> tuple[dict[str, dict], dict[str, pd.DataFrame]]:
    files = {p.relative_to(out).as_posix(): json.loads(p.read_text(encoding="utf-8"))
             for p in sorted(out.rglob("*.json")) if "checkpoints" not in p.parts}
    scores = {p.stem: pd.read_csv(p, dtype={"id": str}) for p in sorted((out / "scores").glob("*.csv"))} \
        if (out / "scores").is_dir() else {}
    return files, scores


#: "set positive = ... for this party in the job spec", "declare them with categorical = [...] in this party's table"
_PARTY_SETTING = re.compile(r"\b([a-z_]+) = [^;]*?(?:for this party in the job spec|in this party's table)")


def _party_options_hint(msg: str) -> str:
    """How to give a per-party spec setting that an error names from Python (``party_options``)."""
    party = re.match(r"party '([^']+)'", msg)
    setting = _PARTY_SETTING.search(msg)
    if not party or not setting:
        return ""
    return f"; in Python: party_options={{'{party.group(1)}': {{'{setting.group(1)}': ...}}}} of the Federation"


def _task_settings_as_keywords(msg: str) -> str:
    """A job spec's ``[task] categories = { purpose = [...] }`` / ``task.iv_threshold`` in an error, as the
    estimator's keywords a notebook sets them with (``categories={'purpose': [...]}``, ``iv_threshold=``)."""
    msg = re.sub(r"\[task\] ([a-z_]+) = \{ ?\"?(.+?)\"? = \[\.\.\.\] ?\}", r"\1={'\2': [...]} of the estimator", msg)
    msg = re.sub(r"\[task\] ([a-z_]+) = \[\.\.\.\]", r"\1=[...] of the estimator", msg)
    return re.sub(r"\btask\.([a-z_]+)\b(?: = )?", r"the estimator's \1=", msg)


#: a protocol's own Python hint after a spec setting: "[task] categories = { x = [...] } (in Python: categories=...)"
_IN_PYTHON = re.compile(r" \(in Python: ((?:[^()]|\([^()]*\))*)\)")


def _without_repeated_python_advice(msg: str) -> str:
    """Drop a ``(in Python: ...)`` hint whose advice the message already gives (once its spec settings read as
    the estimator's keywords), so a notebook error says it once."""
    def drop(m: re.Match) -> str:
        return "" if m.group(1).strip() in msg[:m.start()] + msg[m.end():] else m.group(0)

    return _IN_PYTHON.sub(drop, msg)


@contextmanager
def _notebook_errors(root: Path, fed: Federation):
    """Errors of the in-process job in the notebook's terms: each party's DataFrame, not the temporary
    files (``/tmp/fedrisk-.../data/payco.parquet``) and job spec the engine wrote for it."""
    from fedrisk.errors import FedriskError

    try:
        yield
    except FedriskError as e:
        if not e.args or not isinstance(e.args[0], str):
            raise
        msg = e.args[0]
        for n in fed.parties:
            for ext in ("parquet", "csv"):
                path = str(root / "data" / f"{n}.{ext}")
                msg = msg.replace(f", file '{path}'", " (its DataFrame)").replace(path, f"party {n!r}'s DataFrame")
        msg = msg.replace(f"{root / 'job.toml'}: ", "").replace(str(root / "job.toml"), "the job")
        msg = _task_settings_as_keywords(msg).replace("or load with missing=", "or build the Federation with missing=")
        msg = _without_repeated_python_advice(msg)
        # the label coding is a Federation setting in a notebook, not a spec line the user never wrote
        if "set positive = " in msg:
            who = re.match(r"party '([^']+)'", msg)
            per_party = f"{{'{who.group(1)}': {{'positive': ...}}}}" if who else "{party: {'positive': ...}}"
            msg = msg.replace("for this party in the job spec", "(Federation.horizontal/vertical(..., positive=...), "
                                                                    f"or party_options={per_party})")
            e.args = (msg, *e.args[1:])
        else:
            e.args = (msg + _party_options_hint(msg), *e.args[1:])
        raise


def _run_participants(participants: list[str], job: str, prefixes: tuple[str, ...], capture: bool,
                      recv_timeout: float, role: Callable[[str, Any], Any]) -> tuple[dict[str, Any], pd.DataFrame, dict | None, float, float]:
    from fedrisk.runtime.threads import run_roles
    from fedrisk.transport.channel import InMemoryNetwork

    capture = _capture(capture)
    net = InMemoryNetwork(participants, job=job, capture=capture, recv_timeout=recv_timeout,
                          tag_prefixes=prefixes + ("ctl.",))
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        results = run_roles({n: (lambda ch, n=n: role(n, ch)) for n in participants}, job=job, network=net)
    finally:
        for n in participants:
            net[n].close()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    entries = [e for n in participants for e in net[n].ledger.entries]
    captured = {n: list(net[n].captured) for n in participants} if capture else None
    return results, ledger_frame(entries), captured, wall, cpu


def run_task(fed: Federation, kind: str, params: Mapping[str, Any], *, capture: bool = False,
             keep_dir: str | Path | None = None) -> JobRun:
    """Run task ``kind`` with ``[task]`` settings ``params`` on ``fed``, every participant in-process.

    Parameters
    ----------
    fed : Federation
    kind : str
        A registered task kind (:data:`fedrisk.runtime.tasks.TASKS`).
    params : mapping
        The ``[task]`` table without ``kind``; validated by the task's ``Params``.
    capture : bool
        Keep every envelope each participant received (privacy tests).
    keep_dir : path, optional
        Run there and keep the run directory (job spec, data files, outputs); default a temporary
        directory that is removed afterwards.
    """
    from fedrisk.runtime.tasks import get_task

    task = get_task(kind, where="estimator")
    if fed.remote is not None:
        return _run_connected(fed, kind, params)
    if fed.spec_path is not None:
        return _run_processes(fed, kind, params, keep_dir)
    with tempfile.TemporaryDirectory(prefix="fedrisk-") as tmp:
        root = Path(keep_dir) if keep_dir is not None else Path(tmp)
        return _run_in_process(fed, kind, params, capture, root, task)


def _run_in_process(fed: Federation, kind: str, params: Mapping[str, Any], capture: bool, root: Path, task) -> JobRun:
    """``run_task``'s in-process job in ``root`` (errors in the notebook's terms)."""
    from fedrisk.runtime.context import PartyContext
    from fedrisk.runtime.handshake import handshake
    from fedrisk.runtime.spec import load_spec, shared_settings

    with _notebook_errors(root.resolve(), fed):
        spec_path = fed.write_job(root, {"kind": kind, **params})
        spec = load_spec(spec_path)
        out = root / "run"
        participants = spec.participants()
        driver = task.driver(spec)
        settings = shared_settings(spec)
        bar: list[_Progress] = []

        def role(name: str, channel) -> None:
            log = _logger(name)
            progress = _Progress(log, kind) if (fed.progress and name == driver) else None
            if progress is not None:
                bar.append(progress)
            from fedrisk.runtime.context import ProgressLog

            ctx = PartyContext(name=name, spec=spec, channel=channel, out=out, log=log,
                               progress=progress or ProgressLog(None, log), certs_dir=None)
            ctx.run_id = handshake(channel, driver, participants, settings)
            task.run(ctx)

        try:
            _, ledger, captured, wall, cpu = _run_participants(
                participants, spec.job_id, tuple(task.TAG_PREFIXES), capture, spec.security.recv_timeout, role)
        finally:
            for b in bar:
                b.close()
        files, scores = _read_outputs(out)
        return JobRun(kind, spec_path.read_text(encoding="utf-8"), files, ledger, captured, wall, cpu, scores)


def _run_processes(fed: Federation, kind: str, params: Mapping[str, Any], keep_dir: str | Path | None) -> JobRun:
    """``fedrisk simulate`` on a copy of the federation's spec with this ``[task]``: one process per
    participant over mTLS. The copy trains on the federation's rows (the train half's rule)."""
    from fedrisk.estimators.federation import rewrite_spec
    from fedrisk.runtime.simulate import simulate
    from fedrisk.transport.ledger import read_ledger

    with tempfile.TemporaryDirectory(prefix="fedrisk-") as tmp:
        out = Path(keep_dir) if keep_dir is not None else Path(tmp) / "run"
        evaluation = fed.training_evaluation() if fed.kind == "vertical" else None
        spec = rewrite_spec(fed.spec_path, out, free_ports=fed.free_ports, task={"kind": kind, **params},
                            evaluation=evaluation)
        t0, c0 = time.perf_counter(), time.process_time()
        simulate(spec, out)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        files, scores = _read_outputs(out)
        entries = [e for p in sorted((out / "ledger").glob("*.jsonl")) for e in read_ledger(p)]
        return JobRun(kind, spec.read_text(encoding="utf-8"), files, ledger_frame(entries), None, wall, cpu, scores)


def _run_connected(fed: Federation, kind: str, params: Mapping[str, Any]) -> JobRun:
    """This participant of a cross-host job (``Federation.connect``): ``fedrisk party`` in this process."""
    from fedrisk.estimators.federation import rewrite_spec, write_parquet
    from fedrisk.runtime.party import run_party
    from fedrisk.runtime.spec import load_spec
    from fedrisk.runtime.tasks import get_task, parse_params
    from fedrisk.transport.ledger import read_ledger

    job = load_spec(fed.spec_path)
    me = fed.remote["me"]
    if job.task["kind"] != kind:
        raise ConfigError(f"{fed.spec_path} runs task {job.task['kind']!r}; this estimator trains {kind!r}")
    P = get_task(kind).Params
    mine, theirs = parse_params(P, params).model_dump(), parse_params(P, job.task).model_dump()
    diff = {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}
    if diff:
        shown = ", ".join(f"{k}={v[0]!r} (spec: {v[1]!r})" for k, v in diff.items())
        raise ConfigError(f"the estimator's settings differ from {fed.spec_path}'s [task]: {shown}; every party runs "
                          "the spec, so set the estimator to the spec's values")
    with tempfile.TemporaryDirectory(prefix="fedrisk-") as tmp:
        out = fed.remote["out"] or Path(tmp) / "run"
        (out / "data").mkdir(parents=True, exist_ok=True)
        table = out / "data" / f"{me}.parquet"
        write_parquet(fed.parties[me], table, party=me)
        # the spec as the partners have it (same [task], evaluation, addresses), only our data file changed
        spec = rewrite_spec(fed.spec_path, out / "spec", data={me: table})
        t0, c0 = time.perf_counter(), time.process_time()
        run_party(spec, me, out, certs=fed.remote["certs"], console=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        files, scores = _read_outputs(out)
        ledger = out / "ledger" / f"{me}.jsonl"
        entries = read_ledger(ledger) if ledger.is_file() else []
        return JobRun(kind, spec.read_text(encoding="utf-8"), files, ledger_frame(entries), None, wall, cpu, scores)


def _roles(model: Mapping[str, Any]) -> tuple[str, list[str]]:
    lh = model.get("label_holder")
    parties = list(model.get("parties") or {})
    if not lh or lh not in parties:
        raise ConfigError("the model does not name its label holder and parties; re-train it with this version")
    return lh, [p for p in parties if p != lh]


def score_vertical(fed: Federation, parts: Mapping[str, Mapping[str, Any]], *, capture: bool = False,
                   detail: bool = False) -> tuple[np.ndarray | pd.DataFrame, JobRun]:
    """Federated scoring of ``fed``'s rows with a split model (one part per party), in-process.

    Each party loads its own rows (the columns its part uses), the parties align them by
    ECDH-PSI and run the format's scoring protocol; only the label holder receives scores.
    ``detail=True``: the format's table per row instead (a scorecard's points, probability and
    reason codes, as ``fedrisk predict`` writes them; same messages).

    Returns
    -------
    (scores, run)
        ``scores`` in the label holder's row order; rows missing at some feature holder are NaN
        (``detail``: a DataFrame, such rows empty).
    """
    from fedrisk.runtime.handshake import handshake
    from fedrisk.runtime.inference import get_format, run_inference, scoring_load_options, warn_unseen
    from fedrisk.runtime.spec import load_spec

    any_part = next(iter(parts.values()))
    lh, hosts = _roles(any_part)
    if fed.kind != "vertical":
        raise ConfigError("this model is split across a label holder and feature holders: score a vertical "
                          "Federation holding each party's rows (e.g. the test half of fed.split())")
    missing = [p for p in [lh, *hosts] if p not in fed.parties]
    if missing:
        raise ConfigError(f"the model's parties are {[lh, *hosts]}; the federation has {list(fed.parties)} "
                          f"(missing {missing}): name the parties as when the model was trained")
    mod = get_format(str(any_part["format"]))
    session = secrets.token_hex(4)
    job_id = f"{any_part['job']}.predict.{session}"
    settings = {"session": session, "model_job": any_part.get("job"),
                "format": str(any_part.get("format")).removesuffix(".part"), "parties": sorted(parts),
                "run_id": any_part.get("run_id")}
    # scoring needs no label: a label column in the rows to score (the test half of a split) is not read, so a
    # batch whose outcomes are all goods (or not yet known) scores like any other, as in `fedrisk predict`
    scoring = fed._with({p: fed.parties[p].drop(columns=[fed.label], errors="ignore") for p in [lh, *hosts]})
    with tempfile.TemporaryDirectory(prefix="fedrisk-predict-") as tmp, _notebook_errors(Path(tmp).resolve(), scoring):
        spec = load_spec(scoring.write_job(Path(tmp), {"kind": any_part["task"]}, label_holder=lh, evaluation=False))
        # as `fedrisk predict`: the training means (missing = "mean") and text categories of each part
        tables = {p: mod.load_table(spec, p, features=mod.inference_features(parts[p]), require_label=False,
                                    **scoring_load_options(parts[p]))
                  for p in [lh, *hosts]}
        for p, t in tables.items():
            warn_unseen(t, p, _logger(p))
        n_rows = len(tables[lh].ids)

        def role(name: str, channel):
            handshake(channel, lh, [lh, *hosts], settings)
            return run_inference(channel, name, dict(parts[name]), tables[name], lh, hosts, job_id, _logger(name),
                                 detail=detail)

        results, ledger, captured, wall, cpu = _run_participants(
            [lh, *hosts], job_id, tuple(mod.INFERENCE_TAG_PREFIXES) + ("psi.",), capture, spec.security.recv_timeout, role)
    idx, p = results[lh]
    idx = np.asarray(idx, dtype=np.int64)
    if isinstance(p, pd.DataFrame):  # detail: one row per input row, unscored rows empty
        scores = pd.DataFrame(index=np.arange(n_rows), columns=p.columns, dtype=object)
        scores.iloc[idx] = p.to_numpy(dtype=object)
        scores = scores.apply(lambda c: pd.to_numeric(c) if pd.api.types.is_numeric_dtype(p[c.name]) else c)
    else:
        scores = np.full(n_rows, np.nan)
        scores[idx] = np.asarray(p, dtype=np.float64)
    if len(idx) < n_rows:
        _logger(lh).warning("%d of %d rows are not at every feature holder and were not scored (NaN)",
                            n_rows - len(idx), n_rows)
    return scores, JobRun("predict", "", {}, ledger, captured, wall, cpu)
