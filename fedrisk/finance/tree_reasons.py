"""Per-applicant reason codes of a whole (global) tree model: exact TreeSHAP per feature.

A horizontal GBDT model (:class:`fedrisk.algorithms.horizontal.gbdt.GbdtModel`) is held whole by
every bank, so a bank explains its own applicants locally with :func:`fedrisk.finance.tree_shap.tree_shap`
over the node covers the model stores (the coordinator's securely aggregated hessian sums, the
same covers XGBoost's ``pred_contribs`` uses). Nothing is sent.

SecureBoost's split model uses the same conversion (:func:`shap_tree`) with the partners' splits
marginalised (see :mod:`fedrisk.algorithms.vertical.secureboost_reasons`).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from fedrisk.finance.tree_shap import LEAF, ShapTree, tree_shap

__all__ = ["shap_tree", "gbdt_contributions"]


def shap_tree(nodes: Sequence[dict], player_of: Callable[[dict], int]) -> tuple[ShapTree, dict[int, int]]:
    """Flat arrays of a fedrisk tree (``nodes`` with ``id``, ``left``/``right`` or ``leaf``, ``cover``).

    ``player_of(node)`` gives a split node's attribution column (or ``MARGINAL``). Returns the tree
    (root at position 0) and the map from node id to position.
    """
    pos = {int(nd["id"]): i for i, nd in enumerate(sorted(nodes, key=lambda nd: int(nd["id"])))}
    m = len(pos)
    left, right = np.full(m, -1), np.full(m, -1)
    player, value, cover = np.full(m, LEAF), np.zeros(m), np.zeros(m)
    for nd in nodes:
        i = pos[int(nd["id"])]
        cover[i] = float(nd.get("cover", 0.0))
        if "leaf" in nd:
            value[i] = float(nd["leaf"])
            continue
        left[i], right[i] = pos[int(nd["left"])], pos[int(nd["right"])]
        player[i] = int(player_of(nd))
    return ShapTree(left, right, player, value, cover), pos


def gbdt_contributions(model: dict, X: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """TreeSHAP of a saved horizontal GBDT model (``fedrisk.gbdt``) on raw rows ``X``.

    Returns
    -------
    (names, bias, contrib)
        Feature names, the expected margin ``bias`` (n,) and ``contrib`` (n, features);
        ``bias + contrib.sum(axis=1)`` equals the model's margin for every row.
    """
    X = np.asarray(X, dtype=np.float64)
    names = list(model["features"])
    n = len(X)
    contrib = np.zeros((n, len(names)))
    bias = float(model["base_score"])
    for tree in model["trees"]:
        nodes = tree["nodes"]
        st, pos = shap_tree(nodes, lambda nd: int(nd["feature_index"]))
        go_left = {}
        for nd in nodes:
            if "leaf" in nd:
                continue
            col = X[:, int(nd["feature_index"])]
            if "categories_left" in nd:  # categorical partition split on level codes
                gl = np.isin(col, nd["categories_left"])
            else:
                gl = col < float(nd["threshold"])
                if nd.get("missing_left"):
                    gl |= np.isnan(col)
            go_left[pos[int(nd["id"])]] = gl
        b, phi = tree_shap(st, go_left, n, len(names))
        bias += b
        contrib += phi
    return names, np.full(n, bias), contrib


def reason_table(score: np.ndarray, names: Sequence[str], contrib: np.ndarray, n: int = 3):
    """``score, reason_1..n, contribution_1..n``: each row's ``n`` largest positive contributions to
    the default log-odds (features pushing towards default), largest first."""
    import pandas as pd

    from fedrisk.finance.scorecard import reason_columns, top_reasons

    # no rows (an empty batch): no reasons, but the same columns
    idx, val = top_reasons(contrib, n) if len(contrib) else (np.zeros((0, n), dtype=np.int64), np.zeros((0, n)))
    reasons = [[{"feature": names[j], "label": None, "points_lost": float(v)} for j, v in zip(idx[r], val[r]) if j >= 0]
               for r in range(len(contrib))]
    cols = {k.replace("points_lost_", "contribution_"): v for k, v in reason_columns(reasons, n).items()}
    return pd.DataFrame({"score": score, **cols})
