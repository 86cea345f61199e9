"""A ``[task] categorical`` name no party of a vertical WOE/scorecard job holds stops the job before anything
is matched or encrypted.

It used to be refused only after the encrypted WOE stage: the feature holders already held their WOE
results, and the label holder had learnt their feature names from the protocol's ``sizes`` message. Now
each party reports, right after loading its file, which of the declared (public) names it holds — one
bit a name, no other column name — and the label holder stops the job in one line naming the column
and the setting. The check runs through each party's own ``task.run`` (what ``fedrisk party`` runs) over
the in-memory network, capturing every message.
"""
from __future__ import annotations

import logging

import pytest

from fedrisk.errors import DataError, FedriskError
from fedrisk.runtime.abort_reason import public_names, wire_reason
from fedrisk.runtime.context import PartyContext, ProgressLog
from fedrisk.runtime.spec import load_spec
from fedrisk.runtime.tasks import get_task
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork
from tests.tasks.test_woe_tasks import vertical_german


def _run_capturing(spec_path, out):
    spec = load_spec(spec_path)
    task = get_task(spec.task["kind"])
    net = InMemoryNetwork(spec.participants(), job=spec.job_id, tag_prefixes=task.TAG_PREFIXES, capture=True,
                          recv_timeout=120)

    def role(name):
        def go(ch):
            log = logging.getLogger(f"test.{name}")
            task.run(PartyContext(name=name, spec=spec, channel=ch, out=out, log=log, progress=ProgressLog(None, log)))
        return go

    err = None
    try:
        run_roles({p: role(p) for p in spec.participants()}, network=net, recv_timeout=120)
    except FedriskError as e:
        err = e
    return net, spec.participants(), err


@pytest.mark.parametrize("kind", ["vertical.woe", "vertical.scorecard"])
def test_a_misspelt_categorical_name_is_refused_before_psi_and_woe(tmp_path, kind):
    spec, _ = vertical_german(tmp_path, kind=kind, task_extra='categorical = ["purpse", "housing"]')
    net, parties, err = _run_capturing(spec, tmp_path / "run")
    assert isinstance(err, DataError), err
    msg = str(err)
    assert "\n" not in msg
    assert "task.categorical names ['purpse'], which no party holds" in msg, msg
    assert "housing" not in msg.split("names", 1)[1].split("]")[0]  # a name the bureau holds is not blamed
    # nothing but the check crossed: no PSI, no encrypted label, no WOE message
    sent = [(e.sender, e.tag, e.body) for p in parties for e in net[p].captured]
    tags = {t for _, t, _ in sent}
    assert tags <= {"vcat.held", "ctl.abort"}, tags
    held = {s: b for s, t, b in sent if t == "vcat.held"}
    assert set(held) == {"payco", "bureau"}  # each feature holder's answer: one bit per declared name
    assert held == {"payco": [False, False], "bureau": [False, True]}
    # the partners were stopped with the reason (the in-memory runner redacts every quoted name)
    for p in ("payco", "bureau"):
        reason = net[p].mailbox.failure
        assert reason and "task.categorical names" in reason, reason
    # what `fedrisk party` sends them: the declared (public) name stays, the lender's own column does not
    wire = wire_reason("lender", err, public_names(load_spec(spec)))
    assert "'purpse'" in wire and "task.categorical" in wire
    assert "the label holder has 'purpose'" in msg  # its own log: the spelling hint
    assert "'purpose'" not in wire and "label holder has" not in wire, wire  # partners: not even that a similar column exists
    for p in ("payco", "bureau"):
        assert "label holder has" not in net[p].mailbox.failure


@pytest.mark.parametrize("sender, tag, value", [("payco", "vcat.held", [True]), ("payco", "vcat.held", "yes"),
                                                ("payco", "vcat.held", [1, 0]), ("lender", "vcat.go", "go")])
def test_a_malformed_check_message_ends_the_job_with_one_line_naming_the_sender(sender, tag, value):
    """A deviating partner answers with the wrong length or types, or a label holder with anything but the
    go-ahead: one ProtocolError line naming the sender, never a traceback, and no PSI after it."""
    import fedrisk as fr
    from fedrisk.errors import ProtocolError
    from fedrisk.estimators.engine import run_task
    from tests.security.tamper import tampering, vertical_federation

    fed = vertical_federation(n=200)
    fed.parties["payco"]["c"] = fed.parties["payco"]["c"].round(0).astype(str)  # a text column to declare
    with tampering(sender, tag, (), lambda v: value) as state:
        with pytest.raises(FedriskError):
            run_task(fed, "vertical.woe", {"categorical": ["c", "a"]})
    assert state["hits"] == 1, "the tampered message was never sent: the test no longer attacks anything"
    assert not [e for n, e in state["errors"] if not isinstance(e, FedriskError)], state["errors"]
    refusals = [str(e) for n, e in state["errors"] if isinstance(e, ProtocolError) and n != sender]
    assert refusals and repr(sender) in refusals[0] and tag in refusals[0] and "\n" not in refusals[0], state["errors"]
    assert not [t for s, t, _ in state["log"] if s != sender and t.startswith("psi.")], "PSI went on after a malformed check"


def test_a_name_held_by_a_feature_holder_only_passes_the_check(tmp_path):
    """The bits say who holds it: the lender holds neither name, the payco and the bureau one each."""
    spec, _ = vertical_german(tmp_path, task_extra='categorical = ["property", "housing"]\nreveal = "bins"\n'
                                                   'key_bits = 2048')
    net, parties, err = _run_capturing(spec, tmp_path / "run")
    assert err is None, err
    sent = [(e.sender, e.to, e.tag, e.body) for p in parties for e in net[p].captured]
    assert {s: b for s, _, t, b in sent if t == "vcat.held"} == {"payco": [True, False], "bureau": [False, True]}
    assert {t for _, _, t, _ in sent if t.startswith("vcat.")} == {"vcat.held", "vcat.go"}
    # each feature holder received the go-ahead before any PSI message (it waits for it before starting PSI)
    for p in ("payco", "bureau"):
        got = [e.tag for e in net[p].captured]
        assert got.index("vcat.go") < next(i for i, t in enumerate(got) if t.startswith("psi.")), got[:6]
    import json

    doc = json.loads((tmp_path / "run" / "woe" / "payco.json").read_text())
    assert doc["features"]["property"]["kind"] == "categorical"


def test_no_categorical_list_sends_no_check(tmp_path):
    spec, _ = vertical_german(tmp_path, task_extra='key_bits = 2048')
    net, parties, err = _run_capturing(spec, tmp_path / "run")
    assert err is None, err
    assert not any(e.tag.startswith("vcat.") for p in parties for e in net[p].captured)


def test_a_name_with_braces_is_refused_as_any_other():
    """The refusal's text holds the declared names: a brace in one (``amt{eur}``) was read as a format field
    (KeyError: an internal error instead of the refusal, at every party)."""
    from tests.security.tamper import vertical_federation
    from fedrisk.estimators.engine import run_task

    for name in ("amt{eur}", "x{}"):
        with pytest.raises(DataError, match="no party holds") as e:
            run_task(vertical_federation(n=200), "vertical.woe", {"categorical": [name]})
        assert repr(name) in str(e.value)
