"""A man in the middle of one participant's own outbound messages: a malicious partner, in-process.

:func:`tampered_run` runs a whole task (the Python API's in-process engine: same roles, codec and
tags as over mTLS) while one participant's first message under one tag is decoded, one field of
it changed by a mutation, and re-encoded -- what a partner running modified code would send.
It returns every participant's exception, so a test can insist that each failure is a one-line
:class:`~fedrisk.errors.FedriskError` and never a traceback from deep inside numpy.

``python -m tests.security.tamper JOB`` walks every (sender, tag, field, mutation) of a job and
prints the reactions (an exploration tool: the cases it found are pinned in test_malicious_messages).
"""
from __future__ import annotations

import re
import sys
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

import fedrisk as fr
from fedrisk.errors import FedriskError
from fedrisk.transport import channel as chmod
from fedrisk.transport.codec import BigInts, decode, encode

Mutation = Callable[[Any], Any]


def _set_first(a: np.ndarray, v: Any) -> np.ndarray:
    a = a.copy()
    a.reshape(-1)[0] = v
    return a


MUTATIONS: dict[str, Mutation] = {
    "none": lambda v: None,
    "text": lambda v: "x",
    "path": lambda v: "../../x",
    "drop-last": lambda v: v[:-1],
    "one-more": lambda v: np.concatenate([v, v[:1]]) if isinstance(v, np.ndarray) else [*v, *v[:1]],
    "huge": lambda v: _set_first(v, 1e300) if isinstance(v, np.ndarray) else 10**12,
    "nan": lambda v: _set_first(v, np.nan) if isinstance(v, np.ndarray) else float("nan"),
    "negative": lambda v: -1,
}


def norm(tag: str) -> str:
    """A tag with its round/tree numbers replaced by N (``hlr.newton.r3`` -> ``hlr.newton.rN``)."""
    return re.sub(r"\d+", "N", tag)


def _apply(body: Any, path: tuple, fn: Mutation) -> Any:
    if not path:
        return fn(body)
    out = dict(body) if isinstance(body, dict) else list(body)
    out[path[0]] = _apply(body[path[0]], path[1:], fn)
    return out


def _has(body: Any, path: tuple) -> bool:
    """Whether ``body`` has the field at ``path`` (a tag can carry messages of several shapes: the
    federated bins' ``cuts`` tag carries zoom requests before the cut points)."""
    for key in path:
        if isinstance(body, dict) and key in body:
            body = body[key]
        elif isinstance(body, list) and isinstance(key, int) and -len(body) <= key < len(body):
            body = body[key]
        else:
            return False
    return True


@contextmanager
def tampering(sender: str, tag: str, path: tuple, fn: Mutation) -> Iterator[dict]:
    """Within the block, ``sender``'s first message whose :func:`norm`'d tag is ``tag`` and that has the
    field ``path`` has it mutated."""
    state = {"hits": 0, "errors": [], "log": []}
    orig_deliver = chmod.InMemoryChannel._deliver
    lock = threading.Lock()

    def deliver(self, to: str, frame: bytes) -> None:
        env = decode(frame)
        state["log"].append((env.sender, env.tag, env.body))
        with lock:
            hit = (fn is not None and env.sender == sender and norm(env.tag) == tag and state["hits"] == 0
                   and _has(env.body, path))
            if hit:
                state["hits"] += 1
        if hit:
            try:
                body = _apply(env.body, path, fn)
            except Exception:  # noqa: BLE001 - this mutation does not fit this field: send it unchanged
                state["hits"] = -1
            else:
                frame = encode(env.job, env.sender, env.to, env.tag, env.kind, body)
        return orig_deliver(self, to, frame)

    import fedrisk.runtime.threads as threads

    orig_run_roles = threads.run_roles

    def run_roles(roles, **kw):
        def wrap(name, f):
            def g(ch):
                try:
                    return f(ch)
                except BaseException as e:  # noqa: BLE001 - recorded, then re-raised as before
                    state["errors"].append((name, e))
                    raise
            return g
        return orig_run_roles({n: wrap(n, f) for n, f in roles.items()}, **kw)

    chmod.InMemoryChannel._deliver = deliver
    threads.run_roles = run_roles
    try:
        yield state
    finally:
        chmod.InMemoryChannel._deliver = orig_deliver
        threads.run_roles = orig_run_roles


def vertical_federation(n: int = 400, seed: int = 3) -> fr.Federation:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ [1.0, -0.7, 0.8, 0.6] - 1)))).astype(int)
    lender = pd.DataFrame({"id": np.arange(n), "y": y, "a": X[:, 0], "b": X[:, 1]})
    payco = pd.DataFrame({"id": np.arange(n), "c": X[:, 2], "d": X[:, 3]}).sample(frac=1, random_state=1)
    return fr.Federation.vertical({"lender": lender, "payco": payco.reset_index(drop=True)}, id="id", label="y", seed=7)


def horizontal_federation(n: int = 300) -> fr.Federation:
    banks = {}
    for i in range(3):
        rng = np.random.default_rng(i)
        X = rng.normal(size=(n, 3))
        y = (rng.random(n) < 1 / (1 + np.exp(-(X @ [1.0, -0.7, 0.8] - 1)))).astype(int)
        banks[f"bank{i}"] = pd.DataFrame({"id": np.arange(n) + 1000 * i, "y": y, "a": X[:, 0], "b": X[:, 1],
                                          "c": X[:, 2]})
    return fr.Federation.horizontal(banks, id="id", label="y", seed=7)


JOBS = {
    "vertical.lr": (vertical_federation, {"max_iter": 3}),
    "vertical.woe": (vertical_federation, {}),
    "vertical.scorecard": (vertical_federation, {}),
    "vertical.secureboost": (vertical_federation, {"n_trees": 2, "max_depth": 2, "max_bin": 8}),
    "horizontal.lr": (horizontal_federation, {"rounds": 3}),
    "horizontal.gbdt": (horizontal_federation, {"n_trees": 2, "max_depth": 2, "max_bin": 8}),
    "horizontal.woe": (horizontal_federation, {}),
}


def tampered_run(kind: str, sender: str, tag: str, path: tuple, mutation: str | None) -> dict:
    """Run job ``kind`` with one mutated message; returns the tamper state (``hits``, ``errors``, ``raised``)."""
    from fedrisk.estimators.engine import run_task

    make, params = JOBS[kind]
    with tampering(sender, tag, path, MUTATIONS[mutation] if mutation else None) as state:
        try:
            run_task(make(), kind, params)
            state["raised"] = None
        except FedriskError as e:
            state["raised"] = e
    return state


if __name__ == "__main__":  # pragma: no cover - exploration tool
    kind = sys.argv[1]
    honest = tampered_run(kind, "", "", (), None)
    seen: dict[tuple, Any] = {}
    for s, t, body in honest["log"]:
        seen.setdefault((s, norm(t)), body)
    for (s, t), body in seen.items():
        fields = [(k,) for k in body] if isinstance(body, dict) else [()]
        for path in fields:
            for m in MUTATIONS:
                try:
                    st = tampered_run(kind, s, t, path, m)
                except Exception as e:  # noqa: BLE001 - the mutation did not apply to this field
                    print(f"   {s}:{t} {path} {m}: not applicable ({type(e).__name__})")
                    continue
                if st["hits"] != 1:
                    print(f"   {s}:{t} {path} {m}: not applicable")
                    continue
                bad = [(n, e) for n, e in st["errors"] if not isinstance(e, FedriskError)]
                what = (f"CRASH at {bad[0][0]}: {type(bad[0][1]).__name__}: {str(bad[0][1])[:120]}" if bad else
                        f"{type(st['raised']).__name__}: {str(st['raised'])[:120]}" if st["raised"] else "accepted")
                print(f"{'!!' if bad else '  '} {s}:{t} {path} {m}: {what}", flush=True)
