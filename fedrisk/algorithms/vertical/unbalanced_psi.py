"""Unbalanced PSI: a small lender set against a bureau's very large set, by a DH-OPRF over ristretto255.

The balanced protocols (ECDH, RR22) cost every job the sum of both sets, so a 100k-customer lender
aligning with a 10M-customer bureau pays for 10M ids in every job. Here the bureau (the **key
holder**, ``[psi] key_holder``) holds a long-lived OPRF key ``k`` (:mod:`~fedrisk.algorithms.vertical.ub_store`)
and encodes its whole set **once per key epoch**: ``F(k, y)`` (:mod:`fedrisk.crypto.oprf`: the
2HashDH OPRF of Jarecki-Kiayias-Krawczyk 2014 / RFC 9497's ristretto255-SHA512 base mode,
truncated to 12 bytes) for every bureau id ``y``, sorted. The lender (the **client**) keeps that
encoded set in a local cache and, in each job, evaluates ``F(k, x)`` obliviously for its own ids
only, so a job costs the lender's size (plus one local pass over the bureau's ids with a hash,
to find its rows; no group operation on them).

Offline, once per epoch: ``fedrisk psi key SPEC --party BUREAU`` (first key; ``--rotate`` for a
new epoch) and ``fedrisk psi encode SPEC --party BUREAU`` on the bureau's host; the encoded set
reaches the lender inside its first unbalanced job of that epoch (steps 2-3 below, over the job's
mTLS channel, in the ledger), or the lender's job is refused with the command to run when
``[psi] fetch_encoded = false``.

Message flow of :func:`ub_align` between the client C (lender; ids ``X``, ``|X| = m``) and the
key holder S (bureau; ids ``Y``, ``|Y| = N``, key ``k`` of epoch ``E``). Tags start with
``"<tag>."`` (default ``"psi.ub."``).

==  ======  ========================  ==================  =========================================
#   dir     tag                       kind                payload
==  ======  ========================  ==================  =========================================
1   C -> S  ``psi.ub.hello``          public-parameter    role, salt check, ``m``, batch size, fetch
                                                          flag
1'  S -> C  ``psi.ub.hello``          public-parameter    role, salt check, ``E``, key fingerprint,
                                                          ``N``, SHA-256 of the encoded set; or a
                                                          refusal reason (key or encoding missing)
1"  C -> S  ``psi.ub.have``           public-parameter    the announced set (epoch, key fingerprint,
                                                          SHA-256) if C's cache holds it intact,
                                                          else none
2   S -> C  ``psi.ub.cache.head``     public-parameter    header of the encoded set (only when C's
                                                          cache is not the current one and C fetches)
3   S -> C  ``psi.ub.cache.<i>``      masked              ``F(k, y)`` for all ``y`` in ``Y``, sorted,
                                                          ``(k, 12) uint8`` batches (same condition)
4   C -> S  ``psi.ub.blinded.<i>``    masked              ``r_x * H2G(x)`` for C's ids, a fresh
                                                          random scalar ``r_x`` per id
5   S -> C  ``psi.ub.evaluated.<i>``  masked              ``k * r_x * H2G(x)``, same order
6   C -> S  ``psi.ub.matches``        plaintext-by-design sorted int64 positions, in the encoded
                                                          set, of the values ``F(k, x)`` C found there
7   S -> C  ``psi.ub.done``           control             intersection size S found for them
==  ======  ========================  ==================  =========================================

What each party learns
----------------------
* The bureau: the lender's set size ``m`` and **the intersection** (step 6 names which of its
  customers matched: vertical training needs the bureau's rows of those customers, exactly as in
  the balanced protocols, where both parties learn the intersection). Nothing else about the
  lender's ids: every element of step 4 is uniformly random in the group (fresh ``r_x``).
* The lender: the bureau's set size ``N`` and the intersection (its rows whose ``F(k, x)`` is in
  the encoded set). The encoded values of the bureau's other customers are pseudo-random without
  ``k``; the lender cannot test a guessed id against them offline.
* A holder of the cache between jobs (the lender, or whoever steals its disk) can test a guessed
  id ``x`` only by asking the bureau to evaluate ``F(k, x)``, i.e. inside a job the bureau takes
  part in and logs (the size ``m`` of every query batch is in the bureau's ledger). What the
  lender can learn across jobs is therefore bounded by the ids it submits in jobs, which is what
  any PSI with the bureau gives it; it cannot enumerate the bureau's customers from the cache.
  The cache also outlives customers who have left the bureau's file: the set is as of the
  encoding.
* Why rotate the key: a new epoch makes every old cache (and any value learnt under the old key)
  useless, limits the damage of a leaked key file, and takes customers who left out of every
  lender's cache. Rotation costs one re-encoding (``N`` OPRF evaluations at the bureau) and one
  transfer of ``12 N`` bytes to each lender.

C says which set it holds (step 1") only after S's hello has named the current one: only a cache
whose header names that set is read in full and checked, so a stale cache (S rotated) costs a
header read, and a damaged one counts as none (fetched again). Both hellos are checked by
:func:`fedrisk.algorithms.vertical.psi_hello.check_hello`, like ECDH's and RR22's.

Row order: each party returns the positions of its own rows in the intersection; the caller
(:func:`fedrisk.algorithms.vertical.alignment.align_parties`) sorts them into the canonical
order (salted hash of the id), the same as after ECDH or RR22.

Security model: semi-honest parties, like the other PSI protocols here. A lender that lies about
its matches can only name positions (the bureau checks them: sorted, distinct, in range, at most
``m``). Received elements are validated (shape, count, canonical non-identity encodings).
Two parties only (one lender, one bureau).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from fedrisk.algorithms.vertical import psi_protocol as pp
from fedrisk.algorithms.vertical import ub_store as store
from fedrisk.algorithms.vertical.psi_hello import check_hello
from fedrisk.crypto import oprf, psi
from fedrisk.errors import ConfigError, CryptoError, DataError, FedriskError, ProtocolError
from fedrisk.transport.channel import Channel

__all__ = ["ub_align", "UbSettings", "CACHE_BATCH"]

#: 2: the lender says which set it holds in ``<tag>.have``, after the hellos (it was in its hello)
_VERSION = 2
#: encoded values per cache message (3 MB)
CACHE_BATCH = 262144
_W = oprf.OUTPUT_BYTES
_ROLE_FIX = "both must take psi.key_holder from the same job spec"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UbSettings:
    """A party's unbalanced-PSI settings from the job spec (``[psi] key_holder, fetch_encoded``, its ``psi_store``)."""

    key_holder: str
    store_dir: Path | None
    fetch: bool = True

    @classmethod
    def from_spec(cls, spec: Any, me: str) -> "UbSettings | None":
        """This party's settings, or None when the job does not use the unbalanced protocol."""
        if spec.psi.protocol != "unbalanced":
            return None
        return cls(spec.psi.key_holder, spec.resolve(spec.parties[me].psi_store), spec.psi.fetch_encoded)


def _fix_encode(me: str) -> str:
    return f"`fedrisk psi encode SPEC --party {me}`"


def _server_state(me: str, store_dir: Path, ids: Sequence[Any]) -> tuple[store.OprfKey, dict[str, Any], np.ndarray, np.ndarray]:
    """The bureau's key, encoded-set header, private index and the digests of its job ids (all checked)."""
    key = store.load_key(store_dir, me)
    d = store.epoch_dir(store_dir, key.epoch)
    fix = f"encode the id file under the current key with {_fix_encode(me)}"
    head = store.read_header(d / "encoded.bin")
    if head is None or head.get("fingerprint") != key.fingerprint or head["epoch"] != key.epoch:
        raise ConfigError(f"party {me!r}: no encoded set for key epoch {key.epoch} in {d}; {fix}")
    index = store.read_set(d / "index.bin", f"party {me!r}: the private index", fix)
    if index.header.get("encoded_digest") != head["digest"] or index.header["count"] != head["count"]:
        raise ConfigError(f"party {me!r}: {d} holds an index of another encoding; {fix}")
    digests = store.index_digests(ids, key)
    if store.ids_sum(digests) != index.header.get("ids_sum"):
        raise DataError(f"party {me!r}: its id column ({len(ids)} rows) is not the set encoded for key epoch "
                        f"{key.epoch} ({head['count']} ids); re-encode it with {_fix_encode(me)} (the lender's next "
                        "job fetches the new set)")
    return key, head, index.values, digests


def _recv_rows(channel: Channel, peer: str, tag: str, count: int, batch: int, width: int, timeout: float) -> Iterator[np.ndarray]:
    got, i = 0, 0
    while got < count:
        arr = channel.recv(peer, f"{tag}.{i}", timeout=timeout)
        want = min(batch, count - got)
        if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.shape != (want, width):
            raise ProtocolError(f"{channel.me}: {tag}.{i} from {peer!r} should be a ({want}, {width}) uint8 array, "
                                f"got {getattr(arr, 'shape', type(arr).__name__)}")
        got += want
        i += 1
        yield arr


def _lookup(cache: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows of ``values`` found in the sorted ``cache``, their positions there), by binary search."""
    c_head = np.ascontiguousarray(cache[:, :8]).view(">u8").ravel()
    v_head = np.ascontiguousarray(values[:, :8]).view(">u8").ravel()
    left = np.searchsorted(c_head, v_head, "left")
    right = np.searchsorted(c_head, v_head, "right")
    rows, pos = [], []
    for r in np.flatnonzero(right > left).tolist():
        for p in range(int(left[r]), int(right[r])):  # almost always one candidate (64-bit heads)
            if np.array_equal(cache[p], values[r]):
                rows.append(r)
                pos.append(p)
                break
    return np.asarray(rows, dtype=np.int64), np.asarray(pos, dtype=np.int64)


def _rows_of_positions(index: np.ndarray, digests: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Rows of the bureau's table whose private digests are ``index[positions]`` (every one exists)."""
    want = np.ascontiguousarray(index[positions])
    void = np.dtype((np.void, store.INDEX_BYTES))
    _, w_pos, rows = np.intersect1d(want.view(void).ravel(), np.ascontiguousarray(digests).view(void).ravel(),
                                    assume_unique=True, return_indices=True)
    out = np.empty(len(positions), dtype=np.int64)
    out[w_pos] = rows
    return out if len(rows) == len(positions) else out[np.sort(w_pos)]


def _serve(channel: Channel, peer: str, ids: Sequence[Any], salt_check: str, store_dir: Path, tag: str) -> pp.PsiResult:
    me = channel.me
    try:
        key, head, index, digests = _server_state(me, store_dir, ids)
    except FedriskError as e:
        # tell the lender why (no path crosses: the reason names the command, not our files)
        channel.send(peer, f"{tag}.hello", {"version": _VERSION, "role": "server", "salt_check": salt_check,
                                            "refuse": f"the key holder {me!r} is not ready for unbalanced PSI: its "
                                                      "OPRF key or encoded set is missing, invalid or stale (its log "
                                                      f"says which); it runs `fedrisk psi key|encode SPEC --party {me}`"},
                     kind="public-parameter")
        raise
    n = int(head["count"])
    mine = {"version": _VERSION, "role": "server", "salt_check": salt_check, "epoch": key.epoch,
            "fingerprint": key.fingerprint, "digest": head["digest"], "count": n}
    channel.send(peer, f"{tag}.hello", mine, kind="public-parameter")
    theirs = check_hello(me, peer, channel.recv(peer, f"{tag}.hello"), mine, protocol="unbalanced-PSI",
                         peer_role="client", counts=("count", "batch"), role_fix=_ROLE_FIX)
    m, batch = theirs["count"], theirs["batch"]
    have = channel.recv(peer, f"{tag}.have")
    if not isinstance(have, dict) or set(have) != {"have"}:
        raise ProtocolError(f"{me}: {tag}.have from {peer!r} is malformed")
    wait = pp._wait_budget(channel.recv_timeout, m, m, 1)
    current = {"epoch": key.epoch, "fingerprint": key.fingerprint, "digest": head["digest"]}
    # a lender without the current set that does not fetch it stops with its own error (naming its
    # setting); we then fail on its abort while waiting for step 4
    if have["have"] != current and theirs.get("fetch"):
        sf = store.read_set(store.epoch_dir(store_dir, key.epoch) / "encoded.bin", f"party {me!r}: the encoded set",
                            f"re-encode with {_fix_encode(me)}")
        channel.send(peer, f"{tag}.cache.head", {k: sf.header[k] for k in ("epoch", "fingerprint", "count", "width", "digest")},
                     kind="public-parameter")
        for i, lo in enumerate(range(0, n, CACHE_BATCH)):
            channel.send(peer, f"{tag}.cache.{i}", sf.values[lo:lo + CACHE_BATCH], kind="masked")
        del sf
    futs = [psi.submit_reblind(b, key.key) for b in _recv_rows(channel, peer, f"{tag}.blinded", m, batch, psi.POINT_BYTES, wait)]
    for i, f in enumerate(futs):
        try:
            ev = psi.points_from_future(f)
        except CryptoError as e:
            raise ProtocolError(f"{me}: batch {tag}.blinded.{i} from {peer!r} is malformed: {e}") from None
        channel.send(peer, f"{tag}.evaluated.{i}", ev, kind="masked")
    pos = channel.recv(peer, f"{tag}.matches", timeout=wait)
    if (not isinstance(pos, np.ndarray) or pos.dtype != np.int64 or pos.ndim != 1 or len(pos) > m
            or (len(pos) and (pos[0] < 0 or pos[-1] >= n or np.any(np.diff(pos) <= 0)))):
        raise ProtocolError(f"{me}: {tag}.matches from {peer!r} is not a sorted set of at most {m} positions below {n}")
    rows = _rows_of_positions(index, digests, pos)
    channel.send(peer, f"{tag}.done", {"size": int(len(rows))}, kind="control")
    if len(rows) != len(pos):
        raise DataError(f"party {me!r}: {len(pos) - len(rows)} matched customer(s) are not in this party's id column; "
                        f"re-encode it with {_fix_encode(me)}")
    return pp.PsiResult(rows, int(len(rows)), {peer: m})


def _fetch(channel: Channel, peer: str, tag: str, hello: dict[str, Any], store_dir: Path, wait: float) -> np.ndarray:
    me = channel.me
    head = channel.recv(peer, f"{tag}.cache.head", timeout=wait)
    want = {k: hello.get(k) for k in ("epoch", "fingerprint", "digest")}
    if (not isinstance(head, dict) or {k: head.get(k) for k in want} != want or head.get("width") != _W
            or head.get("count") != hello.get("count")):
        raise ProtocolError(f"{me}: {tag}.cache.head from {peer!r} does not describe the set its hello announced")
    n = int(head["count"])
    values = np.concatenate(list(_recv_rows(channel, peer, f"{tag}.cache", n, CACHE_BATCH, _W, wait))) if n else \
        np.empty((0, _W), np.uint8)
    path = store.cache_path(store_dir, peer, int(head["epoch"]), str(head["fingerprint"]))
    written = store.write_set(path, {"format": "encoded", "epoch": head["epoch"], "fingerprint": head["fingerprint"]},
                              values)
    if written["digest"] != head["digest"]:
        path.unlink(missing_ok=True)
        raise ProtocolError(f"{me}: the encoded set from {peer!r} does not match its announced SHA-256")
    if n > 1 and np.any(store.sort_order(values) != np.arange(n)):
        path.unlink(missing_ok=True)
        raise ProtocolError(f"{me}: the encoded set from {peer!r} is not sorted")
    for old in path.parent.glob("epoch-*.bin"):
        if old != path:
            old.unlink(missing_ok=True)
    return values


def _cached_set(me: str, peer: str, store_dir: Path, current: dict[str, Any],
                fetch: bool) -> tuple[dict[str, Any] | None, np.ndarray | None]:
    """What the lender's cache holds (epoch, fingerprint, digest; from its header) and, when that is the set
    the bureau's hello announces, the verified values.

    Only a cache whose header names the announced set is read in full and checked against its SHA-256:
    a stale one (the bureau rotated) is never read past its header, and a damaged current one counts
    as no cache (fetched again, or refused in one line without fetching).
    """
    found = store.find_cache(store_dir, peer)
    if found is None:
        return None, None
    path, head = found
    have = {k: head.get(k) for k in ("epoch", "fingerprint", "digest")}
    if have != current:
        return have, None
    try:
        then = "it is fetched again" if fetch else "it counts as no cache"
        sf = store.read_set(path, f"party {me!r}: the cached encoded set of {peer!r}", then)
    except DataError as e:
        log.warning("%s", e)
        return {**have, "damaged": True}, None
    if {k: sf.header.get(k) for k in have} != have:  # replaced since its header was read: not what was checked
        return {**have, "damaged": True}, None
    return have, sf.values


def _client(channel: Channel, peer: str, ids: Sequence[Any], salt_check: str, store_dir: Path, fetch: bool,
            tag: str) -> pp.PsiResult:
    me = channel.me
    norm = psi.normalize_ids(ids)
    if not norm:
        raise DataError(f"party {me!r} has no ids to align; check its data file and id column")
    pp._check_unique(me, norm, False)
    m = len(norm)
    batch = psi.chunk_size(m)
    mine = {"version": _VERSION, "role": "client", "salt_check": salt_check, "count": m, "batch": batch,
            "fetch": bool(fetch)}
    channel.send(peer, f"{tag}.hello", mine, kind="public-parameter")
    theirs = check_hello(me, peer, channel.recv(peer, f"{tag}.hello"), mine, protocol="unbalanced-PSI",
                         peer_role="server", counts=("count",), role_fix=_ROLE_FIX)
    n, epoch = theirs["count"], theirs.get("epoch")
    fp, digest = theirs.get("fingerprint"), theirs.get("digest")
    if not store.well_formed(epoch, fp, digest):  # they name our cache file: nothing else may reach a path
        raise ProtocolError(f"{me}: party {peer!r} sent an unbalanced-PSI hello whose key epoch, fingerprint or set "
                            "digest has an illegal form")
    have, cache = _cached_set(me, peer, store_dir, {"epoch": epoch, "fingerprint": fp, "digest": digest},
                                 fetch)
    channel.send(peer, f"{tag}.have", {"have": None if cache is None else have}, kind="public-parameter")
    wait = pp._wait_budget(channel.recv_timeout, m, m, 1) + 1e-5 * n
    if cache is None:
        if not fetch:
            state = "damaged" if have is not None and have.get("damaged") else "stale"
            what = "none" if have is None else f"epoch {have['epoch']}"
            raise ConfigError(f"party {me!r}: its cache of the encoded set of {peer!r} is {state} (has {what}, {peer!r} is at "
                              f"key epoch {epoch}); run one job with [psi] fetch_encoded = true to fetch it "
                              f"({n * _W / 1e6:.1f} MB over the job's channel)")
        cache = _fetch(channel, peer, tag, theirs, store_dir, wait)
    assert cache is not None
    ctx = store.context(epoch, fp)
    inv, blinded = oprf.blind(norm, ctx)
    for i, lo in enumerate(range(0, m, batch)):
        channel.send(peer, f"{tag}.blinded.{i}", blinded[lo:lo + batch], kind="masked")
    evaluated = np.concatenate(list(_recv_rows(channel, peer, f"{tag}.evaluated", m, batch, psi.POINT_BYTES, wait)))
    try:
        values = oprf.finalize(norm, inv, evaluated)
    except CryptoError as e:
        raise ProtocolError(f"{me}: {tag}.evaluated from {peer!r} is malformed: {e}") from None
    rows, pos = _lookup(cache, values)
    order = np.argsort(pos)
    channel.send(peer, f"{tag}.matches", pos[order], kind="plaintext-by-design")
    done = channel.recv(peer, f"{tag}.done", timeout=wait)
    if not isinstance(done, dict) or done.get("size") != len(rows):
        raise ProtocolError(f"{me}: {peer!r} ended unbalanced PSI with a different intersection size "
                            f"({done!r:.100} vs {len(rows)})")
    return pp.PsiResult(rows[order], int(len(rows)), {peer: n})


def ub_align(channel: Channel, peer: str, ids: Sequence[Any], *, key_holder: bool, salt: str, store_dir: Path | str,
             fetch: bool = True, tag: str = "psi.ub") -> pp.PsiResult:
    """Align this party's rows with ``peer``'s by unbalanced PSI (see the module docstring).

    Parameters
    ----------
    channel : Channel
        This party's channel.
    peer : str
        The other party (exactly two parties take part).
    ids : sequence
        This party's ids, one per row, normalised as in :mod:`fedrisk.crypto.psi`.
    key_holder : bool
        True at the bureau (holds the OPRF key and the encoded set), False at the lender.
    salt : str
        The job's PSI salt; only checked to be the same at both (the OPRF does not use it: the
        encoded set serves many jobs).
    store_dir : path
        This party's ``psi_store`` (key and encoded set at the bureau, the cache at the lender).
    fetch : bool, default True
        Lender: fetch the bureau's encoded set over the channel when its cache is not the current
        one; when False such a job is refused with the setting to change.
    tag : str, default "psi.ub"

    Returns
    -------
    PsiResult
        This party's rows in the intersection (in no particular order; the caller orders them
        canonically), and the peer's set size.

    Raises
    ------
    ConfigError
        Missing or bad key file, set not encoded under the current key, stale cache without
        fetching, or the parties disagree on the key holder or the salt.
    DataError
        Duplicated ids, the bureau's id column differs from the encoded set, or no id matched.
    ProtocolError
        Malformed or inconsistent messages.
    """
    pp.check_psi_args(channel, tag, "both", salt)
    if store_dir is None:
        raise ConfigError(f"party {channel.me!r}: psi.protocol = 'unbalanced' needs [parties.{channel.me}] psi_store = "
                          "'DIR' (where the key and encoded set, or the cache, are kept)")
    salt_check = pp._salt_check(salt)
    if key_holder:
        res = _serve(channel, peer, ids, salt_check, Path(store_dir), tag)
    else:
        res = _client(channel, peer, ids, salt_check, Path(store_dir), fetch, tag)
    if res.size == 0:
        raise pp.empty_intersection_error(channel.me, repr(peer))
    return res
