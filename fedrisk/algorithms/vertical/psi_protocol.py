"""Two-party (and star-shaped multi-party) ECDH-PSI row alignment over a :class:`Channel`.

Before a vertical model can be trained, the parties must agree which of their rows belong to the
same customers, without showing each other the customers they do not share. This module runs the
ECDH private set intersection of :mod:`fedrisk.crypto.psi` over ristretto255 and returns, at each
party, the row positions of its own data in the intersection, **in one order that is identical at
both parties** (ascending doubly-blinded value), so row ``k`` of every party's aligned data is the
same customer.

Message flow of :func:`psi_align` between the leader L (label holder; secret scalar ``a``, ids
``X``) and the follower F (secret scalar ``b``, ids ``Y``). All tags start with ``"<tag>."``
(default ``"psi."``). Both parties run the same steps; "P" is either party and "Q" its peer.

==  ==========  ======================  =====================  ====================================
#   direction   tag                     kind                   payload
==  ==========  ======================  =====================  ====================================
1   P -> Q      ``psi.hello``           public-parameter       role, reveal, casefold, count ``|P|``,
                                                               batch size, SHA-256 check of the salt
2   P -> Q      ``psi.blinded.<i>``     masked                 ``a·H(x)`` (resp. ``b·H(y)``) for
                                                               P's ids in a fresh random order, as
                                                               ``(k, 32) uint8`` batches
3   F -> L      ``psi.reblinded.<i>``   masked                 ``b·(a·H(x))`` for L's batches, in
                                                               the order L sent them
3'  L -> F      ``psi.reblinded.<i>``   masked                 ``a·(b·H(y))`` for F's batches
                                                               (only when ``reveal="both"``)
4   P -> Q      ``psi.done``            control                intersection size and SHA-256 of the
                                                               sorted doubly-blinded intersection
                                                               (only when ``reveal="both"``)
==  ==========  ======================  =====================  ====================================

Steps 1 and 2 of both parties run concurrently; every batch is sent as soon as the process pool
has produced it, and the peer starts re-blinding it at once.

What each party learns
----------------------
* Both: the size of the other's id set (inherent to this family of PSI protocols).
* ``reveal="both"``: each party learns which of **its own** rows are in the intersection (hence
  the intersection of ids), nothing about the peer's other ids. The doubly-blinded values of the
  peer's non-matching ids are pseudo-random under DDH.
* ``reveal="leader"``: only L learns its intersecting rows and the intersection size; F learns
  nothing but ``|X|`` (step 3' and 4 are skipped, and F's result has ``indices=None``). The
  follower then cannot align its rows itself: use this mode when the next protocol works over
  all of F's rows, or when L decides afterwards what to disclose.
* Because the batches of step 2 are shuffled with a CSPRNG permutation, the position of a value
  in what a party receives says nothing about the sender's row order, even for matched ids.

Security model: semi-honest parties (each follows the protocol and tries to learn more from what
it receives). A party can always lie about its input set; nothing here prevents that. Received
elements are validated (shape, count, canonical non-identity encodings, no duplicates).

Multi-party alignment (:func:`align_many`) is a star around the leader: L runs the pairwise
protocol with every follower (concurrently, re-using its key and blinded set: each follower gets
the same ``a·H(x)`` values in the same shuffled order), intersects the results on its own rows,
and then:

==  ==========  ======================  =====================  ====================================
5   L -> F_j    ``psi.keep``            plaintext-by-design    int64 positions into F_j's pairwise
                                                               agreed order, in the common order
                                                               (only when ``reveal="both"``)
==  ==========  ======================  =====================  ====================================

The common order is the pairwise agreed order with the first follower, restricted to the rows
every party holds. **Step 5 reveals to every follower which of its matched customers are missing
at some other follower**, and the size of the common intersection (with three or more followers,
not which follower lacks them). Followers never exchange messages with each other. The leader
learns every pairwise intersection.
"""
from __future__ import annotations

import hashlib
import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from fedrisk.algorithms.vertical.psi_hello import MAX_COUNT, check_hello
from fedrisk.crypto import psi
from fedrisk.errors import ConfigError, CryptoError, DataError, ProtocolError
from fedrisk.transport.channel import Channel

__all__ = ["PsiResult", "psi_align", "align_many", "REVEAL_MODES"]

REVEAL_MODES = ("both", "leader")
_VERSION = 1
_MAX_COUNT = MAX_COUNT
#: Extra patience per id in the data phases (several times the cost of one id on one core).
_SECONDS_PER_ID = 2e-3


def _wait_budget(recv_timeout: float, own_n: int, peer_n: int, pairs: int) -> float:
    """How long a data phase waits for the peer's next message.

    The peer's declared count is credited at most up to our own count: a peer that declares
    2**31 ids must not make us wait 50 days for batches it never sends. Batches stream as they are
    blinded, so an honest larger peer needs ``recv_timeout`` per batch, not time for its whole set.
    """
    return recv_timeout + _SECONDS_PER_ID * (own_n + min(int(peer_n), own_n)) * pairs


@dataclass(frozen=True)
class PsiResult:
    """What one party learns from the alignment.

    Attributes
    ----------
    indices : numpy.ndarray of int64, or None
        Positions into this party's ``ids`` of the rows in the intersection, in the order agreed
        by all parties (row ``k`` is the same customer everywhere). ``None`` at a follower when
        ``reveal="leader"``.
    size : int or None
        Intersection size (``len(indices)``); ``None`` where ``indices`` is ``None``.
    peer_sizes : dict of str to int
        Size of each peer's id set, which every ECDH-PSI reveals.
    """

    indices: np.ndarray | None
    size: int | None
    peer_sizes: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Local preparation
# ---------------------------------------------------------------------------------------------
class _Prepared:
    """One party's normalised, shuffled, blinded id set; its blinded batches can be sent to many peers."""

    def __init__(self, me: str, ids: Sequence[Any], salt: str, casefold: bool) -> None:
        norm = psi.normalize_ids(ids, casefold=casefold)
        n = len(norm)
        if n == 0:
            raise DataError(f"party {me!r} has no ids to align; check its data file and id column")
        if n > _MAX_COUNT:
            raise DataError(f"party {me!r} has {n} ids, more than PSI supports ({_MAX_COUNT})")
        _check_unique(me, norm, casefold)
        self.n = n
        # argsort of CSPRNG keys is a uniform permutation (ties have probability ~n^2/2^65), and
        # unlike numpy's PRNG it cannot be reconstructed from the positions a peer sees.
        self.perm = np.argsort(np.frombuffer(os.urandom(8 * n), dtype=np.uint64), kind="stable").astype(np.int64)
        self.key = psi.random_key()
        self.batch = psi.chunk_size(n)
        shuffled = [norm[i] for i in self.perm.tolist()]
        del norm
        self._pending: Iterator[np.ndarray] | None = psi.iter_hash_and_blind(shuffled, self.key, salt, chunk=self.batch)
        self._done: list[np.ndarray] = []
        self._lock = threading.Lock()

    def batches(self) -> Iterator[np.ndarray]:
        """The blinded batches in send order: streamed as the pool finishes them, kept for other peers.

        Safe to iterate from several threads at once (the leader of :func:`align_many`).
        """
        i = 0
        while True:
            with self._lock:
                if i == len(self._done):
                    nxt = None if self._pending is None else next(self._pending, None)
                    if nxt is None:
                        self._pending = None
                        return
                    self._done.append(nxt)
                b = self._done[i]
            yield b
            i += 1


def _check_unique(me: str, norm: list[str], casefold: bool) -> None:
    if len(set(norm)) == len(norm):
        return
    counts = Counter(norm)
    dups = {v: c for v, c in counts.items() if c > 1}
    worst, c = max(dups.items(), key=lambda kv: kv[1])
    rows = [i for i, v in enumerate(norm) if v == worst][:2]
    hint = " (case-folding is on, so ids differing only in case count as equal)" if casefold else ""
    raise DataError(
        f"party {me!r}: {len(dups)} id(s) occur more than once after normalisation{hint}; one occurs "
        f"{c} times (rows {rows[0]} and {rows[1]}). PSI needs one row per customer: deduplicate the id "
        f"column before alignment"
    )


def _salt_check(salt: str) -> str:
    return hashlib.sha256(b"fedrisk.psi.salt-check\x00" + psi.hash_prefix(salt)).hexdigest()


def check_psi_args(channel: Channel, tag: str, reveal: str, salt: Any) -> None:
    """Refuse a tag the transport cannot whitelist, an unknown ``reveal`` or an empty salt (any PSI protocol)."""
    if tag != "psi" and not tag.startswith("psi."):
        raise ConfigError(f"PSI tag {tag!r} must be 'psi' or start with 'psi.' so the transport can whitelist it")
    if reveal not in REVEAL_MODES:
        raise ConfigError(f"reveal={reveal!r} is not one of {REVEAL_MODES}")
    if not isinstance(salt, str) or not salt:
        raise ConfigError(f"party {channel.me!r}: PSI needs a non-empty per-job salt string shared by all parties")


# ---------------------------------------------------------------------------------------------
# The pairwise exchange
# ---------------------------------------------------------------------------------------------
def _hello(channel: Channel, peer: str, tag: str, prep: _Prepared, *, leader: bool, salt: str,
           casefold: bool, reveal: str) -> dict[str, Any]:
    me = channel.me
    mine = {"version": _VERSION, "role": "leader" if leader else "follower", "reveal": reveal,
            "casefold": bool(casefold), "salt_check": _salt_check(salt), "count": prep.n, "batch": prep.batch}
    channel.send(peer, f"{tag}.hello", mine, kind="public-parameter")
    return check_hello(me, peer, channel.recv(peer, f"{tag}.hello"), mine, protocol="PSI",
                       peer_role="follower" if leader else "leader", same=("reveal", "casefold"),
                       counts=("count", "batch"))


def _recv_points(channel: Channel, peer: str, tag: str, count: int, batch: int, timeout: float) -> Iterator[np.ndarray]:
    got = 0
    i = 0
    while got < count:
        arr = channel.recv(peer, f"{tag}.{i}", timeout=timeout)
        want = min(batch, count - got)
        if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.shape != (want, psi.POINT_BYTES):
            shape = getattr(arr, "shape", type(arr).__name__)
            raise ProtocolError(f"{channel.me}: {tag}.{i} from {peer!r} should be a ({want}, 32) uint8 array, got {shape}")
        got += want
        i += 1
        yield arr


def _as_void(points: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(points).view(np.dtype((np.void, psi.POINT_BYTES))).ravel()


def _require_distinct(me: str, peer: str, what: str, v: np.ndarray) -> None:
    s = np.sort(v)
    if len(s) > 1 and np.any(s[1:] == s[:-1]):
        raise ProtocolError(f"{me}: the {what} from {peer!r} contain repeated group elements; the peer is faulty")


def _exchange(channel: Channel, peer: str, prep: _Prepared, *, leader: bool, salt: str, casefold: bool,
              reveal: str, tag: str, pairs: int = 1) -> PsiResult:
    """Run steps 1-4 with ``peer`` and return this party's result.

    ``pairs`` is how many exchanges share this party's pool (the leader of :func:`align_many`).
    Does not raise on an empty intersection: the callers decide, after telling the peers.
    """
    me = channel.me
    theirs = _hello(channel, peer, tag, prep, leader=leader, salt=salt, casefold=casefold, reveal=reveal)
    peer_n, peer_batch = theirs["count"], theirs["batch"]
    # A peer may be busy for a long time before its next batch (e.g. blinding a much larger set
    # first), so the data phases wait the channel's timeout plus a budget that grows with the sets
    # (the peer's declared size credited at most up to ours, see _wait_budget).
    wait = _wait_budget(channel.recv_timeout, prep.n, peer_n, pairs)

    for i, b in enumerate(prep.batches()):
        channel.send(peer, f"{tag}.blinded.{i}", b, kind="masked")

    futs = [psi.submit_reblind(b, prep.key) for b in _recv_points(channel, peer, f"{tag}.blinded", peer_n, peer_batch, wait)]
    give_back = (not leader) or reveal == "both"
    peer_double = []
    for i, f in enumerate(futs):
        try:
            d = psi.points_from_future(f)
        except CryptoError as e:
            raise ProtocolError(f"{me}: batch {tag}.blinded.{i} from {peer!r} is malformed: {e}") from None
        peer_double.append(d)
        if give_back:
            channel.send(peer, f"{tag}.reblinded.{i}", d, kind="masked")

    learns = leader or reveal == "both"
    if not learns:
        return PsiResult(None, None, {peer: peer_n})

    own_double = np.concatenate(list(_recv_points(channel, peer, f"{tag}.reblinded", prep.n, prep.batch, wait)))
    own_v = _as_void(own_double)
    peer_v = _as_void(np.concatenate(peer_double))
    _require_distinct(me, peer, "re-blinded values of our ids", own_v)
    _require_distinct(me, peer, "blinded ids", peer_v)
    common, own_pos, _ = np.intersect1d(own_v, peer_v, assume_unique=True, return_indices=True)
    indices = prep.perm[own_pos].astype(np.int64, copy=False)
    result = PsiResult(indices, int(len(indices)), {peer: peer_n})

    if reveal == "both":
        digest = hashlib.sha256(common.tobytes()).hexdigest()
        channel.send(peer, f"{tag}.done", {"size": result.size, "digest": digest}, kind="control")
        other = channel.recv(peer, f"{tag}.done", timeout=wait)
        if not isinstance(other, dict) or other.get("size") != result.size or other.get("digest") != digest:
            raise ProtocolError(
                f"{me}: {peer!r} ended PSI with a different intersection ({other!r:.200} vs size {result.size}); "
                "the parties' inputs or versions disagree"
            )
    return result


def empty_intersection_error(me: str, who: str) -> DataError:
    """The one-line error of an empty intersection, with what to check (shared by every PSI protocol)."""
    return DataError(
        f"party {me!r}: the private set intersection with {who} is empty; there is nothing to align. Check that "
        "the parties use the same id column and write ids alike "
        "(12 and '12' match; '012' does not, nor '12.0' in a file that writes other ids without '.0'; case "
        "matters); each party's log describes its id formats."
    )


def check_follower_keep(me: str, leader: str, tag: str, keep: Any, m: int) -> None:
    """A follower's check of the leader's ``<tag>.keep``: distinct int64 positions below ``m``, at least one.

    ``m`` is the size of the follower's own pairwise intersection with the leader; anything else
    would let the leader point the follower at rows outside it.
    """
    if (not isinstance(keep, np.ndarray) or keep.dtype != np.int64 or keep.ndim != 1 or
            (len(keep) and (keep.min() < 0 or keep.max() >= m)) or len(np.unique(keep)) != len(keep)):
        raise ProtocolError(f"{me}: {tag}.keep from {leader!r} is not a set of positions below {m}")
    if len(keep) == 0:
        raise empty_intersection_error(me, "all parties")


def psi_align(channel: Channel, peer: str, ids: Sequence[Any], *, leader: bool, salt: str, casefold: bool = False,
              reveal: str = "both", tag: str = "psi", memory_mb: float | None = None,
              spill_dir: Any = None) -> PsiResult:
    """Align this party's rows with ``peer``'s by ECDH-PSI over ristretto255.

    Both parties call this with their own ``ids``; exactly one passes ``leader=True``.

    Parameters
    ----------
    channel : Channel
        This party's channel.
    peer : str
        The other party's name.
    ids : sequence
        This party's customer ids, one per row (ints, strings, numpy array). Normalised with
        :func:`fedrisk.crypto.psi.normalize_ids`: ``12`` and ``"12"`` match, ``"012"`` does not.
    leader : bool
        True at the label holder, False at the feature holder.
    salt : str
        Per-job salt, identical at both parties (taken from the job spec); separates jobs.
    casefold : bool, default False
        Case-insensitive matching of string ids.
    reveal : {"both", "leader"}, default "both"
        Who learns the intersection; with ``"leader"`` the follower's result has ``indices=None``.
    tag : str, default "psi"
        Tag namespace; must be ``"psi"`` or start with ``"psi."``.
    memory_mb : float, optional
        Memory budget of this party's PSI (``[psi] memory_mb``). When the in-memory path would
        exceed it, or when ``ids`` is a :class:`~fedrisk.algorithms.vertical.psi_stream.IdChunks`,
        the set is blinded in chunks and spilled to disk (:mod:`~fedrisk.algorithms.vertical.psi_stream`):
        same messages, same result.
    spill_dir : path, optional
        Where the streaming path's private spill directory goes (the party's run/tmp dir).

    Returns
    -------
    PsiResult
        ``indices`` (int64 row positions into ``ids``) in the order agreed by both parties.

    Raises
    ------
    DataError
        If ``ids`` has duplicates after normalisation, is empty, or the intersection is empty.
    ConfigError
        If the parties' settings (salt, casefold, reveal, roles) differ.
    ProtocolError
        If the peer sends malformed or inconsistent messages.

    Notes
    -----
    See the module docstring for the message flow and what each party learns. Cost per party:
    ``|own|`` hash-to-group + scalar multiplications and ``|peer|`` scalar multiplications,
    spread over all cores; ``32 * (|own| + |peer|)`` bytes sent (plus ``|peer|`` when the leader
    must not return them).
    """
    check_psi_args(channel, tag, reveal, salt)
    from fedrisk.algorithms.vertical import psi_stream

    sp = psi_stream.prepare(channel.me, ids, salt, casefold, memory_mb, spill_dir)
    if sp is not None:
        with sp:
            result = psi_stream.stream_exchange(channel, peer, sp, leader=leader, salt=salt, casefold=casefold,
                                                reveal=reveal, tag=tag)
    else:
        prep = _Prepared(channel.me, ids, salt, casefold)
        result = _exchange(channel, peer, prep, leader=leader, salt=salt, casefold=casefold, reveal=reveal, tag=tag)
    if result.size == 0:
        raise empty_intersection_error(channel.me, repr(peer))
    return result


def align_many(channel: Channel, leader: str, followers: Sequence[str], ids: Sequence[Any], *, salt: str,
               casefold: bool = False, reveal: str = "both", tag: str = "psi", memory_mb: float | None = None,
               spill_dir: Any = None) -> PsiResult:
    """Align rows across a leader and several followers (a star of pairwise PSIs).

    Every party calls this with the same ``leader`` and ``followers`` and its own ``ids``.

    Parameters
    ----------
    channel : Channel
        This party's channel; ``channel.me`` must be ``leader`` or one of ``followers``.
    leader : str
        The label holder, who runs one PSI with each follower.
    followers : sequence of str
        The other parties, in a fixed order known to all (the common order follows the first).
    ids, salt, casefold, reveal, tag, memory_mb, spill_dir
        As in :func:`psi_align` (streaming when the budget asks for it).

    Returns
    -------
    PsiResult
        At every party, ``indices`` of its rows in the intersection of **all** parties' ids, in
        one common order. With ``reveal="leader"`` the followers get ``indices=None``.

    Raises
    ------
    DataError
        Duplicated or missing ids, or an empty common intersection (raised at every party).

    Notes
    -----
    Followers never talk to each other; the leader runs the pairs concurrently over one process
    pool. The data phases wait ``channel.recv_timeout`` plus 2 ms per id involved, since a peer
    can be busy for long before its next batch (the peer's declared count is credited at most up to
    this party's own, so a peer cannot stretch the wait by declaring a huge set). With ``reveal="both"`` the leader sends each follower the
    positions of its pairwise-agreed order to keep (``psi.keep``, plaintext-by-design): a
    follower thereby learns which of its matched customers are missing at some other follower,
    and the size of the common intersection. The leader learns every pairwise intersection.
    """
    check_psi_args(channel, tag, reveal, salt)
    from fedrisk.algorithms.vertical import psi_stream

    me = channel.me
    followers = list(followers)
    if not followers or len(set(followers)) != len(followers) or leader in followers:
        raise ConfigError(f"align_many needs distinct followers other than the leader {leader!r}, got {followers!r}")
    if me != leader:
        if me not in followers:
            raise ConfigError(f"party {me!r} is neither the leader {leader!r} nor a follower {followers!r}")
        sp = psi_stream.prepare(me, ids, salt, casefold, memory_mb, spill_dir)
        if sp is not None:
            with sp:
                pair = psi_stream.stream_exchange(channel, leader, sp, leader=False, salt=salt, casefold=casefold,
                                                  reveal=reveal, tag=tag, pairs=len(followers))
            prep_n = sp.n
        else:
            prep = _Prepared(me, ids, salt, casefold)
            pair = _exchange(channel, leader, prep, leader=False, salt=salt, casefold=casefold, reveal=reveal,
                             tag=tag, pairs=len(followers))
            prep_n = prep.n
        if reveal == "leader":
            return pair
        # the leader sends psi.keep once every pair is done; allow for the other followers' work
        wait = _wait_budget(channel.recv_timeout, prep_n, pair.peer_sizes[leader], len(followers))
        keep = channel.recv(leader, f"{tag}.keep", timeout=wait)
        assert pair.indices is not None
        m = len(pair.indices)
        check_follower_keep(me, leader, tag, keep, m)
        idx = pair.indices[keep]
        return PsiResult(idx, int(len(idx)), pair.peer_sizes)

    sp = psi_stream.prepare(me, ids, salt, casefold, memory_mb, spill_dir)
    prep = sp if sp is not None else _Prepared(me, ids, salt, casefold)
    run = psi_stream.stream_exchange if sp is not None else _exchange
    # One thread per follower: every follower progresses at once (no follower idles until the
    # leader is done with the others), and all of them share the leader's one process pool.
    try:
        with ThreadPoolExecutor(len(followers), thread_name_prefix=f"psi-{me}") as ex:
            futs = [ex.submit(run, channel, f, prep, leader=True, salt=salt, casefold=casefold,  # type: ignore[arg-type]
                              reveal=reveal, tag=tag, pairs=len(followers)) for f in followers]
            pairs = [f.result() for f in futs]
    finally:
        if sp is not None:
            sp.close()
    positions = []
    for res in pairs:
        pos = np.full(prep.n, -1, dtype=np.int64)
        pos[res.indices] = np.arange(len(res.indices), dtype=np.int64)
        positions.append(pos)
    first = pairs[0].indices
    assert first is not None
    common = first[np.all(np.stack([p[first] >= 0 for p in positions]), axis=0)]
    if reveal == "both":
        for f, pos in zip(followers, positions):
            channel.send(f, f"{tag}.keep", pos[common], kind="plaintext-by-design")
    if len(common) == 0:
        raise empty_intersection_error(me, "all followers")
    sizes = {k: v for res in pairs for k, v in res.peer_sizes.items()}
    return PsiResult(common.astype(np.int64), int(len(common)), sizes)
