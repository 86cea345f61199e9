"""Federated inference for vertical models: ``fedrisk predict RUN_DIR/model.json NEW.csv --out scores.csv``.

A vertical model is split across parties (``model.json`` at the label holder lists the parties and
their files, e.g. ``model-payco.json``). Scoring new customers therefore runs a small federated
session: the label holder and every feature holder each start one inference process, align the new
rows by ECDH-PSI (the label holder's ``NEW.csv`` ids against each feature holder's own data file),
then run the model format's scoring protocol, in which each feature holder contributes only its
partial score and **only the label holder receives the scores**. Rows of ``NEW.csv`` that are not
at every feature holder are not scored (the count is logged).

Pluggable formats
-----------------
:data:`FORMATS` maps a model file's ``format`` to the task module implementing the per-role
scoring; a module provides

* ``INFERENCE_TAG_PREFIXES``: the message tags it uses (``"psi."`` is added);
* ``inference_features(role_model) -> list[str]``: columns this party loads from its file;
* ``infer(channel, role_model, X, label_holder, feature_holders) -> probabilities | None``:
  the per-role protocol on PSI-aligned rows ``X`` (label holder: returns scores; others: ``None``).

``"fedrisk.vertical.lr"`` -> :mod:`fedrisk.tasks.vertical_lr` and ``"fedrisk.vertical.secureboost"``
-> :mod:`fedrisk.tasks.vertical_secureboost` are registered; :func:`register_format` adds others.
A tree model plugs in the same way: its ``infer`` walks the trees across parties on the aligned
rows; alignment, processes, certificates and the handshake are done here.

How the parties take part
-------------------------
* **Local run** (``simulate`` output): ``fedrisk predict RUN_DIR/model.json NEW.csv --out S.csv``
  at the label holder reads ``RUN_DIR/job.toml``, and starts one inference process per feature
  holder (``python -m fedrisk.runtime.inference serve ...``) with that party's ``data`` file from
  the job spec and its ``RUN_DIR/model-<party>.json``, over mTLS with the run's certificates and the
  job's addresses. Set ``FEDRISK_PREDICT_SPAWN=0`` to not start them (they run elsewhere).
* **Across hosts**: agree on a session name ``S`` out of band; each feature holder runs::

      fedrisk serve JOB.toml --as payco --model RUN_DIR/model-payco.json --session S --certs CERTS/ \
          [--data payco_now.csv]

  and the label holder runs ``fedrisk predict RUN_DIR/model.json NEW.csv --out scores.csv --session S
  --no-spawn``. The session job id is ``<job>.predict.<S>``; the
  start handshake refuses processes of another session, model or format.

What each party learns: PSI's (see ``alignment``) — so **a feature holder learns which of its own
customers the label holder is scoring** (e.g. that they applied for credit), inherent to aligning
by id with both sides learning the intersection — plus the model format's scoring protocol (for
``vertical.lr``: feature holders learn nothing more; the label holder learns the scores, hence the sum of
the partners' partial scores, its reason codes' one ``partner features`` term).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from fedrisk.errors import ConfigError, FedriskError
from fedrisk.runtime.abort_reason import wire_reason
from fedrisk.runtime.handshake import handshake

__all__ = ["FORMATS", "register_format", "get_format", "predict_vertical", "serve_feature_holder", "run_inference",
           "load_feature_holder", "feature_holder_session", "scoring_load_options", "warn_unseen", "OPEN_TAG", "main"]

FORMATS: dict[str, str] = {
    "fedrisk.vertical.lr": "fedrisk.tasks.vertical_lr",
    "fedrisk.vertical.secureboost": "fedrisk.tasks.vertical_secureboost",
    "fedrisk.vertical.scorecard": "fedrisk.tasks.vertical_scorecard",
}

log = logging.getLogger("fedrisk.inference")
#: label holder -> feature holders, first message of a session: "open session S" (control)
OPEN_TAG = "ctl.open"


def register_format(fmt: str, module: str) -> None:
    """Register the task module implementing federated scoring for model format ``fmt``."""
    FORMATS[fmt] = module


def get_format(fmt: str) -> ModuleType:
    base = fmt.removesuffix(".part")
    if base not in FORMATS:
        raise ConfigError(f"model format {fmt!r} has no federated inference; known: {sorted(FORMATS)}")
    try:
        return importlib.import_module(FORMATS[base])
    except ModuleNotFoundError as e:
        raise ConfigError(f"model format {fmt!r} needs {FORMATS[base]}, which this version does not have: {e}") from None


def _load_json(path: Path) -> dict:
    from fedrisk.model_files import load_model

    return load_model(path)


def _session_spec(run_dir: Path, model: dict):
    """The training job's spec from the run directory, with paths resolved as in the original spec."""
    from fedrisk.runtime.spec import load_spec

    job = run_dir / "job.toml"
    if not job.is_file():
        raise ConfigError(f"{run_dir} has no job.toml; federated inference needs the job spec the model was trained with")
    spec = load_spec(job)
    if model.get("spec_dir"):
        spec = spec.model_copy(update={"base_dir": Path(model["spec_dir"])})
    return spec


def _certs(spec, run_dir: Path, certs: str | Path | None) -> Path:
    if certs is not None:
        return Path(certs)
    if (run_dir / "certs" / "ca.pem").is_file():
        return run_dir / "certs"
    c = spec.resolve(spec.security.certs)
    if c is None:
        raise ConfigError("no certificates for the inference session: pass --certs or set security.certs")
    return c


def _roles(model: dict) -> tuple[str, list[str]]:
    parties = list(model.get("parties") or {})
    lh = model.get("label_holder")
    if not lh or lh not in parties:
        raise ConfigError("model file does not name its label holder and parties; re-train with this version")
    return lh, [p for p in parties if p != lh]


def run_inference(channel, me: str, role_model: dict, table, label_holder: str, feature_holders: list[str],
                  job_id: str, logger: logging.Logger | None = None, detail: bool = False,
                  protocol: str = "ecdh") -> tuple[np.ndarray, Any]:
    """PSI-align ``table`` and run the format's scoring; return (aligned row positions, scores or None).

    With ``detail=True`` a format that has an ``infer_table`` hook (same messages as ``infer``)
    returns a table of outputs per row instead (e.g. points, probability and reason codes).
    Independent of the transport: tests run it over the in-memory network. ``protocol`` is the
    spec's ``[psi] protocol`` (the same at every party).
    """
    from fedrisk.algorithms.vertical.alignment import align_parties, alignment_salt

    mod = get_format(role_model["format"])
    al = align_parties(channel, label_holder, feature_holders, table.ids, salt=alignment_salt(job_id, "predict"),
                       log=logger, protocol=protocol)
    fn = getattr(mod, "infer_table", None) if detail else None
    p = (fn or mod.infer)(channel, role_model, table.X[al.indices], label_holder, feature_holders)
    return al.indices, p


def _open_channel(spec, me: str, job_id: str, certs_dir: Path, out: Path, prefixes: tuple[str, ...]):
    from fedrisk.transport.certs import tls_files
    from fedrisk.transport.grpc_channel import GrpcChannel
    from fedrisk.transport.ledger import Ledger, inbound_path

    addresses = {n: p.address for n, p in spec.parties.items()}
    return GrpcChannel(me, addresses, job_id, tls_files(certs_dir, me, own_ca=spec.pinned_cas().get(me)),
                       connect_timeout=spec.security.connect_timeout, recv_timeout=spec.security.recv_timeout,
                       ledger=Ledger(me, out / "ledger" / f"{me}.jsonl"),
                       inbound_ledger=Ledger(me, inbound_path(out, me), direction="in", fsync=False),
                       tag_prefixes=prefixes + ("psi.", "ctl."),
                       peer_cas=spec.pinned_cas(), listen=spec.listen_address(me) if me in spec.parties else None)


def _check_session(session: str) -> None:
    import re

    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$", session):
        raise ConfigError(f"session name {session!r}: use up to 32 letters, digits, '-' or '_'")


#: the vertical scorecard's scoring messages' layout, raised when its inference adds or changes a message (2: feature
#: holders send ``vsc.predict.blank``), so a label holder and a feature holder of different layouts are refused
#: at the handshake in one line instead of one waiting for a message the other never sends (other formats'
#: messages are unchanged and carry no layout, so parties of the previous release still score them)
INFERENCE_LAYOUT = 2


def _session_settings(model: dict, session: str) -> dict[str, Any]:
    # run_id: parts of the same training run only (a stale model-payco.json is refused by name)
    fmt = str(model.get("format")).removesuffix(".part")
    settings = {"session": session, "model_job": model.get("job"), "format": fmt,
                "parties": sorted(model.get("parties") or {}), "run_id": model.get("run_id")}
    if fmt == "fedrisk.vertical.scorecard":  # the only format whose scoring messages changed (layout 2)
        settings["inference_layout"] = INFERENCE_LAYOUT
    return settings


def predict_vertical(model_path: Path, model: dict, data: Path, out: Path, id_col: str = "id", *,
                     session: str | None = None, spawn: bool | None = None, certs: str | Path | None = None,
                     timeout: float = 600.0) -> int:
    """Label-holder side of ``fedrisk predict`` for a vertical model; return the number of scored rows."""
    from fedrisk.data.loading import load_party_table
    from fedrisk.runtime.evaluation import write_scores

    model_path = Path(model_path)
    run_dir = model_path.resolve().parent
    if str(model.get("format", "")).endswith(".part"):
        raise ConfigError(f"{model_path} is a feature holder's part; run predict with the label holder's model.json")
    lh, hosts = _roles(model)
    mod = get_format(model["format"])
    spec = _session_spec(run_dir, model)
    session = session or os.environ.get("FEDRISK_PREDICT_SESSION")
    if spawn is None:
        spawn = os.environ.get("FEDRISK_PREDICT_SPAWN", "1") != "0"
    if session is None and not spawn:
        # the feature holders run `fedrisk serve ... --session NAME` on their hosts: without the
        # agreed name this side would wait for a session nobody joins
        raise ConfigError("predict --no-spawn needs --session NAME: the inference session name the feature holders "
                          f"were started with (`fedrisk serve ... --as {hosts[0] if hosts else 'NAME'} --session NAME`)")
    session = session or secrets.token_hex(4)
    _check_session(session)
    job_id = f"{model['job']}.predict.{session}"
    certs_dir = _certs(spec, run_dir, certs)
    work = run_dir / "predict" / session
    (work / "logs").mkdir(parents=True, exist_ok=True)
    # the label holder's data policy of the training job (e.g. missing = "keep" for trees); a format
    # that trained on raw columns (text categories) loads them the same way through its own hook
    raw_loader = getattr(mod, "load_scoring_rows", None)
    if raw_loader is not None and lh in spec.parties:
        table = raw_loader(spec, lh, Path(data), mod.inference_features(model))
    else:
        opts = spec.parties[lh].read_options() if lh in spec.parties else {}
        opts.pop("positive", None)  # no label is read at scoring
        table = load_party_table(data, party=lh, id_col=id_col, label_col=None, features=mod.inference_features(model),
                                 require_label=False, missing=spec.parties[lh].missing if lh in spec.parties else "reject",
                                 fill=model.get("imputation"), categorical=spec.parties[lh].categorical if lh in spec.parties else None,
                                 encoding=model.get("category_encoding"), categories=model.get("categories") or
                                 ({} if model.get("category_encoding") else None), allow_no_features=True, **opts)
    warn_unseen(table, lh, log)
    # open (and so load our TLS files) before starting anyone: a bad certificate folder must not
    # leave feature-holder processes waiting for a label holder that never comes
    channel = _open_channel(spec, lh, job_id, certs_dir, work, tuple(mod.INFERENCE_TAG_PREFIXES))
    procs: dict[str, subprocess.Popen] = {}
    watcher = threading.Event()
    try:
        if spawn:
            from fedrisk.runtime.interrupt import PARENT_ENV

            # the spawned feature holders stop if this process dies (even kill -9)
            env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", **{PARENT_ENV: str(os.getpid())})
            for h in hosts:
                cmd = [sys.executable, "-m", "fedrisk.runtime.inference", "serve", str(run_dir / "job.toml"), "--as", h,
                       "--model", str(run_dir / model["parties"][h]), "--session", session, "--certs", str(certs_dir),
                       "--out", str(work)]
                if model.get("spec_dir"):
                    cmd += ["--spec-dir", model["spec_dir"]]
                with open(work / "logs" / f"{h}.stderr", "w", encoding="utf-8") as errf:
                    procs[h] = subprocess.Popen(cmd, stdout=errf, stderr=subprocess.STDOUT, env=env)
        channel.start()
        watcher = _watch_children(procs, channel)
        # a long-running scoring service (`fedrisk serve` without --session) opens a session when
        # the label holder asks for it; a one-session feature holder leaves this message unread
        channel.broadcast(hosts, OPEN_TAG, {"session": session}, kind="control")
        handshake(channel, lh, [lh, *hosts], _session_settings(model, session), wait=spec.security.connect_timeout,
                  log=log, addresses={n: p.address for n, p in spec.parties.items()})
        idx, p = run_inference(channel, lh, model, table, lh, hosts, job_id, log, detail=True,
                               protocol=spec.psi.protocol)
    except BaseException as e:
        channel.abort(wire_reason(lh, e, [lh, *hosts]))
        for h, pr in procs.items():
            if pr.poll() not in (None, 0):
                tail = (work / "logs" / f"{h}.stderr").read_text(errors="replace").strip().splitlines()[-1:]
                if tail:
                    raise FedriskError(f"feature holder {h!r} inference process failed: {tail[0]}") from e
        raise
    finally:
        watcher.set()
        channel.close()
        deadline = time.time() + 30
        for pr in procs.values():
            try:
                pr.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pr.kill()
    missing = table.n_rows - len(idx)
    if missing:
        log.warning("%d of %d rows are not at every feature holder and were not scored (status column of %s)",
                    missing, table.n_rows, out)
    if hasattr(p, "columns"):  # a table per row (points, reasons): every input row, unscored ones with a status
        from fedrisk.runtime.predict import write_predictions

        write_predictions(Path(out), table.ids, p, idx,
                          unscored="not scored: id not found at every feature holder")
        return int(len(idx))
    # every input row, in file order, with a status: a row some feature holder does not know is
    # listed as not scored (empty score) rather than silently left out
    score = np.full(table.n_rows, np.nan)
    score[idx] = np.asarray(p, dtype=float)
    status = np.full(table.n_rows, "not scored: id not found at every feature holder", dtype=object)
    status[idx] = "scored"
    write_scores(Path(out), table.ids, None, score, status=status)
    return int(len(idx))


def _watch_children(procs: dict[str, subprocess.Popen], channel) -> threading.Event:
    """Fail the channel as soon as a spawned feature holder exits with an error (instead of waiting
    out the receive timeout); returns the event that stops the watcher."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.2):
            for name, pr in procs.items():
                code = pr.poll()
                if code not in (None, 0):
                    channel.mailbox.fail(f"feature holder {name!r} inference process exited with code {code}")
                    return

    threading.Thread(target=watch, name="fedrisk-inference-watch", daemon=True).start()
    return stop


def load_feature_holder(spec, name: str, model_path: str | Path, data: str | Path | None = None):
    """A feature holder's part of the model and the rows it scores from, checked.

    Returns ``(model, label_holder, feature_holders, table)``. Shared by the one-session process
    (:func:`serve_feature_holder`) and the long-running service (:mod:`fedrisk.runtime.scoring_service`).
    """
    model = _load_json(Path(model_path))
    lh, hosts = _roles(model)
    if name not in hosts or model.get("party") != name:
        raise ConfigError(f"{model_path} is not feature holder {name!r}'s part of the model")
    mod = get_format(model["format"])
    task = importlib.import_module(FORMATS[str(model["format"]).removesuffix(".part")])
    table = task.load_table(spec, name, path=Path(data) if data else None, features=mod.inference_features(model),
                            **scoring_load_options(model)) if hasattr(task, "load_table") else None
    if table is None:
        raise ConfigError(f"model format {model['format']!r} does not say how to load a feature holder's data")
    warn_unseen(table, name, log)
    return model, lh, hosts, table


def scoring_load_options(part: dict) -> dict[str, Any]:
    """How a party loads rows to score with its part of a model, whoever scores (CLI or Python API).

    ``fill``: the training means of ``missing = "mean"``, so an empty cell gets the value it got
    in training, not this batch's mean (a row must score the same whichever batch it arrives in);
    ``categories``: the training encoders, so new rows get the training levels.
    """
    opts: dict[str, Any] = {}
    if part.get("imputation"):
        opts["fill"] = part["imputation"]
    if part.get("categories"):
        opts["categories"] = part["categories"]
    return opts


def warn_unseen(table, party: str, logger: logging.Logger) -> None:
    """Log (at this party only) how many rows carry categories the model never saw, per column, and what
    reading the file changed (``read_notes``: blank rows left out, ids written as decimals read as integers)."""
    from fedrisk.data.categorical import unseen_note

    for note in getattr(table, "read_notes", None) or ():
        logger.warning("party %s: %s", party, note)
    note = unseen_note(getattr(table, "unseen", None) or {}, len(table.ids), party)
    if note:
        logger.warning(note)


def feature_holder_session(channel, spec, name: str, model: dict, table, session: str,
                           logger: logging.Logger | None = None) -> None:
    """One inference session at a feature holder over an open ``channel``: handshake, align, score.

    The channel's job id is ``<job>.predict.<session>``; on failure the label holder is told
    (``ctl.abort``, no ids, values or paths) and the error is raised.
    """
    lh, hosts = _roles(model)
    job_id = f"{model['job']}.predict.{session}"
    try:
        handshake(channel, lh, [lh, *hosts], _session_settings(model, session), wait=spec.security.connect_timeout,
                  log=logger or log, addresses={n: p.address for n, p in spec.parties.items()})
        run_inference(channel, name, model, table, lh, hosts, job_id, logger or log, protocol=spec.psi.protocol)
    except BaseException as e:
        channel.abort(wire_reason(name, e, [lh, *hosts]))
        raise


def serve_feature_holder(spec_path: str | Path, name: str, model_path: str | Path, session: str,
                         certs: str | Path | None = None, out: str | Path | None = None, data: str | Path | None = None,
                         spec_dir: str | None = None) -> None:
    """Feature-holder side of one inference session: align, contribute partial scores, exit."""
    from fedrisk.runtime.spec import load_spec

    spec = load_spec(spec_path)
    if spec_dir:
        spec = spec.model_copy(update={"base_dir": Path(spec_dir)})
    _check_session(session)
    model, lh, hosts, table = load_feature_holder(spec, name, model_path, data)
    mod = get_format(model["format"])
    job_id = f"{model['job']}.predict.{session}"
    out = Path(out) if out else Path(model_path).resolve().parent / "predict" / session
    certs_dir = _certs(spec, Path(model_path).resolve().parent, certs)
    from fedrisk.runtime.interrupt import stop_on_signals, stop_with_parent

    channel = _open_channel(spec, name, job_id, certs_dir, out, tuple(mod.INFERENCE_TAG_PREFIXES))
    with stop_on_signals(f"feature holder {name!r}"):
        stop_with_parent()
        try:
            channel.start()
            feature_holder_session(channel, spec, name, model, table, session, log)
        finally:
            channel.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fedrisk.runtime.inference", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run a feature holder's side of an inference session")
    s.add_argument("spec")
    s.add_argument("--as", dest="name", required=True)
    s.add_argument("--model", required=True)
    s.add_argument("--session", required=True)
    s.add_argument("--certs")
    s.add_argument("--out")
    s.add_argument("--data", help="rows to score (default: the party's data file in the job spec)")
    s.add_argument("--spec-dir", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {a.name} %(levelname)s %(message)s")
    try:
        serve_feature_holder(a.spec, a.name, a.model, a.session, a.certs, a.out, a.data, a.spec_dir)
    except FedriskError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
