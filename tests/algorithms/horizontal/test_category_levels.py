"""Counting a bank's categories against the declared vocabulary (fedrisk.algorithms.horizontal.category_levels)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from fedrisk.algorithms.horizontal.category_levels import count_vector


def test_integer_codes_read_as_floats_count_as_their_declared_level():
    """A bank whose code column has a blank reads 4 as 4.0: its rows were counted as undeclared values."""
    vocab = {"rate": [1, 2, 3, 4]}
    ints, undeclared_ints = count_vector(pd.DataFrame({"rate": [1, 2, 2, 4]}), vocab)
    floats, undeclared = count_vector(pd.DataFrame({"rate": [1.0, 2.0, 2.0, 4.0, np.nan]}), vocab)
    assert undeclared == undeclared_ints == {}
    # same level counts; the float bank has one blank in the missing slot
    np.testing.assert_array_equal(floats[:-1], ints[:-1])
    assert floats[-1] == 1 and ints[-1] == 0


def test_malformed_levels_from_the_coordinator_are_one_protocol_error():
    """A coordinator's crafted ``levels`` (a string for the kept list, a missing flag absent) is refused in one
    line, not a KeyError deep in building the encoders."""
    import pytest

    from fedrisk.algorithms.horizontal.aggregation import PlainAggregation
    from fedrisk.algorithms.horizontal.category_levels import agree_levels_bank
    from fedrisk.errors import ProtocolError
    from fedrisk.runtime.threads import run_roles

    vocab = {"purpose": ["car", "tv"]}
    frame = pd.DataFrame({"purpose": ["car", "tv", "car"]})
    for bad in ({"kept": "car", "other": False, "missing": False}, {"kept": ["car"], "other": False},
                {"kept": ["car", "car"], "other": False, "missing": False},
                {"kept": ["boat"], "other": True, "missing": False}):
        def coord(ch, bad=bad):
            PlainAggregation().collect(ch, ["bank"], "hcat.counts", 4)
            ch.send("bank", "hcat.levels", {"purpose": bad}, kind="public-parameter")

        with pytest.raises(ProtocolError, match="purpose"):
            run_roles({"bank": lambda ch: agree_levels_bank(ch, "coord", frame, vocab, PlainAggregation()),
                       "coord": coord})


def test_a_declared_category_no_bank_has_is_not_named_in_the_other_level():
    """The spec declares ``boat``, which no bank has: the "(other)" level listed it beside the rare ``tv``,
    as if it had been seen. Now the coordinator says which declared categories have no row anywhere and
    the banks leave them out; such a value at scoring is unseen and still encoded as "(other)"."""
    from fedrisk.algorithms.horizontal.aggregation import PlainAggregation
    from fedrisk.algorithms.horizontal.category_levels import agree_levels_bank, agree_levels_coordinator
    from fedrisk.data.categorical import CategoryEncoder
    from fedrisk.runtime.threads import run_roles

    vocab = {"purpose": ["car", "tv", "boat"]}
    frames = {"b1": pd.DataFrame({"purpose": ["car"] * 30 + ["tv"]}), "b2": pd.DataFrame({"purpose": ["car"] * 5})}
    roles = {b: (lambda ch, f=f: agree_levels_bank(ch, "coord", f, vocab, PlainAggregation())) for b, f in frames.items()}
    roles["coord"] = lambda ch: agree_levels_coordinator(ch, ["b1", "b2"], vocab, PlainAggregation(), 20)
    out = run_roles(roles)
    assert out["coord"]["purpose"]["absent"] == ["boat"]
    for b in frames:
        enc = CategoryEncoder.from_json(out[b][0]["purpose"])
        assert [sorted(g) for g in enc.bins.groups] == [["car"], ["tv"]], enc.bins.groups
        codes, unseen = enc.codes(pd.Series(["boat", "tv", "car"]))
        assert codes[0] == codes[1] == enc.other and unseen == 1
