"""Streaming ECDH-PSI with bounded memory: the ristretto255 protocol of ``psi_protocol`` for sets too big for RAM.

Same messages, same tags, same kinds, same validation and the same result (row positions in
ascending doubly-blinded order, identical to :func:`~fedrisk.algorithms.vertical.psi_protocol.psi_align`)
as the in-memory path; a streaming party and an in-memory party interoperate. What differs is
where the data lives while the protocol runs:

1. **Prepare** (before the hello): the party's ids arrive in chunks (a sequence is sliced; a file
   is read with :func:`fedrisk.data.loading.iter_id_chunks`), each chunk is normalised, hashed and
   blinded in the process pool (a few batches in flight, never the whole set) and the records
   ``a·H(x) || row`` (40 bytes) are appended to ``2**bits`` partition files chosen by the leading
   bits of ``a·H(x)``. Each partition is then sorted by blinded value and rewritten; adjacent equal
   values are duplicated ids (one :class:`DataError` naming two row numbers, before anything is sent).
2. **Send order** = ascending ``a·H(x)`` (partitions in order, each sorted). This replaces the
   in-memory path's CSPRNG shuffle with an order that is just as independent of the sender's row
   order: the blinded values are pseudo-random under DDH and the receiver could sort them itself.
3. **Exchange**, three concurrent activities so that nothing piles up in the inbox: a thread sends
   our blinded batches (writing their row numbers, in send order, to a file); the calling thread
   re-blinds the peer's batches as they arrive (a bounded window of pool tasks), sends them back
   and spills ``b·a·H(y)`` to partition files; a thread receives our doubly-blinded values, pairs
   them with the row file and spills ``a·b·H(x) || row`` to partition files (both by leading bits
   of the doubly-blinded value).
4. **Intersect** partition by partition (``numpy.intersect1d``): concatenated in partition order,
   the common values come out globally sorted, so the indices, the size and the ``psi.done``
   digest are exactly those of the in-memory path.

Spill files live in a private directory (mode 0700) under the party's run/tmp dir and are deleted
when the exchange ends (also on error). They hold group elements and row numbers only, never a
raw or normalised id.

Memory: the largest partition (about ``(|own| + |peer|) / 2**bits`` records), the write buffers
(a quarter of the budget) and a few pool batches. ``bits`` is chosen from ``memory_mb`` and the set
sizes. Not bounded: the transport's inbox, which can hold up to the peer's whole blinded set (32 bytes
per peer id) when the peer sends faster than this party re-blinds (sending is not paced, since
the in-memory path waits for the whole set before returning anything, and pacing would deadlock
with it), and the caller's own copy of the ids when it passes them as an in-memory sequence. The leader of a
star keeps one int64 per own row per follower to combine the pairs (8 bytes per id).
"""
from __future__ import annotations

import hashlib
import queue
import shutil
import tempfile
import threading
from collections import deque
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from fedrisk.algorithms.vertical import psi_protocol as pp
from fedrisk.algorithms.vertical.spill_folder import SpillFolder
from fedrisk.crypto import psi
from fedrisk.errors import CryptoError, DataError, ProtocolError
from fedrisk.transport.channel import Channel

__all__ = ["StreamPrepared", "IdChunks", "stream_exchange", "prepare", "partition_bits", "should_stream",
           "BYTES_PER_ID_IN_MEMORY"]

_MB = 1 << 20
#: Record widths on disk: a group element, and a group element followed by a little-endian int64 row.
_PT = psi.POINT_BYTES
_REC = psi.POINT_BYTES + 8
#: Working bytes per record while a partition is intersected (the records, their void views,
#: sort permutations and intersect1d's concatenation); measured, with margin.
_WORK_BYTES_PER_REC = 320
#: Rough bytes per id of the in-memory path (Python strings, permutation, blinded and doubly-blinded
#: sets, the sort inside intersect1d); the switch to streaming uses it.
BYTES_PER_ID_IN_MEMORY = 600
_MAX_BITS = 16
#: Batches a party sends ahead of the re-blinded returns (bounds the peer's inbox).
_AHEAD = 4
_PACE = False
#: Fewer records per partition than this costs more in files and buffers than it saves.
_MIN_PER_PART = 4096


def partition_bits(records: int, memory_mb: float) -> int:
    """Smallest ``bits`` (0-16) such that one of ``2**bits`` partitions fits half the budget.

    Never so many partitions that they average fewer than a few thousand records.
    """
    budget = max(1.0, memory_mb * _MB / 2)
    bits = 0
    while (bits < _MAX_BITS and records * _WORK_BYTES_PER_REC / (1 << bits) > budget
           and records >> (bits + 1) >= _MIN_PER_PART):
        bits += 1
    return bits


def _as_records(points: np.ndarray, rows: np.ndarray) -> np.ndarray:
    out = np.empty((len(points), _REC), dtype=np.uint8)
    out[:, :_PT] = points
    out[:, _PT:] = rows.astype("<i8", copy=False).view(np.uint8).reshape(-1, 8)
    return out


def _rows_of(records: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(records[:, _PT:]).view("<i8").ravel()


class _Partitions:
    """Fixed-width records spread over ``2**bits`` append-only files by the leading bits of their first 32 bytes."""

    def __init__(self, root: Path, name: str, bits: int, width: int, flush_bytes: int) -> None:
        self.dir = root / name
        self.dir.mkdir(mode=0o700)
        self.bits, self.width, self.flush_bytes = bits, width, max(1 << 16, flush_bytes)
        self.count = 1 << bits
        self._buf: list[list[bytes]] = [[] for _ in range(self.count)]
        self._buffered = 0

    def path(self, j: int) -> Path:
        return self.dir / f"{j:05d}.bin"

    def part_of(self, keys: np.ndarray) -> np.ndarray:
        top = (keys[:, 0].astype(np.uint32) << 8) | keys[:, 1]
        return (top >> (16 - self.bits)).astype(np.int64)

    def add(self, recs: np.ndarray) -> None:
        if not len(recs):
            return
        p = self.part_of(recs)
        order = np.argsort(p, kind="stable")
        bounds = np.searchsorted(p[order], np.arange(self.count + 1))
        sorted_recs = recs[order]
        for j in np.flatnonzero(np.diff(bounds)):
            self._buf[j].append(sorted_recs[bounds[j]:bounds[j + 1]].tobytes())
        self._buffered += recs.nbytes
        if self._buffered >= self.flush_bytes:
            self.flush()

    def flush(self) -> None:
        for j, parts in enumerate(self._buf):
            if parts:
                with open(self.path(j), "ab") as f:
                    f.writelines(parts)
                self._buf[j] = []
        self._buffered = 0

    def read(self, j: int) -> np.ndarray:
        p = self.path(j)
        if not p.exists():
            return np.empty((0, self.width), dtype=np.uint8)
        return np.fromfile(p, dtype=np.uint8).reshape(-1, self.width)

    def write(self, j: int, recs: np.ndarray) -> None:
        recs.tofile(self.path(j))


def _sorted_by_point(recs: np.ndarray) -> np.ndarray:
    if len(recs) < 2:
        return recs
    return recs[np.argsort(pp._as_void(recs[:, :_PT]), kind="stable")]


def _adjacent_equal(points: np.ndarray) -> np.ndarray:
    """Positions ``i`` with ``points[i] == points[i + 1]`` (``points`` sorted)."""
    if len(points) < 2:
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(np.all(points[1:] == points[:-1], axis=1))


class StreamPrepared(SpillFolder):
    """One party's blinded id set, prepared chunk by chunk and kept on disk, sorted by blinded value.

    Offers what the pairwise exchange needs from ``psi_protocol._Prepared`` (``n``, ``batch``,
    ``key``) plus :meth:`batches` yielding ``(points, rows)`` in send order. Remove the spill
    directory with :meth:`close` (also a context manager).

    Parameters
    ----------
    me : str
        This party's name (for error messages).
    chunks : iterable of sequences
        The ids in row order, in chunks (any sizes).
    salt, casefold
        As in :func:`~fedrisk.algorithms.vertical.psi_protocol.psi_align`.
    memory_mb : float
        The memory budget this party's PSI should stay within.
    count_hint : int, optional
        Expected number of ids (sizes the partitions); default 10 million.
    workdir : path, optional
        Where the private spill directory is created (the party's run/tmp dir); default the system temp dir.
    """

    def __init__(self, me: str, chunks: Iterable[Sequence[Any]], salt: str, casefold: bool, memory_mb: float, *,
                 count_hint: int | None = None, workdir: str | Path | None = None) -> None:
        self.me, self.salt, self.casefold, self.memory_mb = me, salt, casefold, float(memory_mb)
        self.key = psi.random_key()
        super().__init__("fedrisk-psi-", workdir)
        self._flush = int(self.memory_mb * _MB / 8)
        with self.removed_on_error():
            hint = count_hint if count_hint else 10_000_000
            self._blinded = _Partitions(self.folder, "blinded", partition_bits(hint, self.memory_mb), _REC, self._flush)
            self.n = self._blind_all(chunks)
            if self.n == 0:
                raise DataError(f"party {me!r} has no ids to align; check its data file and id column")
            if self.n > pp._MAX_COUNT:
                raise DataError(f"party {me!r} has {self.n} ids, more than PSI supports ({pp._MAX_COUNT})")
            self._sort_and_check()
            self.batch = psi.chunk_size(self.n)

    # -- preparation ---------------------------------------------------------------------------
    def _blind_all(self, chunks: Iterable[Sequence[Any]]) -> int:
        size = 16384
        window: deque[tuple[Any, np.ndarray]] = deque()
        limit = 2 * psi.worker_count() + 2
        n = 0

        def drain() -> None:
            fut, rows = window.popleft()
            try:
                pts = psi.points_from_future(fut)
            except CryptoError as e:  # our own ids: cannot be malformed, but say so if it happens
                raise DataError(f"party {self.me!r}: cannot hash ids to the group: {e}") from None
            self._blinded.add(_as_records(pts, rows))

        for chunk in chunks:
            norm = psi.normalize_ids(chunk, casefold=self.casefold)
            for lo in range(0, len(norm), size):
                part = norm[lo:lo + size]
                window.append((psi.submit_hash_and_blind(part, self.key, self.salt),
                               np.arange(n, n + len(part), dtype=np.int64)))
                n += len(part)
                while len(window) >= limit:
                    drain()
            del norm
        while window:
            drain()
        self._blinded.flush()
        return n

    def _sort_and_check(self) -> None:
        dups = 0
        example: tuple[int, int] | None = None
        for j in range(self._blinded.count):
            recs = self._blinded.read(j)
            if not len(recs):
                continue
            recs = _sorted_by_point(recs)
            eq = _adjacent_equal(recs[:, :_PT])
            if len(eq):
                dups += len(eq)
                if example is None:
                    rows = _rows_of(recs)
                    example = (int(min(rows[eq[0]], rows[eq[0] + 1])), int(max(rows[eq[0]], rows[eq[0] + 1])))
            self._blinded.write(j, recs)
        if dups:
            hint = " (case-folding is on, so ids differing only in case count as equal)" if self.casefold else ""
            assert example is not None
            raise DataError(
                f"party {self.me!r}: {dups} repeated id(s) after normalisation{hint}, e.g. rows {example[0]} and "
                f"{example[1]} hold the same id. PSI needs one row per customer: deduplicate the id column "
                "before alignment"
            )

    # -- sending ---------------------------------------------------------------------------------
    def batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(points (k, 32) uint8, rows int64)`` in send order, ``batch`` rows each (the last may be shorter)."""
        pend: list[np.ndarray] = []
        have = 0
        for j in range(self._blinded.count):
            recs = self._blinded.read(j)
            lo = 0
            while lo < len(recs):
                take = min(self.batch - have, len(recs) - lo)
                pend.append(recs[lo:lo + take])
                have += take
                lo += take
                if have == self.batch:
                    out = np.concatenate(pend) if len(pend) > 1 else pend[0]
                    yield np.ascontiguousarray(out[:, :_PT]), _rows_of(out)
                    pend, have = [], 0
        if have:
            out = np.concatenate(pend)
            yield np.ascontiguousarray(out[:, :_PT]), _rows_of(out)

    def pair_dir(self, peer: str) -> Path:
        d = Path(tempfile.mkdtemp(prefix="pair-", dir=self.folder))
        return d


def stream_exchange(channel: Channel, peer: str, prep: StreamPrepared, *, leader: bool, salt: str, casefold: bool,
                    reveal: str, tag: str, pairs: int = 1) -> pp.PsiResult:
    """Steps 1-4 of ``psi_protocol`` with ``peer``, streaming through disk; same result as the in-memory exchange."""
    me = channel.me
    theirs = pp._hello(channel, peer, tag, prep, leader=leader, salt=salt, casefold=casefold, reveal=reveal)  # type: ignore[arg-type]
    peer_n, peer_batch = theirs["count"], theirs["batch"]
    wait = pp._wait_budget(channel.recv_timeout, prep.n, peer_n, pairs)
    give_back = (not leader) or reveal == "both"
    learns = leader or reveal == "both"

    work = prep.pair_dir(peer)
    bits = partition_bits(prep.n + min(int(peer_n), max(prep.n, 1 << 24)), prep.memory_mb)
    flush = max(1 << 16, prep._flush // max(1, pairs))
    own_d = _Partitions(work, "own", bits, _REC, flush)
    peer_d = _Partitions(work, "peer", bits, _PT, flush)
    rows_path = work / "sent-rows.bin"
    rows_path.touch(mode=0o600)
    errors: list[BaseException] = []
    # Pacing: when our batches come back re-blinded, send at most _AHEAD batches ahead of the
    # returns, so the peer's inbox never holds more than that (no change on the wire).
    # Pacing is off: the in-memory path re-blinds only after receiving the whole set, so a pacing
    # streaming peer would deadlock with it. Kept as a switch for streaming-only deployments.
    credit = threading.Semaphore(_AHEAD) if (learns and _PACE) else None
    stop = threading.Event()

    def send_mine() -> None:
        try:
            with open(rows_path, "ab") as rf:
                for i, (pts, rows) in enumerate(prep.batches()):
                    while credit is not None and not credit.acquire(timeout=1.0):
                        if stop.is_set():
                            return
                    rf.write(rows.astype("<i8", copy=False).tobytes())
                    rf.flush()
                    channel.send(peer, f"{tag}.blinded.{i}", pts, kind="masked")
        except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(e)

    def recv_own() -> None:
        try:
            with open(rows_path, "rb") as rf:
                for arr in pp._recv_points(channel, peer, f"{tag}.reblinded", prep.n, prep.batch, wait):
                    rows = np.frombuffer(rf.read(8 * len(arr)), dtype="<i8")
                    if len(rows) != len(arr):
                        raise ProtocolError(f"{me}: {peer!r} returned re-blinded values for batches not yet sent")
                    own_d.add(_as_records(arr, rows))
                    if credit is not None:
                        credit.release()
            own_d.flush()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=send_mine, name=f"psi-send-{me}", daemon=True)]
    if learns:
        threads.append(threading.Thread(target=recv_own, name=f"psi-own-{me}", daemon=True))
    try:
        for t in threads:
            t.start()
        # Re-blinded batches are collected and returned by a drainer thread as soon as they are
        # ready, so a peer waiting for its returns (pacing) never waits on our next recv.
        pending: queue.Queue = queue.Queue(maxsize=2 * psi.worker_count() + 2)

        def drain() -> None:
            try:
                while True:
                    item = pending.get()
                    if item is None:
                        return
                    i, fut = item
                    try:
                        d = psi.points_from_future(fut)
                    except CryptoError as e:
                        raise ProtocolError(f"{me}: batch {tag}.blinded.{i} from {peer!r} is malformed: {e}") from None
                    peer_d.add(d)
                    if give_back:
                        channel.send(peer, f"{tag}.reblinded.{i}", d, kind="masked")
            except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
                errors.append(e)
                while pending.get() is not None:  # keep the producer unblocked
                    pass

        drainer = threading.Thread(target=drain, name=f"psi-back-{me}", daemon=True)
        drainer.start()
        try:
            for i, b in enumerate(pp._recv_points(channel, peer, f"{tag}.blinded", peer_n, peer_batch, wait)):
                if errors:
                    break
                pending.put((i, psi.submit_reblind(b, prep.key)))
        finally:
            pending.put(None)
            drainer.join()
        peer_d.flush()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        if not learns:
            return pp.PsiResult(None, None, {peer: peer_n})

        digest = hashlib.sha256()
        parts: list[np.ndarray] = []
        for j in range(own_d.count):
            own = own_d.read(j)
            other = peer_d.read(j)
            if not len(own) or not len(other):
                continue
            own_v = pp._as_void(np.ascontiguousarray(own[:, :_PT]))
            peer_v = pp._as_void(other)
            pp._require_distinct(me, peer, "re-blinded values of our ids", own_v)
            pp._require_distinct(me, peer, "blinded ids", peer_v)
            common, own_pos, _ = np.intersect1d(own_v, peer_v, assume_unique=True, return_indices=True)
            digest.update(common.tobytes())
            parts.append(_rows_of(own[own_pos]))
            del own, other, own_v, peer_v, common
        indices = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        result = pp.PsiResult(indices, int(len(indices)), {peer: peer_n})
        if reveal == "both":
            hexd = digest.hexdigest()
            channel.send(peer, f"{tag}.done", {"size": result.size, "digest": hexd}, kind="control")
            other_done = channel.recv(peer, f"{tag}.done", timeout=wait)
            if (not isinstance(other_done, dict) or other_done.get("size") != result.size
                    or other_done.get("digest") != hexd):
                raise ProtocolError(
                    f"{me}: {peer!r} ended PSI with a different intersection ({other_done!r:.200} vs size "
                    f"{result.size}); the parties' inputs or versions disagree"
                )
        return result
    finally:
        stop.set()
        shutil.rmtree(work, ignore_errors=True)


def chunks_of(ids: Sequence[Any], rows: int = 262144) -> Iterator[Sequence[Any]]:
    """Slice an in-memory id sequence into chunks (the streaming path for ids already loaded)."""
    for lo in range(0, len(ids), rows):
        yield ids[lo:lo + rows]


class IdChunks:
    """Ids that arrive in chunks (e.g. read from a file by :func:`fedrisk.data.loading.iter_id_chunks`).

    Passing one to :func:`~fedrisk.algorithms.vertical.psi_protocol.psi_align` or ``align_many``
    always takes the streaming path. ``count_hint`` (rows expected) sizes the spill partitions.
    """

    def __init__(self, chunks: Iterable[Sequence[Any]], count_hint: int | None = None) -> None:
        self.chunks, self.count_hint = chunks, count_hint


def should_stream(n: int, memory_mb: float | None) -> bool:
    """True when the in-memory path would likely exceed ``memory_mb`` for ``n`` ids."""
    return memory_mb is not None and n * BYTES_PER_ID_IN_MEMORY > memory_mb * _MB / 2



def prepare(me: str, ids: Any, salt: str, casefold: bool, memory_mb: float | None,
            spill_dir: str | Path | None) -> StreamPrepared | None:
    """A :class:`StreamPrepared` when ``ids`` is :class:`IdChunks` or too big for ``memory_mb``; else None."""
    if isinstance(ids, IdChunks):
        return StreamPrepared(me, ids.chunks, salt, casefold, memory_mb or 1500.0, count_hint=ids.count_hint,
                              workdir=spill_dir)
    if should_stream(len(ids), memory_mb):
        assert memory_mb is not None
        return StreamPrepared(me, chunks_of(ids), salt, casefold, memory_mb, count_hint=len(ids), workdir=spill_dir)
    return None
