"""A malicious partner or coordinator sends malformed fields: one line naming it, never a traceback.

Found by ``python -m tests.security.tamper KIND`` (every field of every message mutated in turn):
before the fixes each case below reached numpy or Python arithmetic and failed there --
``ValueError: operands could not be broadcast``, ``KeyError: '../../x'``, ``OverflowError``, or
(``horizontal.woe`` grid) a ``MemoryError`` after trying to allocate 7 TiB: with a smaller crafted
count a coordinator could make a bank allocate all its host's memory. Each now ends in a
:class:`~fedrisk.errors.ProtocolError` that names the party and the message.
"""
from __future__ import annotations

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
