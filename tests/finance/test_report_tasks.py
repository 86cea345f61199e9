"""The report shows what each task produced, and only what the viewing party may see.

Run directories are written here in the shapes the tasks write (``metrics.json``, scorecard parts,
``woe/<party>.json``, ``run-<party>.json``, ledgers); the end-to-end shapes are covered by the
task tests and the browser test.
"""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from fedrisk.finance.metrics import evaluate, population_stability_index
from fedrisk.finance.report import write_report

FACTOR = 20 / math.log(2)
OFFSET = 600 - FACTOR * math.log(50)


def _ledger(run: Path, party: str, to: str, n: int = 5, kind: str = "plaintext-by-design") -> None:
    (run / "ledger").mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"time": "t", "from": party, "to": to, "tag": f"vsc.x{i}", "kind": kind, "bytes": 1000})
             for i in range(n)]
    (run / "ledger" / f"{party}.jsonl").write_text("\n".join(lines) + "\n")


def _part(party: str, feats: dict[str, list[float]], base: float | None) -> dict:
    table, bins, woe, points = [], {}, {}, {}
    for f, pts in feats.items():
        k = len(pts) - 1
        edges = [float(e) for e in range(1, k)]
        bins[f] = {"name": f, "kind": "numeric", "edges": edges, "groups": []}
        woe[f] = [p / 10 for p in pts]
        points[f] = pts
        labels = ([f"<= {edges[0]:g}"] if edges else []) + [f"({a:g}, {b:g}]" for a, b in zip(edges, edges[1:])] \
            + ([f"> {edges[-1]:g}"] if edges else ["all values"]) + ["missing"]
        for i, (lab, p) in enumerate(zip(labels, pts)):
            table.append({"feature": f, "bin": i, "label": lab, "n": 100 * (i + 1) if lab != "missing" else 0,
                          "woe": p / 10, "coef": -0.5, "points": p})
    d = {"format": "fedrisk.vertical.scorecard" + ("" if base is not None else ".part"), "party": party,
         "label_holder": "lender", "base_score": 600.0, "base_odds": 50.0, "pdo": 20.0, "features": list(feats),
         "bins": bins, "woe": woe, "points": points, "table": table}
    if base is not None:
        d["base_points"] = base
    return d


def vertical_scorecard_run(root: Path) -> Path:
    """A simulate-style directory: both parties' files side by side, the lender's metrics and scores."""
    run = root / "run"
    (run / "scores").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 2000), ("test", 600)):
        y = (rng.random(n) < 0.2).astype(int)
        pts = np.round(rng.normal(560, 40, n) - 45 * y)
        p = 1 / (1 + np.exp((pts - OFFSET) / FACTOR))
        (run / "scores" / f"{split}.csv").write_text("id,y,score\n" + "".join(f"{i},{a},{b:.10f}\n" for i, (a, b) in enumerate(zip(y, p))))
        if split == "test":
            yt, pt = y, p
        else:
            ytr, ptr = y, p
    reasons = ["id,points,reason_1,lost_1,reason_2,lost_2"]
    for i in range(600):
        r1 = ["partner features (payco)", "income = <= 1", "tenure = (1, 2]"][i % 3]
        reasons.append(f"{i},550,\"{r1}\",{5 + i % 7},income = > 2,2")
    (run / "scores" / "test_reasons.csv").write_text("\n".join(reasons) + "\n")
    metrics = {"task": "vertical.scorecard", "job": "vsc-job", "written_by": "lender", "run_id": "abc123def",
               "seed": 7, "fedrisk_version": "0.1.0", "label_holder": "lender", "parties": ["lender", "payco"],
               "intersection": {"size": 2600, "own_rows": 2700, "peer_sizes": {"payco": 2650}},
               "rows": {"train": 2000, "validation": 0, "test": 600}, "rounds": [{"round": r, "val_loss": 0.5 - r / 100} for r in range(1, 6)],
               "train": evaluate(ytr, ptr), "test": evaluate(yt, pt), "seconds": 12.5,
               "stability": {**population_stability_index(ptr, pt), "expected_label": "lender train",
                             "actual_label": "test", "expected": "lender's own training rows (2,000)",
                             "actual": "the test rows (600)"},
               "iv": {"lender": [{"feature": "income", "iv": 0.85}, {"feature": "tenure", "iv": 0.27}],
                      "payco": [{"feature": "f0", "iv": 0.1}]},
               "comparison": {"federated": {"auc": 0.77, "ks": 0.42}, "local_only": {"lender": {"auc": 0.7, "ks": 0.3}}}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "scorecard-lender.json").write_text(json.dumps(_part("lender", {"income": [-8, 0, 6, 0], "tenure": [-3, 1, 4, 0]}, 517)))
    (run / "scorecard-payco.json").write_text(json.dumps(_part("payco", {"payco_secret_bal": [-20, 3, 9, 0]}, None)))
    (run / "woe").mkdir()
    (run / "woe" / "lender.json").write_text(json.dumps({"party": "lender", "features": {
        "income": {"kind": "numeric", "iv": 0.85, "table": [
            {"bin": 0, "label": "<= 1", "n": 100, "goods": 60, "bads": 40, "bad_rate": 0.4, "woe": -0.8},
            {"bin": 1, "label": "(1, 2]", "n": 200, "goods": 170, "bads": 30, "bad_rate": 0.15, "woe": 0.0},
            {"bin": 2, "label": "> 2", "n": 300, "goods": 290, "bads": 10, "bad_rate": 10 / 300, "woe": 0.6},
            {"bin": 3, "label": "missing", "n": 0, "goods": 0, "bads": 0, "bad_rate": None, "woe": 0.0}]}}}))
    (run / "woe" / "payco.json").write_text(json.dumps({"party": "payco", "features": {
        "payco_secret_bal": {"iv": 0.1, "kind": "numeric", "labels": ["<= 1", "(1, 2]", "> 2", "missing"],
                             "n": [10, 20, 30, 0], "woe": [-2.0, 0.3, 0.9, 0.0]}}}))
    (run / "run-payco.json").write_text(json.dumps({"party": "payco", "task": "vertical.scorecard", "job": "vsc-job",
                                                    "run_id": "abc123def", "seed": 7, "params": {"kind": "vertical.scorecard"}}))
    (run / "job.toml").write_text('[federation]\nname = "vsc-job"\nseed = 7\n[parties.lender]\naddress = "a:1"\n'
                                  'data = "l.csv"\nid = "id"\nlabel = "y"\n[parties.payco]\naddress = "a:2"\n'
                                  'data = "p.csv"\nid = "id"\n[task]\nkind = "vertical.scorecard"\npdo = 20\n'
                                  'max_bins = 6\nlearning_rate = 0.5\n')
    _ledger(run, "lender", "payco", kind="ciphertext")
    _ledger(run, "payco", "lender")
    return run


def test_vertical_scorecard_report_label_holder_view(tmp_path):
    run = vertical_scorecard_run(tmp_path)
    html = write_report(run).read_text()
    # documentation header
    for text in ("Model documentation", "abc123def", "vsc-job", "Intersection (PSI)", "2,600 ids", "learning_rate",
                 "Bad rate (test)", "lender (label holder)", "2,650"):
        assert text in html, text
    # points table, feature charts, bands, reasons, all in points
    assert "Scorecard: points table" in html and "base points" in html and "<strong>517</strong>" in html
    assert "income: bad rate per bin" in html and "n=100" in html  # bad rate known to the label holder
    assert "Score bands" in html and "Score band (points)" in html and "Points by class" in html
    assert "Reason codes" in html and "partner features (payco)" in html
    assert "Predicted default probability" not in html  # scorecard charts are in points
    assert html.count("<svg") >= 5
    # nothing of the partner's part: its feature names, bins and WOE stay in its own report
    assert "payco_secret_bal" not in html
    # stability names its samples
    assert "lender&#x27;s own training rows (2,000)" in html or "lender's own training rows (2,000)" in html
    assert "Not available" not in html


def test_feature_holder_report_from_its_own_directory(tmp_path):
    run = vertical_scorecard_run(tmp_path)
    own = tmp_path / "hostB"
    (own / "woe").mkdir(parents=True)
    for f in ("scorecard-payco.json", "run-payco.json"):
        (own / f).write_text((run / f).read_text())
    (own / "woe" / "payco.json").write_text((run / "woe" / "payco.json").read_text())
    _ledger(own, "payco", "lender")
    r = subprocess.run([sys.executable, "-m", "fedrisk", "report", str(own)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    html = (own / "report.html").read_text()
    assert "payco_secret_bal" in html and "payco_secret_bal: WOE per bin" in html
    assert "part of the points table" in html and "abc123def" in html
    # what payco never saw: labels' figures, the lender's features, scores
    for text in ("income", "tenure", "ROC curve", "Score bands", "Bad rate (test)", "<strong>base points</strong>"):
        assert text not in html, text


def woe_run(root: Path) -> Path:
    """A horizontal WOE run seen by the coordinator: the global IV table and a bank's binning file."""
    run = root / "run"
    (run / "woe").mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({
        "task": "horizontal.woe", "job": "g", "written_by": "coordinator",
        "iv": {"federation": [{"feature": "checking", "iv": 0.66, "bins": 4}, {"feature": "age", "iv": 0.05, "bins": 3}]}}))
    (run / "woe" / "bank1.json").write_text(json.dumps({"party": "bank1", "features": {
        "checking": {"kind": "categorical", "iv": 0.66, "table": [
            {"bin": 0, "label": "none", "n": 300, "goods": 270, "bads": 30, "bad_rate": 0.1, "woe": 1.1},
            {"bin": 1, "label": "< 0 DM", "n": 200, "goods": 100, "bads": 100, "bad_rate": 0.5, "woe": -0.8},
            {"bin": 2, "label": "missing", "n": 0, "goods": 0, "bads": 0, "bad_rate": None, "woe": 0.0}]}},
        "local": {"checking": {"iv": 0.123456789}}}))
    _ledger(run, "coordinator", "bank1", kind="aggregate")
    return run


def test_woe_task_report_has_binning_not_empty_model_sections(tmp_path):
    run = woe_run(tmp_path)
    html = write_report(run).read_text()
    assert "Binning tables and WOE" in html and "checking: WOE per bin" in html and "&lt; 0 DM" in html
    assert "Information value by party" in html and "0.123456789" not in html
    for text in ("ROC curve", "Lift and gains", "Calibration", "Not available"):
        assert text not in html, text


def test_iv_bars_share_one_scale(fake_run: Path):
    m = json.loads((fake_run / "metrics.json").read_text())
    m["iv"] = {"bank_a": [{"feature": "a", "iv": 0.85}], "bank_b": [{"feature": "b", "iv": 0.27}]}
    (fake_run / "metrics.json").write_text(json.dumps(m))
    html = write_report(fake_run).read_text()
    widths = [float(w) for w in re.findall(r'class="bar"><span style="width:([0-9.]+)%', html)]
    assert len(widths) == 2 and widths[1] / widths[0] == np.float64(0.27 / 0.85).round(3) or \
        abs(widths[1] / widths[0] - 0.27 / 0.85) < 0.01


def test_tree_report_shows_importance_per_party(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"task": "vertical.secureboost", "job": "sb", "written_by": "lender",
                                                  "label_holder": "lender",
                                                  "importance": {"x9": {"splits": 11, "gain": 300.0}}}))
    (run / "model.json").write_text(json.dumps({"party": "lender", "importance": {
        "lender": {"x9": {"splits": 11, "gain": 300.0}, "age": {"splits": 3, "gain": 100.0}},
        "payco": {"f5": {"splits": 17, "gain": 600.0}}}}))
    (run / "model-payco.json").write_text(json.dumps({"party": "payco", "importance": {"payco_hidden": {"splits": 17, "gain": 600.0}}}))
    html = write_report(run).read_text()
    assert "Feature importance" in html and "x9" in html and "age" in html and "f5" in html
    assert "partner&#x27;s features anonymised" in html or "partner's features anonymised" in html
    assert "payco_hidden" not in html
