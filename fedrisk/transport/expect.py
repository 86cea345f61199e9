"""Checked reads of a peer's message: the shape, type and range a protocol step expects, or one line.

The codec guarantees a payload is made of safe types (no pickle, bounded sizes); it cannot know
what a protocol step expects. A peer that sends a list where a vector belongs, a vector one
element short, NaN where a model weight belongs or a word where a round number belongs used to
reach numpy and fail there with a traceback (``ValueError: operands could not be broadcast``),
which names neither the peer nor the message. These helpers check one field at the point where
a role reads it and raise :class:`~fedrisk.errors.ProtocolError` naming this party, the peer, the
message tag and the field. They never quote the peer's value beyond its type and shape (refusals
are logged, and a crafted value must not fill a log).

Usage, in a role::

    msg = expect.mapping(channel.recv(coord, tag), me, coord, tag)
    mean = expect.vector(msg, "mean", d, me, coord, tag)
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import numpy as np

from fedrisk.errors import ProtocolError

__all__ = ["mapping", "vector", "integer", "flag", "parsing", "whole", "real"]


def whole(v: Any, lo: int | None = None) -> bool:
    """Whether ``v`` is a Python int (not a bool), at least ``lo`` if given: for fields checked in bulk
    (a list of node ids, counts) where :func:`integer`'s per-field error would be one of many."""
    return isinstance(v, int) and not isinstance(v, bool) and (lo is None or v >= lo)


def real(v: Any, finite: bool = False) -> bool:
    """Whether ``v`` is a Python int or float (not a bool), and finite if asked."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and (not finite or math.isfinite(v))


def _where(me: str, frm: str, tag: str, key: str | None) -> str:
    field = f"field {key!r} of " if key is not None else ""
    return f"{me}: {field}message {tag!r} from {frm!r}"


def _shape_of(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return f"a {v.dtype} array of shape {v.shape}"
    if isinstance(v, (list, tuple)):
        return f"a list of {len(v)}"
    return f"a {type(v).__name__}"


def mapping(msg: Any, me: str, frm: str, tag: str, keys: tuple[str, ...] = ()) -> Mapping[str, Any]:
    """``msg`` as a dict holding ``keys``, or a :class:`ProtocolError` naming the first missing one."""
    if not isinstance(msg, dict):
        raise ProtocolError(f"{_where(me, frm, tag, None)} is {_shape_of(msg)}, not a table; "
                            f"is {frm!r} running the same fedrisk version?")
    for k in keys:
        if k not in msg:
            raise ProtocolError(f"{_where(me, frm, tag, None)} has no field {k!r}; "
                                f"is {frm!r} running the same fedrisk version?")
    return msg


def vector(msg: Mapping[str, Any], key: str, length: int, me: str, frm: str, tag: str, *,
           finite: bool = True, positive: bool = False) -> np.ndarray:
    """``msg[key]`` as a float64 vector of ``length`` (finite; > 0 with ``positive``)."""
    v = mapping(msg, me, frm, tag, (key,))[key]
    ok = isinstance(v, np.ndarray) and v.dtype.kind in "biuf" or (
        isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) for x in v))
    arr = np.asarray(v, dtype=np.float64) if ok else None
    if arr is None or arr.shape != (length,):
        raise ProtocolError(f"{_where(me, frm, tag, key)} is {_shape_of(v)}; this step needs {length} numbers")
    if finite and not np.isfinite(arr).all():
        raise ProtocolError(f"{_where(me, frm, tag, key)} holds {int((~np.isfinite(arr)).sum())} NaN or infinite "
                            f"values; refused")
    if positive and not (arr > 0).all():
        raise ProtocolError(f"{_where(me, frm, tag, key)} holds {int((arr <= 0).sum())} values that are not "
                            f"positive; refused")
    return arr


def integer(msg: Mapping[str, Any], key: str, me: str, frm: str, tag: str, *, lo: int = 0,
            hi: int | None = None, default: int | None = None) -> int:
    """``msg[key]`` as an int in ``[lo, hi]`` (``default`` when absent, if given)."""
    msg = mapping(msg, me, frm, tag, () if default is not None else (key,))
    v = msg.get(key, default)
    if isinstance(v, (np.integer,)):
        v = int(v)
    elif isinstance(v, float) and math.isfinite(v) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
        bounds = f"from {lo}" + (f" to {hi}" if hi is not None else "")
        raise ProtocolError(f"{_where(me, frm, tag, key)} is not a whole number {bounds}; refused")
    return v


def flag(msg: Mapping[str, Any], key: str, me: str, frm: str, tag: str, *, default: bool | None = None) -> bool:
    """``msg[key]`` as a bool (``default`` when absent, if given); a number or a word is refused."""
    msg = mapping(msg, me, frm, tag, () if default is not None else (key,))
    v = msg.get(key, default)
    if isinstance(v, np.bool_):
        v = bool(v)
    if not isinstance(v, bool):
        raise ProtocolError(f"{_where(me, frm, tag, key)} is {_shape_of(v)}, not true/false; refused")
    return v


@contextmanager
def parsing(me: str, frm: str, tag: str, what: str = "") -> Iterator[None]:
    """Turn a peer's nested message into local objects; a malformed one is a :class:`ProtocolError`.

    For messages whose structure is rebuilt by a constructor (a WOE table, bin edges, a
    selection report) rather than read field by field: the Python errors such a constructor
    raises on a wrong type or shape (``TypeError``, ``ValueError``, ``KeyError``, ``IndexError``,
    ``AttributeError``) become one line naming the peer and the message. Wrap only the code that
    reads the peer's message -- never computation on this party's own data, whose errors are bugs.
    """
    try:
        yield
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
        part = f" ({what})" if what else ""
        raise ProtocolError(f"{me}: message {tag!r} from {frm!r}{part} is malformed ({type(e).__name__}); "
                            f"refused") from None
