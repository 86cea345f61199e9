"""The optional binding to SecretFlow's PSI library (RR22, KKRT, ...) shipped in the ``spu`` wheel.

fedrisk's fast PSI (:mod:`fedrisk.algorithms.vertical.rr22_psi`) runs RR22 through
``spu.libpsi.psi_execute`` and its network link ``spu.libspu.link``. Both are compiled pybind11
modules inside the ``spu`` package; fedrisk needs nothing else from that package. ``spu``'s
``__init__`` imports JAX (and its wheel declares ``numpy<2``), so importing ``spu`` normally would
force a JAX install and an old numpy on every user of the extra. This module therefore loads the
two native modules straight from the installed package folder, registering them under their own
names (``spu.libpsi``, ``spu.libspu``) so that a later ``import spu`` reuses them.

Install: ``pip install 'fedrisk[psi]'`` (spu with its declared dependencies) or, lighter and
enough for fedrisk, ``pip install --no-deps spu==0.9.5``.
"""
from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

from fedrisk.errors import ConfigError

__all__ = ["SpuPsi", "load", "available", "INSTALL_HINT", "SPU_VERSION"]

#: The spu release this integration was written and measured against.
SPU_VERSION = "0.9.5"
INSTALL_HINT = (f"install the optional extra: pip install 'fedrisk[psi]' (or, without JAX, "
                f"pip install --no-deps spu=={SPU_VERSION})")

_lock = threading.Lock()
_loaded: "SpuPsi | None" = None


class SpuPsi(NamedTuple):
    """The two native modules fedrisk uses."""

    libpsi: ModuleType
    link: ModuleType  # ``spu.libspu.link``: Desc, create_brpc, Context


def _native(name: str, folder: Path) -> ModuleType:
    full = f"spu.{name}"
    if full in sys.modules:
        return sys.modules[full]
    candidates = sorted(folder.glob(f"{name}*.so"))
    if not candidates:
        raise ConfigError(f"the installed spu package at {folder} has no {name} module; {INSTALL_HINT}")
    spec = importlib.util.spec_from_file_location(full, candidates[0])
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load {candidates[0]}; {INSTALL_HINT}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[full] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception as e:  # noqa: BLE001 - an unusable wheel becomes one clear line
        sys.modules.pop(full, None)
        raise ConfigError(f"spu's {name} cannot be loaded on this machine ({type(e).__name__}: {e}); "
                          f"{INSTALL_HINT}") from None
    return mod


def load(purpose: str = "psi protocol 'rr22'") -> SpuPsi:
    """Load (once) and return the native modules, or raise one :class:`ConfigError` line.

    Parameters
    ----------
    purpose : str
        What needs the binding, for the error message (e.g. the spec setting).
    """
    global _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        found = importlib.util.find_spec("spu")  # locates the package without running its __init__
        if found is None or not found.submodule_search_locations:
            raise ConfigError(f"{purpose} needs SecretFlow's PSI library (the 'spu' package), which is not "
                              f"installed; {INSTALL_HINT}, or use the default protocol 'ecdh'")
        folder = Path(list(found.submodule_search_locations)[0])
        libpsi = _native("libpsi", folder)
        libspu = _native("libspu", folder)
        for attr in ("psi_execute", "PsiExecuteConfig", "PsiProtocol"):
            if not hasattr(libpsi, attr):
                raise ConfigError(f"the installed spu at {folder} lacks libpsi.{attr}; {INSTALL_HINT}")
        _loaded = SpuPsi(libpsi, libspu.link)
        return _loaded


def available() -> bool:
    """True when :func:`load` would succeed (used by tests and benchmarks to skip cleanly)."""
    try:
        load()
    except ConfigError:
        return False
    return True
