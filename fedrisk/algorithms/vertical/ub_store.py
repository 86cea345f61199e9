"""What unbalanced PSI keeps between jobs: the bureau's OPRF key and encoded set, the lender's cache.

Everything lives in a party's ``psi_store`` directory (``[parties.NAME] psi_store`` in the job
spec, a local path like ``data``; folders 0700, files 0600):

Key holder (the bureau, the big-set party)::

    key.json                   the long-lived OPRF key: {"format", "version", "epoch", "created",
                               "key" (hex), "fingerprint"}; created 0600 and refused when other
                               users may read it
    epoch-<E>/encoded.bin      F(k, x) for every id of the bureau's id file, 12 bytes each, sorted
                               (the file the lender receives)
    epoch-<E>/index.bin        bureau-only: per position of encoded.bin, a keyed 16-byte digest of
                               the id (``SHA-256(INDEX_DOMAIN || k || norm(id))``), so a job can map
                               matched positions back to rows of the bureau's table without
                               re-evaluating the OPRF

Client (the lender)::

    cache/<bureau>/epoch-<E>-<fingerprint>.bin   a verified copy of the bureau's encoded.bin

Rotation (:func:`rotate_key`) writes a new key with epoch ``E + 1`` and deletes the old key and
the old epoch's files; the bureau then re-encodes (:func:`encode_id_file`) and each lender's next
job fetches the new set (or is refused, naming the command, when fetching is turned off).

File format of ``encoded.bin`` / ``index.bin`` / the cache (the codec of :func:`write_set` and
:func:`read_set`)::

    MAGIC (8 bytes) || header length (u32 BE) || header (UTF-8 JSON, sorted keys) || count * width bytes

with header fields ``format``, ``epoch``, ``fingerprint``, ``count``, ``width``, ``digest``
(SHA-256 of the values) and, in ``index.bin``, ``ids_sum`` (an order-independent sum of the
digests, which a job compares with the bureau's current id column) and ``encoded_digest`` (the
``digest`` of the ``encoded.bin`` written with it).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from fedrisk.crypto import idhash, oprf, psi
from fedrisk.errors import ConfigError, CryptoError, DataError, ProtocolError
from fedrisk.transport import expect

__all__ = ["OprfKey", "SetFile", "create_key", "rotate_key", "load_key", "write_set", "read_set", "read_header",
           "encode_id_file", "encode_ids", "index_digests", "ids_sum", "context", "cache_path", "find_cache",
           "epoch_dir", "well_formed", "MAGIC", "INDEX_BYTES"]

MAGIC = b"FRUBPSI\x01"
KEY_FORMAT = "fedrisk.ubpsi.key"
INDEX_DOMAIN = b"fedrisk.ubpsi.index.v1\x00"
#: bytes of the bureau's private per-position id digest
INDEX_BYTES = 16
_MAX_HEADER = 1 << 16


@dataclass(frozen=True)
class OprfKey:
    """The bureau's long-lived key of one epoch."""

    key: bytes
    epoch: int
    created: str
    fingerprint: str

    def __repr__(self) -> str:  # never print the key
        return f"OprfKey(epoch={self.epoch}, fingerprint={self.fingerprint!r}, created={self.created!r})"


@dataclass(frozen=True)
class SetFile:
    """A decoded set file: its header and ``(count, width) uint8`` values."""

    header: dict[str, Any]
    values: np.ndarray


def context(epoch: int, fingerprint: str) -> str:
    """The OPRF's hash-to-group context of one key epoch (both parties derive it from the hellos)."""
    return f"fedrisk.ubpsi:epoch={epoch}:key={fingerprint}"


# ---------------------------------------------------------------------------------------------
# The key file
# ---------------------------------------------------------------------------------------------
def _key_path(store: Path) -> Path:
    return Path(store) / "key.json"


def epoch_dir(store: Path, epoch: int) -> Path:
    return Path(store) / f"epoch-{epoch}"


#: what a key fingerprint and a set digest look like (:func:`oprf.key_fingerprint`, SHA-256 hex)
_FINGERPRINT = re.compile(r"[0-9a-f]{16}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_EPOCH_DIR = re.compile(r"epoch-([1-9][0-9]{0,17})")


def well_formed(epoch: Any, fingerprint: Any, digest: Any) -> bool:
    """Whether a (possibly received) epoch, key fingerprint and set digest have their only legal forms.

    The lender builds its cache file's name from the bureau's epoch and fingerprint, so anything
    else (``../``, ``/``, a huge number) must never reach a path.
    """
    return (expect.whole(epoch, 1) and epoch < 10**18
            and isinstance(fingerprint, str) and _FINGERPRINT.fullmatch(fingerprint) is not None
            and isinstance(digest, str) and _DIGEST.fullmatch(digest) is not None)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, created 0600 (never readable by others, even briefly)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _new_key(store: Path, epoch: int) -> OprfKey:
    key = oprf.new_key()
    k = OprfKey(key, epoch, _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), oprf.key_fingerprint(key))
    doc = {"format": KEY_FORMAT, "version": 1, "epoch": epoch, "created": k.created, "key": key.hex(),
           "fingerprint": k.fingerprint}
    _write_private(_key_path(store), json.dumps(doc, sort_keys=True).encode())
    return k


def create_key(store: Path, party: str) -> OprfKey:
    """Create the first key (epoch 1) in ``store``; refuses to overwrite an existing one."""
    if _key_path(store).exists():
        raise ConfigError(f"party {party!r}: {_key_path(store)} already exists; rotate it with "
                          f"`fedrisk psi key SPEC --party {party} --rotate` (then re-encode)")
    return _new_key(Path(store), 1)


def rotate_key(store: Path, party: str) -> OprfKey:
    """Replace the key by a fresh one of the next epoch and delete the old epoch's encoded files."""
    old = load_key(store, party)
    new = _new_key(Path(store), old.epoch + 1)
    # only the folders and files :func:`encode_ids` writes: the store may be a folder with other things in it
    for d in Path(store).iterdir():
        m = _EPOCH_DIR.fullmatch(d.name)
        if m is None or int(m.group(1)) >= new.epoch or not d.is_dir() or d.is_symlink():
            continue
        for f in d.iterdir():
            if f.name in ("encoded.bin", "index.bin") or re.fullmatch(r"(encoded|index)\.bin\.tmp\d+", f.name):
                f.unlink()
        try:
            d.rmdir()
        except OSError:  # something else lives there: keep it, the old encoding is gone
            pass
    return new


def load_key(store: Path, party: str) -> OprfKey:
    """Read and check the key file; every problem is one :class:`ConfigError` naming the file and the fix."""
    path = _key_path(store)
    fix = f"create one with `fedrisk psi key SPEC --party {party}`"
    if not path.is_file():
        raise ConfigError(f"party {party!r}: no OPRF key file at {path}; {fix}")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"party {party!r}: the OPRF key file {path} may be read by other users (mode {mode:o}); "
                          f"run `chmod 600 {path}`")
    bad = (f"party {party!r}: {path} is not a valid fedrisk OPRF key file ({{}}); restore it from backup, or move "
           f"it aside and create a new key with `fedrisk psi key SPEC --party {party}`, then re-encode")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        raise ConfigError(bad.format("not JSON")) from None
    if not isinstance(doc, dict) or doc.get("format") != KEY_FORMAT or doc.get("version") != 1:
        raise ConfigError(bad.format("wrong format"))
    epoch = doc.get("epoch")
    if not expect.whole(epoch, 1):
        raise ConfigError(bad.format("bad epoch"))
    try:
        key = oprf.check_key(bytes.fromhex(str(doc.get("key", ""))))
    except (ValueError, CryptoError):
        raise ConfigError(bad.format("bad key")) from None
    fp = oprf.key_fingerprint(key)
    if doc.get("fingerprint") != fp:
        raise ConfigError(bad.format("the fingerprint does not match the key"))
    return OprfKey(key, epoch, str(doc.get("created", "")), fp)


# ---------------------------------------------------------------------------------------------
# The set-file codec
# ---------------------------------------------------------------------------------------------
def encode_set(header: dict[str, Any], values: np.ndarray) -> bytes:
    """Serialise a set file (see the module docstring); ``digest`` and ``count`` are filled in."""
    v = np.ascontiguousarray(values, dtype=np.uint8)
    if v.ndim != 2:
        raise ValueError("values must be a 2-D uint8 array")
    h = dict(header, count=int(v.shape[0]), width=int(v.shape[1]), digest=hashlib.sha256(v.tobytes()).hexdigest())
    hb = json.dumps(h, sort_keys=True).encode("utf-8")
    return MAGIC + struct.pack(">I", len(hb)) + hb + v.tobytes()


def decode_header(blob: bytes) -> tuple[dict[str, Any], int]:
    """The header of a set file and where its values start; ``ValueError`` on anything malformed."""
    if len(blob) < 12 or blob[:8] != MAGIC:
        raise ValueError("not a fedrisk unbalanced-PSI set file")
    (n,) = struct.unpack(">I", blob[8:12])
    if n > _MAX_HEADER or len(blob) < 12 + n:
        raise ValueError("truncated header")
    try:
        h = json.loads(blob[12:12 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("header is not JSON") from None
    if not isinstance(h, dict):
        raise ValueError("header is not a JSON object")
    for k in ("count", "width", "epoch"):
        if not expect.whole(h.get(k), 0):
            raise ValueError(f"header field {k!r} is missing or invalid")
    if h["width"] < 1 or not isinstance(h.get("digest"), str) or not isinstance(h.get("fingerprint"), str):
        raise ValueError("header fields width/digest/fingerprint are missing or invalid")
    return h, 12 + n


def decode_set(blob: bytes) -> SetFile:
    """Parse and verify a set file (length and SHA-256 of the values); ``ValueError`` when corrupt."""
    h, start = decode_header(blob)
    want = h["count"] * h["width"]
    if len(blob) - start != want:
        raise ValueError(f"holds {len(blob) - start} value bytes, the header says {want}")
    body = blob[start:]
    if hashlib.sha256(body).hexdigest() != h["digest"]:
        raise ValueError("the values do not match the header's digest")
    return SetFile(h, np.frombuffer(bytearray(body), dtype=np.uint8).reshape(h["count"], h["width"]))


def write_set(path: Path, header: dict[str, Any], values: np.ndarray) -> dict[str, Any]:
    """Write a set file privately and atomically; returns its header."""
    blob = encode_set(header, values)
    _write_private(Path(path), blob)
    return decode_header(blob)[0]


def read_header(path: Path) -> dict[str, Any] | None:
    """The header of a set file, or None when the file is missing or unreadable (not verified)."""
    try:
        with open(path, "rb") as f:  # the header's own bytes only: a cache holds 12 bytes per bureau id
            head = f.read(12)
            if len(head) == 12 and head[:8] == MAGIC:
                head += f.read(min(struct.unpack(">I", head[8:12])[0], _MAX_HEADER + 1))
        return decode_header(head)[0]
    except (OSError, ValueError):
        return None


def read_set(path: Path, what: str, fix: str) -> SetFile:
    """Read and verify a set file; a missing or corrupt file is one :class:`DataError` with ``fix``."""
    try:
        blob = Path(path).read_bytes()
    except OSError:
        raise DataError(f"{what} {path} is missing or unreadable; {fix}") from None
    try:
        return decode_set(blob)
    except ValueError as e:
        raise DataError(f"{what} {path} is corrupt ({e}); {fix}") from None


# ---------------------------------------------------------------------------------------------
# Encoding the bureau's ids
# ---------------------------------------------------------------------------------------------
def index_digests(ids: Sequence[Any], key: OprfKey) -> np.ndarray:
    """The bureau's private ``(n, 16)`` digests of raw ids, keyed by its OPRF key (normalised as PSI does)."""
    return idhash.prefixed_digests(ids, INDEX_DOMAIN + key.key, INDEX_BYTES)


def ids_sum(digests: np.ndarray) -> str:
    """An order-independent fingerprint of a set of index digests: count and two 64-bit sums, as hex."""
    d = np.ascontiguousarray(digests, dtype=np.uint8).reshape(-1, INDEX_BYTES).view("<u8")
    s = d.sum(axis=0, dtype=np.uint64) if len(d) else np.zeros(2, np.uint64)
    return f"{len(d)}:{int(s[0]):016x}{int(s[1]):016x}"


def sort_order(values: np.ndarray) -> np.ndarray:
    """The permutation sorting 12-byte values bytewise (big-endian 64-bit head, 32-bit tail)."""
    v = np.ascontiguousarray(values, dtype=np.uint8)
    head = v[:, :8].copy().view(">u8").ravel()
    tail = v[:, 8:12].copy().view(">u4").ravel()
    return np.lexsort((tail, head))


def encode_ids(chunks: Iterable[Sequence[Any]], key: OprfKey, store: Path, party: str, source: str) -> dict[str, Any]:
    """Evaluate the OPRF on every id, chunk by chunk, sort, and write ``epoch-<E>/{encoded,index}.bin``.

    Parameters
    ----------
    chunks : iterable of sequences
        The bureau's raw ids in chunks (e.g. :func:`fedrisk.data.loading.iter_id_chunks`).
    key : OprfKey
        The current key (:func:`load_key`).
    store, party, source
        The bureau's store directory, its name and what the ids came from (for messages only).

    Returns
    -------
    dict
        The header of the written ``encoded.bin``.

    Raises
    ------
    DataError
        Duplicated ids (naming two row numbers) or no ids.
    """
    ctx = context(key.epoch, key.fingerprint)
    vals, digs = [], []
    for chunk in chunks:
        norm = psi.normalize_ids(chunk)
        vals.append(oprf.evaluate(norm, key.key, ctx))
        digs.append(index_digests(norm, key))
    if not vals or sum(len(v) for v in vals) == 0:
        raise DataError(f"party {party!r}: {source} holds no ids to encode")
    values = np.concatenate(vals)
    del vals
    digests = np.concatenate(digs)
    del digs
    order = sort_order(values)
    values, digests = values[order], digests[order]
    same = np.flatnonzero(np.all(values[1:] == values[:-1], axis=1))
    if len(same):
        a, b = sorted((int(order[same[0]]), int(order[same[0] + 1])))
        raise DataError(f"party {party!r}: rows {a} and {b} of {source} hold the same id after normalisation "
                        f"({len(same)} repeat(s)); unbalanced PSI needs one row per customer: deduplicate the id column")
    d = epoch_dir(store, key.epoch)
    head = {"format": "encoded", "epoch": key.epoch, "fingerprint": key.fingerprint}
    # the index names the encoding it belongs to, so a job never pairs it with another one
    write_set(d / "index.bin", {**head, "format": "index", "ids_sum": ids_sum(digests),
                                "encoded_digest": hashlib.sha256(values.tobytes()).hexdigest()}, digests)
    return write_set(d / "encoded.bin", head, values)


def encode_id_file(store: Path, party: str, path: Path, id_col: str, *, sep: str | None = None,
                   rows: int = 262144, na_values: Sequence[str] = ()) -> dict[str, Any]:
    """Encode the bureau's id file in streaming chunks under its current key (see :func:`encode_ids`); the ids are
    those its table load gives (:func:`fedrisk.data.loading.iter_id_chunks`), so a job's ids sum matches. The
    header it returns carries ``notes``: what reading the file changed (counts only), as a job's load logs them."""
    from fedrisk.data.loading import iter_id_chunks

    key = load_key(store, party)
    notes: list[str] = []
    head = encode_ids(iter_id_chunks(path, id_col, party=party, rows=rows, sep=sep, na_values=na_values, notes=notes),
                      key, store, party, f"id column {id_col!r} of {Path(path).name}")
    return {**head, "notes": notes}


# ---------------------------------------------------------------------------------------------
# The lender's cache
# ---------------------------------------------------------------------------------------------
def cache_path(store: Path, bureau: str, epoch: int, fingerprint: str) -> Path:
    """Where the lender keeps ``bureau``'s encoded set of ``epoch`` (both checked: they come from the bureau)."""
    if not well_formed(epoch, fingerprint, "0" * 64):
        raise ProtocolError(f"party {bureau!r} sent a key epoch or fingerprint of an illegal form")
    return Path(store) / "cache" / bureau / f"epoch-{epoch}-{fingerprint}.bin"


def find_cache(store: Path, bureau: str) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable cached set from ``bureau`` (highest epoch), with its header, or None."""
    best = None
    for p in (Path(store) / "cache" / bureau).glob("epoch-*.bin"):
        h = read_header(p)
        if h is None or not well_formed(h.get("epoch"), h.get("fingerprint"), h.get("digest")):
            continue
        if best is None or h["epoch"] > best[1]["epoch"]:
            best = (p, h)
    return best
