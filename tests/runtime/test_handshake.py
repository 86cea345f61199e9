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
