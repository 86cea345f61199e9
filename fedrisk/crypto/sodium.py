"""libsodium (ristretto255, through ``rbcl``), loaded without the file rbcl leaves behind.

rbcl carries libsodium as bytes inside a Python module and, when imported, writes them to a
``NamedTemporaryFile(delete=False)`` in ``$TMPDIR`` and loads that file (rbcl 1.1.2,
``rbcl/_sodium.py``): 2.8 MB per importing process, never removed. Every party process and every
PSI pool worker imports it, so a host running jobs fills its temporary folder (a run of the test
suite left ~2,500 such files, 7 GB) until something fails with "No space left on device". Once the
library is loaded it is mapped into the process, so on POSIX the file can be removed right away;
fedrisk's modules import ``rbcl`` from here (:mod:`fedrisk.crypto.psi`, :mod:`fedrisk.crypto.oprf`).
"""
from __future__ import annotations

import importlib
import os

import rbcl

__all__ = ["rbcl"]


def _remove_loaded_copy() -> None:
    """Remove the temporary copy of libsodium rbcl loaded this process from (no-op where that is unsafe)."""
    if os.name != "posix":  # Windows keeps a loaded library's file open: it cannot be removed
        return
    path = getattr(importlib.import_module("rbcl._sodium"), "lib_path", None)
    if isinstance(path, str) and os.path.basename(path).startswith("tmp"):
        try:
            os.unlink(path)
        except OSError:  # already gone (another import in this process removed it)
            pass


_remove_loaded_copy()
