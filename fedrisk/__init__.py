"""fedrisk: federated credit-risk modelling without moving raw customer rows.

The public surface is small and explicit (``__all__``); everything else lives in modules named
for what they are. The notebook API is imported on first use, so ``fedrisk party`` processes do
not pay for pandas and scikit-learn at start-up::

    import fedrisk as fr
    fed = fr.Federation.vertical({"lender": lender_df, "payco": payco_df}, id="id", label="y")
    train, test = fed.split(test_rule="id % 5 == 0")
    sb = fr.SecureBoost(n_trees=30).fit(train)
    fr.metrics.auc(test.y, sb.predict_proba(test)[:, 1])
"""
from __future__ import annotations

import importlib
from typing import Any

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

#: public name -> module that defines it (imported lazily, PEP 562)
_LAZY = {
    "Federation": "fedrisk.estimators.federation",
    "LogisticRegression": "fedrisk.estimators.linear",
    "SecureBoost": "fedrisk.estimators.boosting",
    "WoeBinning": "fedrisk.estimators.woe",
    "Scorecard": "fedrisk.estimators.scorecard",
    "load": "fedrisk.estimators.results",
    "run": "fedrisk.estimators.results",
}
_MODULES = {"metrics": "fedrisk.metrics", "errors": "fedrisk.errors"}

__all__ = [
    "__version__",
    "Federation",
    "LogisticRegression",
    "SecureBoost",
    "WoeBinning",
    "Scorecard",
    "metrics",
    "load",
    "run",
    "errors",
    "FedriskError",
    "ConfigError",
    "DataError",
    "CodecError",
    "TransportError",
    "ProtocolError",
    "CryptoError",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    else:
        raise AttributeError(f"module 'fedrisk' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
