"""Reason codes for SecureBoost: per-party contributions along each applicant's path, at the label holder.

Protocol
--------
No new message. Scoring already sends the label holder, from every feature holder H,
``sbi.<tag>.bits`` (plaintext-by-design): one left/right bit per scored row for each of H's split
nodes (:func:`fedrisk.algorithms.vertical.secureboost.score_feature_holder`). With those bits the
label holder L walks every tree, so it knows each row's whole path and which party owns each split
on it. :func:`score_with_paths` is L's side of that same exchange (it replaces
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

from fedrisk.algorithms.vertical.secureboost import LabelHolderModel, _int_array, _split_left, _unpack_bits, sigmoid
from fedrisk.errors import ProtocolError
from fedrisk.transport.channel import Channel

__all__ = ["Paths", "score_with_paths", "add_covers", "contributions", "reason_codes", "has_covers"]


@dataclass
class Paths:
    """Each row's leaf per tree, and the trees' node tables, as the label holder walked them."""

    margin: np.ndarray          # (n,) log-odds
    node_rows: list[dict[int, np.ndarray]]  # per tree: node id -> positions of the rows that reached it


def score_with_paths(channel: Channel, model: LabelHolderModel, X: np.ndarray, hosts: Sequence[str],
                     tag: str = "predict") -> tuple[np.ndarray, Paths]:
    """The label holder's scoring (same messages as ``score_label_holder``), keeping every row's path."""
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    host_bits: dict[tuple[int, int], np.ndarray] = {}
    for hh in hosts:
        msg = channel.recv(hh, f"sbi.{tag}.bits")
        if not isinstance(msg, dict) or msg.get("n_rows") != n:
            raise ProtocolError(f"party {hh!r} scored {msg.get('n_rows') if isinstance(msg, dict) else '?'} rows, expected {n}")
        keys = _int_array(msg["nodes"], f"party {hh!r}", "nodes").reshape(-1, 2)
        for (t, node), b in zip(keys.tolist(), msg["bits"]):
            host_bits[(t, node)] = _unpack_bits(np.asarray(b, dtype=np.uint8), n, f"party {hh!r}")
    margin = np.full(n, float(model.base_score))
    cols = {f: i for i, f in enumerate(model.features)}
    node_rows: list[dict[int, np.ndarray]] = []
    for t, tree in enumerate(model.trees):
        nodes = {int(nd["id"]): nd for nd in tree["nodes"]}
        rows = {0: np.arange(n)}
        seen: dict[int, np.ndarray] = {}
        for node_id in sorted(nodes):
            r = rows.pop(node_id, None)
            if r is None:
                continue
            seen[node_id] = r
            nd = nodes[node_id]
            if "leaf" in nd:
                margin[r] += float(nd["leaf"])
                continue
            if "threshold" in nd:
                go = _split_left(X[r, cols[nd["feature"]]], nd)
            else:
                b = host_bits.get((t, node_id))
                if b is None:
                    raise ProtocolError(f"no feature holder answered for tree {t}, node {node_id} (owner {nd.get('owner')!r})")
                go = b[r]
            rows[int(nd["left"])] = r[go]
            rows[int(nd["right"])] = r[~go]
        node_rows.append(seen)
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
