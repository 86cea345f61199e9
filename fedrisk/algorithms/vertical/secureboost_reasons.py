"""Reason codes for SecureBoost: per-party contributions along each applicant's path, at the label holder.

Protocol
--------
No new message. Scoring already has the label holder L walk every tree, asking each feature holder
H about the rows that reach H's nodes on their path (``sbi.<tag>.q<r>`` / ``.a<r>``, see
:func:`fedrisk.algorithms.vertical.secureboost.walk_label_holder`), so L knows each row's whole path
and which party owns each split on it. :func:`score_with_paths` is L's side of that same exchange (it replaces
``score_label_holder`` where paths are wanted; H runs ``score_feature_holder`` unchanged).

Attribution (Saabas / XGBoost ``pred_contribs(approx_contribs=True)``)
----------------------------------------------------------------------
Every node gets an expected value: a leaf its weight, an internal node the cover-weighted mean
of its children's, with ``cover`` = training rows that reached the node (recorded once at the end
of training by :func:`add_covers`, from the same walk over the training rows). Along a row's path
each split moves the expected value from the parent's to the child's; that change is credited to
the split's owner — to the feature for L's own splits, to the party as a whole for a partner's
(L never knows a partner's feature or threshold). Per row::

    margin = base_score + sum over trees of value(root)  +  sum of all credited changes

so the contributions add up exactly to the score's log-odds. Reason codes are the ``n`` largest
positive contributions (pushing towards default): L's features by name, each partner as one
``partner features (<party>)`` reason.

What each party learns: nothing beyond scoring (L already had every bit it uses); the covers in
L's model file are counts of L's own training rows per node, which L saw during training.
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
    """Store ``cover`` (training rows reaching the node) in every node of ``model.trees``."""
    for tree, seen in zip(model.trees, paths.node_rows):
        for nd in tree["nodes"]:
            nd["cover"] = int(len(seen.get(int(nd["id"]), ())))


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


def contributions(model: LabelHolderModel, paths: Paths) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per row and attribution column, the log-odds each owner's splits added along the path.

    Returns
    -------
    (names, bias, contrib)
        ``names``: the label holder's features, then one ``partner features (<party>)`` per partner;
        ``bias`` (n,): ``base_score`` + every tree's root value; ``contrib`` (n, len(names)).
        ``bias + contrib.sum(axis=1)`` equals the margin.
    """
    n = len(paths.margin)
    own = list(model.features)
    partners = sorted({str(nd.get("owner")) for tree in model.trees for nd in tree["nodes"]
                       if "leaf" not in nd and "threshold" not in nd})
    names = own + [f"partner features ({p})" for p in partners]
    col = {f: i for i, f in enumerate(own)}
    col.update({p: len(own) + i for i, p in enumerate(partners)})
    contrib = np.zeros((n, len(names)))
    bias = np.full(n, float(model.base_score))
    for tree, seen in zip(model.trees, paths.node_rows):
        nodes = {int(nd["id"]): nd for nd in tree["nodes"]}
        val = _node_values(nodes)
        bias += val[0]
        for node_id, r in seen.items():
            nd = nodes[node_id]
            if "leaf" in nd or len(r) == 0:
                continue
            j = col[nd["feature"]] if "threshold" in nd else col[str(nd.get("owner"))]
            for child in (int(nd["left"]), int(nd["right"])):
                rc = seen.get(child)
                if rc is not None and len(rc):
                    contrib[rc, j] += val[child] - val[node_id]
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
