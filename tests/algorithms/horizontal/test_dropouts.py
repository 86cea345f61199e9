"""A rejoining bank reads the agreed scaler from the coordinator's ``hlr.rejoin``
(:func:`fedrisk.algorithms.horizontal.dropouts.rejoin_scaler`): a malformed one is one
:class:`~fedrisk.errors.ProtocolError` naming the bank, the coordinator, the tag and the field, as the
first-time ``hlr.scaler`` is, never a numpy traceback at the bank."""
from __future__ import annotations

import numpy as np
import pytest

from fedrisk.algorithms.horizontal import fedavg_lr, newton_lr
from fedrisk.errors import ProtocolError
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork

D = 3
GOOD = {"mean": [0.0, 1.0, 2.0], "scale": [1.0, 2.0, 0.5], "first_round": 4}


def _rejoin(welcome: dict, trainer=newton_lr):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, D)), (rng.random(20) < 0.3).astype(float)
    cfg = newton_lr.NewtonConfig() if trainer is newton_lr else fedavg_lr.FedAvgConfig()
    net = InMemoryNetwork(["bank0", "coordinator"], recv_timeout=5.0)

    def coordinator(ch):
        ch.send("bank0", "hlr.rejoin", welcome, kind="aggregate")

    def bank(ch):
        return trainer.run_bank(ch, "coordinator", X, y, ["a", "b", "c"], cfg, rejoining=True)

    with pytest.raises(ProtocolError) as info:
        run_roles({"coordinator": coordinator, "bank0": bank}, network=net)
    return str(info.value)


@pytest.mark.parametrize("field, value, says", [
    ("mean", [0.0, 1.0], "3 numbers"),              # one element short: a broadcast error in (X - mean)
    ("mean", "x", "3 numbers"),                     # a word: a ValueError from numpy
    ("scale", [1.0, float("nan"), 1.0], "NaN"),      # NaN scale: every standardised value NaN, silently
    ("scale", [1.0, 0.0, 1.0], "not positive"),     # zero scale: a division by zero
    ("first_round", "x", "whole number"),           # FedAvg's int("x")
])
@pytest.mark.parametrize("trainer", [newton_lr, fedavg_lr], ids=["newton", "fedavg"])
def test_a_malformed_rejoin_message_is_one_line_naming_the_field(field, value, says, trainer):
    msg = _rejoin({**GOOD, field: value}, trainer)
    assert "bank0" in msg and "'coordinator'" in msg and "hlr.rejoin" in msg and repr(field) in msg, msg
    assert says in msg and "\n" not in msg, msg
