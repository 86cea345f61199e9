"""``WoeBinning``: federated binning, WOE and information value, with feature selection."""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd

from fedrisk.errors import ConfigError

from fedrisk.estimators.base import FederatedEstimator
from fedrisk.estimators.federation import Federation

__all__ = ["WoeBinning"]


class WoeBinning(FederatedEstimator):
    """Federated WOE binning and IV-based feature selection, shaped like a scikit-learn estimator.

    ``fit(fed)`` runs ``horizontal.woe`` on a horizontal federation (bin edges agreed from
    securely summed histograms; good/bad counts per bin securely summed; the coordinator
    computes WOE, IV and the selection) or ``vertical.woe`` on a vertical one (the label holder
    bins its own features; each feature holder's bins are counted under Paillier-encrypted
    labels). Settings are the tasks' declared ``[task]`` settings; ``None`` takes the declared
    default of the kind the federation runs.

    Parameters
    ----------
    {parameters}

    ``transform`` replaces values by their bin's WOE with the fitted bins: a DataFrame for a
    horizontal fit (every bank holds the global bins), or a vertical Federation, giving each party's
    own features (a feature holder's WOE is known only with ``reveal="woe"``).

    Attributes
    ----------
    iv_ : pandas.DataFrame
        One row per feature: ``party`` (``"federation"`` for horizontal), ``feature``, ``iv``,
        ``bins``, ``selected``, ``reason`` — the IV table of ``metrics.json``.
    selected_ : dict of str to list of str
        Selected features per party (horizontal: ``{"federation": [...]}``).
    files_ : dict of str to dict
        ``woe/<party>.json`` of every party (its own features' bins and WOE) and ``metrics.json``.
    ledger_ : pandas.DataFrame
        Every message every participant sent during ``fit``.

    Notes
    -----
    What each party learns — horizontal: every bank learns the global bins and WOE tables; the
    coordinator learns only sums of the banks' histograms and counts (secure aggregation). Text
    columns need ``categories={column: [...]}`` (public): only secure counts per declared category
    cross, other values are binned as ``"(other)"`` at their bank.
    Vertical: the label holder learns, per feature of a feature holder, rows and bads per
    numbered prebin (not edges, categories or which customer is in which bin); a feature holder
    learns what ``reveal`` says (its IV by default) and never sees a label.
    """

    _TASKS: ClassVar[dict[str, str]] = {"horizontal": "horizontal.woe", "vertical": "vertical.woe"}

    def fit(self, fed: Federation, y: Any = None) -> "WoeBinning":
        """Bin every party's features of ``fed`` and compute WOE/IV and the selection."""
        run = self._run(fed)
        self.files_ = {k: v for k, v in run.files.items() if k.startswith("woe/") or k == "metrics.json"}
        rows = [{"party": party, **r} for party, rs in run.metrics.get("iv", {}).items() for r in rs]
        self.iv_ = pd.DataFrame(rows)
        self.selected_ = {party: [r["feature"] for r in rs if r.get("selected")]
                          for party, rs in run.metrics.get("iv", {}).items()}
        self.n_features_in_ = len(rows)
        self.feature_names_in_ = self.iv_["feature"].to_numpy(dtype=object) if rows else []
        return self

    def fit_transform(self, fed: Federation, y: Any = None) -> dict[str, pd.DataFrame]:
        """``fit(fed)``, then the WOE of each party's own rows of ``fed``: ``{party: DataFrame}``.

        A vertical fit needs ``reveal='woe'``: otherwise each feature holder is told only its IV and has no
        WOE to encode with (refused before the federated work, not after it)."""
        if isinstance(fed, Federation) and fed.kind == "vertical" and (self.reveal or "iv") != "woe":
            raise ConfigError(f"WoeBinning(reveal={self.reveal!r}).fit_transform of a vertical Federation: the feature "
                              "holders get only their IV back, no WOE to encode with; use WoeBinning(reveal='woe') "
                              "(each feature holder then learns its bins' WOE), or fit(fed) for the IVs alone")
        return self.fit(fed, y).transform(fed)

    def transform(self, X: Any) -> pd.DataFrame | dict[str, pd.DataFrame]:
        """WOE of every fitted feature: a DataFrame (horizontal), or ``{party: DataFrame}`` for a Federation."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "files_")
        docs = {d["party"]: d for k, d in self.files_.items() if k.startswith("woe/")}
        if isinstance(X, Federation):
            return {p: _encode(docs[p], frame, p) for p, frame in X.parties.items() if p in docs}
        if self.files_.get("metrics.json", {}).get("task") != "horizontal.woe":
            raise ConfigError("vertical WOE bins stay with each party: pass a vertical Federation of the rows to encode")
        return _encode(next(iter(docs.values())), X, "federation")


def _encode(doc: dict, frame: pd.DataFrame, party: str) -> pd.DataFrame:
    """Replace each of ``doc``'s features in ``frame`` by the WOE of its bin."""
    from fedrisk.finance.binning import FeatureBins
    from fedrisk.finance.woe import require_columns

    require_columns(frame, list(doc["features"]))
    out = {}
    for f, d in doc["features"].items():
        if "woe" in d:
            woe = d["woe"]
        elif "table" in d:
            woe = [r["woe"] for r in sorted(d["table"], key=lambda r: r["bin"])]
        else:
            raise ConfigError(f"party {party!r} holds only the IV of {f!r}: fit with reveal='woe' to get its bins' WOE back")
        out[f] = np.asarray(woe, dtype=np.float64)[FeatureBins.from_dict(d["bins"]).assign(frame[f])]
    return pd.DataFrame(out, index=frame.index)
