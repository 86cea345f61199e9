"""Tests for the HTML run report."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from fedrisk.errors import DataError
from fedrisk.finance.report import write_report


def test_full_report(fake_run: Path):
    out = write_report(fake_run)
    assert out == fake_run / "report.html"
    html = out.read_text()
    assert html.count("<svg") >= 6
    assert not re.search(r'src\s*=\s*["\']?https?:', html, re.I)
    assert "<script" not in html.replace("&lt;script&gt;", "")  # feature names are escaped
    assert "pay_0&lt;script&gt;" in html
    # ledger table: flows by direction and kind
    assert "Flows by direction and message kind" in html
    assert "bank_a</td><td>coordinator</td>" in html
    assert "masked" in html and "model" in html
    # headline figures and sections
    for text in ("ROC curve", "KS curve", "Score distribution", "Lift by score decile", "Calibration (test)",
                 "Training loss per round", "PSI", "Information value", "Centralised"):
        assert text in html, text
    assert "Not available" not in html


def test_report_tolerates_missing_inputs(tmp_path: Path):
    html = write_report(tmp_path).read_text()
    assert "Not available" in html and "metrics.json not found" in html


def test_report_from_scores_only(fake_run: Path):
    (fake_run / "metrics.json").unlink()
    shutil.rmtree(fake_run / "ledger")
    html = write_report(fake_run).read_text()
    # test/train metrics and PSI are recomputed from the score files
    assert html.count("<svg") >= 6
    assert "Population stability" in html


def test_report_broken_files(fake_run: Path):
    (fake_run / "metrics.json").write_text("{not json")
    (fake_run / "scores" / "test.csv").write_text("id,prob\n1,0.3\n")
    with open(fake_run / "ledger" / "bank_a.jsonl", "a") as fh:
        fh.write("garbage line\n")
    html = write_report(fake_run).read_text()
    assert "could not be parsed" in html and "missing column" in html and "unreadable line" in html


def test_report_missing_dir(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist"):
        write_report(tmp_path / "nope")


def test_report_is_deterministic_apart_from_timestamp(fake_run: Path):
    a = write_report(fake_run).read_text()
    b = write_report(fake_run).read_text()
    strip = lambda s: re.sub(r"generated [^<]*", "", s)  # noqa: E731
    assert strip(a) == strip(b)


def test_gains_chart_places_unequal_groups_at_their_population_share(tmp_path: Path):
    """Tied scores are never split (metrics.lift_table), so groups can differ in size; the gains curve drew
    every group at k/10 of the population whatever its size, and said groups were equal."""
    import json

    import numpy as np

    from fedrisk.finance.metrics import evaluate

    y = np.array([1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0] * 10)
    s = np.array([0.9] * 8 + [0.2] + [0.1] * 3 * 1)
    s = np.tile(s, 10)
    (tmp_path / "metrics.json").write_text(json.dumps({"task": "horizontal.lr", "test": evaluate(y, s)}))
    html = write_report(tmp_path).read_text()
    svg = re.search(r'<svg[^>]*aria-label="Cumulative gains \(test\)".*?</svg>', html, re.S).group(0)
    cx = [float(v) for v in re.findall(r'<circle cx="([\d.]+)"', svg)]
    share = np.r_[0, np.cumsum([r["n"] for r in evaluate(y, s)["lift"]])] / y.size
    assert len(cx) == len(share) == 4
    np.testing.assert_allclose((np.array(cx) - cx[0]) / (cx[-1] - cx[0]), share, atol=2e-3)
    lift = re.search(r'<section id="lift">(.*?)</section>', html, re.S).group(1)
    assert "never split" in lift


def test_curves_and_tables_name_their_rows_and_units(tmp_path: Path):
    """A horizontal run's "train" scores are the evaluation holder's own training rows, not the federation's; the
    ROC legend said "train". The lift table's "Score range" is a default-probability range, also on a scorecard's
    page where "score" means points."""
    import json

    import numpy as np

    from fedrisk.finance.metrics import evaluate, population_stability_index

    rng = np.random.default_rng(0)
    (tmp_path / "scores").mkdir()
    for split in ("train", "test"):
        y = (rng.random(300) < 0.3).astype(int)
        p = np.clip(rng.random(300) * 0.5 + 0.3 * y, 0, 1)
        (tmp_path / "scores" / f"{split}.csv").write_text("id,y,score\n" + "".join(f"{i},{a},{b}\n" for i, (a, b) in enumerate(zip(y, p))))
    te = np.loadtxt(tmp_path / "scores" / "test.csv", delimiter=",", skiprows=1)
    tr = np.loadtxt(tmp_path / "scores" / "train.csv", delimiter=",", skiprows=1)
    stab = {**population_stability_index(tr[:, 2], te[:, 2]), "expected_label": "bank1 train", "actual_label": "test"}
    (tmp_path / "metrics.json").write_text(json.dumps({"task": "horizontal.lr", "test": evaluate(te[:, 1], te[:, 2]),
                                                       "stability": stab}))
    html = write_report(tmp_path).read_text()
    roc = re.search(r'<svg[^>]*aria-label="ROC curve".*?</svg>', html, re.S).group(0)
    assert "bank1 train (AUC" in roc and ">train (AUC" not in roc
    assert "<th>Default probability range</th>" in html


def test_auc_card_shows_its_hanley_mcneil_standard_error(tmp_path: Path):
    """metrics.json carries the test AUC's standard error; a validator signing off a model needs it beside the AUC."""
    import json

    import numpy as np
    from sklearn.metrics import roc_auc_score

    from fedrisk.finance.metrics import evaluate

    rng = np.random.default_rng(2)
    y = (rng.random(400) < 0.25).astype(int)
    p = np.clip(rng.random(400) * 0.6 + 0.3 * y, 0, 1)
    (tmp_path / "metrics.json").write_text(json.dumps({"task": "horizontal.lr", "test": evaluate(y, p)}))
    html = write_report(tmp_path).read_text()
    a, n1, n0 = roc_auc_score(y, p), int(y.sum()), int((1 - y).sum())
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = np.sqrt((a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0))
    card = re.search(r'<div class="k">Test AUC</div><div class="v">([^<]*)</div><div class="s">([^<]*)</div>', html)
    assert card.group(1) == f"{a:.3f}"
    assert f"SE {se:.3f} (Hanley–McNeil)" in card.group(2)


def test_documentation_header_names_whose_training_rows_its_bad_rate_is(tmp_path: Path):
    """A horizontal run's train block is the evaluation holder's own rows; the header said "Bad rate (train)"."""
    import json

    import numpy as np

    from fedrisk.finance.metrics import evaluate

    y = np.array([0, 1] * 50)
    p = np.linspace(0.1, 0.9, 100)
    (tmp_path / "metrics.json").write_text(json.dumps({
        "task": "horizontal.lr", "train": evaluate(y, p), "test": evaluate(y, p),
        "stability": {"psi": 0.0, "bins": [], "expected_label": "bank1 train", "actual_label": "test"}}))
    html = write_report(tmp_path).read_text()
    assert "<td>Bad rate (bank1 train)</td>" in html and "<td>Bad rate (test)</td>" in html
