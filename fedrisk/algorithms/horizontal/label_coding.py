"""Horizontal jobs agree the label coding their model files store (``classes``).

Every participant of a horizontal job writes the same model file, the coordinator included, which
holds no labels. For that file to say in which coding the users' labels were (``["good", "bad"]``
under ``positive = "bad"``, ``[1, 2]`` under ``positive = 2``), so that a model read back
(``fr.load``) predicts in that coding, the banks tell the coordinator their coding once.

Message flow (``<p>`` = the task's tag prefix, e.g. ``hlr.`` or ``hgb.``)::

    bank_k      -> coordinator : <p>classes     {"classes": [non-default, default] or None,  (public-parameter)
                                                 "features": the bank's feature names, in its file's order}
    coordinator -> bank_k      : <p>classes.ok  {"classes": the agreed coding or None,       (public-parameter)
                                                 "order": the first bank's feature order, or None}

The same exchange agrees one column order: when every bank names the same features, in whatever order
its file has them, each bank takes the first bank's order (a bank whose export lists the columns
differently would otherwise be refused at the schema step). Feature names are schema metadata the
coordinator receives in the schema step anyway. Banks naming different features get ``None`` and the
schema step names the difference.

A bank taken back mid-job (a rejoin, see :mod:`fedrisk.algorithms.horizontal.dropouts`) missed this
exchange; when the coordinator admits it, it sends that bank the agreed coding again::

    coordinator -> bank_k      : <p>classes.ok  {"classes": the agreed coding or None}       (public-parameter)

so every participant's model file says the same (the bank does not send its own coding again).

What each participant learns: the coordinator learns each bank's two label VALUES (e.g. ``"good"`` and
``"bad"``): schema metadata like the feature names it already receives, never a row's label, a count or
a rate (with a ``positive = {...}`` mapping the coding comes from the mapping, so a bank without
defaults sends what the others send; with ``positive = VALUE`` the non-default value can only come
from the file, so a bank whose every row is a default, which the loader otherwise accepts, sends
``None``). A bank learns the agreed coding: the banks' common coding when they all code alike, else
``None`` (the model's classes are then ``[0, 1]``, as the API's ``classes_`` is for mixed codings).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from fedrisk.errors import ProtocolError
from fedrisk.transport.channel import Channel

__all__ = ["bank_coding", "bank_agreement", "coordinator_coding", "coordinator_agreement", "rejoin_admit",
           "rejoined_coding", "rejoined_agreement"]


def _checked(msg: Any, who: str) -> list | None:
    coding = msg.get("classes") if isinstance(msg, dict) else msg
    if coding is None:
        return None
    if not (isinstance(coding, list) and len(coding) == 2
            and all(isinstance(v, (str, int, float, bool)) for v in coding)):
        raise ProtocolError(f"malformed label coding from {who!r}: expected [non-default, default] or null")
    return coding


def bank_coding(channel: Channel, coordinator: str, coding: list | None, prefix: str) -> list | None:
    """A bank's side: send this bank's ``[non-default, default]`` (``None`` for 0/1), return the agreed one."""
    return bank_agreement(channel, coordinator, coding, None, prefix)[0]


def bank_agreement(channel: Channel, coordinator: str, coding: list | None, features: Sequence[str] | None,
                   prefix: str) -> tuple[list | None, list[str] | None]:
    """A bank's side with its feature names: ``(agreed coding, agreed feature order or None)``."""
    body: dict[str, Any] = {"classes": coding}
    if features is not None:
        body["features"] = [str(f) for f in features]
    channel.send(coordinator, f"{prefix}classes", body, kind="public-parameter")
    msg = channel.recv(coordinator, f"{prefix}classes.ok")
    return _checked(msg, coordinator), _order(msg, features, coordinator)


def _order(msg: Any, features: Sequence[str] | None, who: str) -> list[str] | None:
    order = msg.get("order") if isinstance(msg, dict) else None
    if order is None or features is None:
        return None
    if not (isinstance(order, list) and sorted(map(str, order)) == sorted(map(str, features))):
        raise ProtocolError(f"malformed feature order from {who!r}: not this bank's features")
    return [str(f) for f in order]


def coordinator_coding(channel: Channel, banks: Sequence[str], prefix: str,
                       send_timeout: float | None = None) -> list | None:
    """The coordinator's side: the banks' common coding, or ``None`` when any differs (or is 0/1).

    Every bank is needed here (as in the schema step that follows), so the banks are watched: one
    killed before it spoke ends the wait with its name, not after the whole receive timeout.
    """
    return coordinator_agreement(channel, banks, prefix, send_timeout)[0]


def coordinator_agreement(channel: Channel, banks: Sequence[str], prefix: str,
                          send_timeout: float | None = None) -> tuple[list | None, list[str] | None]:
    """The coordinator's side: ``(agreed coding, agreed feature order)``; the order is the first bank's when
    every bank sent the same feature names (each once), else ``None``."""
    channel.watch(list(banks), send_timeout=send_timeout)
    msgs = [channel.recv(b, f"{prefix}classes") for b in banks]
    got = [_checked(m, b) for m, b in zip(msgs, banks)]
    agreed = got[0] if got and all(c == got[0] for c in got) else None
    names = [m.get("features") if isinstance(m, dict) else None for m in msgs]
    order = None
    if names and all(isinstance(n, list) and all(isinstance(f, str) for f in n) for n in names):
        first = names[0]
        if len(set(first)) == len(first) and all(sorted(n) == sorted(first) for n in names):
            order = list(first)
    channel.broadcast(list(banks), f"{prefix}classes.ok", {"classes": agreed, "order": order}, kind="public-parameter")
    return agreed, order


def rejoin_admit(admit: Callable[[str, int], bool] | None, channel: Channel, prefix: str,
                 agreed: list | None, order: list[str] | None = None) -> Callable[[str, int], bool] | None:
    """The coordinator's ``admit(bank, at)`` that also sends a bank it takes back the agreed coding.

    ``admit`` is the runtime's rejoin policy (``None``: no rejoin, returned as is). The bank waits for
    it in :func:`rejoined_coding` before it trains again.
    """
    if admit is None:
        return None

    def admit_with_coding(bank: str, at: int) -> bool:
        ok = admit(bank, at)
        if ok:
            channel.send(bank, f"{prefix}classes.ok", {"classes": agreed, "order": order}, kind="public-parameter")
        return ok

    return admit_with_coding


def rejoined_coding(channel: Channel, coordinator: str, prefix: str) -> list | None:
    """A bank taken back mid-job: the coding the banks agreed at the start (it missed that exchange)."""
    return rejoined_agreement(channel, coordinator, prefix, None)[0]


def rejoined_agreement(channel: Channel, coordinator: str, prefix: str,
                       features: Sequence[str] | None) -> tuple[list | None, list[str] | None]:
    """A bank taken back mid-job: the coding and feature order agreed at the start."""
    msg = channel.recv(coordinator, f"{prefix}classes.ok")
    return _checked(msg, coordinator), _order(msg, features, coordinator)
