"""The coordinator's rejoin policy for horizontal tasks: which settings take a dropped bank back."""
from __future__ import annotations

from types import SimpleNamespace

from fedrisk.tasks.horizontal_lr import rejoin_policy


def _ctx(secure=True, rounds=0, privacy=None):
    asked = []

    def admit(bank, at, refuse=None):
        asked.append((bank, at, refuse))
        return refuse is None

    spec = SimpleNamespace(security=SimpleNamespace(secure_aggregation=secure, secure_aggregation_rounds=rounds),
                           privacy=privacy)
    return SimpleNamespace(spec=spec, extra={"admit": admit}), asked


def test_single_round_and_plain_sums_take_a_bank_back():
    for secure in (True, False):
        ctx, asked = _ctx(secure=secure, rounds=0)
        assert rejoin_policy(ctx)("bank2", 7) is True
        assert asked == [("bank2", 7, None)]


def test_session_aggregation_refuses_naming_the_setting():
    ctx, asked = _ctx(rounds=64)
    assert rejoin_policy(ctx)("bank2", 7) is False
    assert "secure_aggregation_rounds = 0" in asked[0][2]


def test_a_private_job_refuses_a_rejoin_even_with_single_round_sums():
    # the noise shares and the accountant assume the banks of the start: a returning bank is refused
    ctx, asked = _ctx(rounds=0, privacy=SimpleNamespace(epsilon=4.0))
    assert rejoin_policy(ctx)("bank2", 7) is False
    assert "[privacy]" in asked[0][2]


def test_no_policy_outside_the_runtime():
    ctx, _ = _ctx()
    ctx.extra = {}
    assert rejoin_policy(ctx) is None
