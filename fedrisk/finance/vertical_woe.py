"""Vertical (same customers, different columns) WOE/IV of a feature holder's features.

The label holder learns per-bin good/bad counts of the feature holder's bins — and nothing
about which customer is in which bin; the feature holder learns nothing about the labels (only
the IV per feature, and more only if the label holder chooses to reveal it). Rows are assumed
aligned beforehand (PSI): row ``i`` is the same customer at both parties.

Message flow (``L`` = label holder, ``F`` = each feature holder, ``T`` = tag prefix "vwoe")::

    1. L -> F  T.key      additively homomorphic public key (Paillier)   public-parameter
       L -> F  T.labels   Enc(y_i) for every aligned row                  ciphertext
    2. F: equal-frequency prebins per feature (+ a missing bin; one prebin per category),
          S_fk = rerandomise( prod_{i in prebin k of f} Enc(y_i) ) = Enc(bads in prebin k)
       F -> L  T.sizes    rows per prebin, feature names and kinds        aggregate
       F -> L  T.sums     S_fk                                            ciphertext
    3. L: decrypt -> bads per prebin, goods = size - bads; merge prebins (binning.merge_bins);
          WOE and IV from the merged counts
       L -> F  T.result   IV per feature (+ merged prebin groups if reveal >= "bins",
                          + WOE per final bin if reveal == "woe")          metric / model
    4. F: select its own features (IV threshold, then correlation among its own features)
       F -> L  T.selection  the selection report                          metric

What each party learns
    L: for each of F's features, the number of prebins, rows and bads per prebin (its labels
    summed over F's private grouping), hence WOE/IV. Not the bin edges, not the categories,
    not which row is in which bin: the sums are re-randomised, so L cannot test which of its
    own ciphertexts a sum contains.
    F: ciphertexts under L's key (semantically secure) and what L reveals: the IV per
    feature by default; with ``reveal="bins"`` the merged groups (which say which neighbouring
    prebins have similar bad rates, and for categorical features their bad-rate order); with
    ``reveal="woe"`` the WOE of each final bin, i.e. each bin's bad rate — what F needs to
    WOE-encode its columns for a federated scorecard.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from fedrisk.crypto.additive import PrivateKey, PublicKey, generate_keypair, public_key_from_wire
from fedrisk.errors import ConfigError, DataError, ProtocolError
from fedrisk.finance.binning import (
    BinningConfig,
    FeatureBins,
    bins_from_groups,
    is_categorical,
    is_missing,
    merge_bins,
    order_categories,
    quantile_edges,
)
from fedrisk.finance.woe import DEFAULT_SMOOTHING, iv_strength, select_features, woe_iv
from fedrisk.transport.channel import Channel

__all__ = ["VerticalWoeResult", "vertical_woe_label_holder", "vertical_woe_feature_holder", "REVEAL_LEVELS"]

REVEAL_LEVELS = ("iv", "bins", "woe")


@dataclass
class VerticalWoeResult:
    """Outcome at one party.

    Attributes
    ----------
    iv : dict
        Label holder: ``{party: {feature: iv}}``; feature holder: ``{feature: iv}``.
    tables : dict
        Label holder only: ``{party: {feature: [per-bin rows]}}`` (bins are numbered, not labelled:
        the label holder never sees edges or categories).
    selection : dict
        ``{party: selection report}`` at the label holder; this party's report at a feature holder.
    bins : dict
        Feature holder with ``reveal`` >= "bins": ``{feature: FeatureBins}`` (its final bins).
    woe : dict
        Feature holder with ``reveal == "woe"``: ``{feature: ndarray}`` WOE per final bin
        (missing bin last).
    """

    iv: dict[str, Any]
    tables: dict[str, Any] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)
    bins: dict[str, FeatureBins] = field(default_factory=dict)
    woe: dict[str, np.ndarray] = field(default_factory=dict)

    def iv_table(self) -> list[dict[str, Any]]:
        """Rows ``party``, ``feature``, ``iv``, ``strength`` by descending IV (label holder view)."""
        flat = self.iv if all(isinstance(v, dict) for v in self.iv.values()) else {"": self.iv}
        rows = [{"party": p, "feature": f, "iv": v, "strength": iv_strength(v)} for p, d in flat.items() for f, v in d.items()]
        return sorted(rows, key=lambda r: -r["iv"])


def vertical_woe_label_holder(channel: Channel, feature_holders: Sequence[str], y: Any, *,
                              config: BinningConfig | None = None, smoothing: float = DEFAULT_SMOOTHING,
                              reveal: str = "iv", key: tuple[PublicKey, PrivateKey] | None = None,
                              scheme: str = "paillier", key_bits: int = 2048, tag: str = "vwoe") -> VerticalWoeResult:
    """Label-holder role: encrypt labels, decrypt per-bin sums, compute the holders' WOE/IV.

    Parameters
    ----------
    channel : Channel
        The label holder's endpoint.
    feature_holders : sequence of str
        Parties whose features are evaluated.
    y : array-like of {0, 1}
        Labels of the aligned rows, 1 = bad.
    config : BinningConfig, optional
        Merging settings (``n_prebins`` is the feature holders' own setting).
    smoothing : float
        WOE smoothing (see :mod:`fedrisk.finance.woe`).
    reveal : {"iv", "bins", "woe"}
        What the feature holders get back (see the module docstring).
    key : (PublicKey, PrivateKey), optional
        An existing key pair; otherwise one is generated (``scheme``, ``key_bits``).
    tag : str
        Tag prefix.

    Returns
    -------
    VerticalWoeResult
        IV and per-bin tables per holder and feature, and each holder's selection report.
    """
    if reveal not in REVEAL_LEVELS:
        raise ConfigError(f"reveal must be one of {REVEAL_LEVELS}, got {reveal!r}")
    cfg = config or BinningConfig()
    yv = np.asarray(y, dtype=float).ravel()
    if yv.size == 0 or not np.isin(yv, (0.0, 1.0)).all():
        raise DataError(f"{channel.me}: the label must be 0/1 (1 = bad) with no missing values")
    pub, priv = key if key is not None else generate_keypair(scheme, key_bits)
    enc = pub.ciphertexts_to_wire(priv.encrypt(yv.astype(np.int64)))
    for p in feature_holders:
        channel.send(p, f"{tag}.key", pub.to_wire(), kind="public-parameter")
        channel.send(p, f"{tag}.labels", enc, kind="ciphertext")
    monotonic = cfg.method == "monotonic"
    result = VerticalWoeResult(iv={}, tables={}, selection={})
    for p in feature_holders:
        sizes = channel.recv(p, f"{tag}.sizes")
        sums = pub.ciphertexts_from_wire(channel.recv(p, f"{tag}.sums"))
        feats, kinds, n_pre = sizes["features"], sizes["kinds"], [int(k) for k in sizes["n_prebins"]]
        n = np.asarray(sizes["sizes"], dtype=float)
        if len(sums) != n.size or sum(k + 1 for k in n_pre) != n.size:
            raise ProtocolError(f"party {p!r} sent {len(sums)} encrypted sums and {n.size} sizes for prebins {n_pre}")
        bads = np.asarray(priv.decrypt(sums), dtype=float)
        if (bads < 0).any() or (bads > n).any():
            raise ProtocolError(f"party {p!r}: decrypted bad counts do not fit the prebin sizes it declared")
        goods = n - bads
        ivs, tables, back = {}, {}, {}
        pos = 0
        for f, kind, k in zip(feats, kinds, n_pre):
            g, b = goods[pos:pos + k + 1], bads[pos:pos + k + 1]
            pos += k + 1
            order = np.arange(k)
            if kind == "categorical":
                order = order_categories([str(i) for i in range(k)], g[:k], b[:k])
            groups_o = merge_bins(g[:k][order], b[:k][order], max_bins=cfg.max_bins,
                                  min_bin_frac=cfg.min_bin_frac if monotonic else 0.0, monotonic=monotonic,
                                  trend="increasing" if kind == "categorical" else "auto")
            groups = [[int(order[i]) for i in grp] for grp in groups_o]
            fg = np.array([g[grp].sum() for grp in groups] + [g[k]])
            fb = np.array([b[grp].sum() for grp in groups] + [b[k]])
            woe, ivb, iv = woe_iv(fg, fb, smoothing)
            ivs[f] = iv
            tables[f] = [{"bin": i, "prebins": grp, "n": int(fg[i] + fb[i]), "goods": int(fg[i]), "bads": int(fb[i]),
                          "woe": float(woe[i]), "iv": float(ivb[i])}
                         for i, grp in enumerate(groups + [["missing"]])]
            back[f] = {"iv": iv}
            if reveal in ("bins", "woe"):
                back[f]["groups"] = groups
            if reveal == "woe":
                back[f]["woe"] = woe.tolist()
        channel.send(p, f"{tag}.result", {"features": back, "reveal": reveal},
                     kind="model" if reveal == "woe" else "metric")
        result.iv[p] = ivs
        result.tables[p] = tables
    for p in feature_holders:
        result.selection[p] = channel.recv(p, f"{tag}.selection")
    return result


def _prebins(X: pd.DataFrame, features: Sequence[str], categorical: set[str], n_prebins: int) -> tuple[list[FeatureBins], np.ndarray]:
    pre, idx = [], []
    for f in features:
        s = X[f]
        if f in categorical or is_categorical(s):
            cats = sorted({str(v) for v in s[~is_missing(s)]})
            fb = FeatureBins(f, "categorical", groups=[[c] for c in cats])
        else:
            miss = is_missing(s)
            v = pd.to_numeric(s[~miss], errors="coerce")
            if v.isna().any():
                raise DataError(f"column {f!r} mixes numbers and text; declare it categorical or clean it")
            fb = FeatureBins(f, "numeric", edges=quantile_edges(v.to_numpy(dtype=float), n_prebins))
        pre.append(fb)
        idx.append(fb.assign(s))
    return pre, np.column_stack(idx) if idx else np.empty((len(X), 0), dtype=np.int64)


def vertical_woe_feature_holder(channel: Channel, label_holder: str, X: pd.DataFrame, *,
                                features: Iterable[str] | None = None, categorical: Iterable[str] | None = None,
                                config: BinningConfig | None = None, iv_threshold: float = 0.02,
                                max_corr: float | None = 0.7, min_key_bits: int = 2048,
                                tag: str = "vwoe") -> VerticalWoeResult:
    """Feature-holder role: return encrypted per-prebin label sums; get IV (and bins if revealed).

    Parameters
    ----------
    channel : Channel
        This party's endpoint.
    label_holder : str
        The label holder's party name.
    X : DataFrame
        This party's features for the aligned rows (same order as the label holder's labels).
    features, categorical : iterable of str, optional
        Columns to evaluate (default all) and columns forced categorical.
    config : BinningConfig, optional
        ``n_prebins`` is used here.
    iv_threshold, max_corr : float
        This party's selection settings. Correlation uses WOE values when the label holder
        reveals them, otherwise Spearman correlation of the raw numeric columns (categorical
        columns are then only filtered by IV).
    min_key_bits : int
        Refuse a public key with a smaller modulus.
    tag : str
        Tag prefix.

    Returns
    -------
    VerticalWoeResult
        IV per feature, this party's selection, and final bins / WOE if revealed.
    """
    cfg = config or BinningConfig()
    feats = list(features) if features is not None else list(X.columns)
    missing = [f for f in feats if f not in X.columns]
    if missing:
        raise DataError(f"{channel.me}: columns {missing} not in this party's data")
    pub = public_key_from_wire(channel.recv(label_holder, f"{tag}.key"), min_bits=min_key_bits)
    enc_y = pub.ciphertexts_from_wire(channel.recv(label_holder, f"{tag}.labels"))
    if len(enc_y) != len(X):
        raise DataError(f"{channel.me}: {len(X)} rows here but {len(enc_y)} encrypted labels from {label_holder!r}; "
                        "align the rows (PSI) before computing IV")
    pre, idx = _prebins(X, feats, set(categorical or ()), cfg.n_prebins)
    width = max((fb.n_bins + 1 for fb in pre), default=1)
    sums = pub.bin_sums(enc_y, idx, width) if pre else []
    flat, sizes = [], []
    for j, fb in enumerate(pre):
        k = fb.n_bins + 1
        flat += sums[j][:k]
        sizes += np.bincount(idx[:, j], minlength=k)[:k].tolist()
    flat = pub.rerandomize(flat)
    channel.send(label_holder, f"{tag}.sizes", {"features": feats, "kinds": [fb.kind for fb in pre],
                                                "n_prebins": [fb.n_bins for fb in pre], "sizes": sizes}, kind="aggregate")
    channel.send(label_holder, f"{tag}.sums", pub.ciphertexts_to_wire(flat), kind="ciphertext")
    back = channel.recv(label_holder, f"{tag}.result")
    iv = {f: float(back["features"][f]["iv"]) for f in feats}
    bins: dict[str, FeatureBins] = {}
    woe: dict[str, np.ndarray] = {}
    for fb in pre:
        info = back["features"][fb.name]
        if "groups" in info:
            if fb.kind == "numeric":
                bins[fb.name] = bins_from_groups(fb.name, "numeric", info["groups"], prebin_edges=fb.edges)
            else:
                bins[fb.name] = bins_from_groups(fb.name, "categorical", info["groups"], categories=[g[0] for g in fb.groups])
        if "woe" in info:
            woe[fb.name] = np.asarray(info["woe"], dtype=float)
    frame = None
    if woe and len(woe) == len(feats):
        frame = pd.DataFrame({f: woe[f][bins[f].assign(X[f])] for f in feats})
    elif max_corr is not None:
        num = [fb.name for fb in pre if fb.kind == "numeric"]
        frame = pd.DataFrame({f: pd.to_numeric(X[f], errors="coerce") for f in num}).rank() if num else None
    corr = frame.corr(method="pearson").fillna(0.0) if frame is not None and frame.shape[1] > 1 else None
    if corr is not None:
        cand = [f for f in feats if f not in corr.index]
        corr = corr.reindex(index=corr.index.union(cand), columns=corr.index.union(cand), fill_value=0.0)
    selection = select_features(iv, iv_threshold=iv_threshold, max_corr=max_corr, corr=corr, party=channel.me)
    channel.send(label_holder, f"{tag}.selection", selection, kind="metric")
    return VerticalWoeResult(iv=iv, selection=selection, bins=bins, woe=woe)
