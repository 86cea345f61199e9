"""Scoring with a trained SecureBoost model: each party answers for its own split nodes; only
the label holder gets scores (message flow ``sbi.*`` in :mod:`fedrisk.algorithms.vertical.secureboost`)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from fedrisk.algorithms.vertical.secureboost.messages import _int_array, _pack_bits, _unpack_bits
from fedrisk.algorithms.vertical.secureboost.models import FeatureHolderModel, LabelHolderModel
from fedrisk.algorithms.vertical.tree import sigmoid
from fedrisk.errors import ProtocolError
from fedrisk.transport.channel import Channel


def _split_left(x: np.ndarray, node: dict) -> np.ndarray:
    """A split node's rule on raw values: ``x < threshold``; missing values go left only where
    training learned so (``missing_left``), else right (NaN fails every comparison)."""
    if "categories_left" in node:  # a partition split on level codes
        return np.isin(x, node["categories_left"])
    left = x < float(node["threshold"])
    if node.get("missing_left"):
        left |= np.isnan(x)
    return left


def score_feature_holder(channel: Channel, model: FeatureHolderModel, X: np.ndarray, label_holder: str,
                         tag: str = "predict") -> None:
    """Answer the label holder's per-level questions: a left/right bit for each row that reached a node.

    The label holder walks all trees level by level and asks, for each of this party's split nodes
    in the current level, about exactly the rows that reached it (``sbi.<tag>.q<r>``); this party
    answers one bit per asked row (``sbi.<tag>.a<r>``) until ``done``. Checks keep even a deviating
    label holder from asking about one row twice in a round of one tree or about one node twice.
    """
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    name_to_col = {f: i for i, f in enumerate(model.features)}
    own = {(t, int(nd["id"])): nd for t, tree in enumerate(model.trees) for nd in tree["nodes"]}
    who = f"label holder {label_holder!r}"
    asked: set[tuple[int, int]] = set()
    for r in range(len(own) + 1):
        msg = channel.recv(label_holder, f"sbi.{tag}.q{r}")
        if not isinstance(msg, dict):
            raise ProtocolError(f"{who} sent a malformed scoring question")
        if msg.get("done"):
            return
        if msg.get("n_rows") != n:
            raise ProtocolError(f"{who} scores {msg.get('n_rows')!r:.20} rows, this party holds {n}; the alignments differ")
        keys = _int_array(msg.get("nodes"), who, "nodes").reshape(-1, 2)
        rows_list = msg.get("rows")
        if not isinstance(rows_list, list) or len(rows_list) != len(keys):
            raise ProtocolError(f"{who} sent {len(keys)} nodes but no matching row lists")
        seen_in_round: dict[int, np.ndarray] = {}
        answers = []
        for (t, node), rows in zip(keys.tolist(), rows_list):
            rows = _int_array(rows, who, "rows")
            if (t, node) not in own or (t, node) in asked:
                raise ProtocolError(f"{who} asked about tree {t}, node {node}, which this party does not own "
                                    f"or already answered")
            if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= n or np.any(np.diff(rows) <= 0))):
                raise ProtocolError(f"{who} asked about rows that are not sorted, unique positions in [0, {n})")
            prev = seen_in_round.get(t)
            if prev is not None and np.intersect1d(prev, rows, assume_unique=True).size:
                raise ProtocolError(f"{who} asked about one row at two nodes of tree {t} in one level; refusing "
                                    f"(a row reaches one node per level)")
            seen_in_round[t] = rows if prev is None else np.union1d(prev, rows)
            asked.add((t, node))
            nd = own[(t, node)]
            answers.append(_pack_bits(_split_left(X[rows, name_to_col[nd["feature"]]], nd)))
        channel.send(label_holder, f"sbi.{tag}.a{r}", {"bits": answers}, kind="plaintext-by-design")
    raise ProtocolError(f"{who} asked more scoring rounds than this party has split nodes")


def score_label_holder(channel: Channel, model: LabelHolderModel, X: np.ndarray, hosts: Sequence[str],
                       tag: str = "predict") -> np.ndarray:
    """Walk every tree over aligned rows ``X``, level by level; return probabilities (see :func:`walk_label_holder`)."""
    return sigmoid(walk_label_holder(channel, model, X, hosts, tag)[0])


def walk_label_holder(channel: Channel, model: LabelHolderModel, X: np.ndarray, hosts: Sequence[str],
                      tag: str = "predict") -> tuple[np.ndarray, list[dict[int, np.ndarray]]]:
    """Walk every tree over aligned rows ``X``, level by level; return margins and, per tree, the
    positions of the rows that reached each node (the reason codes' paths).

    Own split nodes and leaves are resolved locally; for the feature holders' split nodes of the
    current level this party asks each owner about exactly the rows that reached the node, so a
    feature holder reveals one bit per row per own node *on that row's path*, not per node.
    """
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    margin = np.full(n, float(model.base_score))
    cols = {f: i for i, f in enumerate(model.features)}
    trees = [{int(nd["id"]): nd for nd in tree["nodes"]} for tree in model.trees]
    frontier: list[dict[int, np.ndarray]] = [{0: np.arange(n)} for _ in trees]
    seen: list[dict[int, np.ndarray]] = [{} for _ in trees]
    hosts = list(hosts)
    row_dtype = np.uint32 if n < 2 ** 32 else np.int64  # half the bytes of int64 positions
    # each feature holder has its own round numbers: it is asked only in levels where rows reach
    # one of its nodes, so it never sees more rounds than it has split nodes (its refusal bound),
    # however many rounds the other feature holders need
    r = {h: 0 for h in hosts}
    while True:
        asks: dict[str, list[tuple[int, int, np.ndarray]]] = {h: [] for h in hosts}
        for t, nodes in enumerate(trees):
            stack = list(frontier[t].items())
            waiting: dict[int, np.ndarray] = {}
            while stack:
                node_id, rows = stack.pop()
                seen[t][node_id] = rows
                nd = nodes[node_id]
                if "leaf" in nd:
                    margin[rows] += float(nd["leaf"])
                elif rows.size == 0:
                    continue
                elif "feature" in nd:  # the label holder's own split (threshold or categories)
                    go = _split_left(X[rows, cols[nd["feature"]]], nd)
                    stack += [(int(nd["left"]), rows[go]), (int(nd["right"]), rows[~go])]
                else:
                    owner = nd.get("owner")
                    if owner not in asks:
                        raise ProtocolError(f"tree {t}, node {node_id} belongs to {owner!r}, which is not among the "
                                            f"feature holders {hosts}")
                    waiting[node_id] = rows
                    asks[owner].append((t, node_id, rows))
            frontier[t] = waiting
        if not any(asks.values()):
            break
        asked = [h for h in hosts if asks[h]]
        for h in asked:
            q = asks[h]
            channel.send(h, f"sbi.{tag}.q{r[h]}", {
                "n_rows": n, "nodes": np.array([(t, i) for t, i, _ in q], dtype=np.int64).reshape(-1, 2),
                "rows": [rows.astype(row_dtype) for _, _, rows in q]}, kind="plaintext-by-design")
        for h in asked:
            q = asks[h]
            msg = channel.recv(h, f"sbi.{tag}.a{r[h]}")
            bits = msg.get("bits") if isinstance(msg, dict) else None
            if not isinstance(bits, list) or len(bits) != len(q):
                raise ProtocolError(f"party {h!r} answered {len(bits) if isinstance(bits, list) else '?'} of {len(q)} "
                                    f"scoring questions")
            for (t, node_id, rows), b in zip(q, bits):
                go = _unpack_bits(b, len(rows), f"party {h!r}")
                nd = trees[t][node_id]
                del frontier[t][node_id]
                frontier[t][int(nd["left"])] = rows[go]
                frontier[t][int(nd["right"])] = rows[~go]
            r[h] += 1
    for h in hosts:
        channel.send(h, f"sbi.{tag}.q{r[h]}", {"done": True}, kind="control")
    return margin, seen
