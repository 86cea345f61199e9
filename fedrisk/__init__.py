"""fedrisk: federated credit-risk modelling without moving raw customer rows.

The public surface is small; everything else lives in modules named for what they are.
"""
from __future__ import annotations

__version__ = "0.1.0"

from fedrisk.errors import (  # noqa: E402
    CodecError,
    ConfigError,
    CryptoError,
    DataError,
    FedriskError,
    ProtocolError,
    TransportError,
)

__all__ = [
    "__version__",
    "FedriskError",
    "ConfigError",
    "DataError",
    "CodecError",
    "TransportError",
    "ProtocolError",
    "CryptoError",
]
