"""IV of noise columns: ``iv_p_value`` / ``iv_noise_95`` beside every IV, and the note on selected features
that do not beat noise (few defaults make a pure-noise column pass the usual IV >= 0.02 bar)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from fedrisk.finance.binning import class_counts, quantile_edges
from fedrisk.finance.woe import WoeEncoder, iv_significance, noise_note, select_features, woe_iv


def _labels(rng: np.random.Generator, n: int, bads: int) -> np.ndarray:
    y = np.zeros(n)
    y[rng.choice(n, bads, replace=False)] = 1
    return y


def test_the_noise_figures_match_the_iv_of_simulated_noise_columns():
    """Noise feature, 5 fixed quantile bins, 3,000 rows with 300 defaults, 600 replications: the simulated 95th
    percentile of IV is the chi-square ``iv_noise_95`` and about 5 % of p-values fall below 0.05 (with far fewer
    defaults per bin the approximation is rougher: see ``iv_significance``'s notes)."""
    rng = np.random.default_rng(20261201)
    n, bads = 3000, 300
    ivs, ps, noise95 = [], [], set()
    for _ in range(600):
        x, y = rng.normal(size=n), _labels(rng, n, bads)
        edges = quantile_edges(x, 5)
        g, b = class_counts(np.searchsorted(edges, x, side="left"), y, len(edges) + 1)
        iv = woe_iv(g, b)[2]
        sig = iv_significance(iv, g, b)
        ivs.append(iv)
        ps.append(sig["iv_p_value"])
        noise95.add(round(sig["iv_noise_95"], 12))
    assert len(noise95) == 1  # a function of the bins and class totals only
    (n95,) = noise95
    assert abs(n95 - 9.4877 / (bads * (n - bads) / n)) < 1e-3  # chi2.ppf(0.95, 4) / (G B / (G + B))
    assert 0.88 < np.quantile(ivs, 0.95) / n95 < 1.12
    assert 0.025 <= np.mean(np.array(ps) < 0.05) <= 0.085
    assert abs(np.mean(ivs) / (4 * (1 / bads + 1 / (n - bads))) - 1) < 0.1  # the mean: (bins - 1)(1/B + 1/G)


def _rare(seed: int = 11, n: int = 3000, bads: int = 18) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = _labels(rng, n, bads)
    X = pd.DataFrame({"signal": rng.normal(size=n) + 2.5 * y, "noise": rng.pareto(1.2, size=n),
                      "plan": rng.choice(["basic", "plus", "pro"], size=n)})
    return X, y


def test_a_noise_column_with_18_defaults_passes_the_iv_bar_but_not_the_noise_figure():
    X, y = _rare()
    enc = WoeEncoder().fit(X, y)
    rows = {r["feature"]: r for r in enc.iv_table()}
    for f in ("noise", "plan"):  # the usual bar is passed by noise (a Pareto column, a 3-level text column) ...
        assert rows[f]["iv"] >= 0.02 and rows[f]["iv_p_value"] > 0.05 and rows[f]["iv"] < rows[f]["iv_noise_95"], f
    assert rows["signal"]["iv_p_value"] < 1e-6 and rows["signal"]["iv"] > rows["signal"]["iv_noise_95"]
    sel = select_features(enc.iv_, enc.transform(X))
    assert {"noise", "plan"} <= set(sel["selected"])  # ... and still selected (selection is unchanged)
    table = [{**r, "selected": r["feature"] in sel["selected"]} for r in enc.iv_table()]
    note = noise_note(table, int(y.sum()))
    assert note is not None and note.startswith("with 18 defaults, 2 selected") and "'noise'" in note and "'plan'" in note
    assert "'signal'" not in note
    # names and counts only: no cell of the data in it
    assert not any(f"{v:.3f}" in note for v in X["noise"].head(50)) and "basic" not in note
    assert noise_note([{**r, "selected": r["feature"] == "signal"} for r in table], 18) is None


def test_the_report_shows_the_noise_figures_in_the_iv_table_and_the_note(tmp_path):
    from fedrisk.finance.report import load_run, render_report

    X, y = _rare()
    enc = WoeEncoder().fit(X, y)
    rows = [{**r, "selected": True} for r in enc.iv_table()]
    note = noise_note(rows, 18)
    (tmp_path / "metrics.json").write_text(json.dumps({"task": "horizontal.woe", "iv": {"federation": rows},
                                                       "iv_noise_note": note}))
    html = render_report(load_run(tmp_path))
    assert "iv p value" in html and "iv noise 95" in html
    assert "with 18 defaults, " in html and "not distinguishable from noise" in html
