"""DP calibration against the dp-accounting accountant, distributed noise shares, budget refusals."""
import math

import numpy as np
import pytest

dp_accounting = pytest.importorskip("dp_accounting")

from fedrisk.crypto.dp import add_distributed_noise, clip_l2, epsilon_spent, plan_privacy  # noqa: E402
from fedrisk.errors import ConfigError  # noqa: E402


@pytest.mark.parametrize("eps,k", [(1.0, 123), (4.0, 123), (8.0, 40)])
def test_calibrated_noise_meets_the_budget_tightly(eps, k):
    plan = plan_privacy(k, epsilon=eps, delta=1e-5)
    # the PLD accountant, asked independently, agrees the run fits the budget ...
    acc = dp_accounting.pld.PLDAccountant()
    acc.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(plan.noise_multiplier), k))
    spent = acc.get_epsilon(1e-5)
    assert spent <= eps and plan.epsilon == pytest.approx(spent)
    # ... and tightly: 1% less noise would overspend
    assert epsilon_spent(plan.noise_multiplier * 0.99, k, 1e-5) > eps
    # k Gaussian mechanisms of multiplier s are one of multiplier s / sqrt(k): the RDP accountant
    # (a second, independent method) lands at most a little above the PLD figure
    rdp = dp_accounting.rdp.RdpAccountant()
    rdp.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(plan.noise_multiplier), k))
    assert spent <= rdp.get_epsilon(1e-5) <= 1.25 * eps


def test_fixed_multiplier_reports_its_epsilon_and_refuses_an_unmeetable_budget():
    plan = plan_privacy(93, noise_multiplier=20.0, delta=1e-5)
    assert 0 < plan.epsilon < 4 and plan.summary(50)["epsilon_rounds_run"] < plan.epsilon
    with pytest.raises(ConfigError) as e:
        plan_privacy(93, epsilon=1.0, delta=1e-5, noise_multiplier=5.0, what="30 trees x 3 levels")
    msg = str(e.value)
    assert "\n" not in msg and "epsilon = 1" in msg and "30 trees x 3 levels" in msg and "would need noise_multiplier >=" in msg
    need = float(msg.split("would need noise_multiplier >= ")[1].split(",")[0])
    assert epsilon_spent(need, 93, 1e-5) <= 1.0 + 1e-6
    with pytest.raises(ConfigError, match="delta"):
        plan_privacy(10, epsilon=1.0, delta=1.5)


def test_distributed_shares_sum_to_the_calibrated_noise():
    rng = np.random.default_rng(0)
    sens, mult, t = 2.0, 3.0, 3
    total = sum(add_distributed_noise(np.zeros(200_000), sens, mult, t, rng) for _ in range(t))
    assert np.std(total) == pytest.approx(mult * sens, rel=0.01)
    # fewer contributors than t would carry less than the calibrated noise: that is why t is the threshold
    two = sum(add_distributed_noise(np.zeros(200_000), sens, mult, t, rng) for _ in range(2))
    assert np.std(two) == pytest.approx(mult * sens * math.sqrt(2 / 3), rel=0.01)
    with pytest.raises(ConfigError):
        add_distributed_noise(np.zeros(3), 1.0, 1.0, 0)


def test_clip_l2():
    x = np.array([3.0, 4.0])
    assert np.allclose(clip_l2(x, 1.0), [0.6, 0.8])
    assert np.array_equal(clip_l2(x, 10.0), x)


def test_tiny_noise_is_refused_and_huge_budgets_get_the_floor():
    import pytest

    from fedrisk.crypto.dp import MIN_NOISE_MULTIPLIER, plan_privacy
    from fedrisk.errors import ConfigError

    with pytest.raises(ConfigError, match="noise_multiplier = 0.01 is below"):
        plan_privacy(10, noise_multiplier=0.01)
    plan = plan_privacy(3, epsilon=1000.0, delta=1e-5)  # would calibrate far below the floor
    assert plan.noise_multiplier == MIN_NOISE_MULTIPLIER and plan.epsilon <= 1000.0
