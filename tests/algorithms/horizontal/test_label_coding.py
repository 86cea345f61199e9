"""The label coding horizontal banks agree for their model files, including a bank taken back mid-job.

A bank that rejoins missed the start's exchange; it must write the agreed coding (what every other
participant's copy of the model says), not its own: with codings that differ between banks the
agreed one is ``None`` (classes ``[0, 1]``), and a rejoined bank used to write its own pair.
"""
from __future__ import annotations

from types import SimpleNamespace

from fedrisk.algorithms.horizontal.label_coding import coordinator_coding, rejoin_admit
from fedrisk.runtime.threads import run_roles
from fedrisk.tasks.horizontal_lr import agree_classes
from fedrisk.transport.channel import InMemoryNetwork

COORD = "coordinator"


def _bank(coding, rejoin=None, prefix="hlr."):
    def role(ch):
        return agree_classes(SimpleNamespace(channel=ch, extra={"rejoin": rejoin} if rejoin is not None else {}),
                             coding, prefix)
    return role


def test_a_rejoined_bank_writes_the_agreed_coding_not_its_own():
    net = InMemoryNetwork([COORD, "b1", "b2"], recv_timeout=30.0)
    asked = []

    def coordinator(ch):
        agreed = coordinator_coding(ch, ["b1", "b2"], "hlr.")
        admit = rejoin_admit(lambda bank, at: asked.append((bank, at)) or bank == "b2", ch, "hlr.", agreed)
        return agreed, admit

    got = run_roles({COORD: coordinator, "b1": _bank(["good", "bad"]), "b2": _bank(["N", "Y"])}, network=net)
    agreed, admit = got[COORD]
    assert agreed is None and got["b1"] is None and got["b2"] is None  # codings differ: [0, 1] everywhere
    # b2 dies and comes back; the coordinator admits it at round 3 (b1 did not ask: refused, nothing sent)
    assert admit("b1", 3) is False
    back = run_roles({COORD: lambda ch: admit("b2", 3), "b2": _bank(["N", "Y"], rejoin=3)}, network=net)
    assert back[COORD] is True and back["b2"] is None
    assert asked == [("b1", 3), ("b2", 3)]


def test_no_rejoin_policy_stays_none():
    assert rejoin_admit(None, None, "hgb.", ["good", "bad"]) is None


def test_a_rejoined_bank_with_the_common_coding_gets_it():
    net = InMemoryNetwork([COORD, "b1", "b2"], recv_timeout=30.0)

    def coordinator(ch):
        agreed = coordinator_coding(ch, ["b1", "b2"], "hgb.")
        return rejoin_admit(lambda bank, at: True, ch, "hgb.", agreed)

    admit = run_roles({COORD: coordinator, "b1": _bank(["good", "bad"], prefix="hgb."),
                       "b2": _bank(["good", "bad"], prefix="hgb.")}, network=net)[COORD]
    back = run_roles({COORD: lambda ch: admit("b2", 5), "b2": _bank(None, rejoin=5, prefix="hgb.")}, network=net)
    assert back["b2"] == ["good", "bad"]


def test_the_same_exchange_agrees_one_column_order():
    from fedrisk.algorithms.horizontal.label_coding import bank_agreement, coordinator_agreement

    def run(features):
        net = InMemoryNetwork([COORD, *features], recv_timeout=30.0)
        roles = {b: (lambda f: lambda ch: bank_agreement(ch, COORD, ["good", "bad"], f, "hlr."))(f)
                 for b, f in features.items()}
        roles[COORD] = lambda ch: coordinator_agreement(ch, list(features), "hlr.")
        return run_roles(roles, network=net)

    got = run({"b1": ["a", "b", "c"], "b2": ["c", "a", "b"]})
    assert got[COORD] == (["good", "bad"], ["a", "b", "c"])
    assert got["b1"] == got["b2"] == (["good", "bad"], ["a", "b", "c"])
    # different features: no order (the schema step names the difference)
    got = run({"b1": ["a", "b", "c"], "b2": ["a", "b", "d"]})
    assert got[COORD][1] is None and got["b2"] == (["good", "bad"], None)
