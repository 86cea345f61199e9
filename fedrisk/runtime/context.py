"""What the runtime hands to a task: one participant's view of a running job."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from fedrisk.runtime.spec import JobSpec
from fedrisk.transport.channel import Channel

__all__ = ["PartyContext", "ProgressLog", "write_json", "replaced_when_done", "make_dir"]


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def make_dir(path: Path, what: str = "folder") -> Path:
    """``mkdir -p`` with one-line errors: a file in the way, no permission (``what`` names the option)."""
    from fedrisk.errors import ConfigError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), path)
        raise ConfigError(f"{what} {path} cannot be created: {blocker} is a file, not a folder; choose another "
                          "location") from None
    except PermissionError:
        raise ConfigError(f"{what} {path} cannot be created: permission denied; choose a folder this account "
                          "can write") from None
    except OSError as e:
        raise ConfigError(f"{what} {path} cannot be created: {e.strerror or e}") from None
    return path


@contextlib.contextmanager
def replaced_when_done(path: Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it to ``path`` only when the block finishes.

    An interruption (Ctrl-C, an error, a kill) mid-write leaves the previous file, or none, and no
    temp file: never half a file that looks complete.
    """
    path = Path(path)
    make_dir(path.parent, "folder")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj: Any) -> Path:
    """Write JSON atomically (temp file + rename): a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    if isinstance(obj, dict) and str(obj.get("format", "")).startswith("fedrisk."):
        # a model file: seal it with a digest of exactly what is written (see fedrisk.model_files)
        from fedrisk.model_files import seal_model

        obj = seal_model(json.loads(json.dumps(obj, default=_jsonable)))
    tmp.write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


class ProgressLog:
    """Per-round progress as JSON lines; ``simulate`` tails it to draw the progress bar."""

    def __init__(self, path: Path | None, log: logging.Logger) -> None:
        self.path = path
        self.log = log
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def update(self, step: int, total: int, stage: str = "train", **metrics: Any) -> None:
        from fedrisk.runtime.interrupt import set_phase

        shown = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        self.log.info("%s %d/%d %s", stage, step, total, shown)
        set_phase(f"{stage} (step {step} of {total} done)")
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"time": time.time(), "stage": stage, "step": step, "total": total,
                                     **{k: _jsonable(v) if not isinstance(v, (int, float, str, bool)) else v
                                        for k, v in metrics.items()}}) + "\n")


@dataclass
class PartyContext:
    """One participant's view of the job: who it is, its channel, where it writes."""

    name: str
    spec: JobSpec
    channel: Channel
    out: Path
    log: logging.Logger
    progress: ProgressLog
    certs_dir: Path | None = None
    resume: bool = False
    #: random id of this training run, the same at every participant (from the handshake)
    run_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: this party's checkpoints (:class:`fedrisk.runtime.checkpoint.Resumption`), made on first use
    checkpoints_: Any = None

    @property
    def checkpoints(self):
        """This party's checkpoints: agree on a resume step, restore its own state, save after a step."""
        if self.checkpoints_ is None:
            from fedrisk.runtime.checkpoint import CheckpointStore, Resumption

            store = CheckpointStore.for_spec(self.out, self.spec, self.name)
            if self.resume:
                store.open_for_resume()
            self.checkpoints_ = Resumption(self, store)
        return self.checkpoints_

    @property
    def party(self):
        return self.spec.parties.get(self.name)

    def write_json(self, rel: str, obj: Any) -> Path:
        return write_json(self.out / rel, obj)

    def phase(self, name: str) -> None:
        """Declare the step this participant is in: logged, and named if the job is interrupted."""
        from fedrisk.runtime.interrupt import set_phase

        set_phase(name)
        self.log.info("phase: %s", name)
