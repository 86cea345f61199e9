"""A private folder for one object's spill files, removed when the object is closed.

Both ways a PSI party keeps its set on disk under ``[psi] memory_mb`` -- ECDH's blinded points
(:class:`~fedrisk.algorithms.vertical.psi_stream.StreamPrepared`) and RR22's order keys
(:class:`~fedrisk.algorithms.vertical.rr22_spill.SpilledKeys`) -- own such a folder: created with
mode 0700 (``tempfile.mkdtemp``) inside the party's run folder (``RUN/tmp``: a system temp on tmpfs
would undo the memory bound, and a killed job's files would be left outside its run), removed by
:meth:`SpillFolder.close`, by leaving a ``with`` block, and when the constructor fails half-way.
"""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, TypeVar

__all__ = ["SpillFolder"]

_Self = TypeVar("_Self", bound="SpillFolder")


class SpillFolder:
    """Base of an object whose files live in :attr:`folder` for as long as it is open.

    Parameters
    ----------
    prefix : str
        Start of the folder's name (says whose files they are in a listing).
    parent : path, optional
        Where the folder is made (created if absent); default the system temp folder.
    """

    def __init__(self, prefix: str, parent: str | Path | None = None) -> None:
        if parent is not None:
            Path(parent).mkdir(parents=True, exist_ok=True)
        #: the private folder (mode 0700)
        self.folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))

    @contextmanager
    def removed_on_error(self) -> Iterator[None]:
        """Within the block (a constructor's filling of the folder), any exception removes the folder first."""
        try:
            yield
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Remove the folder and everything in it (safe to call twice)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
