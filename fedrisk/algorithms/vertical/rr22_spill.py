"""One party's RR22 order keys kept on disk, for a run under a memory budget (``[psi] memory_mb``).

:class:`~fedrisk.algorithms.vertical.rr22_psi._OwnKeys` holds 48 bytes per id in memory for the
whole run (the 16-byte key, the sort order and the sorted halves): 480 MB at ten million ids.
:class:`SpilledKeys` does the same job with a working set that follows the budget instead of the
set size:

1. the ids are normalised and hashed a chunk at a time; each chunk's records (16-byte key, 4-byte
   row number) are appended to ``2^bits`` partition files by the keys' leading bits;
2. each partition is then sorted by key and checked on its own (two equal keys, or two keys
   sharing their first 96 bits, always fall in the same partition), and written back sorted;
3. the library's input is written partition by partition (so in key order: the library sees
   only its own input, and the keys are salted hashes, so the order tells nothing);
4. the library's result (key prefixes, in its own order) is split into the same partitions,
   and each partition's matches are looked up in its sorted records: partition after partition,
   that gives the matching rows in key order (the canonical order) and the SHA-256 of the
   matching keys for the ``done`` message, without the whole set in memory.

What stays in memory: one partition's records and its sort (about 4x 20 bytes per record of the
largest partition, sized to a quarter of the party's half of the budget), one chunk of ids while
hashing, and the result itself (8 bytes per matching row, which the caller gets back). The files
hold keys (salted hashes) and row numbers only, never an id, in a private folder (mode 0700)
removed by :meth:`SpilledKeys.close`, also on error (:class:`~fedrisk.algorithms.vertical.spill_folder.SpillFolder`).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from fedrisk.algorithms.vertical.spill_folder import SpillFolder
from fedrisk.errors import DataError, ProtocolError

__all__ = ["SpilledKeys", "RECORD_BYTES", "duplicate_ids_error", "hash_chunks"]

#: One record on disk: the 16-byte key, then the row number (little-endian uint32; PSI refuses
#: more than 2^31 - 1 ids).
_RECORD = np.dtype([("key", "S16"), ("row", "<u4")])
RECORD_BYTES = _RECORD.itemsize
#: Bytes of memory per record of the partition in hand while it is sorted and looked up: the
#: records, the sort's index and copies of them.
_WORK_BYTES_PER_RECORD = 4 * RECORD_BYTES + 16
_MAX_BITS = 12


def _partition_of(keys: np.ndarray, bits: int) -> np.ndarray:
    """Partition numbers of ``(n, >=2)`` uint8 keys or key prefixes: their leading ``bits`` bits."""
    if bits == 0:
        return np.zeros(len(keys), dtype=np.int64)
    lead = (keys[:, 0].astype(np.int64) << 8) | keys[:, 1].astype(np.int64)
    return lead >> (16 - bits)


def duplicate_ids_error(me: str, count: str, rows: Sequence[int], casefold: bool) -> DataError:
    """The one-line error for ids that occur more than once, naming two of the rows."""
    a, b = sorted(int(r) for r in rows)
    hint = " (case-folding is on, so ids differing only in case count as equal)" if casefold else ""
    return DataError(f"party {me!r}: {count} id(s) occur more than once after normalisation{hint}; e.g. rows {a} "
                     f"and {b}. PSI needs one row per customer: deduplicate the id column before alignment")


def _key_bytes(rec: np.ndarray) -> np.ndarray:
    """The keys of records as ``(n, 16)`` uint8 (a copy: the field is strided)."""
    return np.ascontiguousarray(rec["key"]).view(np.uint8).reshape(-1, 16)


def _append_by_partition(files: Callable[[int], Path], part: np.ndarray, data: np.ndarray) -> None:
    """Append each row of ``data`` to the file of its partition (one write per partition present)."""
    order = np.argsort(part, kind="stable")
    part_sorted = part[order]
    cut = np.flatnonzero(np.diff(part_sorted)) + 1
    for lo, hi in zip(np.r_[0, cut], np.r_[cut, len(part_sorted)]):
        with open(files(int(part_sorted[lo])), "ab") as fh:
            fh.write(data[order[lo:hi]].tobytes())


class SpilledKeys(SpillFolder):
    """This party's order keys in sorted partition files (see the module docstring).

    Parameters
    ----------
    me : str
        This party's name (for error messages).
    chunks : iterable of ``(n_i, 16)`` uint8 arrays
        The keys of consecutive rows, a chunk at a time (rows are numbered in that order).
    n_hint : int
        Rows expected (sizes the partitions).
    budget_bytes : float
        Memory this object may use at a time (the party's share of ``memory_mb``).
    casefold : bool
        Only for the duplicate message.
    rows : int
        Keys handed out (:meth:`digest_chunks`) or result lines read at a time by the caller.
    """

    def __init__(self, me: str, chunks: Iterable[np.ndarray], n_hint: int, budget_bytes: float,
                 casefold: bool = False, rows: int = 1 << 16, spill_dir: Any = None) -> None:
        self.me = me
        self.rows = rows  # items written to the library or read back from it at a time
        per_part = max(1024, int(budget_bytes // _WORK_BYTES_PER_RECORD))
        self.bits = 0
        while (n_hint >> self.bits) > per_part and self.bits < _MAX_BITS:
            self.bits += 1
        super().__init__("fedrisk-rr22-keys-", spill_dir)
        self._digest: str | None = None
        with self.removed_on_error():
            self.n = 0
            for d in chunks:
                d = np.ascontiguousarray(d, dtype=np.uint8).reshape(-1, 16)
                rec = np.empty(len(d), dtype=_RECORD)
                rec["key"] = d.view("S16").ravel()
                rec["row"] = np.arange(self.n, self.n + len(d), dtype=np.uint32)
                _append_by_partition(self._file, _partition_of(d, self.bits), rec)
                self.n += len(d)
            self.counts = np.zeros(1 << self.bits, dtype=np.int64)
            self.unique96 = True
            for p in range(1 << self.bits):
                self._sort_and_check(p, casefold)

    def _file(self, p: int, kind: str = "k") -> Path:
        return self.folder / f"{kind}{p:04x}.bin"

    def _load(self, p: int) -> np.ndarray:
        f = self._file(p)
        return np.fromfile(f, dtype=_RECORD) if f.exists() else np.empty(0, dtype=_RECORD)

    def _sort_and_check(self, p: int, casefold: bool) -> None:
        rec = self._load(p)
        if len(rec) == 0:
            return
        rec = rec[np.argsort(rec["key"], kind="stable")]
        k = _key_bytes(rec)
        same = np.all(k[1:] == k[:-1], axis=1)
        if np.any(same):
            i = int(np.flatnonzero(same)[0])
            # (the count is this partition's: the first one with a duplicate stops the run)
            raise duplicate_ids_error(self.me, f"at least {int(same.sum())}", rec["row"][[i, i + 1]], casefold)
        if self.unique96:
            self.unique96 = not bool(np.all(k[1:, :12] == k[:-1, :12], axis=1).any())
        rec.tofile(self._file(p))
        self.counts[p] = len(rec)

    # -- the interface rr22_psi uses (the same as _OwnKeys') ---------------------------------------
    def prefix_unique(self, width: int) -> bool:
        """True when no two keys share their first ``width`` bytes (``width`` 12 or 16)."""
        if width >= 16:
            return True
        if width != 12:
            raise ValueError("spilled keys know their uniqueness at 12 and 16 bytes only")
        return self.unique96

    def digest_chunks(self, rows: int = 1 << 16) -> Iterator[np.ndarray]:
        """The keys as ``(m, 16)`` uint8 chunks, in key order."""
        for p in range(1 << self.bits):
            rec = self._load(p)
            for i in range(0, len(rec), rows):
                yield _key_bytes(rec[i:i + rows])

    def match(self, prefix_chunks: Iterable[np.ndarray], me: str | None = None) -> np.ndarray:
        """Rows, in key order, of the keys whose first bytes are the given prefixes.

        ``prefix_chunks``: ``(m_i, width)`` uint8 arrays (the library's result, in any order).
        Each prefix must be one of this party's keys and come at most once (else ProtocolError:
        the library returned something this party did not give it). Also keeps the SHA-256 of
        the matching keys in key order (:meth:`sorted_digest`).
        """
        width = None
        for f in self.folder.glob("r*.bin"):  # (left by an earlier call that failed)
            f.unlink()
        for chunk in prefix_chunks:
            if len(chunk) == 0:
                continue
            width = chunk.shape[1]
            _append_by_partition(lambda p: self._file(p, "r"), _partition_of(chunk, self.bits),
                                 np.ascontiguousarray(chunk))
        out: list[np.ndarray] = []
        sha = hashlib.sha256()
        for p in range(1 << self.bits):
            f = self._file(p, "r")
            if width is None or not f.exists():
                continue
            pre = np.fromfile(f, dtype=np.uint8).reshape(-1, width)
            f.unlink()
            rec = self._load(p)
            full = np.zeros((len(pre), 16), dtype=np.uint8)
            full[:, :width] = pre
            full_s = full.view("S16").ravel()
            # the first key at or after the zero-padded prefix is the one that starts with it
            pos = np.minimum(np.searchsorted(rec["key"], full_s), max(len(rec) - 1, 0))
            if len(rec) == 0 or not np.array_equal(_key_bytes(rec[pos])[:, :width], pre):
                raise ProtocolError(f"{self.me}: the RR22 library returned a key this party does not hold")
            pos = np.sort(pos)
            if np.any(pos[1:] == pos[:-1]):
                raise ProtocolError(f"{self.me}: the RR22 library returned one of this party's keys twice")
            sha.update(_key_bytes(rec[pos]).tobytes())
            out.append(rec["row"][pos].astype(np.int64))
        self._digest = sha.hexdigest()
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)

    def sorted_digest(self, rows: np.ndarray) -> str:
        """SHA-256 of the matching keys in key order, as computed by the last :meth:`match`."""
        assert self._digest is not None, "match() first"
        return self._digest

def file_names(keys: SpilledKeys) -> list[str]:
    """Names of the files the keys are spilled to (tests: no id is in them)."""
    return sorted(os.listdir(keys.folder))


def hash_chunks(ids: Any, hasher: Callable[[Sequence[Any]], np.ndarray], rows: int) -> Iterator[np.ndarray]:
    """``hasher`` applied to ``ids`` ``rows`` at a time; ``ids`` is a sequence or an iterable of chunks."""
    if isinstance(ids, (np.ndarray, list, tuple)) or hasattr(ids, "to_numpy"):
        seq = ids.to_numpy() if hasattr(ids, "to_numpy") else ids
        for i in range(0, len(seq), rows):
            yield hasher(seq[i:i + rows])
    else:
        for chunk in ids:
            c = chunk.to_numpy() if hasattr(chunk, "to_numpy") else chunk
            for i in range(0, len(c), rows):
                yield hasher(c[i:i + rows])
