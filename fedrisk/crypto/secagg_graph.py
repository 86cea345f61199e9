"""Who masks with whom in secure aggregation: the complete graph, or SecAgg+'s sparse Harary graph.

Bonawitz et al.'s protocol has every party mask with, and Shamir-share its secrets to, every
other party: ``O(n)`` key agreements, PRG expansions and shares per party per round, ``O(n^2)``
overall. Bell et al. (CCS 2020, "Secure single-server aggregation with (poly)logarithmic
overhead", *SecAgg+*) replace the complete graph with a sparse one: each party masks with and
shares to ``k`` neighbours only. This module picks the graph; the protocol that uses it is
:class:`~fedrisk.crypto.secagg_session.SessionSecureAggregation` (``graph=...``).

The graph
---------
The Harary graph ``H(k, n)`` (``k`` even): the ``n`` members sit on a ring and each is joined to
the ``k / 2`` nearest members on either side. The ring order is a random permutation drawn from
*public* randomness that no single party controls: HKDF-SHA256 of the job, the session name and
every member's freshly generated public keys (so it is fixed only after all keys are committed),
each member's position being the HKDF output under its name. Every party recomputes the graph
itself from the key list; nobody has to trust the coordinator's word on it.

``H(k, n)`` is ``k``-vertex-connected: removing any ``k - 1`` vertices leaves it connected.
That deterministic fact is what the security argument below rests on.

Degree and threshold
--------------------
``k`` is the smallest even number ``>= 2 * ceil(log2 n) + 2 * colluders`` (``k ~ O(log n)``):
14 for 50 banks and one colluder, 22 for 1,000. ``graph = "auto"`` keeps the complete graph
while ``k >= n - 1`` or ``n <= 10`` (then there is nothing to save and the existing behaviour
stays exactly as it was). Each party's secrets are Shamir-shared among its *neighbourhood* (its
``k`` neighbours and itself, ``k + 1`` holders) with threshold
``t = default_threshold(k + 1, colluders)`` — Bonawitz's ``t > (holders + colluders) / 2``
applied to the holders of that party's shares.

Security argument (coordinator plus up to ``c = colluders`` corrupt banks)
---------------------------------------------------------------------------
*Split view.* To strip both masks of an honest party ``i`` the coordinator needs ``t`` shares
of ``i``'s self-mask seed and ``t`` of its mask key. Only ``i``'s ``k + 1`` neighbourhood holds
them, at most ``c`` of them corrupt, and honest holders reveal one kind per party per round, so
both need ``2t <= k + 1 + c``, which the threshold excludes — exactly the complete-graph
argument with ``n`` replaced by ``k + 1``, and no probability involved.

*Partial sums.* With a sparse graph a new leak is possible: if the honest survivors of a round
split into two groups with no honest-honest edge between them, the coordinator can unmask each
group's sum separately (the masks it cannot compute are exactly those on honest-honest edges
between surviving parties). Removing the corrupt banks (``c``) and the round's dropped parties
(``d``, whose mask keys are revealed) removes ``c + d`` vertices; while ``c + d <= k - 1`` the
rest stays connected (``k``-connectivity), so the only sum the coordinator can open is the sum
over all survivors — the complete graph's guarantee. Every honest party checks
``d + c <= k - 1`` itself before revealing anything and refuses otherwise; in sparse mode a
round with dropouts also ends the session (the next aggregation deals a new graph over the
survivors), so ``d`` never accumulates across rounds.

*Correctness (dropout tolerance).* A survivor's self-mask needs ``t`` surviving holders in its
neighbourhood, a dropped party's mask key ``t`` surviving neighbours: up to ``k + 1 - t``
dropouts per neighbourhood (6 of 15 at 50 banks: ``t = 9``; at most ``k - 1 - c = 12``
per round), fewer than the complete graph's ``n - t``.

*Relation to the paper.* Bell et al. bound the failure probability for an adversary corrupting
a *fraction* ``gamma`` of the parties: a random ``k = O(log n)``-regular graph keeps every
neighbourhood's corrupt count below ``t`` and the honest graph free of small components except
with probability ``2^-sigma`` (their Theorem 3.6), which needs a much larger ``k`` at small
``n``. fedrisk's model is a *fixed number* ``c`` of colluding banks (``security.colluders``,
default 1); for that model the argument above holds with probability 1 for every graph the
permutation can produce, and the random permutation only adds the paper's protection against
an adversary who corrupts parties without seeing the graph. Larger coalitions need a larger
``colluders`` (which raises ``k`` and ``t``) or the complete graph.
"""
from __future__ import annotations

import hashlib
import math
from typing import Mapping, Sequence

from fedrisk.crypto.prg_mask import context, derive_key
from fedrisk.errors import ConfigError

__all__ = ["GRAPH_MODES", "sparse_degree", "choose_degree", "graph_seed", "neighbours"]

GRAPH_MODES = ("auto", "complete", "sparse")
#: ``auto`` keeps the complete graph up to this many parties
AUTO_COMPLETE_UP_TO = 10
_PROTO = "fedrisk.secagg.graph.v1"


def sparse_degree(n: int, colluders: int = 1) -> int:
    """SecAgg+ degree ``k``: the smallest even number ``>= 2 ceil(log2 n) + 2 colluders``."""
    k = 2 * math.ceil(math.log2(max(n, 2))) + 2 * colluders
    return k + (k % 2)


def choose_degree(n: int, mode: str = "auto", colluders: int = 1, degree: int | None = None) -> int:
    """Neighbours per party for ``n`` members; ``n - 1`` means the complete graph.

    Parameters
    ----------
    n : int
        Members of the session (those in the key list).
    mode : {"auto", "complete", "sparse"}
        ``complete`` always; ``sparse`` whenever the degree is below ``n - 1``; ``auto`` as sparse
        but keeps the complete graph up to :data:`AUTO_COMPLETE_UP_TO` parties.
    colluders : int
        Banks that may collude with the coordinator; the degree must exceed it for the
        connectivity argument (see the module docstring).
    degree : int, optional
        An explicit even degree instead of :func:`sparse_degree`.
    """
    if mode not in GRAPH_MODES:
        raise ConfigError(f"secure aggregation graph {mode!r} is not one of {', '.join(GRAPH_MODES)}; "
                          f"set security.secure_aggregation_graph to one of them")
    if mode == "complete" or (mode == "auto" and n <= AUTO_COMPLETE_UP_TO):
        return n - 1
    k = sparse_degree(n, colluders) if degree is None else degree
    if not isinstance(k, int) or isinstance(k, bool) or k < 2 or k % 2:
        raise ConfigError(f"secure aggregation graph degree must be an even integer >= 2, got {k!r}")
    if k <= colluders + 1:
        raise ConfigError(f"secure aggregation graph degree {k} must exceed colluders + 1 = {colluders + 1}: "
                          f"otherwise the colluders alone could cut an honest party off")
    return n - 1 if k >= n - 1 else k


def graph_seed(job: str, sid: str, public_keys: Mapping[str, bytes]) -> bytes:
    """Public randomness for the graph: a hash of the job, session and every member's public keys."""
    h = hashlib.sha256(context(_PROTO, "seed", job, sid))
    for p in sorted(public_keys):
        h.update(context(p, public_keys[p]))
    return h.digest()


def neighbours(members: Sequence[str], k: int, seed: bytes) -> dict[str, frozenset[str]]:
    """Each member's neighbours in ``H(k, n)`` over a ring ordered by ``seed`` (complete if ``k >= n - 1``).

    Deterministic in ``(members, k, seed)``: every party computes the same graph.
    """
    ms = sorted(set(members))
    n = len(ms)
    if k >= n - 1:
        return {p: frozenset(q for q in ms if q != p) for p in ms}
    if k % 2 or k < 2:
        raise ConfigError(f"secure aggregation graph degree must be an even integer >= 2, got {k}")
    ring = sorted(ms, key=lambda p: (derive_key(seed, context(_PROTO, "position", p)), p))
    half = k // 2
    return {p: frozenset(ring[(pos + d) % n] for d in range(-half, half + 1) if d)
            for pos, p in enumerate(ring)}
