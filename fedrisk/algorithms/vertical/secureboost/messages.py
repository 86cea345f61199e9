"""Helpers both SecureBoost roles use on the wire: timed send/recv, row bits, checked integer arrays."""
from __future__ import annotations

from typing import Any

import numpy as np

from fedrisk.algorithms.phase_timer import PhaseTimer as _Phases  # noqa: F401 (the roles import it from here)
from fedrisk.errors import ProtocolError
from fedrisk.runtime.rss import peak_rss_mb  # noqa: F401 (the roles import it from here)


def _pack_bits(mask: np.ndarray) -> np.ndarray:
    return np.packbits(mask.astype(bool))


def _unpack_bits(bits: Any, n: int, who: str) -> np.ndarray:
    if not isinstance(bits, np.ndarray) or bits.dtype != np.uint8 or bits.size != (n + 7) // 8:
        raise ProtocolError(f"{who}: expected {(n + 7) // 8} bytes of row bits, got {getattr(bits, 'shape', type(bits))}")
    return np.unpackbits(bits, count=n).astype(bool)



def _int_array(x: Any, who: str, what: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "iu":
        raise ProtocolError(f"{who}: {what} must be an integer array")
    return x.astype(np.int64)
