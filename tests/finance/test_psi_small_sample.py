"""PSI on a small sample says that its band cannot be read.

A validator checked stability on a tiny holdout (5 applicants): ``population_stability_index`` said
PSI 4.76, "shift", and the report printed it as a population shift. Two samples of 5 and 200 rows
from one population give a PSI of about 3 in 10 bins by chance alone. The result now carries
``chance_psi`` (what sampling alone gives at these sizes) and, when that reaches the "watch"
threshold, a ``small_sample`` sentence the report shows next to the PSI.
"""
from __future__ import annotations

import numpy as np

from fedrisk.finance.metrics import chance_psi, population_stability_index
from fedrisk.finance.report import _stability


def test_chance_psi_is_what_one_population_gives_by_sampling():
    rng = np.random.default_rng(0)
    for n_e, n_a in ((200, 20), (1000, 100), (200, 5), (5000, 3000)):
        seen = [population_stability_index(rng.normal(size=n_e), rng.normal(size=n_a))["psi"] for _ in range(80)]
        assert 0.8 < np.mean(seen) / chance_psi(10, n_e, n_a) < 1.25, (n_e, n_a, np.mean(seen))


def test_a_tiny_sample_is_flagged_and_the_report_says_so():
    rng = np.random.default_rng(1)
    st = population_stability_index(rng.random(200), rng.random(5))
    assert st["band"] == "shift" and st["chance_psi"] > 1.5 and st["psi"] < 2 * st["chance_psi"]
    assert "5 actual and 200 expected rows" in st["small_sample"] and "not reliable" in st["small_sample"]
    html = _stability({"stability": st})
    assert "by chance alone" in html


def test_large_samples_carry_no_small_sample_note():
    rng = np.random.default_rng(2)
    st = population_stability_index(rng.random(5000), rng.random(2000) + 0.3)
    assert st["band"] == "shift" and "small_sample" not in st and st["chance_psi"] < 0.01
    assert "by chance alone" not in _stability({"stability": st})


def test_chance_psi_simulates_capped_samples_on_either_side(monkeypatch):
    """A million-row actual sample was simulated whole (seconds per call); the cap covered the expected side only."""
    import fedrisk.finance.metrics as m

    sizes = []
    real = m._psi_bins
    monkeypatch.setattr(m, "_psi_bins", lambda e, a, k: (sizes.append((len(e), len(a))), real(e, a, k))[1])
    for n_e, n_a in ((300, 1_000_000), (1_000_000, 300)):
        sizes.clear()
        noise = m.chance_psi(10, n_e, n_a)
        assert max(max(s) for s in sizes) <= m.PSI_SIM_ROWS
        # two samples of one population at these sizes: about (k - 1)/300 = 0.03 (simulated whole: 0.030-0.032)
        assert 0.027 < noise < 0.036, (n_e, n_a, noise)


def test_a_score_of_few_values_is_judged_in_the_bins_it_uses():
    """A 4-valued score fills 4 of its 10 bins; chance was simulated for 10 and the note called a same-population
    sample of 60 rows unreadable (chance 0.18; the real same-population PSI averages about 0.05)."""
    rng = np.random.default_rng(3)
    seen = [population_stability_index(rng.integers(0, 4, 2000).astype(float),
                                       rng.integers(0, 4, 60).astype(float))["psi"] for _ in range(100)]
    st = population_stability_index(rng.integers(0, 4, 2000).astype(float), rng.integers(0, 4, 60).astype(float))
    assert 0.7 < np.mean(seen) / st["chance_psi"] < 1.4, (np.mean(seen), st["chance_psi"])
    assert "small_sample" not in st
