"""Run every role of a job as threads in one process over an in-memory network.

This is the in-process execution mode (tests, notebooks): the same role functions the process
runtime calls, the same codec and ledger, no sockets. If any role raises, the others are woken
(their pending ``recv`` fails) and the first error is re-raised with the party's name — unless
every other party tolerates that one's dropout (:meth:`~fedrisk.transport.channel.Channel.tolerate_dropouts`,
horizontal training after its agreement steps): if some party tolerates its loss, it is only
marked down there, the job goes on, and the party is simply absent from the results, as over the wire.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Mapping

from fedrisk.errors import FedriskError
from fedrisk.runtime.abort_reason import wire_reason
from fedrisk.transport.channel import InMemoryNetwork

__all__ = ["run_roles"]


def run_roles(roles: Mapping[str, Callable[[Any], Any]], *, job: str = "test", capture: bool = False,
              recv_timeout: float = 120.0, network: InMemoryNetwork | None = None) -> dict[str, Any]:
    """Run ``roles[name](channel)`` for every party concurrently; return their results by name.

    Pass ``network`` to inspect channels afterwards (ledgers, captures); otherwise one is made.
    """
    net = network or InMemoryNetwork(list(roles), job=job, capture=capture, recv_timeout=recv_timeout)
    results: dict[str, Any] = {}
    errors: dict[str, BaseException] = {}
    lock = threading.Lock()

    def target(name: str) -> None:
        try:
            results[name] = roles[name](net[name])
        except BaseException as e:  # noqa: BLE001 - re-raised below in the caller's thread
            reason = f"party {name!r} failed: {wire_reason(name, e, roles)}"
            with lock:
                others = [o for o in net.parties if o != name and o not in errors]
                # someone declared it survives this party's loss (a horizontal coordinator after
                # its agreement steps): a dropout, which that party handles
                dropout = any(name in net[o].tolerated for o in others)
                if not dropout:
                    errors[name] = e
            for other in others:
                if dropout:
                    if name in net[other].tolerated:
                        net[other].mark_down(name, f"it stopped: {reason}")
                else:
                    # what a real peer would receive in ctl.abort: no ids, values or paths
                    net[other].mailbox.fail(reason)

    threads = [threading.Thread(target=target, args=(n,), name=f"party-{n}", daemon=True) for n in roles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        # the first real failure, not the knock-on "party X failed" errors of the others
        name, err = next(((n, e) for n, e in errors.items() if "failed:" not in str(e)), next(iter(errors.items())))
        if isinstance(err, FedriskError):
            raise err
        raise FedriskError(f"party {name!r} failed: {type(err).__name__}: {err}") from err
    return results
