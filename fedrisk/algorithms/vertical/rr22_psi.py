"""RR22 private set intersection (SecretFlow's ``psi_execute``) tunnelled through the job's channel.

The ristretto255 ECDH-PSI of :mod:`fedrisk.algorithms.vertical.psi_protocol` costs two
scalar multiplications per id per party (about 180 CPU-µs). RR22 (Raghuraman & Rindal, CCS 2022:
VOLE-based OPRF + OKVS) needs a few CPU-µs per id and about 35 bytes per id on the wire. It comes
from SecretFlow's maintained C++ library, in the ``spu`` wheel (optional extra ``fedrisk[psi]``,
see :mod:`fedrisk.crypto.spu_binding`); the ECDH path stays the dependency-free default.

The library speaks over its own brpc link. Here that link never leaves the party's process except
through the job's :class:`Channel`: each party's library listens on a loopback port, and is told
its peer lives at the port of a :class:`~fedrisk.transport.link_relay.ChannelLinkRelay`, which
forwards the bytes as channel messages (so gRPC's mutual TLS with the job's certificates covers
them, and the ledger records each one). When the channel has the job's TLS files (every real
deployment), the library additionally runs TLS end to end on the same certificates: a peer
whose certificate another CA issued is refused by the library too.

Items: each party feeds the library the salted 128-bit order keys of its normalised ids
(:func:`fedrisk.algorithms.vertical.row_order.id_digests`, hashed in C when
:mod:`fedrisk.crypto.idhash`'s kernel is built), cut to their first 96 bits (16 base64url
characters, one per line; the full 128 bits when a party's own keys share 96 bits); the
output is its own keys in the intersection, which it maps back to its row numbers in key order,
the canonical order every protocol uses (so the library's own re-ordering of its result,
``disable_alignment=False``, is skipped: it cost a third of the library's time at 1M ids).

Message flow of :func:`rr22_align` between the leader L (RR22 receiver, rank 0) and the follower
F (sender, rank 1); ``<tag>`` defaults to ``"psi.rr22"``:

==  ==========  ============================  ======================  ============================
#   direction   tag                           kind                    payload
==  ==========  ============================  ======================  ============================
1   P -> Q      ``<tag>.hello``               public-parameter        version, role, reveal,
                                                                      casefold, count ``|P|``, TLS
                                                                      on/off, SHA-256 check of
                                                                      the salt, the library's
                                                                      bucket size (both use the
                                                                      smaller), item width in
                                                                      bytes (12 or 16; both use
                                                                      the larger)
2   P -> Q      ``<tag>.ready``               control                 ``True``: about to start the
                                                                      library's link
2b  P -> Q      ``<tag>.linked``              control                 ``True``/``False``: this
                                                                      party's library has (not)
                                                                      set its link up in time;
                                                                      unless both say ``True``,
                                                                      both retry once with the
                                                                      tags ``<tag>.r1.*`` and
                                                                      ``<tag>.link.r1.*``
3   P <-> Q     ``<tag>.link.*``              control / masked        the library's RR22 messages
                                                                      (OPRF/VOLE and OKVS rounds,
                                                                      then the masked OPRF values
                                                                      of F's items) as relayed
                                                                      bytes (see ``link_relay``)
4   P -> Q      ``<tag>.fin``, then           control                 ``True``: the library is done;
                ``<tag>.closed``                                      then: its link is stopped (the
                                                                      relay keeps carrying bytes
                                                                      until both are)
5   P -> Q      ``<tag>.done``                control                 intersection size and
                                                                      SHA-256 of the sorted keys
                                                                      (only when ``reveal="both"``)
==  ==========  ============================  ======================  ============================

What each party learns
----------------------
* Both: the size of the other's id set (RR22 sizes its OKVS by it, as ECDH-PSI reveals it too).
* ``reveal="both"`` (the library broadcasts the result): each party learns which of **its own**
  rows are in the intersection, nothing about the peer's other ids.
* ``reveal="leader"``: only L learns its intersecting rows; F learns ``|X|`` only and its result
  has ``indices=None``.

Security model: semi-honest, as the ECDH path (RR22's malicious variant is not used).

Multi-party (:func:`rr22_align_many`) is the same star as ``align_many``: L runs one RR22 with
each follower (one after the other, each over its own relay and tag ``<tag>.<follower>``), intersects on
its own rows, and then, when there are two or more followers, sends each follower

==  ==========  ============================  ======================  ============================
6   L -> F_j    ``<tag>.keep``                plaintext-by-design     int64 positions into F_j's
                                                                      pairwise intersection (in key
                                                                      order) of the rows all
                                                                      parties hold
==  ==========  ============================  ======================  ============================

which, as in the ECDH star, tells a follower which of its matches are missing at another
follower, and the size of the common intersection. With one follower every pairwise match is
common, so the message (8 bytes per matching row, 4 MB at a million) would say nothing and is
not sent (since version 3).

Local files: the library reads and writes CSV; they live in a private temporary folder (keys
only, never raw ids) removed afterwards, together with the library's trace file. The library
also spills its hash buckets under that folder (its ``TMPDIR``). Under ``memory_mb`` this
party's keys and row numbers are spilled too (:mod:`~fedrisk.algorithms.vertical.rr22_spill`,
another private folder, removed afterwards).

The library runs in a child process of the party (:mod:`fedrisk.crypto.spu_process`), so each
of its stages can have a deadline that the party enforces by killing it. The library's own link
timeouts (a receive, one request) are at least ten minutes (``_MIN_LINK_WAIT_S``): on a loaded
machine a starved peer must not be mistaken for a dead one. Its link set-up, which normally
takes well under a second, has its own deadline (``_LINK_DEADLINE_S``, one minute) and one
clean retry (message 2b); the whole run is given up after twice the library's receive timeout.
"""
from __future__ import annotations

import binascii
import glob
import hashlib
import logging
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, Union

import numpy as np

from fedrisk.algorithms.vertical.psi_protocol import PsiResult, check_follower_keep, check_psi_args
from fedrisk.algorithms.vertical.psi_protocol import empty_intersection_error as _empty_error
from fedrisk.algorithms.vertical.psi_stream import IdChunks
from fedrisk.algorithms.vertical.row_order import KEY_CHARS, id_digests
from fedrisk.algorithms.vertical.rr22_spill import SpilledKeys, duplicate_ids_error, hash_chunks
from fedrisk.crypto import psi, spu_binding
from fedrisk.crypto.spu_process import LibraryProcess, WorkerGone, WorkerTimeout
from fedrisk.errors import ConfigError, DataError, ProtocolError, TransportError
from fedrisk.transport import expect
from fedrisk.transport.channel import Channel
from fedrisk.transport.link_relay import ChannelLinkRelay

__all__ = ["rr22_align", "rr22_align_many", "Rr22Stats", "DEFAULT_TAG", "bucket_size"]

DEFAULT_TAG = "psi.rr22"
#: 2: items are the keys in base64url (22 characters), the ``done`` digest is over the raw keys;
#: version 1 fed hex (32 characters). Parties of different versions would find no common item,
#: so the hello refuses the mix. 3: no ``keep`` message with a single follower (a version-2
#: follower would wait for it). 4: items are the keys' first 96 bits (16 characters; the hello
#: says how wide, see ``_ITEM_BYTES``).
_VERSION = 4
_MAX_COUNT = 2**31 - 1
#: Extra patience per id for the library's receive timeout (a peer may be slow at scale).
_SECONDS_PER_ID = 2e-4
#: Floor of the library's own link timeouts (a receive, and one request of at most 1 MiB), in
#: seconds. The library gives up on a receive with "Get data timeout" and on a request after
#: this long; on a loaded 2-core machine (CI beside other jobs) a peer's library, or the relay
#: threads that carry its bytes, can be starved for minutes, so the floor is ten minutes: long
#: enough for any honest peer, still finite for a dead one (the job's own ``recv_timeout`` and
#: the barriers around the library catch a peer that never starts).
_MIN_LINK_WAIT_S = 600.0
#: How the library connects to its peer (through the relay): attempts and pause between them.
#: A peer that fails the library's TLS handshake is given up on after about
#: ``_CONNECT_RETRIES * (_CONNECT_INTERVAL_MS + handshake)``.
_CONNECT_RETRIES = 10
_CONNECT_INTERVAL_MS = 1000
#: Deadline of the library's link set-up (its "connect to mesh", both directions), seconds. It
#: takes well under a second, or up to ``_CONNECT_RETRIES`` seconds while a peer starts; but the
#: library waits for the peer's half of the handshake as long as for any receive
#: (``_MIN_LINK_WAIT_S``), so a handshake that got lost (seen once in CI, both parties in one
#: process) hung the job for ten minutes. Past this deadline the library's process is killed.
_LINK_DEADLINE_S = 60.0
#: Link set-ups tried, each in a fresh library process over a fresh relay, before the job fails.
_LINK_ATTEMPTS = 2
_KEY = "k"
log = logging.getLogger("fedrisk.psi")


class Rr22Stats:
    """What one pairwise run moved and where its time went.

    ``bytes_out``/``bytes_in``/``frames_out``: the relay's payload bytes and data frames;
    ``seconds``: in the library; ``prepare_s``: normalising, hashing and writing this party's
    keys; ``close_s``: stopping the link in step with the peer; ``output_s``: reading the
    library's result back into row numbers. ``prepare_cpu_s`` and ``output_cpu_s`` are the CPU
    seconds of those two Python steps (the calling thread's), the part of a run that is serial.
    ``attempts``: link set-ups tried (1 unless one failed or passed its deadline);
    ``library_rss_mb``: peak RSS of the library's own process (the party's process comes on top),
    ``library_base_rss_mb`` its RSS once loaded (before any work);
    ``library_cpu_s``: its CPU seconds (the rest of the party's CPU is fedrisk's: hashing, relay,
    gRPC); ``load_wait_s``: how long the run waited for the library's process to load its native
    code (it starts before the ids are hashed); ``marks``: seconds from the start of the alignment
    to the end of each step (``keys``, ``hello``, ``input``, ``loaded``, ``linked``, ``library``,
    ``closed``, ``read_back``, ``done``), the whole wall timeline of one party.
    """

    def __init__(self) -> None:
        self.bytes_out = 0
        self.bytes_in = 0
        self.frames_out = 0
        self.seconds = 0.0
        self.prepare_s = 0.0
        self.close_s = 0.0
        self.output_s = 0.0
        self.prepare_cpu_s = 0.0
        self.output_cpu_s = 0.0
        self.hello_s = 0.0
        self.ready_s = 0.0
        self.link_s = 0.0
        self.finish_s = 0.0
        self.attempts = 0
        self.library_rss_mb: float | None = None
        self.library_cpu_s: float | None = None
        self.library_base_rss_mb: float | None = None
        self.load_wait_s = 0.0
        self.marks: dict[str, float] = {}
        self.t0 = time.perf_counter()

    def mark(self, step: str) -> None:
        """Note that ``step`` ended now (seconds since the alignment started)."""
        self.marks[step] = round(time.perf_counter() - self.t0, 3)

    def as_dict(self) -> dict[str, Any]:
        return {"bytes_out": self.bytes_out, "bytes_in": self.bytes_in, "frames_out": self.frames_out,
                "seconds": round(self.seconds, 3), "prepare_s": round(self.prepare_s, 3),
                "close_s": round(self.close_s, 3), "output_s": round(self.output_s, 3),
                "prepare_cpu_s": round(self.prepare_cpu_s, 3), "output_cpu_s": round(self.output_cpu_s, 3),
                "hello_s": round(self.hello_s, 3), "ready_s": round(self.ready_s, 3), "link_s": round(self.link_s, 3),
                "finish_s": round(self.finish_s, 3), "attempts": self.attempts,
                "library_rss_mb": self.library_rss_mb, "library_cpu_s": self.library_cpu_s,
                "library_base_rss_mb": self.library_base_rss_mb,
                "load_wait_s": round(self.load_wait_s, 3), "marks": dict(self.marks)}


# ---------------------------------------------------------------------------------------------
# Local preparation
# ---------------------------------------------------------------------------------------------
class _OwnKeys:
    """One party's 128-bit order keys: the library's items, sorted to map its output back.

    The library intersects the keys written as base64url text (:func:`_item_text`); its result
    lists the matching keys (in its own order), which are mapped back to row numbers through the
    keys' sorted first 64 bits (all keys' when two share them), so no per-id Python loop runs
    after the library.
    """

    #: Items written or read back at a time.
    rows = 1 << 16

    def __init__(self, digests: np.ndarray) -> None:
        self.n = len(digests)
        self.digests = np.ascontiguousarray(digests, dtype=np.uint8)
        hi, lo = _halves(digests)  # (only their sorted copies are kept: 16 bytes per id less at the peak)
        order = np.argsort(hi)  # (a tie is rare and sorted again below, so stability is not needed)
        sh = hi[order]
        self.hi_unique = not bool(np.any(sh[1:] == sh[:-1]))
        if not self.hi_unique:  # two keys share 64 bits (about 1 in 10^7 at a million ids): full order
            order = np.lexsort((lo, hi))
            sh = hi[order]
        del hi
        self.order = order
        self.sorted_hi, self.sorted_lo = sh, lo[order]
        self.sorted_raw = None if self.hi_unique else self.digests.view(f"S{KEY_CHARS // 2}").ravel()[order]

    def duplicates(self) -> np.ndarray:
        """Positions ``i`` in sorted order whose key equals the next one."""
        if self.hi_unique:
            return np.empty(0, dtype=np.int64)
        return np.flatnonzero((self.sorted_hi[1:] == self.sorted_hi[:-1]) & (self.sorted_lo[1:] == self.sorted_lo[:-1]))

    def prefix_unique(self, width: int) -> bool:
        """True when no two keys share their first ``width`` bytes (``8 <= width <= 16``)."""
        if self.hi_unique:
            return True
        lo = self.sorted_lo & _lo_mask(width)
        return not bool(np.any((self.sorted_hi[1:] == self.sorted_hi[:-1]) & (lo[1:] == lo[:-1])))

    def positions(self, prefixes: np.ndarray, me: str) -> np.ndarray:
        """Positions in sorted order of the keys whose first ``width`` bytes are ``prefixes``
        (``(m, width)``; each must be one of this party's keys, unique at that width)."""
        if len(prefixes) == 0:
            return np.empty(0, dtype=np.int64)
        width = prefixes.shape[1]
        full = np.zeros((len(prefixes), 16), dtype=np.uint8)
        full[:, :width] = prefixes
        hi, lo = _halves(full)
        if self.hi_unique:
            pos = np.searchsorted(self.sorted_hi, hi)
        else:  # the first key at or after the zero-padded prefix: the one that starts with it
            pos = np.searchsorted(self.sorted_raw, full.view(f"S{KEY_CHARS // 2}").ravel())
        pos = np.minimum(pos, self.n - 1)
        if not (np.all(self.sorted_hi[pos] == hi) and np.all(self.sorted_lo[pos] & _lo_mask(width) == lo)):
            raise ProtocolError(f"{me}: the RR22 library returned a key this party does not hold")
        return pos.astype(np.int64, copy=False)

    def rows_at(self, pos: np.ndarray, me: str) -> np.ndarray:
        """Row numbers, in key order, of the keys at sorted positions ``pos`` (each at most once)."""
        pos = np.sort(pos)
        if np.any(pos[1:] == pos[:-1]):
            raise ProtocolError(f"{me}: the RR22 library returned one of this party's keys twice")
        return self.order[pos].astype(np.int64, copy=False)

    def rows_of(self, prefixes: np.ndarray, me: str) -> np.ndarray:
        """Row numbers, in key order, of the keys whose first bytes are ``prefixes`` (see :meth:`positions`)."""
        return self.rows_at(self.positions(prefixes, me), me)

    # the interface shared with rr22_spill.SpilledKeys (this party's keys on disk, under a budget)
    def digest_chunks(self, rows: int = 1 << 16) -> Iterator[np.ndarray]:
        """The keys as ``(m, 16)`` uint8 chunks (in row order)."""
        for i in range(0, self.n, rows):
            yield self.digests[i:i + rows]

    def match(self, prefix_chunks: Iterable[np.ndarray], me: str) -> np.ndarray:
        """Rows, in key order, of the keys whose first bytes are the prefixes of all the chunks."""
        parts = [self.positions(c, me) for c in prefix_chunks]
        return self.rows_at(np.concatenate(parts) if parts else np.empty(0, dtype=np.int64), me)

    def sorted_digest(self, rows: np.ndarray) -> str:
        """SHA-256 of the keys of ``rows`` (in key order: the sorted 16-byte keys of the intersection)."""
        return hashlib.sha256(self.digests[rows].tobytes()).hexdigest()

    def close(self) -> None:
        """Nothing to remove (the spilled twin removes its files)."""


#: This party's keys, in memory or spilled to disk (the same interface: ``n``, ``prefix_unique``,
#: ``digest_chunks``, ``match``, ``sorted_digest``, ``close``).
_Keys = Union[_OwnKeys, SpilledKeys]


def _lo_mask(width: int) -> np.uint64:
    """Mask of the low half's bits that a ``width``-byte prefix keeps."""
    return np.uint64(((1 << (8 * (width - 8))) - 1) << (8 * (16 - width)) if width > 8 else 0)


def _halves(digests: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two big-endian 64-bit halves of ``(n, 16)`` digests (their byte order = the hex order)."""
    d = np.ascontiguousarray(digests, dtype=np.uint8).reshape(-1, 16).view(">u8")
    return d[:, 0].astype(np.uint64), d[:, 1].astype(np.uint64)


#: Ids are normalised and hashed this many at a time, so the normalised strings (about 70 bytes
#: per id as Python objects) never exist for the whole set at once.
_CHUNK = 1 << 16
#: The library's working set per item of one hash bucket (spu alone, peak RSS per party at 300k
#: ids: 304-317 MB with one bucket, 256-265 MB with 2^16-, 230-243 MB with 2^14-item buckets,
#: about 370 bytes per bucketed item), rounded up.
_LIBRARY_BYTES_PER_ITEM = 400
#: fedrisk's arrays kept per id for the whole run: the 16-byte key, the sort order and the sorted
#: 64-bit halves (the transient ones are built in chunks of ``_CHUNK``).
_OWN_BYTES_PER_ID = 48
_MIN_BUCKET, _MAX_BUCKET = 1 << 12, 1 << 20
#: Budget assumed for ids given as ``IdChunks`` without ``memory_mb`` (as the ECDH streaming path).
_DEFAULT_MEMORY_MB = 1500.0


def _library_env(memory_mb: float | None) -> dict[str, str]:
    """Environment of the library's process: glibc keeps at most two malloc arenas.

    Each thread of the library otherwise grows its own arena. Measured: at 200k ids with 4096-item
    buckets the library's peak was 182-197 MB with the default arenas, 150-153 MB with two; at 1M x
    1M without a budget 439-550 MB vs 336-447 MB, and 0.17-0.2 CPU-s less per party (three
    alternating pairs). ``memory_mb`` is for settings that would follow the budget (none so far).
    """
    return {"MALLOC_ARENA_MAX": "2"}


def bucket_size(memory_mb: float | None) -> int:
    """The library's hash-bucket size (items) under a budget of ``memory_mb`` MiB per party.

    Half the budget goes to the library's bucket (``_LIBRARY_BYTES_PER_ITEM`` per item; the
    largest power of two that fits, between 2^12 and the library's default 2^20). This bounds
    the part of the library's working set that follows the bucket; it is not a bound on the
    whole process: fedrisk's per-id arrays (``_OWN_BYTES_PER_ID``), the library's CSV reader
    buffers and the allocator's arenas come on top (see docs/scale.md). Without a budget: 2^20.
    """
    if memory_mb is None:
        return _MAX_BUCKET
    items = int(float(memory_mb) * 2**20 / 2 // _LIBRARY_BYTES_PER_ITEM)
    return int(min(_MAX_BUCKET, max(_MIN_BUCKET, 1 << max(0, items.bit_length() - 1))))


def _digests(ids: Sequence[Any], salt: str, casefold: bool) -> np.ndarray:
    """``(n, 16)`` order keys of ``ids``, normalised and hashed ``_CHUNK`` ids at a time."""
    if hasattr(ids, "to_numpy"):  # pandas: positional chunks
        ids = ids.to_numpy()
    elif not isinstance(ids, (np.ndarray, list, tuple)):
        ids = list(ids)
    n = len(ids)
    out = np.empty((n, KEY_CHARS // 2), dtype=np.uint8)
    for i in range(0, n, _CHUNK):
        part = ids[i:i + _CHUNK]
        out[i:i + len(part)] = id_digests(part, salt, casefold=casefold)
    return out


def _spill(n: int, memory_mb: float | None) -> bool:
    """True when this party's keys (``_OWN_BYTES_PER_ID`` each) would take more than its half of ``memory_mb``."""
    return memory_mb is not None and n * _OWN_BYTES_PER_ID > float(memory_mb) * 2**20 / 2


def _keys(me: str, ids: Any, salt: str, casefold: bool, memory_mb: float | None = None,
          spill_dir: Any = None) -> "_Keys":
    """This party's keys: in memory, or on disk (:class:`SpilledKeys`) when they would not fit in
    its half of ``memory_mb`` or arrive as :class:`~fedrisk.algorithms.vertical.psi_stream.IdChunks`."""
    chunked = isinstance(ids, IdChunks)
    if not chunked and not isinstance(ids, (list, tuple, np.ndarray)) and not hasattr(ids, "to_numpy"):
        ids = list(ids)  # a deque or range is ids, not chunks of them (the spill path iterates chunks)
    n = ids.count_hint or 0 if chunked else len(ids)
    if not chunked and n == 0:
        raise DataError(f"party {me!r} has no ids to align; check its data file and id column")
    if n > _MAX_COUNT:
        raise DataError(f"party {me!r} has {n} ids, more than PSI supports ({_MAX_COUNT})")
    if chunked or _spill(n, memory_mb):
        budget = float(memory_mb or _DEFAULT_MEMORY_MB) * 2**20 / 2
        rows = int(min(_CHUNK, max(4096, budget // 256)))  # ids hashed at a time: ~64-256 B each meanwhile

        def digests(part: Sequence[Any]) -> np.ndarray:
            return id_digests(part, salt, casefold=casefold)

        spilled = SpilledKeys(me, hash_chunks(ids.chunks if chunked else ids, digests, rows), n or 1 << 20, budget,
                              casefold, rows=rows, spill_dir=spill_dir)
        if spilled.n == 0 or spilled.n > _MAX_COUNT:
            spilled.close()
            raise DataError(f"party {me!r} has {spilled.n} ids to align; PSI needs 1 to {_MAX_COUNT}: check its "
                            "data file and id column")
        return spilled
    keys = _OwnKeys(_digests(ids, salt, casefold))
    dup = keys.duplicates()
    if len(dup):
        raise duplicate_ids_error(me, str(len(dup)), keys.order[[dup[0], dup[0] + 1]], casefold)
    return keys


def _salt_check(salt: str) -> str:
    return hashlib.sha256(b"fedrisk.psi.rr22.salt-check\x00" + psi.hash_prefix(salt)).hexdigest()


def _link_id(salt: str, tag: str) -> str:
    return "fedrisk-" + hashlib.sha256(psi.hash_prefix(salt) + tag.encode()).hexdigest()[:16]


_ports_lock = threading.Lock()
_ports_given: set[int] = set()


def _free_port() -> int:
    """A loopback port that was free a moment ago and was not handed to another run of this process."""
    import socket

    with _ports_lock:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in _ports_given:
                _ports_given.add(port)
                return port


#: Bytes of the key in one item: its first 96 bits, 16 base64url characters (no padding). The
#: library parses its input three times, so 16 instead of 22 characters per item is about a
#: quarter less text to parse. The rest stays on 128 bits: the duplicate check, the row order and
#: the ``done`` digest. A party whose own keys share their first 96 bits (about 1 in 10^14 at
#: ten million ids) says so in its hello and both use the full 128 bits (``_WIDE_ITEM_BYTES``).
#: Two parties' different keys that share 96 bits (about n*m / 2^96: 1e-15 at ten million each)
#: would be a false match: with ``reveal="both"`` the ``done`` digest over the full keys catches it.
_ITEM_BYTES = 12
_WIDE_ITEM_BYTES = 16
#: base64url is standard base64 with "-_" for "+/"; "+" and "/" are not in its alphabet, so reading
#: maps them to "*", which the strict decoder refuses.
_TO_URL = bytes.maketrans(b"+/", b"-_")
_FROM_URL = bytes.maketrans(b"-_+/", b"+/**")


def item_chars(width: int) -> int:
    """base64url characters of a ``width``-byte item without padding (12 -> 16, 16 -> 22)."""
    return (8 * width + 5) // 6


def _item_text(digests: np.ndarray, width: int = _ITEM_BYTES) -> np.ndarray:
    """The first ``width`` bytes of ``(n, 16)`` keys as ``(n, item_chars(width))`` base64url: the items.

    Why not hex: the library parses its input CSV three times (checks, hash buckets, result), so
    fewer characters per item save its CPU. The alphabet needs no CSV quoting, no item is a CSV
    null marker, and the library reads its key columns as strings anyway. Each key's ``width``
    bytes, padded with zero bytes to a multiple of 3, encode to a whole number of base64 groups,
    so one C-speed encoding of the whole padded block gives every item at a fixed place (the
    padding's characters, if any, are dropped).
    """
    n = len(digests)
    block = width + (-width) % 3
    buf = np.zeros((n, block), dtype=np.uint8)
    buf[:, :width] = np.asarray(digests, dtype=np.uint8).reshape(n, -1)[:, :width]
    text = binascii.b2a_base64(buf.data, newline=False).translate(_TO_URL)
    return np.frombuffer(text, dtype=np.uint8).reshape(n, block // 3 * 4)[:, :item_chars(width)]


def _item_digests(text: np.ndarray, me: str, width: int = _ITEM_BYTES) -> np.ndarray:
    """The inverse of :func:`_item_text`: ``(m, width)`` key prefixes; a character outside the
    alphabet, or unused low bits that are not zero (not written by :func:`_item_text`), is the
    library's fault."""
    m = len(text)
    block = width + (-width) % 3
    six = np.full((m, block // 3 * 4), ord("A"), dtype=np.uint8)
    six[:, :item_chars(width)] = text
    try:
        raw = binascii.a2b_base64(six.tobytes().translate(_FROM_URL), strict_mode=True)
    except binascii.Error:
        raw = b""
    out = np.frombuffer(raw, dtype=np.uint8)
    # the bytes past ``width`` hold the last character's unused bits (and the padding's)
    if len(out) != block * m or np.any(out.reshape(m, block)[:, width:]):
        raise ProtocolError(f"{me}: the RR22 library wrote a result that is not this party's keys")
    return np.ascontiguousarray(out.reshape(m, block)[:, :width])


def _write_input(path: Path, keys: "_Keys", width: int = _ITEM_BYTES) -> None:
    """The library's input: a one-column CSV of fixed-width base64url items (no quoting needed)."""
    chars = item_chars(width)
    with open(path, "wb") as fh:
        fh.write(f"{_KEY}\n".encode())
        for part in keys.digest_chunks(keys.rows):
            lines = np.empty((len(part), chars + 1), dtype=np.uint8)
            lines[:, :chars] = _item_text(part, width)
            lines[:, chars] = ord("\n")
            fh.write(lines.data)


def _read_output(path: Path, keys: "_Keys", me: str, width: int = _ITEM_BYTES) -> np.ndarray:
    """Row numbers of the intersection in key order, from the items the library wrote.

    Read ``_CHUNK`` lines at a time (so no copy of the whole result exists at ten million ids),
    unless the file is not in the fixed layout the library writes (e.g. quoted fields, CR LF):
    then it is parsed as CSV.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return np.empty(0, dtype=np.int64)
    return keys.match(_result_prefixes(path, me, width, keys.rows), me)


def _fixed_layout(path: Path, line: int) -> tuple[bool, int]:
    """Whether the result after its header is lines of exactly ``line`` bytes; and the header's length."""
    with open(path, "rb") as fh:
        header = fh.readline()
        if header.strip().replace(b'"', b"") != _KEY.encode():
            raise ProtocolError(f"the RR22 library wrote an unexpected result header")
        if (path.stat().st_size - len(header)) % line:
            return False, len(header)
        while buf := fh.read(line * _CHUNK):
            if buf[line - 1::line].count(b"\n") != len(buf) // line:
                return False, len(header)
    return True, len(header)


def _result_prefixes(path: Path, me: str, width: int, rows: int = _CHUNK) -> Iterator[np.ndarray]:
    """The result's items as ``(m_i, width)`` key prefixes, ``rows`` at a time."""
    chars = item_chars(width)
    line = chars + 1
    try:
        fixed, skip = _fixed_layout(path, line)
    except ProtocolError as e:
        raise ProtocolError(f"{me}: {e}") from None
    if fixed:
        with open(path, "rb") as fh:
            fh.seek(skip)
            while buf := fh.read(line * rows):
                yield _item_digests(np.frombuffer(buf, dtype=np.uint8).reshape(-1, line)[:, :chars], me, width)
        return
    import pyarrow as pa
    import pyarrow.csv as pacsv

    t = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types={_KEY: pa.string()},
                                                                   include_columns=[_KEY]))
    raw = t.column(_KEY).to_numpy(zero_copy_only=False)
    if any(v is None or len(v) != chars for v in raw):  # (a longer item would be cut silently below)
        raise ProtocolError(f"{me}: the RR22 library wrote a result that is not this party's keys")
    text = np.asarray(raw, dtype=f"S{chars}").view(np.uint8).reshape(-1, chars)
    for i in range(0, len(text), rows):
        yield _item_digests(text[i:i + rows], me, width)


def _tls_paths(folder: Path, tls: Any) -> dict[str, str] | None:
    if tls is None:
        return None
    paths = {"ca": folder / "ca.pem", "cert": folder / "me.pem", "key": folder / "me-key.pem"}
    paths["ca"].write_bytes(tls.ca)
    paths["cert"].write_bytes(tls.cert)
    fd = os.open(paths["key"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(tls.key)
    return {k: str(v) for k, v in paths.items()}


def _short(e: BaseException) -> str:
    """The library's message on one line, without its C++ stack trace and source locations."""
    text = " ".join(str(e).split()).split(" stacktrace:")[0]
    text = re.sub(r"^what:\s*", "", re.sub(r"\[[^\]]*\.(?:cc|h|cpp):\d+\]\s*", "", text)).strip()
    if "connect to mesh failed" in text or "key=connect_" in text:
        text += (" (the peer's PSI library never completed a TLS connection: is its certificate issued by the "
                 "job's CA, and is it running the same job?)")
    return text[:400] + ("..." if len(text) > 400 else "")


# ---------------------------------------------------------------------------------------------
# One pairwise run
# ---------------------------------------------------------------------------------------------
def _hello(channel: Channel, peer: str, tag: str, *, leader: bool, n: int, salt: str, casefold: bool,
           reveal: str, tls: bool, bucket: int = _MAX_BUCKET, item_bytes: int = _ITEM_BYTES) -> dict[str, Any]:
    from fedrisk.algorithms.vertical.psi_hello import check_hello  # (import here: the rest of the file is rr22's)

    me = channel.me
    mine = {"version": _VERSION, "role": "leader" if leader else "follower", "reveal": reveal,
            "casefold": bool(casefold), "salt_check": _salt_check(salt), "count": n, "tls": tls, "bucket": bucket,
            "item_bytes": item_bytes}
    channel.send(peer, f"{tag}.hello", mine, kind="public-parameter")
    theirs = check_hello(me, peer, channel.recv(peer, f"{tag}.hello"), mine, protocol="RR22",
                         peer_role="follower" if leader else "leader", same=("reveal", "casefold", "tls"),
                         counts=("count",))
    b = theirs.get("bucket")
    if not expect.whole(b, _MIN_BUCKET) or b > _MAX_BUCKET or b & (b - 1):
        raise ProtocolError(f"{me}: party {peer!r} sent an invalid RR22 bucket size {b!r:.40}")
    if theirs.get("item_bytes") not in (_ITEM_BYTES, _WIDE_ITEM_BYTES):
        raise ProtocolError(f"{me}: party {peer!r} sent an invalid RR22 item width {theirs.get('item_bytes')!r:.40}")
    return theirs


def _run_library(channel: Channel, peer: str, tag: str, keys: "_Keys", *, leader: bool, reveal: str,
                 salt: str, peer_n: int, tls: Any, stats: Rr22Stats, folder: Path, worker: LibraryProcess,
                 bucket: int = _MAX_BUCKET, width: int = _ITEM_BYTES,
                 memory_mb: float | None = None, written_width: int | None = None) -> np.ndarray | None:
    """The library's run with ``peer``, in ``worker`` (a child process): link, RR22, stop, read back.

    The link set-up has a deadline (``_LINK_DEADLINE_S``); when it passes, or the library fails to
    connect, at either party, both kill their library, close their relay and try once more in a
    fresh process over a fresh relay (the ``<tag>.linked`` exchange keeps them in step).
    """
    me = channel.me
    src, dst = folder / "in.csv", folder / "out.csv"
    if written_width != width:  # (not yet written, or at a width the peer does not use)
        t_write, c_write = time.perf_counter(), time.thread_time()
        _write_input(src, keys, width)
        stats.prepare_s += time.perf_counter() - t_write
        stats.prepare_cpu_s += time.thread_time() - c_write
    stats.mark("input")
    certs = _tls_paths(folder, tls)
    psi_cfg = {"bucket_size": bucket, "broadcast_result": reveal == "both", "input": str(src), "key": _KEY,
               "output": str(dst)}
    failures: list[str] = []
    current: LibraryProcess | None = worker
    for attempt in range(_LINK_ATTEMPTS):
        sfx = "" if attempt == 0 else f".r{attempt}"
        relay: ChannelLinkRelay | None = None
        try:  # the library process is killed however this attempt ends, its own set-up included
            if current is None:
                current = LibraryProcess(folder / f"lib{attempt}", _library_env(memory_mb))
            own_port = _free_port()
            relay = ChannelLinkRelay(channel, peer, f"{tag}.link{sfx}", own_port,
                                     connect_timeout=max(60.0, channel.recv_timeout))
            link = _link_job(channel, peer, tag, salt, sfx, own_port, relay.port, leader=leader, certs=certs,
                             n=keys.n, peer_n=peer_n)
            why = _link(channel, peer, f"{tag}{sfx}", current, link, psi_cfg, leader=leader, stats=stats)
            stats.attempts = attempt + 1
            if why is None:
                return _run_linked(channel, peer, tag, keys, current, relay, dst, width, leader=leader, reveal=reveal,
                                   peer_n=peer_n, stats=stats, bounded=memory_mb is not None)
            failures.append(why)
            if attempt + 1 < _LINK_ATTEMPTS:
                log.warning("%s: RR22 PSI with %r: the PSI library's link did not come up (%s); trying once more "
                            "in a fresh process", me, peer,
                            "the peer's did not" if why.startswith("peer:") else
                            f"not within {_LINK_DEADLINE_S:.0f} s" if why.startswith("deadline:") else _short(why[8:]))
        finally:
            if current is not None:
                current.kill()
                current = None
            if relay is not None:
                relay.close()
                stats.mark("relay_closed")
                stats.bytes_out += relay.bytes_out
                stats.bytes_in += relay.bytes_in
                stats.frames_out += relay.frames_out
    mine = [f for f in failures if not f.startswith("peer:")]
    if mine and all(m.startswith("library:") for m in mine):
        raise ProtocolError(f"{me}: RR22 PSI with {peer!r} failed in the PSI library: {_short(mine[-1][8:])}")
    if mine:
        raise TransportError(f"{me}: RR22 PSI with {peer!r}: the PSI library's link did not come up within "
                             f"{_LINK_DEADLINE_S:.0f} s, in {_LINK_ATTEMPTS} attempts; check that {peer!r} runs "
                             "the same job and that its machine is not overloaded")
    raise TransportError(f"{me}: RR22 PSI with {peer!r}: {peer!r}'s PSI library could not set up its link in "
                         f"{_LINK_ATTEMPTS} attempts (is its certificate issued by the job's CA, and is it running "
                         "the same job? its own log says more)")


def _link_job(channel: Channel, peer: str, tag: str, salt: str, sfx: str, own_port: int, relay_port: int, *,
              leader: bool, certs: dict[str, str] | None, n: int, peer_n: int) -> dict[str, Any]:
    """The library's link description: our library at ``own_port``, the peer's at the relay."""
    me = channel.me
    names = [me, peer] if leader else [peer, me]
    wait_ms = int(1000 * _link_wait(channel, n, peer_n))
    return {"id": _link_id(salt, tag + sfx),
            "parties": [[p, f"127.0.0.1:{own_port if p == me else relay_port}"] for p in names],
            "recv_timeout_ms": wait_ms, "http_timeout_ms": wait_ms, "connect_retry_times": _CONNECT_RETRIES,
            "connect_retry_interval_ms": _CONNECT_INTERVAL_MS, "ssl": certs}


def _link(channel: Channel, peer: str, tag: str, worker: LibraryProcess, link: dict[str, Any],
          psi_cfg: dict[str, Any], *, leader: bool, stats: Rr22Stats) -> str | None:
    """Bring the library's link up in step with ``peer``; None when both links are up, else why not.

    Why-not strings start with ``library:`` (the library refused, e.g. a foreign CA), ``deadline:``
    (ours did not come up in time, or the process died) or ``peer:`` (ours is up, the peer's not).
    """
    me = channel.me
    t_load = time.perf_counter()
    ev = _await(worker, "loaded", max(120.0, channel.recv_timeout))
    stats.load_wait_s += time.perf_counter() - t_load
    stats.mark("loaded")
    stats.library_base_rss_mb = ev.get("rss_mb")
    if ev.get("event") == "error":
        raise ConfigError(f"{me}: {ev.get('message')}")
    # both libraries start their link together, so the library's few connection attempts are enough
    t_ready = time.perf_counter()
    _barrier(channel, peer, f"{tag}.ready", channel.recv_timeout)
    stats.ready_s = time.perf_counter() - t_ready
    t0 = time.perf_counter()
    why: str | None = None
    try:
        worker.send({"rank": 0 if leader else 1, "link": link, "psi": psi_cfg})
        ev = worker.wait("linked", _LINK_DEADLINE_S)
        if ev.get("event") == "error":
            why = f"library:{ev.get('message')}"
    except WorkerTimeout:
        why = f"deadline:{_LINK_DEADLINE_S}"
    except WorkerGone as e:
        why = f"deadline:{e}"
    stats.link_s = time.perf_counter() - t0
    stats.mark("linked")
    channel.send(peer, f"{tag}.linked", why is None, kind="control")
    theirs = channel.recv(peer, f"{tag}.linked", timeout=channel.recv_timeout + _LINK_DEADLINE_S)
    if not isinstance(theirs, bool):
        raise ProtocolError(f"{me}: {tag}.linked from {peer!r} is malformed")
    if why is None and not theirs:
        why = "peer:"
    return why


def _await(worker: LibraryProcess, event: str, timeout: float) -> dict[str, Any]:
    try:
        return worker.wait(event, timeout)
    except (WorkerTimeout, WorkerGone) as e:
        raise TransportError(f"the PSI library process: {e}") from None


def _run_linked(channel: Channel, peer: str, tag: str, keys: "_Keys", worker: LibraryProcess,
                relay: ChannelLinkRelay, dst: Path, width: int, *, leader: bool, reveal: str, peer_n: int,
                stats: Rr22Stats, bounded: bool = False) -> np.ndarray | None:
    """Both links are up: run RR22, stop the link in step with the peer, map the result to rows."""
    me = channel.me
    n = keys.n
    t0 = time.perf_counter()
    worker.send("run")
    try:
        # the library's own receives time out after _link_wait; this is the party's backstop
        ev = worker.wait("done", 2 * _link_wait(channel, n, peer_n))
    except WorkerTimeout:
        raise TransportError(f"{me}: RR22 PSI with {peer!r}: the PSI library did not finish within "
                             f"{2 * _link_wait(channel, n, peer_n):.0f} s and was stopped") from None
    except WorkerGone as e:
        raise ProtocolError(f"{me}: RR22 PSI with {peer!r}: {e}") from None
    if ev.get("event") == "error":
        if relay.error is not None:
            raise TransportError(f"{me}: RR22 PSI with {peer!r} lost its link: {_short(relay.error)}")
        raise ProtocolError(f"{me}: RR22 PSI with {peer!r} failed in the PSI library: {_short(ev.get('message'))}")
    stats.seconds = time.perf_counter() - t0
    stats.mark("library")
    count = ev.get("count")
    learns = leader or reveal == "both"
    # The result file is complete once the library is done. Without a budget it is read back while
    # the link closes (two barriers with the peer, ~0.1-0.4 s); under one, after the library's
    # process has gone, so that its memory and the read-back's are never held at once.
    early = _Background(_read_output, dst, keys, me, width) if learns and not bounded else None
    t0 = time.perf_counter()
    wait = channel.recv_timeout + _SECONDS_PER_ID * (n + peer_n)
    # Both libraries are done computing; now close the link in step. stop_link waits for the
    # peer's stop message, and the relay must keep carrying bytes until the peer's stop_link has
    # returned too (else its last message is cut off and it waits forever).
    _barrier(channel, peer, f"{tag}.fin", wait)
    worker.send("stop")
    ev = _await(worker, "stopped", wait)
    if ev.get("event") == "error":
        raise ProtocolError(f"{me}: RR22 PSI with {peer!r}: the PSI library failed to stop its link: "
                            f"{_short(ev.get('message'))}")
    stats.library_rss_mb, stats.library_cpu_s = ev.get("rss_mb"), ev.get("cpu_s")
    _barrier(channel, peer, f"{tag}.closed", wait)
    worker.kill()  # both links are down: its memory goes before this party reads the result back
    stats.close_s = time.perf_counter() - t0
    stats.mark("closed")
    t0, c0 = time.perf_counter(), time.thread_time()
    if early is not None:
        rows = early.result()
        stats.output_s, stats.output_cpu_s = early.seconds, early.cpu_s
    else:
        rows = _read_output(dst, keys, me, width) if learns else None
        stats.output_s, stats.output_cpu_s = time.perf_counter() - t0, time.thread_time() - c0
    stats.mark("read_back")
    if rows is not None and count != len(rows):
        raise ProtocolError(f"{me}: the RR22 library reported {count} matches but wrote {len(rows)}")
    return rows


class _Background:
    """``fn(*args)`` in a thread of its own; :meth:`result` waits for it and re-raises its error."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self._out: Any = None
        self._err: BaseException | None = None
        self.seconds = self.cpu_s = 0.0

        def run() -> None:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                self._out = fn(*args)
            except BaseException as e:  # noqa: BLE001 - handed to the caller by result()
                self._err = e
            self.seconds, self.cpu_s = time.perf_counter() - t0, time.thread_time() - c0

        self._thread = threading.Thread(target=run, daemon=True, name="rr22-read-back")
        self._thread.start()

    def wait(self) -> None:
        """Wait for the call to end (its error, if any, stays for :meth:`result`)."""
        self._thread.join()

    def result(self) -> Any:
        self._thread.join()
        if self._err is not None:
            raise self._err
        return self._out


def _item_bytes(keys: "_Keys") -> int:
    """This party's item width: 96 bits, unless two of its keys share them (then the full 128)."""
    return _ITEM_BYTES if keys.prefix_unique(_ITEM_BYTES) else _WIDE_ITEM_BYTES


def _link_wait(channel: Channel, n: int, peer_n: int) -> float:
    """Seconds the library waits for one receive or request: generous, but finite (see ``_MIN_LINK_WAIT_S``)."""
    return max(_MIN_LINK_WAIT_S, channel.recv_timeout) + _SECONDS_PER_ID * (n + peer_n)


def _barrier(channel: Channel, peer: str, tag: str, timeout: float) -> None:
    channel.send(peer, tag, True, kind="control")
    if channel.recv(peer, tag, timeout=timeout) is not True:
        raise ProtocolError(f"{channel.me}: {tag} from {peer!r} is malformed")


class _Library:
    """A private temporary folder, and the library's process started in it.

    Started before this party hashes its ids, so that the process's start and the loading of its
    native code (about 0.3 s, 0.1 CPU-s) run beside the hashing instead of after it.
    """

    def __init__(self, memory_mb: float | None = None, spill_dir: Any = None) -> None:
        if spill_dir is not None:
            Path(spill_dir).mkdir(parents=True, exist_ok=True)
        self.folder = tempfile.TemporaryDirectory(prefix="fedrisk-rr22-", dir=spill_dir)
        self.spill_dir = spill_dir
        self.memory_mb = memory_mb
        try:
            self.worker = LibraryProcess(Path(self.folder.name) / "lib0", _library_env(memory_mb))
        except BaseException:
            self.folder.cleanup()
            raise

    def close(self) -> None:
        """Kill the process (if still running) and remove the folder; safe to call twice."""
        self.worker.kill()
        self.folder.cleanup()


#: where spu 0.9.5's libpsi writes its timing trace of each run (``/tmp/psi_{}.trace`` in the binary)
_LIBRARY_TRACES = "/tmp/psi_*.trace"


def _exchange(channel: Channel, peer: str, keys: "_Keys", *, leader: bool, salt: str, casefold: bool,
              reveal: str, tag: str, tls: Any, stats: Rr22Stats, memory_mb: float | None = None,
              lib: _Library | None = None, spill_dir: Any = None) -> PsiResult:
    me = channel.me
    # the library writes a timing trace to /tmp whatever TMPDIR says (the path is compiled in); ours go
    traces = set(glob.glob(_LIBRARY_TRACES))
    lib = lib if lib is not None else _Library(memory_mb, spill_dir)
    with lib.folder as tmp:
        folder = Path(tmp)
        worker = lib.worker
        try:
            t0 = time.perf_counter()
            mine, own_width = bucket_size(memory_mb), _item_bytes(keys)
            # the library's input is written at this party's item width while the hello waits for the
            # peer's (written again in the rare case that the peer needs the full 128 bits)
            written = _Background(_write_input, folder / "in.csv", keys, own_width)
            try:
                theirs = _hello(channel, peer, tag, leader=leader, n=keys.n, salt=salt, casefold=casefold,
                                reveal=reveal, tls=tls is not None, bucket=mine, item_bytes=own_width)
            finally:
                written.wait()
            written.result()
            stats.prepare_s += written.seconds
            stats.prepare_cpu_s += written.cpu_s
            stats.hello_s = time.perf_counter() - t0
            stats.mark("hello")
            peer_n = theirs["count"]
            # the library's configs must match at both ends: the smaller of the two parties' buckets
            rows = _run_library(channel, peer, tag, keys, leader=leader, reveal=reveal, salt=salt, peer_n=peer_n,
                                tls=tls, stats=stats, folder=folder, worker=worker,
                                bucket=min(mine, theirs["bucket"]),
                                width=max(own_width, theirs["item_bytes"]), memory_mb=memory_mb,
                                written_width=own_width)
        finally:
            worker.kill()
            for f in set(glob.glob(_LIBRARY_TRACES)) - traces:
                try:
                    os.remove(f)
                except OSError:
                    pass
    stats.mark("cleaned")
    if rows is None:
        return PsiResult(None, None, {peer: peer_n})
    t0 = time.perf_counter()
    result = PsiResult(rows, int(len(rows)), {peer: peer_n})
    if reveal == "both":
        # rows are in key order, so this is the SHA-256 of the sorted 16-byte keys of the intersection
        digest = keys.sorted_digest(rows)
        channel.send(peer, f"{tag}.done", {"size": result.size, "digest": digest}, kind="control")
        other = channel.recv(peer, f"{tag}.done")
        if not isinstance(other, dict) or other.get("size") != result.size or other.get("digest") != digest:
            raise ProtocolError(f"{me}: {peer!r} ended RR22 PSI with a different intersection; the parties' "
                                "inputs or versions disagree")
    stats.finish_s = time.perf_counter() - t0
    stats.mark("done")
    return result


def _check_args(channel: Channel, tag: str, reveal: str, salt: Any) -> None:
    check_psi_args(channel, tag, reveal, salt)
    spu_binding.load()  # the one-line error for a missing extra, before any message is sent


def _default_tls(channel: Channel, tls: Any) -> Any:
    return getattr(channel, "tls", None) if tls is None else tls


def rr22_align(channel: Channel, peer: str, ids: Sequence[Any], *, leader: bool, salt: str, casefold: bool = False,
               reveal: str = "both", tag: str = DEFAULT_TAG, tls: Any = None,
               stats: Rr22Stats | None = None, memory_mb: float | None = None, spill_dir: Any = None) -> PsiResult:
    """Align this party's rows with ``peer``'s by RR22; the drop-in twin of ``psi_align``.

    Parameters
    ----------
    channel, peer, ids, leader, salt, casefold, reveal
        As in :func:`fedrisk.algorithms.vertical.psi_protocol.psi_align`.
        (``ids`` may also be :class:`~fedrisk.algorithms.vertical.psi_stream.IdChunks`, read a
        chunk at a time: the keys then always spill to disk, as the ECDH path streams).
    tag : str, default "psi.rr22"
        Tag namespace (must start with ``"psi."``).
    tls : TlsFiles, optional
        The job's CA, certificate and key for the library's own TLS; default the channel's
        (``GrpcChannel.tls``). In-memory channels have none: pass them to test TLS in-process.
    stats : Rr22Stats, optional
        Filled with the relay's byte counts and the library's seconds.
    memory_mb : float, optional
        ``[psi] memory_mb``, per party: the library's hash buckets are sized to half of it
        (:func:`bucket_size`; both parties use the smaller of their two sizes) and its process runs
        with two malloc arenas; this party's keys spill to disk (:mod:`.rr22_spill`) when they
        would take more than the other half. What stays outside the bound (the library's fixed
        working memory and about 50 bytes per id it keeps, the relay's buffers, the caller's ids)
        is measured in docs/scale.md and asserted in ``tests/algorithms/vertical/test_rr22_spill.py``.
        Default: keys in memory, 2^20-item buckets.
    spill_dir : path, optional
        Where the library's private folder (its input, buckets and result) and spilled keys live:
        the party's run folder (``RUN/tmp``, as the ECDH path), so that keys never go to a shared or
        memory-backed system temporary folder and leftovers of a killed job are where operators look.
        Default: the system's temporary folder.

    Returns
    -------
    PsiResult
        ``indices`` in the canonical key order (see :mod:`~fedrisk.algorithms.vertical.row_order`).

    Raises
    ------
    ConfigError
        The ``psi`` extra is missing, or the parties' settings differ.
    DataError
        Duplicated or missing ids, or an empty intersection.
    ProtocolError, TransportError
        The library failed (e.g. the peer's certificate is from a foreign CA) or the link broke.
    """
    _check_args(channel, tag, reveal, salt)
    stats = stats if stats is not None else Rr22Stats()
    t0, c0 = time.perf_counter(), time.thread_time()
    stats.t0 = t0
    lib = _Library(memory_mb, spill_dir)  # its process loads the library while this party hashes its ids
    keys: _Keys | None = None
    try:
        keys = _keys(channel.me, ids, salt, casefold, memory_mb, spill_dir)
        stats.prepare_s, stats.prepare_cpu_s = time.perf_counter() - t0, time.thread_time() - c0
        stats.mark("keys")
        res = _exchange(channel, peer, keys, leader=leader, salt=salt, casefold=casefold, reveal=reveal, tag=tag,
                        tls=_default_tls(channel, tls), stats=stats, memory_mb=memory_mb, lib=lib,
                        spill_dir=spill_dir)
    finally:
        lib.close()
        if keys is not None:
            keys.close()
    if res.size == 0:
        raise _empty_error(channel.me, repr(peer))
    return res


def rr22_align_many(channel: Channel, leader: str, followers: Sequence[str], ids: Sequence[Any], *, salt: str,
                    casefold: bool = False, reveal: str = "both", tag: str = DEFAULT_TAG, tls: Any = None,
                    stats: dict[str, Rr22Stats] | None = None, memory_mb: float | None = None,
                    spill_dir: Any = None) -> PsiResult:
    """Star of pairwise RR22 runs around ``leader``; the drop-in twin of ``align_many``.

    Returns, at every party, ``indices`` of its rows in the intersection of all parties' ids in
    the canonical key order (``None`` at followers when ``reveal="leader"``). ``stats`` (by
    peer) is filled with each pairwise run's relay counts; ``memory_mb`` and ``spill_dir`` as in :func:`rr22_align`.
    """
    _check_args(channel, tag, reveal, salt)
    me = channel.me
    followers = list(followers)
    if not followers or len(set(followers)) != len(followers) or leader in followers:
        raise ConfigError(f"rr22_align_many needs distinct followers other than the leader {leader!r}, got {followers!r}")
    tls = _default_tls(channel, tls)
    lib = _Library(memory_mb, spill_dir)  # the first pairwise run's library loads while this party hashes its ids
    try:
        return _align_many(channel, leader, followers, ids, lib, salt=salt, casefold=casefold, reveal=reveal,
                           tag=tag, tls=tls, stats=stats, memory_mb=memory_mb, spill_dir=spill_dir)
    finally:
        lib.close()


def _align_many(channel: Channel, leader: str, followers: list[str], ids: Sequence[Any], lib: _Library, *,
                salt: str, casefold: bool, reveal: str, tag: str, tls: Any, stats: dict[str, Rr22Stats] | None,
                memory_mb: float | None, spill_dir: Any = None) -> PsiResult:
    """:func:`rr22_align_many` once its arguments are checked and ``lib`` (the first run's library) started."""
    me = channel.me
    t0, c0 = time.perf_counter(), time.thread_time()
    keys = _keys(me, ids, salt, casefold, memory_mb, spill_dir)
    try:
        return _align_many_keys(channel, leader, followers, keys, lib, t0=t0, c0=c0, salt=salt, casefold=casefold,
                                reveal=reveal, tag=tag, tls=tls, stats=stats, memory_mb=memory_mb, spill_dir=spill_dir)
    finally:
        keys.close()


def _align_many_keys(channel: Channel, leader: str, followers: list[str], keys: _Keys, lib: _Library, *, t0: float,
                     c0: float, salt: str, casefold: bool, reveal: str, tag: str, tls: Any,
                     stats: dict[str, Rr22Stats] | None, memory_mb: float | None, spill_dir: Any = None) -> PsiResult:
    me = channel.me
    keys_s, keys_cpu_s = time.perf_counter() - t0, time.thread_time() - c0
    stats = stats if stats is not None else {}
    first = stats.setdefault(leader if me != leader else list(followers)[0], Rr22Stats())
    first.prepare_s, first.prepare_cpu_s = keys_s, keys_cpu_s  # the first pairwise run adds its input file
    first.t0 = t0
    first.mark("keys")
    if me != leader:
        if me not in followers:
            raise ConfigError(f"party {me!r} is neither the leader {leader!r} nor a follower {followers!r}")
        st = stats.setdefault(leader, Rr22Stats())
        pair = _exchange(channel, leader, keys, leader=False, salt=salt, casefold=casefold, reveal=reveal,
                         tag=f"{tag}.{me}", tls=tls, stats=st, memory_mb=memory_mb, lib=lib)
        if reveal == "leader":
            return pair
        assert pair.indices is not None
        if len(followers) == 1:  # every match is common: no keep message
            if len(pair.indices) == 0:
                raise _empty_error(me, "all parties")
            return pair
        wait = channel.recv_timeout + _SECONDS_PER_ID * len(followers) * (keys.n + pair.peer_sizes[leader])
        keep = channel.recv(leader, f"{tag}.keep", timeout=wait)
        assert pair.indices is not None
        m = len(pair.indices)
        check_follower_keep(me, leader, tag, keep, m)
        idx = pair.indices[np.sort(keep)]
        return PsiResult(idx, int(len(idx)), pair.peer_sizes)

    # One pair at a time: each run already uses every core, and two of the library's links in
    # one process at once were seen to misroute their connection handshake under load.
    pairs = []
    for i, f in enumerate(followers):
        pairs.append(_exchange(channel, f, keys, leader=True, salt=salt, casefold=casefold, reveal=reveal,
                               tag=f"{tag}.{f}", tls=tls, stats=stats.setdefault(f, Rr22Stats()),
                               memory_mb=memory_mb, lib=lib if i == 0 else None, spill_dir=spill_dir))
    # every pairwise result is in key order, so "position in the pair" is the same at both ends
    member = np.ones(keys.n, dtype=bool)
    for res in pairs:
        mask = np.zeros(keys.n, dtype=bool)
        mask[res.indices] = True
        member &= mask
    common_keys_order = pairs[0].indices[member[pairs[0].indices]]
    if reveal == "both" and len(followers) > 1:
        for f, res in zip(followers, pairs):
            channel.send(f, f"{tag}.keep", np.flatnonzero(member[res.indices]).astype(np.int64),
                         kind="plaintext-by-design")
    if len(common_keys_order) == 0:
        raise _empty_error(me, "all followers")
    sizes = {k: v for res in pairs for k, v in res.peer_sizes.items()}
    return PsiResult(common_keys_order.astype(np.int64), int(len(common_keys_order)), sizes)

