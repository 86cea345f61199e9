"""Wire codec: an explicit envelope with typed payloads, and never pickle.

Why not pickle: unpickling runs arbitrary code chosen by the sender, and a party must never let a
partner institution execute code on its machines. Every value that crosses the wire is one of a
small set of types, each with an explicit, bounds-checked encoding (the NVFlare "fobs" idea):

* ``None``, ``bool``, ``float``, ``str`` and ints in the JSON-safe range -> the JSON header;
* larger ints -> fixed-width big-endian bytes (sign kept in the header);
* :class:`BigInts` (e.g. Paillier ciphertexts) -> one fixed-width byte block, ``count * width``;
* ``numpy.ndarray`` of a whitelisted numeric dtype -> dtype + shape in the header, raw C-order
  bytes in the blob (``allow_pickle`` is never involved: object arrays are refused);
* ``bytes`` -> raw bytes in the blob;
* ``list`` / ``tuple`` (decoded as list) and ``dict`` with ``str`` keys.

Frame layout::

    b"FRK1" | u32 big-endian header length | header (UTF-8 JSON) | blob

The header carries the envelope ``{"v", "job", "sender", "to", "tag", "kind", "body"}``; ``body``
is the payload tree in which binary leaves point into the blob by ``[offset, length]``.

Invariants: :func:`decode` raises only :class:`~fedrisk.errors.CodecError`, whatever the bytes;
every offset, length, shape and dtype is checked before any buffer is touched; a frame larger than
``max_bytes`` is refused before it is parsed.

Abuse by an authenticated peer (issue 12): the JSON header is the only part parsed into Python
objects, so its size and the number of JSON values it may hold are capped far below the frame
limit (:data:`MAX_HEADER_BYTES`, :data:`MAX_HEADER_NODES`; a 16 MiB header of ``[]`` cost 830 MiB
and 9 s of CPU when the cap was 64 MiB), :func:`encode` refuses what :func:`decode` would, and no
error message quotes more than a few dozen characters of what the peer sent (escaped), since
refusals are logged.
"""
from __future__ import annotations

import json
import re
import struct
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from fedrisk.errors import CodecError
from fedrisk.transport.safe_text import safe_repr, safe_text

__all__ = [
    "BigInts",
    "Envelope",
    "KINDS",
    "encode",
    "decode",
    "frame_job",
    "DEFAULT_MAX_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_HEADER_NODES",
    "MAX_INT_BITS",
]

MAGIC = b"FRK1"
VERSION = 1
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
#: Header (JSON) bytes: payload data belongs in the blob (arrays, BigInts, bytes), not in JSON lists.
MAX_HEADER_BYTES = 1024 * 1024
#: JSON values in a header (counted as ``,`` ``[`` ``{`` bytes, an upper bound): each becomes a
#: Python object of ~50-100 bytes when parsed.
MAX_HEADER_NODES = 64 * 1024
MAX_DEPTH = 32
MAX_BIGINTS = 1 << 22
_JSON_INT_LIMIT = 2**53
#: largest plain int a message may carry: a Paillier obfuscation base below n^2 at the largest
#: modulus keys accept (16,384 bits). Larger values belong in :class:`BigInts` blocks.
MAX_INT_BITS = 2 * 16384
# Python refuses str()/repr() of an int over 4,300 digits (ValueError): a peer's 10**5000 in a
# setting or a count turned refusal messages that quote it into tracebacks. Every int the codec
# lets in has at most MAX_INT_BITS bits (9,865 digits), so allow that many (a few ms to print).
if 0 < sys.get_int_max_str_digits() < 10_000:
    sys.set_int_max_str_digits(10_000)

#: Message kinds recorded in the ledger; see DESIGN.md "Wire and trust".
KINDS = frozenset(
    {"ciphertext", "masked", "aggregate", "public-parameter", "model", "metric", "plaintext-by-design", "control"}
)

_DTYPES = {
    np.dtype(t).str: np.dtype(t)
    for t in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32", "float64")
}
for _t in list(_DTYPES.values()):
    _DTYPES[_t.newbyteorder(">").str] = _t.newbyteorder(">")
    _DTYPES[_t.newbyteorder("<").str] = _t.newbyteorder("<")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/\-]{0,127}$")


class BigInts(Sequence[int]):
    """A sequence of non-negative big integers sent as one fixed-width byte block.

    ``width`` is bytes per value; when omitted it is the smallest width that fits the largest
    value. Ciphertexts should pass the modulus width so that sizes leak nothing about values.

    Either form is kept lazily: built from values it makes the byte block on first
    :meth:`to_bytes`; decoded (or made with :meth:`from_blob`) it keeps the byte block and makes
    Python ints only when :attr:`values` is read, so ciphertexts can go from a worker's bytes to
    the wire, and from the wire to a worker, without a per-value conversion.
    """

    __slots__ = ("_values", "_blob", "width", "_count")

    def __init__(self, values: Iterable[Any], width: int | None = None) -> None:
        vals = [int(v) for v in values]
        if any(v < 0 for v in vals):
            raise CodecError("BigInts holds non-negative integers only")
        need = max((v.bit_length() for v in vals), default=8)
        need = max(1, (need + 7) // 8)
        if width is None:
            width = need
        elif width < need:
            raise CodecError(f"BigInts width {width} bytes is too small for a {need}-byte value")
        self._values: list[int] | None = vals
        self._blob: bytes | None = None
        self._count = len(vals)
        self.width = int(width)

    @property
    def values(self) -> list[int]:
        if self._values is None:
            w, data = self.width, self._blob
            fb = int.from_bytes
            self._values = [fb(data[i * w : (i + 1) * w], "big") for i in range(self._count)]
        return self._values

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i):  # type: ignore[override]
        return self.values[i]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BigInts):
            return False
        if self._blob is not None and other._blob is not None and self.width == other.width:
            return self._count == other._count and self._blob == other._blob
        return self.values == other.values

    def __repr__(self) -> str:
        return f"BigInts(n={self._count}, width={self.width})"

    def to_bytes(self) -> bytes:
        """The values as one block of ``len(self) * width`` big-endian bytes."""
        if self._blob is None:
            w = self.width
            self._blob = b"".join(v.to_bytes(w, "big") for v in self._values or [])
        return self._blob

    @classmethod
    def from_bytes(cls, data: bytes, width: int, count: int) -> "BigInts":
        return cls.from_blob(data, width, count)

    @classmethod
    def from_blob(cls, data: bytes, width: int, count: int | None = None) -> "BigInts":
        """Wrap ``count`` big-endian values of ``width`` bytes each (no per-value work)."""
        width = int(width)
        if width <= 0 or (count is None and len(data) % width):
            raise CodecError(f"BigInts block of {len(data)} bytes is not a multiple of width {width}")
        count = len(data) // width if count is None else int(count)
        if count * width != len(data):
            raise CodecError(f"BigInts width {width} x count {count} does not match {len(data)} bytes")
        out = cls.__new__(cls)
        out.width = width
        out._count = count
        out._blob = bytes(data)
        out._values = None
        return out


@dataclass(frozen=True)
class Envelope:
    """A decoded message: who sent it to whom, under which tag and kind, and the payload."""

    job: str
    sender: str
    to: str
    tag: str
    kind: str
    body: Any


class _Writer:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> list[int]:
        ref = [self.size, len(data)]
        self.chunks.append(data)
        self.size += len(data)
        return ref


def _enc(obj: Any, w: _Writer, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise CodecError(f"payload nests deeper than {MAX_DEPTH} levels")
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, bool):
        v = int(obj)
        if -_JSON_INT_LIMIT < v < _JSON_INT_LIMIT:
            return v
        mag = abs(v)
        if mag.bit_length() > MAX_INT_BITS:
            raise CodecError(f"an integer of {mag.bit_length()} bits is over the {MAX_INT_BITS}-bit limit; "
                             f"send big values as BigInts")
        return {"__int__": [1 if v < 0 else 0, *w.add(mag.to_bytes((mag.bit_length() + 7) // 8, "big"))]}
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        if f != f or f in (float("inf"), float("-inf")):
            return {"__float__": repr(f)}
        return f
    if isinstance(obj, np.ndarray):
        dt = obj.dtype
        if dt.str not in _DTYPES:
            raise CodecError(f"numpy dtype {dt} cannot be sent; use one of bool, int*, uint*, float32, float64")
        # tobytes() is C-order whatever the layout; ascontiguousarray would turn 0-d into 1-d
        return {"__nd__": [dt.str, list(obj.shape), *w.add(obj.tobytes(order="C"))]}
    if isinstance(obj, BigInts):
        return {"__bi__": [obj.width, len(obj), *w.add(obj.to_bytes())]}
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"__b__": w.add(bytes(obj))}
    if isinstance(obj, (list, tuple)):
        return [_enc(x, w, depth + 1) for x in obj]
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise CodecError(f"dict keys must be str, got {type(k).__name__}")
            if k.startswith("__"):
                raise CodecError(f"dict key {k!r} is reserved (keys may not start with '__')")
            out[k] = _enc(v, w, depth + 1)
        return out
    raise CodecError(f"type {type(obj).__name__} cannot be sent on the wire (no pickle); convert it to arrays/ints/str")


def _peer(value: Any, limit: int = 64) -> str:
    """A peer-supplied value quoted in an error message: bounded, escaped, type named if not str."""
    if isinstance(value, str):
        return repr(safe_text(value, limit))
    return f"{type(value).__name__} {safe_repr(value, limit)}"


def _count_nodes(header: bytes) -> int:
    """An upper bound on the JSON values in ``header`` (C-speed byte counts, before parsing)."""
    return header.count(b",") + header.count(b"[") + header.count(b"{")


def _check_name(what: str, value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise CodecError(f"envelope {what} {_peer(value)} is not a valid name")
    return value


def encode(job: str, sender: str, to: str, tag: str, kind: str, body: Any, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Encode one message into a frame. Raises :class:`CodecError` for unsupported values."""
    if kind not in KINDS:
        raise CodecError(f"message kind {kind!r} is not one of {sorted(KINDS)}")
    for what, v in (("job", job), ("sender", sender), ("to", to), ("tag", tag)):
        _check_name(what, v)
    w = _Writer()
    tree = _enc(body, w, 0)
    header = json.dumps(
        {"v": VERSION, "job": job, "sender": sender, "to": to, "tag": tag, "kind": kind, "body": tree},
        separators=(",", ":"),
        allow_nan=False,
    ).encode()
    if len(header) > MAX_HEADER_BYTES or _count_nodes(header) > MAX_HEADER_NODES:
        raise CodecError(
            f"message {tag!r} to {to!r} has a {len(header)}-byte JSON header with up to {_count_nodes(header)} values, "
            f"over the {MAX_HEADER_BYTES}-byte / {MAX_HEADER_NODES}-value limit; send long lists as numpy arrays"
        )
    frame = b"".join([MAGIC, struct.pack(">I", len(header)), header, *w.chunks])
    if len(frame) > max_bytes:
        raise CodecError(f"message {tag!r} to {to!r} is {len(frame)} bytes, over the {max_bytes}-byte limit")
    return frame


class _Reader:
    def __init__(self, blob: memoryview) -> None:
        self.blob = blob

    def get(self, off: Any, n: Any) -> memoryview:
        if not (isinstance(off, int) and isinstance(n, int)) or isinstance(off, bool) or isinstance(n, bool):
            raise CodecError("blob reference is not a pair of integers")
        if off < 0 or n < 0 or off + n > len(self.blob):
            raise CodecError(f"blob reference [{off}, {n}] lies outside the {len(self.blob)}-byte blob")
        return self.blob[off : off + n]


def _dec(node: Any, r: _Reader, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise CodecError(f"payload nests deeper than {MAX_DEPTH} levels")
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, list):
        return [_dec(x, r, depth + 1) for x in node]
    if not isinstance(node, dict):
        raise CodecError(f"unexpected JSON node {type(node).__name__}")
    special = [k for k in node if k.startswith("__")]
    if not special:
        return {k: _dec(v, r, depth + 1) for k, v in node.items()}
    if len(node) != 1:
        raise CodecError("a typed node must have exactly one key")
    key, spec = next(iter(node.items()))
    if key == "__float__":
        if spec not in ("nan", "inf", "-inf"):
            raise CodecError(f"bad special float {_peer(spec)}")
        return float(spec)
    if not isinstance(spec, list):
        raise CodecError(f"typed node {key} needs a list")
    if key == "__int__":
        if len(spec) != 3 or spec[0] not in (0, 1):
            raise CodecError("bad big-int node")
        if isinstance(spec[2], int) and spec[2] * 8 > MAX_INT_BITS + 7:
            raise CodecError(f"an integer of {spec[2]} bytes is over the {MAX_INT_BITS}-bit limit")
        v = int.from_bytes(r.get(spec[1], spec[2]), "big")
        return -v if spec[0] else v
    if key == "__b__":
        if len(spec) != 2:
            raise CodecError("bad bytes node")
        return bytes(r.get(*spec))
    if key == "__bi__":
        if len(spec) != 4:
            raise CodecError("bad BigInts node")
        width, count, off, n = spec
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (width, count)):
            raise CodecError("BigInts width/count must be integers")
        if width <= 0 or width > 1 << 16 or count < 0 or width * count != n:
            raise CodecError(f"BigInts width {width} x count {count} does not match {n} bytes")
        if count > MAX_BIGINTS:
            # each value becomes a Python int (~10x its bytes): bound the memory a peer can make us spend
            raise CodecError(f"BigInts of {count} values is over the {MAX_BIGINTS}-value limit; send several messages")
        return BigInts.from_bytes(bytes(r.get(off, n)), width, count)
    if key == "__nd__":
        if len(spec) != 4:
            raise CodecError("bad array node")
        dts, shape, off, n = spec
        if not isinstance(dts, str) or dts not in _DTYPES:
            raise CodecError(f"array dtype {_peer(dts)} is not allowed")
        if not isinstance(shape, list) or len(shape) > 32:
            raise CodecError("array shape must be a list of at most 32 dimensions")
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
            raise CodecError(f"array shape {_peer(shape)} must hold non-negative integers")
        dt = _DTYPES[dts]
        count = 1
        for s in shape:
            count *= s
        if count * dt.itemsize != n:
            raise CodecError(f"array of shape {_peer(shape)} and dtype {dts} needs {count * dt.itemsize} bytes, got {n}")
        buf = r.get(off, n)
        return np.frombuffer(buf, dtype=dt).reshape(tuple(shape)).copy() if count else np.empty(tuple(shape), dtype=dt)
    raise CodecError(f"unknown typed node {_peer(key)}")


def decode(
    frame: bytes,
    *,
    job: str | None = None,
    to: str | None = None,
    senders: Iterable[str] | None = None,
    tag_prefixes: Sequence[str] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Envelope:
    """Decode and validate a frame.

    ``job``, ``to``, ``senders`` and ``tag_prefixes`` restrict what is accepted: a message for
    another job, another recipient, from an unknown sender or under a tag outside the protocol's
    namespaces is refused. Raises :class:`CodecError` and nothing else.
    """
    try:
        return _decode(frame, job, to, senders, tag_prefixes, max_bytes)
    except CodecError:
        raise
    except Exception as e:  # noqa: BLE001 - the contract is "only CodecError escapes"
        raise CodecError(f"malformed message: {type(e).__name__}: {safe_text(e, 120)}") from None


def frame_job(frame: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """The job id a frame is addressed to, read from its header only (the blob is not touched).

    For a server that routes frames of several jobs (a scoring service serves one inference
    session per job id) before one of them decodes the frame fully. Raises :class:`CodecError`.
    """
    try:
        header = _header(frame, max_bytes)
        return _check_name("job", header.get("job"))
    except CodecError:
        raise
    except Exception as e:  # noqa: BLE001 - the contract is "only CodecError escapes"
        raise CodecError(f"malformed message: {type(e).__name__}: {safe_text(e, 120)}") from None


def _header(frame, max_bytes) -> dict:
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise CodecError("a frame must be bytes")
    if len(frame) > max_bytes:
        raise CodecError(f"message of {len(frame)} bytes is over the {max_bytes}-byte limit")
    if len(frame) < 8 or bytes(frame[:4]) != MAGIC:
        raise CodecError("not a fedrisk frame (bad magic)")
    (hlen,) = struct.unpack(">I", bytes(frame[4:8]))
    if hlen > MAX_HEADER_BYTES:
        raise CodecError(f"header of {hlen} bytes is over the {MAX_HEADER_BYTES}-byte limit")
    if 8 + hlen > len(frame):
        raise CodecError(f"header length {hlen} does not fit the {len(frame)}-byte frame")
    raw = bytes(frame[8 : 8 + hlen])
    if _count_nodes(raw) > MAX_HEADER_NODES:
        raise CodecError(f"header holds more than {MAX_HEADER_NODES} JSON values; payload data belongs in arrays")
    try:
        # deep nesting ends in RecursionError inside the C parser, well before memory matters
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CodecError(f"header is not valid JSON: {safe_text(e, 120)}") from None
    if not isinstance(header, dict) or header.get("v") != VERSION:
        raise CodecError("header is not a version-1 fedrisk envelope")
    return header


def _decode(frame, job, to, senders, tag_prefixes, max_bytes) -> Envelope:
    header = _header(frame, max_bytes)
    hlen = struct.unpack(">I", bytes(frame[4:8]))[0]
    env_job = _check_name("job", header.get("job"))
    sender = _check_name("sender", header.get("sender"))
    recipient = _check_name("to", header.get("to"))
    tag = _check_name("tag", header.get("tag"))
    kind = header.get("kind")
    if kind not in KINDS:
        raise CodecError(f"unknown message kind {_peer(kind)}")
    if job is not None and env_job != job:
        raise CodecError(f"message for job {env_job!r} refused: this is job {job!r}")
    if to is not None and recipient != to:
        raise CodecError(f"message addressed to {recipient!r} refused by {to!r}")
    if senders is not None and sender not in set(senders):
        raise CodecError(f"message from unknown sender {sender!r} refused")
    if tag_prefixes is not None and not any(tag.startswith(p) for p in tag_prefixes):
        raise CodecError(f"message with unknown tag {tag!r} refused")
    body = _dec(header.get("body"), _Reader(memoryview(frame)[8 + hlen :]), 0)
    return Envelope(env_job, sender, recipient, tag, kind, body)
