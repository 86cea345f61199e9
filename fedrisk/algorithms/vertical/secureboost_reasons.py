"""Reason codes for SecureBoost: per-party contributions along each applicant's path, at the label holder.

Protocol
--------
No new message. Scoring already has the label holder L walk every tree, asking each feature holder
H about the rows that reach H's nodes on their path (``sbi.<tag>.q<r>`` / ``.a<r>``, see
:func:`fedrisk.algorithms.vertical.secureboost.walk_label_holder`), so L knows each row's whole path
and which party owns each split on it. :func:`score_with_paths` is L's side of that same exchange (it replaces
``score_label_holder`` where paths are wanted; H runs ``score_feature_holder`` unchanged).

Attribution (exact TreeSHAP for the label holder's features, the rest to the partners)
---------------------------------------------------------------------------------------
Each node's ``cover`` is the sum of the hessians ``p(1 - p)`` of the training rows that reached it
when its tree was grown (XGBoost's cover), recorded once at the end of training by
:func:`add_covers` from the same walk over the training rows (the hessian of tree ``t`` follows from
the leaves of trees ``< t``). Per tree, L computes:

* for its own features: exact path-dependent TreeSHAP values (:mod:`fedrisk.finance.tree_shap`,
  checked against XGBoost's ``pred_contribs``) in the game where the partners' features are never
  known — their splits are integrated out with the covers, as TreeSHAP does for any absent
  feature. L decides its own splits for every row at every node, on the path or not;
* for the partners: the rest, ``f(x) - v(L's features)`` — what the partners' information adds
  once L's is known ("partners last"). With one partner in a tree this is exact; with several,
  each partner on the row's path gets its Saabas credit (the change of the cover-weighted node
  value at its splits on the path) plus an equal share of what remains.

Why not a Shapley value with each partner as one player: ``v(S)`` for a coalition with the partner
but without some of L's features needs the partner's decision at nodes *off* the row's path, which
the scoring protocol deliberately never reveals. With no partner split in a tree the values are
exactly XGBoost's ``pred_contribs`` (test). Per row::

    margin = base_score + sum over trees of E[tree]  +  sum of all contributions

Reason codes are the ``n`` largest positive contributions (pushing towards default): L's features
by name, each partner as one ``partner features (<party>)`` reason.

What each party learns: nothing beyond scoring (L already had every bit it uses); the covers in
L's model file are hessian sums of L's own training rows per node, which L computed in training.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from fedrisk.algorithms.vertical.secureboost import LabelHolderModel, sigmoid, walk_label_holder
from fedrisk.transport.channel import Channel

__all__ = ["Paths", "score_with_paths", "add_covers", "contributions", "reason_codes", "has_covers"]


@dataclass
class Paths:
    """Each row's leaf per tree, and the trees' node tables, as the label holder walked them."""

    margin: np.ndarray          # (n,) log-odds
    node_rows: list[dict[int, np.ndarray]]  # per tree: node id -> positions of the rows that reached it


def score_with_paths(channel: Channel, model: LabelHolderModel, X: np.ndarray, hosts: Sequence[str],
                     tag: str = "predict") -> tuple[np.ndarray, Paths]:
    """The label holder's scoring (the same path-only messages as ``score_label_holder``), keeping every row's path."""
    margin, node_rows = walk_label_holder(channel, model, X, hosts, tag)
    return sigmoid(margin), Paths(margin, node_rows)


def add_covers(model: LabelHolderModel, paths: Paths) -> None:
    """Store ``cover`` in every node of ``model.trees``: the sum of the hessians ``p(1 - p)`` of the
    walked training rows that reached it, ``p`` from the trees before the node's own (XGBoost's cover)."""
    n = len(paths.margin)
    margin = np.full(n, float(model.base_score))
    for tree, seen in zip(model.trees, paths.node_rows):
        p = sigmoid(margin)
        h = p * (1.0 - p)
        for nd in tree["nodes"]:
            rows = seen.get(int(nd["id"]), ())
            nd["cover"] = float(h[np.asarray(rows, dtype=np.int64)].sum()) if len(rows) else 0.0
            if "leaf" in nd and len(rows):
                margin[np.asarray(rows, dtype=np.int64)] += float(nd["leaf"])


def has_covers(model: LabelHolderModel) -> bool:
    return bool(model.trees) and all("cover" in nd for tree in model.trees for nd in tree["nodes"])


def _node_values(nodes: dict[int, dict]) -> dict[int, float]:
    """Expected value of every node: leaf weight, or the cover-weighted mean of the children."""
    val: dict[int, float] = {}
    for node_id in sorted(nodes, reverse=True):  # children have larger ids than their parent
        nd = nodes[node_id]
        if "leaf" in nd:
            val[node_id] = float(nd["leaf"])
            continue
        lc, rc = nodes[int(nd["left"])], nodes[int(nd["right"])]
        wl, wr = float(lc.get("cover", 0)), float(rc.get("cover", 0))
        vl, vr = val[int(nd["left"])], val[int(nd["right"])]
        val[node_id] = (wl * vl + wr * vr) / (wl + wr) if wl + wr > 0 else 0.5 * (vl + vr)
    return val


def contributions(model: LabelHolderModel, paths: Paths, X: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per row and attribution column, the log-odds each owner's features added (see the module notes).

    Parameters
    ----------
    model, paths
        The label holder's model (with covers) and the walk that scored the rows.
    X : ndarray
        The label holder's own columns of the same rows (its splits are decided for every row at
        every node, on the row's path or not, as exact TreeSHAP needs).

    Returns
    -------
    (names, bias, contrib)
        ``names``: the label holder's features, then one ``partner features (<party>)`` per partner;
        ``bias`` (n,): ``base_score`` + every tree's expected value; ``contrib`` (n, len(names)).
        ``bias + contrib.sum(axis=1)`` equals the margin.
    """
    from fedrisk.algorithms.vertical.secureboost.scoring import _split_left
    from fedrisk.finance.tree_reasons import shap_tree
    from fedrisk.finance.tree_shap import MARGINAL, tree_shap

    X = np.asarray(X, dtype=np.float64)
    n = len(paths.margin)
    own = list(model.features)
    partners = sorted({str(nd.get("owner")) for tree in model.trees for nd in tree["nodes"]
                       if "leaf" not in nd and "feature" not in nd})
    names = own + [f"partner features ({p})" for p in partners]
    col = {f: i for i, f in enumerate(own)}
    pcol = {p: len(own) + i for i, p in enumerate(partners)}
    contrib = np.zeros((n, len(names)))
    bias = np.full(n, float(model.base_score))
    for tree, seen in zip(model.trees, paths.node_rows):
        nodes = {int(nd["id"]): nd for nd in tree["nodes"]}
        st, pos = shap_tree(tree["nodes"], lambda nd: col[nd["feature"]] if "feature" in nd else MARGINAL)
        go_left = {pos[i]: _split_left(X[:, col[nd["feature"]]], nd) for i, nd in nodes.items()
                   if "feature" in nd}
        b, phi = tree_shap(st, go_left, n, len(own))
        bias += b
        contrib[:, :len(own)] += phi
        if not partners:
            continue
        # the partners' share: each row's leaf value minus v(L's features)
        leaf_val = np.zeros(n)
        for i, nd in nodes.items():
            if "leaf" in nd and len(seen.get(i, ())):
                leaf_val[seen[i]] = float(nd["leaf"])
        rest = leaf_val - b - phi.sum(axis=1)
        # Saabas credits of each partner's splits on the path, then an equal share of the remainder
        val = _node_values(nodes)
        credit = np.zeros((n, len(partners)))
        on_path = np.zeros((n, len(partners)), dtype=bool)
        for i, r in seen.items():
            nd = nodes[i]
            if "leaf" in nd or "feature" in nd or len(r) == 0:
                continue
            j = pcol[str(nd.get("owner"))] - len(own)
            on_path[r, j] = True
            for child in (int(nd["left"]), int(nd["right"])):
                rc = seen.get(child)
                if rc is not None and len(rc):
                    credit[rc, j] += val[child] - val[i]
        k = on_path.sum(axis=1)
        if len(partners) == 1:
            contrib[:, len(own)] += rest
        else:
            share = np.where(k > 0, (rest - credit.sum(axis=1)) / np.maximum(k, 1), 0.0)
            contrib[:, len(own):] += np.where(on_path, credit + share[:, None], 0.0)
    return names, bias, contrib


def reason_codes(names: Sequence[str], contrib: np.ndarray, n: int = 3) -> list[list[dict[str, Any]]]:
    """Top ``n`` reasons per row: the largest positive contributions to the default log-odds."""
    from fedrisk.finance.scorecard import top_reasons

    idx, val = top_reasons(contrib, n)
    out = []
    for r in range(len(contrib)):
        row = []
        for j, v in zip(idx[r], val[r]):
            if j < 0:
                break
            row.append({"feature": names[j], "label": None, "points_lost": float(v)})
        out.append(row)
    return out
