"""Exact path-dependent TreeSHAP (Lundberg, Erion & Lee 2018, Algorithm 2), vectorised over rows.

Why this module
---------------
Reason codes for tree models ("why was this applicant declined") must add up to the score and treat
features fairly. Saabas attributions (credit each split with the change of the node's expected
value) add up but favour splits near the leaves; TreeSHAP gives every feature its Shapley value in
the game ``v(S) = E[f(x) | x_S]`` where a feature outside ``S`` is integrated out by the training
covers of each node it splits (the "path-dependent" expectation XGBoost's ``pred_contribs=True`` and
the ``shap`` package's ``TreeExplainer(feature_perturbation="tree_path_dependent")`` compute).
``bias + contributions.sum(axis=1)`` equals each row's margin exactly.

The algorithm's recursion is the same for every row; only which child a row takes differs. So each
row's "one fractions" and path weights are numpy vectors over rows, and one pass over a tree scores
all rows at once.

Marginalised players
--------------------
A node may belong to a player marked *marginalised* (``player == MARGINAL``): its feature is never
known, so both children are weighted by their cover share and the player takes no part in the game
(XGBoost's ``condition = -1``). Then ``bias + contributions.sum(axis=1)`` equals ``v(all known
players)``, the expected margin with the marginalised features unknown; the caller decides how to
credit the rest. SecureBoost's label holder uses this for the partners' splits whose decisions off
an applicant's path it never learns (:mod:`fedrisk.algorithms.vertical.secureboost_reasons`).

This is plaintext, single-party math: nothing is sent.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ShapTree", "MARGINAL", "LEAF", "tree_shap", "expected_value"]

#: ``player`` of a leaf
LEAF = -1
#: ``player`` of a split whose feature is integrated out (never known)
MARGINAL = -2


@dataclass
class ShapTree:
    """One tree in flat arrays (node ``i``'s children ``left[i]``, ``right[i]``; ``-1`` at leaves).

    ``player[i]`` is the attribution column of node ``i``'s split (several features may share one
    column, e.g. all of a partner's), :data:`LEAF` or :data:`MARGINAL`; ``value[i]`` the leaf
    weight; ``cover[i]`` the training weight (XGBoost: sum of hessians) that reached the node.
    """

    left: np.ndarray
    right: np.ndarray
    player: np.ndarray
    value: np.ndarray
    cover: np.ndarray


def expected_value(tree: ShapTree, node: int = 0) -> float:
    """Cover-weighted mean of the leaf values below ``node`` (the tree's contribution to the bias)."""
    if tree.player[node] == LEAF:
        return float(tree.value[node])
    lc, rc = int(tree.left[node]), int(tree.right[node])
    wl, wr = float(tree.cover[lc]), float(tree.cover[rc])
    el, er = expected_value(tree, lc), expected_value(tree, rc)
    return (wl * el + wr * er) / (wl + wr) if wl + wr > 0 else 0.5 * (el + er)


class _Path:
    """The unique path of Algorithm 2: per element a player, a zero fraction (scalar) and, per row,
    a one fraction and a path weight."""

    __slots__ = ("player", "zero", "one", "w")

    def __init__(self) -> None:
        self.player: list[int] = []
        self.zero: list[float] = []
        self.one: list[np.ndarray] = []
        self.w: list[np.ndarray] = []

    def copy(self) -> "_Path":
        c = _Path()
        c.player, c.zero, c.one, c.w = list(self.player), list(self.zero), list(self.one), list(self.w)
        return c

    def extend(self, zero: float, one: np.ndarray, player: int, n: int) -> None:
        d = len(self.player)
        self.player.append(player)
        self.zero.append(zero)
        self.one.append(one)
        self.w.append(np.ones(n) if d == 0 else np.zeros(n))
        for i in range(d - 1, -1, -1):
            self.w[i + 1] = self.w[i + 1] + one * self.w[i] * (i + 1) / (d + 1)
            self.w[i] = zero * self.w[i] * (d - i) / (d + 1)

    def unwind(self, k: int) -> None:
        """Remove element ``k`` (undo its extension)."""
        d = len(self.player) - 1
        one, zero = self.one[k], self.zero[k]
        nz = one != 0
        safe_one = np.where(nz, one, 1.0)
        nxt = self.w[d]
        for i in range(d - 1, -1, -1):
            tmp = self.w[i]
            w_one = nxt * (d + 1) / ((i + 1) * safe_one)
            w_zero = tmp * (d + 1) / (zero * (d - i)) if zero != 0 else np.zeros_like(tmp)
            new = np.where(nz, w_one, w_zero)
            nxt = np.where(nz, tmp - new * zero * (d - i) / (d + 1), nxt)
            self.w[i] = new
        for lst in (self.player, self.zero, self.one):
            del lst[k]
        del self.w[d]

    def unwound_sum(self, k: int) -> np.ndarray:
        """Sum of the path weights with element ``k`` unwound (without modifying the path)."""
        d = len(self.player) - 1
        one, zero = self.one[k], self.zero[k]
        nz = one != 0
        safe_one = np.where(nz, one, 1.0)
        nxt = self.w[d]
        total = np.zeros_like(nxt)
        for i in range(d - 1, -1, -1):
            t_one = nxt * (d + 1) / ((i + 1) * safe_one)
            t_zero = (self.w[i] / zero) / ((d - i) / (d + 1)) if zero != 0 else np.zeros_like(nxt)
            total = total + np.where(nz, t_one, t_zero)
            nxt = np.where(nz, self.w[i] - t_one * zero * ((d - i) / (d + 1)), nxt)
        return total


def tree_shap(tree: ShapTree, go_left: dict[int, np.ndarray], n_rows: int, n_players: int) -> tuple[float, np.ndarray]:
    """Path-dependent TreeSHAP of one tree for ``n_rows`` rows.

    Parameters
    ----------
    tree : ShapTree
        The tree; covers must be positive where a row can arrive.
    go_left : dict
        For every split node whose player is not :data:`MARGINAL`: a boolean array (``n_rows``) of
        which rows go to its left child. Rows' decisions at nodes off their own path are needed too
        (that is what makes the values exact Shapley values).
    n_rows, n_players : int
        Rows scored, attribution columns.

    Returns
    -------
    (bias, phi)
        ``bias``: the tree's expected value; ``phi`` (n_rows, n_players). ``bias + phi.sum(1)``
        is each row's leaf value when no player is marginalised.
    """
    phi = np.zeros((n_rows, n_players))
    ones = np.ones(n_rows)

    def recurse(node: int, path: _Path, pzero: float, pone: np.ndarray, pplayer: int, cond: float) -> None:
        if cond == 0:
            return
        path = path.copy()
        if pplayer != MARGINAL:
            path.extend(pzero, pone, pplayer, n_rows)
        player = int(tree.player[node])
        if player == LEAF:
            v = float(tree.value[node]) * cond
            for i in range(1, len(path.player)):
                w = path.unwound_sum(i)
                phi[:, path.player[i]] += w * (path.one[i] - path.zero[i]) * v
            return
        lc, rc = int(tree.left[node]), int(tree.right[node])
        cover = float(tree.cover[node])
        zl = float(tree.cover[lc]) / cover if cover > 0 else 0.5
        zr = float(tree.cover[rc]) / cover if cover > 0 else 0.5
        if player == MARGINAL:
            recurse(lc, path, zl, ones, MARGINAL, cond * zl)
            recurse(rc, path, zr, ones, MARGINAL, cond * zr)
            return
        in_zero, in_one = 1.0, ones
        if player in path.player[1:]:  # split on this player before: undo it, redo it here
            k = path.player.index(player, 1)
            in_zero, in_one = path.zero[k], path.one[k]
            path.unwind(k)
        gl = go_left[node].astype(np.float64)
        recurse(lc, path, zl * in_zero, in_one * gl, player, cond)
        recurse(rc, path, zr * in_zero, in_one * (1.0 - gl), player, cond)

    recurse(0, _Path(), 1.0, ones, LEAF, 1.0)
    return expected_value(tree), phi
