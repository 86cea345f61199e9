import pytest

from fedrisk.errors import ConfigError
from fedrisk.runtime.handshake import first_difference, handshake
from fedrisk.runtime.threads import run_roles


def test_identical_settings_start_and_share_one_fresh_run_id():
    s = {"task": {"kind": "vertical.lr", "epochs": 10}}
    roles = {p: (lambda ch: handshake(ch, "lender", ["lender", "bureau", "payco"], s)) for p in ["lender", "bureau", "payco"]}
    first, second = run_roles(roles), run_roles(roles)
    assert len(set(first.values())) == 1 and len(next(iter(first.values()))) == 16
    assert set(first.values()) != set(second.values())


def test_mismatched_job_specs_refuse_to_start_and_name_the_setting():
    mine = {"task": {"kind": "vertical.lr", "epochs": 10}}
    theirs = {"task": {"kind": "vertical.lr", "epochs": 12}}
    roles = {
        "lender": lambda ch: handshake(ch, "lender", ["lender", "bureau"], mine),
        "bureau": lambda ch: handshake(ch, "lender", ["lender", "bureau"], theirs),
    }
    with pytest.raises(ConfigError, match=r"'bureau' runs a different job spec: task\.epochs: 10 here vs 12"):
        run_roles(roles)


def test_first_difference_reports_missing_keys():
    assert first_difference({"a": 1}, {"a": 1}) is None
    assert first_difference({"a": {"b": 1}}, {"a": {}}) == "a.b: 1 here vs missing"


def _crafted_start(start):
    """A driver that answers the hello with ``start``; returns what the participant did."""
    def driver(ch):
        ch.recv("bank", "ctl.hello")
        ch.send("bank", "ctl.start", start, kind="control")

    def bank(ch):
        out = {}
        return handshake(ch, "coordinator", ["coordinator", "bank"], {"task": {}}, started=out), out

    return run_roles({"coordinator": driver, "bank": bank}, recv_timeout=10)


@pytest.mark.parametrize("start, what", [
    ({"ok": True, "reason": "", "run_id": "../../../etc/passwd"}, "run id"),
    ({"ok": True, "reason": "", "run_id": "ab" * 4096}, "run id"),
    ({"ok": True, "reason": "", "run_id": {"x": 1}}, "run id"),
    ({"ok": True, "reason": "", "run_id": "0123456789abcdef", "rejoin": "x"}, "rejoin round"),
    ({"ok": True, "reason": "", "run_id": "0123456789abcdef", "rejoin": -3}, "rejoin round"),
    ({"ok": "yes", "reason": "", "run_id": "0123456789abcdef"}, "malformed start"),
    ({"ok": False, "reason": ["a"]}, "reason is not text"),
])
def test_a_crafted_start_message_is_refused_in_one_line_naming_the_driver(start, what):
    """A malicious driver's run id reaches model files and reports; its rejoin round sets where a bank resumes."""
    from fedrisk.errors import ProtocolError

    with pytest.raises(ProtocolError) as info:
        _crafted_start(start)
    msg = str(info.value)
    assert what in msg and "'coordinator'" in msg and "ctl.start" in msg and "\n" not in msg and len(msg) < 300


def test_an_honest_start_with_a_rejoin_round_is_taken():
    _, out = _crafted_start({"ok": True, "reason": "", "run_id": "0123456789abcdef", "rejoin": 4})["bank"]
    assert out == {"ok": True, "reason": "", "run_id": "0123456789abcdef", "rejoin": 4}


def test_a_huge_integer_in_a_participants_settings_is_named_not_a_traceback():
    """``repr(10**5000)`` raises in Python: the driver's refusal quoting it was a ValueError traceback."""
    roles = {
        "lender": lambda ch: handshake(ch, "lender", ["lender", "bureau"], {"task": {"epochs": 10}}),
        "bureau": lambda ch: handshake(ch, "lender", ["lender", "bureau"], {"task": {"epochs": 10 ** 5000}}),
    }
    with pytest.raises(ConfigError, match=r"'bureau' runs a different job spec: task\.epochs: 10 here vs 1000"):
        run_roles(roles)


def test_safe_repr_describes_what_python_will_not_print():
    import sys

    from fedrisk.transport.safe_text import safe_repr

    limit = sys.get_int_max_str_digits()
    try:
        sys.set_int_max_str_digits(4300)
        assert safe_repr({"n": 10 ** 5000}) == "<dict too large to print>"
    finally:
        sys.set_int_max_str_digits(limit)
    assert safe_repr("a\nb" * 100, 10).startswith("'a\\nb")
