"""A malicious partner or coordinator sends malformed fields: one line naming it, never a traceback.

Found by ``python -m tests.security.tamper KIND`` (every field of every message mutated in turn):
before the fixes each case below reached numpy or Python arithmetic and failed there --
``ValueError: operands could not be broadcast``, ``KeyError: '../../x'``, ``OverflowError``, or
(``horizontal.woe`` grid) a ``MemoryError`` after trying to allocate 7 TiB: with a smaller crafted
count a coordinator could make a bank allocate all its host's memory. Each now ends in a
:class:`~fedrisk.errors.ProtocolError` that names the party and the message.
"""
from __future__ import annotations

import numpy as np
import pytest

from fedrisk.errors import FedriskError, ProtocolError
from tests.security.tamper import tampered_run

CASES = [
    # malicious coordinator -> banks (horizontal LR standardisation and Newton rounds)
    ("horizontal.lr", "coordinator", "hlr.range", ("s",), "drop-last"),
    ("horizontal.lr", "coordinator", "hlr.range", ("s",), "text"),
    ("horizontal.lr", "coordinator", "hlr.mean", ("mean",), "one-more"),
    ("horizontal.lr", "coordinator", "hlr.scaler", ("scale",), "none"),
    ("horizontal.lr", "coordinator", "hlr.scaler", ("first_round",), "text"),
    ("horizontal.lr", "coordinator", "hlr.newton.rN", ("w",), "none"),
    ("horizontal.lr", "coordinator", "hlr.newton.rN", ("p",), "text"),
    # malicious coordinator -> banks (federated bins of horizontal GBDT)
    ("horizontal.gbdt", "coordinator", "hgb.bins.cuts", ("cuts",), "text"),
    ("horizontal.gbdt", "coordinator", "hgb.bins.cuts", ("missing",), "drop-last"),
    # ... and its zoom / refine requests (a word for an edge, a trillion cells to count)
    ("horizontal.gbdt", "coordinator", "hgb.bins.cuts", ("zoom", "lo"), "text"),
    ("horizontal.gbdt", "coordinator", "hgb.bins.cuts", ("zoom", "cells"), "huge"),
    # malicious coordinator -> banks (horizontal WOE): a trillion-cell grid, unknown features, broken intervals
    ("horizontal.woe", "coordinator", "hwoe.grid", ("cells",), "huge"),
    ("horizontal.woe", "coordinator", "hwoe.grid", ("cells",), "negative"),
    ("horizontal.woe", "coordinator", "hwoe.plan", ("features",), "text"),
    ("horizontal.woe", "coordinator", "hwoe.refine", ("intervals",), "text"),
    # malicious partner in exact vertical LR: a 1e300 partial scalar overflowed Python floats
    ("vertical.lr", "lender", "vlr.c.N", (), "huge"),
    ("vertical.lr", "payco", "vlr.c.N", (), "huge"),
    # malicious feature holder -> label holder (vertical WOE): its prebin declaration
    ("vertical.woe", "payco", "vwoe.sizes", ("n_prebins",), "text"),
    ("vertical.woe", "payco", "vwoe.sizes", ("sizes",), "text"),
    ("vertical.woe", "payco", "vwoe.sizes", ("features",), "none"),
    # malicious label holder -> feature holder (vertical WOE): the released IV/WOE
    ("vertical.woe", "lender", "vwoe.result", ("features",), "text"),
    ("vertical.woe", "lender", "vwoe.result", ("features",), "none"),
    # malicious feature holder -> label holder (vertical scorecard): NaN points in its partial scores
    ("vertical.scorecard", "payco", "vsc.train.partial", (), "nan"),
    # malicious label holder -> feature holder (SecureBoost): a level plan with a word or nothing for node ids
    ("vertical.secureboost", "lender", "sb.tN.dN.plan", ("parts",), "text"),
    ("vertical.secureboost", "lender", "sb.tN.dN.plan", ("build",), "none"),
    ("vertical.secureboost", "lender", "sb.importance", ("splits",), "drop-last"),
    # malicious coordinator -> banks (GBDT): a base score or a tree step a bank would index blindly
    ("horizontal.gbdt", "coordinator", "hgb.start", ("base_score",), "text"),
    ("horizontal.gbdt", "coordinator", "hgb.pN", ("splits",), "none"),
    ("horizontal.gbdt", "coordinator", "hgb.pN", ("tree",), "text"),
    ("horizontal.gbdt", "coordinator", "hgb.pN", ("new_tree",), "none"),
    # malicious coordinator -> banks (WOE): bin edges, WOE tables and IVs rebuilt from its message
    ("horizontal.woe", "coordinator", "hwoe.prebins", ("edges",), "text"),
    ("horizontal.woe", "coordinator", "hwoe.woe", ("features",), "text"),
    ("horizontal.woe", "coordinator", "hwoe.result", ("iv",), "none"),
    # malicious bank -> coordinator (WOE): a schema the coordinator sorted and indexed blindly
    ("horizontal.woe", "bank0", "hwoe.schema", ("features",), "none"),
    ("horizontal.woe", "bank1", "hwoe.schema", ("kinds",), "text"),
]


@pytest.mark.parametrize("kind, sender, tag, path, mutation", CASES,
                         ids=[f"{c[0]}:{c[1]}:{c[2]}:{'/'.join(c[3]) or 'body'}:{c[4]}" for c in CASES])
def test_a_malformed_field_ends_the_job_with_one_line_naming_the_sender(kind, sender, tag, path, mutation):
    state = tampered_run(kind, sender, tag, path, mutation)
    assert state["hits"] == 1, "the tampered message was never sent: the test no longer attacks anything"
    crashes = [(n, f"{type(e).__name__}: {e}") for n, e in state["errors"] if not isinstance(e, FedriskError)]
    assert not crashes, f"tracebacks instead of one-line errors: {crashes}"
    assert state["raised"] is not None, "the job accepted the malformed message"
    refusals = [e for n, e in state["errors"] if isinstance(e, ProtocolError) and n != sender]
    assert refusals, f"no party refused the message with a ProtocolError: {state['errors']}"
    msg = str(refusals[0])
    assert sender in msg and "\n" not in msg and len(msg) < 400


def test_a_partners_timing_stats_are_kept_as_numbers_only_and_never_fatal():
    """``sb.stats`` feeds only the label holder's report: a word there was a TypeError traceback."""
    state = tampered_run("vertical.secureboost", "payco", "sb.stats", ("histogram",), "text")
    assert state["hits"] == 1 and not state["errors"] and state["raised"] is None


def test_a_bool_among_released_woe_values_is_refused_as_the_iv_is():
    """The label holder's ``vwoe.result`` under ``reveal = "woe"``: a bool where a WOE value belongs was
    taken for 1.0 and WOE-encoded the feature holder's column, while the same bool as the IV was refused."""
    from fedrisk.errors import FedriskError
    from fedrisk.estimators.engine import run_task
    from tests.security.tamper import tampering, vertical_federation

    for path in (("features", "c", "woe", 0), ("features", "c", "iv")):
        with tampering("lender", "vwoe.result", path, lambda v: True) as state:
            with pytest.raises(FedriskError):
                run_task(vertical_federation(), "vertical.woe", {"reveal": "woe"})
        assert state["hits"] == 1, "the tampered message was never sent: the test no longer attacks anything"
        assert not [e for n, e in state["errors"] if not isinstance(e, FedriskError)], state["errors"]
        refusals = [str(e) for n, e in state["errors"] if isinstance(e, ProtocolError) and n == "payco"]
        assert refusals and "'lender'" in refusals[0] and "vwoe.result" in refusals[0], state["errors"]


def _refine_beyond(kind: str):
    """A coordinator's first refine request (``hgb.bins.cuts`` with ``inside``) rewritten to ask for
    more than an honest one can need: ``kind`` = "cells" (169 disjoint cells of feature 0 in one
    round, one more than 21 x max_bin 8), "sub" (1024 sub-cells per cell), "overlap" (one cell twice),
    "offgrid" (the first cell moved by half its width: not a cell of the grid the banks saw)."""
    def mutate(zoom):
        z = dict(zoom)
        if kind == "sub":
            z["cells"] = 1024
            return z
        a, b = float(zoom["lo"][0]), float(zoom["hi"][0])
        k = 169 if kind == "cells" else 2
        edges = a + (b - a) * np.arange(k + 1) / k
        z["features"] = [0] * k
        z["lo"], z["hi"] = edges[:-1].tolist(), edges[1:].tolist()
        if kind == "overlap":
            z["lo"], z["hi"] = [a, a], [b, b]
        if kind == "offgrid":
            z["features"], z["lo"], z["hi"] = [0], [a + (b - a) / 2], [b + (b - a) / 2]
        return z
    return mutate


@pytest.mark.parametrize("kind", ["cells", "sub", "overlap", "offgrid"])
def test_banks_answer_no_refine_request_beyond_what_an_honest_coordinator_needs(kind):
    """A malicious coordinator could aim refine requests anywhere (up to 4M counts a round) and read
    the pooled distribution at any resolution; a bank answers at most 21 x max_bin disjoint cells per
    feature and round, each in the agreed 64 sub-cells, and stops with one line naming the
    coordinator and the tag."""
    from fedrisk.estimators.engine import run_task
    from tests.security.tamper import JOBS, _has, tampering

    make, params = JOBS["horizontal.gbdt"]
    with tampering("coordinator", "hgb.bins.cuts", ("zoom",),
                   lambda z: _refine_beyond(kind)(z) if z.get("inside") else z) as state:
        with pytest.raises(FedriskError):
            run_task(make(), "horizontal.gbdt", params)
    assert state["hits"] == 1
    sent = [b for s, t, b in state["log"] if s == "coordinator" and t == "hgb.bins.cuts" and _has(b, ("zoom",))]
    assert sent and sent[0]["zoom"]["inside"], "the first zoom message was no refine request: nothing attacked"
    crashes = [(n, e) for n, e in state["errors"] if not isinstance(e, FedriskError)]
    assert not crashes, crashes
    refusals = {n: str(e) for n, e in state["errors"] if isinstance(e, ProtocolError) and n.startswith("bank")}
    assert refusals and all("coordinator 'coordinator'" in m and "hgb.bins.cuts" in m and "\n" not in m
                            for m in refusals.values()), refusals
    # the bank that got the tampered request (the first one sent) refused before counting anything for it
    assert not [t for s, t, _ in state["log"] if s in refusals and t.startswith("hgb.bins.zoom")]


def test_banks_take_no_cut_points_for_another_max_bin():
    """The final cut points carry the coordinator's ``max_bin``; a bank took it as the bound on the
    cuts per feature, so a coordinator could hand it up to 65,535 cuts a feature. A bank now requires
    its own job's ``max_bin`` and stops with one line naming the coordinator and both settings."""
    from fedrisk.estimators.engine import run_task
    from tests.security.tamper import JOBS, tampering

    make, params = JOBS["horizontal.gbdt"]
    with tampering("coordinator", "hgb.bins.cuts", ("max_bin",), lambda v: 4096) as state:
        with pytest.raises(FedriskError):
            run_task(make(), "horizontal.gbdt", params)
    assert state["hits"] == 1
    crashes = [(n, e) for n, e in state["errors"] if not isinstance(e, FedriskError)]
    assert not crashes, crashes
    refusals = {n: str(e) for n, e in state["errors"] if isinstance(e, ProtocolError) and n.startswith("bank")}
    assert refusals and all("coordinator 'coordinator'" in m and "max_bin 4096" in m and "\n" not in m
                            for m in refusals.values()), refusals


def test_a_private_bank_answers_no_zoom_round():
    """Under [privacy] the noisy sums are planned ahead: a zoom request (here in place of the final cut
    points) would be a noisy sum the accountant never counted, so a bank refuses it."""
    from fedrisk.algorithms.horizontal.federated_bins import _honest_request

    zoom = {"features": [0], "lo": [0.0], "hi": [1.0], "cells": 64, "inside": True}
    with pytest.raises(ProtocolError, match=r"bank0: coordinator 'c' asked \(hgb.bins.cuts\) for a bin zoom round "
                                            r"under \[privacy\]"):
        _honest_request("bank0", "c", "hgb.bins.cuts", zoom, {False: 0, True: 0}, 32, private=True)
    assert _honest_request("bank0", "c", "hgb.bins.cuts", zoom, {False: 0, True: 0}, 32, private=False)
    with pytest.raises(ProtocolError, match="more than 3 refine rounds"):
        _honest_request("bank0", "c", "hgb.bins.cuts", zoom, {False: 0, True: 3}, 32, private=False)
    span = {**zoom, "inside": False, "cells": 1024}
    with pytest.raises(ProtocolError, match="span zoom beyond"):
        _honest_request("bank0", "c", "hgb.bins.cuts", span, {False: 0, True: 1}, 32, private=False)
