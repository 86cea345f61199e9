"""Per-party training checkpoints and the resume agreement: ``RUN_DIR/checkpoints/<party>.json``.

The runtime owns checkpoints (algorithms only get two small hooks: "here is my state after step
k" and "start from this state"). Each participant keeps ITS OWN state only — its part of the
model, the step number, whatever its role needs to take the next step (e.g. its L-BFGS memory, its
running scores). Nothing another party holds is ever written here, and nothing is sent to a
partner but step numbers.

File (JSON, written to a temp name, fsynced, renamed: a crash never leaves half a checkpoint)::

    {"format": "fedrisk.checkpoint", "version": 1, "party", "job", "task",
     "fingerprint": {"spec": sha256, "data": sha256},
     "stages": {stage: {step: state}}}        # the last KEEP steps of each stage

Large arrays (at least :data:`SIDE_FILE_AT` values, e.g. SecureBoost's per-row margins) are not
written into the JSON: each step's go to one binary side file
``<party>.arrays/<stage>-<step>-<random>.npz`` (numpy's format, loaded with ``allow_pickle=False``),
written and fsynced *before* the JSON that names them, and referenced there by dtype, shape and the SHA-256 of their bytes (checked when
loaded; byte-identical arrays of one step are stored once). Why: a trainer checkpoints after every
step and the file keeps the last KEEP steps, so inline arrays were re-encoded as decimal text every
step (SecureBoost at 24k rows: 6 x 24k floats per tree, ~4 s of a 14 s job); binary they are a
copy. Side files of steps no longer kept are removed after the JSON is replaced.

``fingerprint.spec`` covers the settings every party agreed on (``shared_settings``, without
peer addresses, which may move between a crash and a resume) and this party's own table in the
spec (without file paths); ``fingerprint.data`` covers the bytes of this party's data file (and of
the test file it reads). Under ``--resume`` a checkpoint that is not fedrisk's, belongs to another
job or party, or whose fingerprint differs is refused before the job starts, with one line naming
the party and what differs; a run without ``--resume`` ignores (and replaces) old checkpoints.

Resume agreement (only in runs started with ``--resume``; the handshake makes every participant
agree on that flag). For a stage whose state is held by parties ``holders`` (``holders[0]`` is the
hub, the job's driver, which talks to every other participant)::

    each other holder -> hub : ckpt.steps.<stage>  {"steps": [k, ...]}   (control)
    hub -> each other holder : ckpt.step.<stage>   {"step": k}           (control)

The hub picks the largest step every holder still has (0 = start afresh) and every holder
continues from its own state at that step. Step numbers are already public (progress lines, the
protocol's tags), so nobody learns anything new. A party one step ahead (it wrote step k before its
partner crashed in the same step) goes back to step k-1: protocols are lock-step, so holders never
differ by more than one step, and KEEP = 3 leaves room.

Keys: nothing secret is checkpointed. Every resumed run does a fresh handshake and fresh key
set-ups (CKKS, Paillier/OU, secure-aggregation keys), exactly like a new run; the state kept is
plain numbers a party computed itself. Randomness that shapes the model is derived from the job
seed and the step number (row shuffles, subsamples), so a resumed run takes the same steps.

Fault injection for tests: ``FEDRISK_CRASH_AFTER_CHECKPOINT="party:stage:step"`` makes that party
SIGKILL itself right after writing that step (simulating a power cut at a known point).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import threading
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from fedrisk.errors import ConfigError, ProtocolError

__all__ = ["CheckpointStore", "CheckpointError", "Resumption", "fingerprint", "digest", "FORMAT", "KEEP", "CRASH_ENV",
           "SIDE_FILE_AT"]

FORMAT = "fedrisk.checkpoint"
VERSION = 1
#: steps kept per stage: holders differ by at most one step (lock-step protocols)
KEEP = 3
CRASH_ENV = "FEDRISK_CRASH_AFTER_CHECKPOINT"
TAG_PREFIX = "ckpt."
#: arrays with at least this many values go to the step's binary side file instead of the JSON
SIDE_FILE_AT = 4096
_SIDE = "__ndarray_file__"


class CheckpointError(ConfigError):
    """A checkpoint that cannot be resumed (unknown, another job's, other data or settings)."""


# -- encoding: numpy arrays as tagged lists (floats round-trip exactly through JSON's repr) -------
def _encode(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return {"__ndarray__": o.tolist(), "dtype": str(o.dtype), "shape": list(o.shape)}
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} cannot go into a checkpoint")


def _decode(o: Any, side: Any = None) -> Any:
    """JSON back to the state; ``side(ref)`` returns an array kept in a side file (see module docstring)."""
    if isinstance(o, dict):
        if "__ndarray__" in o:
            return np.asarray(o["__ndarray__"], dtype=o["dtype"]).reshape(o["shape"])
        if _SIDE in o and side is not None:
            return side(o)
        return {k: _decode(v, side) for k, v in o.items()}
    if isinstance(o, list):
        return [_decode(v, side) for v in o]
    return o


def _array_key(a: np.ndarray) -> str:
    """Name of an array in its side file: the SHA-256 of its dtype, shape and bytes (checked on load)."""
    return digest(a)


def _write_atomic(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(text.encode("utf-8") if isinstance(text, str) else text)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    try:  # the rename itself must survive a power cut too
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _file_digest(h: Any, path: Path | None) -> None:
    if path is None or not path.is_file():
        h.update(b"-\x00")
        return
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    h.update(b"\x00")


def fingerprint(spec: Any, party: str) -> dict[str, str]:
    """``{"spec": ..., "data": ...}``: what this party's checkpoint was made from (see module docstring)."""
    from fedrisk.runtime.spec import shared_settings

    settings = shared_settings(spec)
    settings["parties"] = {n: {k: v for k, v in p.items() if k != "address"} for n, p in settings["parties"].items()}
    if settings.get("coordinator"):
        settings["coordinator"] = {k: v for k, v in settings["coordinator"].items() if k != "address"}
    own = spec.parties.get(party)
    own_table = own.model_dump(mode="json", exclude={"data", "address", "listen", "ca"}) if own is not None else None
    doc = {"shared": settings, "own": own_table}
    if spec.evaluation.weight and own is not None:
        # [evaluation] weight is local (not shared), but at the party whose file holds it the column leaves the
        # features: a checkpoint taken with it as a feature must not be resumed without it, or the other way round
        doc["evaluation_weight"] = spec.evaluation.weight
    text = json.dumps(doc, sort_keys=True, default=str)
    data = hashlib.sha256()
    if own is not None:
        _file_digest(data, spec.data_path(party))
    if party == spec.evaluation_holder():
        _file_digest(data, spec.test_path())
    return {"spec": hashlib.sha256(text.encode("utf-8")).hexdigest(), "data": data.hexdigest()}


class CheckpointStore:
    """One participant's checkpoints (its own state only), in ``RUN_DIR/checkpoints/<party>.json``."""

    def __init__(self, out: Path, party: str, job: str, task: str, fp: dict[str, str]) -> None:
        self.path = Path(out) / "checkpoints" / f"{party}.json"
        #: binary side files of large arrays, one per (stage, step)
        self.side_dir = Path(out) / "checkpoints" / f"{party}.arrays"
        self.party, self.job, self.task, self.fp = party, job, task, fp
        #: stage -> step -> that step's state as JSON text: each step is encoded once, when saved, and
        #: the file is assembled from the kept steps' texts (re-encoding every kept step at every save
        #: cost a boosting coordinator ~13 ms per tree at 30 trees, on the critical path of its rounds)
        self._stages: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_spec(cls, out: Path, spec: Any, party: str) -> "CheckpointStore":
        return cls(out, party, spec.job_id, spec.task["kind"], fingerprint(spec, party))

    # -- reading, under --resume ---------------------------------------------------------------
    def open_for_resume(self) -> bool:
        """Load the checkpoint for a resumed run; False if there is none; raise if it cannot be resumed."""
        if not self.path.is_file():
            return False
        where = f"party {self.party!r}: checkpoint {self.path}"
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise CheckpointError(f"{where} is unreadable; remove it or run without --resume") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
            raise CheckpointError(f"{where} is not a fedrisk checkpoint (format {doc.get('format') if isinstance(doc, dict) else None!r}, "
                                  f"version {doc.get('version') if isinstance(doc, dict) else None!r}); remove it or run without --resume")
        for key, mine in (("job", self.job), ("party", self.party), ("task", self.task)):
            if doc.get(key) != mine:
                raise CheckpointError(f"{where} belongs to {key} {doc.get(key)!r:.60}, not {mine!r}; "
                                      "use this job's run directory or run without --resume")
        theirs = doc.get("fingerprint") or {}
        if theirs.get("data") != self.fp["data"]:
            raise CheckpointError(f"{where} was made from other data: this party's data file (or test file) "
                                  "changed since; restore it or run without --resume to start again")
        if theirs.get("spec") != self.fp["spec"]:
            raise CheckpointError(f"{where} was made with other job settings ([task], [evaluation], seed or this "
                                  "party's table changed); restore them or run without --resume to start again")
        stages = doc.get("stages") or {}
        if not isinstance(stages, dict) or not all(isinstance(v, dict) for v in stages.values()):
            raise CheckpointError(f"{where} is damaged (no stages table); remove it or run without --resume")
        self._stages = {stage: {str(k): json.dumps(v, allow_nan=True) for k, v in steps.items()}
                        for stage, steps in stages.items()}
        return True

    def steps(self, stage: str) -> list[int]:
        return sorted(int(k) for k in self._stages.get(stage, {}))

    def load(self, stage: str, step: int) -> dict[str, Any]:
        files: dict[str, Any] = {}

        def side(ref: dict) -> np.ndarray:
            name = str(ref.get(_SIDE))
            where = f"party {self.party!r}: checkpoint array file {self.side_dir / name}"
            try:
                if name not in files:
                    if "/" in name or "\\" in name or name.startswith("."):
                        raise ValueError(name)
                    with np.load(self.side_dir / name, allow_pickle=False) as z:
                        files[name] = {k: z[k] for k in z.files}
                a = files[name][str(ref.get("key"))]
            except (OSError, ValueError, KeyError):
                raise CheckpointError(f"{where} is missing or unreadable; remove the checkpoints directory or run "
                                      "without --resume") from None
            if str(a.dtype) != ref.get("dtype") or list(a.shape) != ref.get("shape") or _array_key(a) != ref.get("key"):
                raise CheckpointError(f"{where} does not match its checkpoint (damaged or from another run); remove "
                                      "the checkpoints directory or run without --resume")
            return a

        return _decode(json.loads(self._stages[stage][str(step)]), side)

    # -- writing ---------------------------------------------------------------------------------
    def save(self, stage: str, step: int, state: dict[str, Any]) -> None:
        """Keep ``state`` as this party's state after ``step`` of ``stage`` (atomically, on disk)."""
        with self._lock:
            steps = self._stages.setdefault(stage, {})
            # a fresh name per save: re-saving a step (after a resume) never overwrites the file the
            # current JSON names, whatever moment a crash picks
            name = f"{re.sub(r'[^A-Za-z0-9_-]', '_', stage)}-{int(step)}-{os.urandom(4).hex()}.npz"
            arrays: dict[str, np.ndarray] = {}

            def encode(o: Any) -> Any:
                if isinstance(o, np.ndarray) and o.size >= SIDE_FILE_AT and o.dtype.kind in "biufc":
                    key = _array_key(o)
                    arrays[key] = o
                    return {_SIDE: name, "key": key, "dtype": str(o.dtype), "shape": list(o.shape)}
                return _encode(o)

            steps[str(int(step))] = json.dumps(state, default=encode, allow_nan=True)
            if arrays:  # before the JSON that names it: a crash in between leaves the old JSON valid
                buf = io.BytesIO()
                np.savez(buf, **arrays)
                _write_atomic(self.side_dir / name, buf.getvalue())
            for old in sorted((int(k) for k in steps), reverse=True)[KEEP:]:
                del steps[str(old)]
            head = json.dumps({"format": FORMAT, "version": VERSION, "party": self.party, "job": self.job,
                               "task": self.task, "fingerprint": self.fp})
            stages = ", ".join(json.dumps(name) + ": {" + ", ".join(f"{json.dumps(k)}: {t}" for k, t in kept.items()) + "}"
                               for name, kept in self._stages.items())
            text = head[:-1] + ', "stages": {' + stages + "}}"  # the same document json.dumps would write
            _write_atomic(self.path, text)
            self._drop_unnamed_side_files(text)
        _maybe_crash(self.party, stage, step)

    def _drop_unnamed_side_files(self, text: str) -> None:
        """Remove side files the checkpoint no longer names (steps dropped, or an earlier run's)."""
        if not self.side_dir.is_dir():
            return
        named = set(re.findall(r'"%s": "([^"]+)"' % _SIDE, text))
        for f in self.side_dir.glob("*.npz"):
            if f.name not in named:
                f.unlink(missing_ok=True)

    def reset(self) -> None:
        """A fresh run: forget every stage (the file is replaced at the first save)."""
        self._stages = {}


def _maybe_crash(party: str, stage: str, step: int) -> None:
    target = os.environ.get(CRASH_ENV)
    if target and target == f"{party}:{stage}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


_INPUTS = "__inputs__"


def digest(*arrays: Any) -> str:
    """SHA-256 of arrays' dtypes, shapes and bytes (a stage's inputs, compared on resume)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class Resumption:
    """A party's view of checkpoints during one run: agree on a step, restore, save.

    Parameters
    ----------
    ctx : PartyContext
        The running participant (channel, log, ``resume`` flag).
    store : CheckpointStore
        Its checkpoint file (already opened for resume when ``ctx.resume``).
    """

    def __init__(self, ctx: Any, store: CheckpointStore) -> None:
        self.ctx, self.store = ctx, store
        self._inputs: dict[str, str | None] = {}

    def start(self, stage: str, holders: Iterable[str], inputs: Any = None) -> tuple[int, dict[str, Any] | None]:
        """Agree with the other holders of ``stage`` on the step to continue from.

        Returns ``(step, this party's state at that step)``, or ``(0, None)`` to start the stage
        afresh. Sends nothing unless the run was started with ``--resume``. ``inputs``: what
        this stage starts from when an earlier stage is recomputed on resume (e.g. the WOE columns
        of a scorecard's LR stage); a step saved from other inputs is not offered, so a changed
        earlier stage makes every holder start this one afresh.
        """
        holders = list(holders)
        ctx = self.ctx
        me = ctx.name
        self._inputs[stage] = None if inputs is None else inputs if isinstance(inputs, str) else digest(inputs)
        if not ctx.resume or me not in holders:
            return 0, None
        mine = [k for k in self.store.steps(stage)
                if self._inputs[stage] is None or self.store.load(stage, k).get(_INPUTS) == self._inputs[stage]]
        if len(holders) > 1:
            hub = holders[0]
            ch = ctx.channel
            if me == hub:
                common = set(mine)
                for h in holders[1:]:
                    got = ch.recv(h, f"{TAG_PREFIX}steps.{stage}")
                    steps = got.get("steps") if isinstance(got, dict) else None
                    if not isinstance(steps, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in steps):
                        raise ProtocolError(f"{me}: malformed {TAG_PREFIX}steps.{stage} from {h!r}")
                    common &= set(steps)
                step = max(common, default=0)
                ch.broadcast(holders[1:], f"{TAG_PREFIX}step.{stage}", {"step": step}, kind="control")
            else:
                ch.send(hub, f"{TAG_PREFIX}steps.{stage}", {"steps": mine}, kind="control")
                got = ch.recv(hub, f"{TAG_PREFIX}step.{stage}")
                step = got.get("step") if isinstance(got, dict) else None
                if not isinstance(step, int) or isinstance(step, bool) or (step and step not in mine):
                    raise ProtocolError(f"{me}: {hub!r} chose a resume step {step!r:.20} this party has no checkpoint for")
        else:
            step = max(mine, default=0)
        if not step:
            ctx.log.info("resume: %s starts afresh (no step every party has checkpointed; this party has %s)",
                         stage, mine or "none")
            return 0, None
        ctx.log.info("resume: %s continues after step %d (from %s)", stage, step, self.store.path)
        return step, self.store.load(stage, step)

    def save(self, stage: str, step: int, state: dict[str, Any]) -> None:
        if self._inputs.get(stage) is not None:
            state = {**state, _INPUTS: self._inputs[stage]}
        self.store.save(stage, step, state)

    def saver(self, stage: str):
        """``checkpoint(step, state)`` for an algorithm's hook."""
        return lambda step, state: self.save(stage, step, state)
