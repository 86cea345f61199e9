"""The scorecard figures of the report (:mod:`fedrisk.finance.report_model`), checked against the points themselves."""
from __future__ import annotations

import math
import re
from html import unescape
from pathlib import Path

import numpy as np
import pandas as pd

from fedrisk.finance.report import write_report
from fedrisk.finance.report_model import score_bands

from tests.finance.test_report_tasks import FACTOR, OFFSET, vertical_scorecard_run


def _band_rows(html: str) -> list[list[str]]:
    """The score-band table's rows (label, accounts, share, bads, bad rate) as the page prints them."""
    sec = re.search(r'<section id="bands">(.*?)</section>', html, re.S).group(1)
    body = re.search(r"<table[^>]*>.*?<tbody>(.*?)</tbody>", sec, re.S).group(1)
    return [[unescape(re.sub("<[^>]+>", "", c)) for c in re.findall(r"<td>(.*?)</td>", tr, re.S)]
            for tr in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def test_an_applicant_on_a_band_edge_is_counted_in_the_band_it_opens(tmp_path: Path):
    """The run writes each applicant's probability to 8 significant digits; the report turned it back into
    points, and a whole-point total on a band edge (480) came back as 479.9999999 and was counted one band
    too low (30 of 6,000 test applicants of the example vertical scorecard). Counts per band must be those
    of the applicants' whole-point totals."""
    run = vertical_scorecard_run(tmp_path)
    rng = np.random.default_rng(1)
    pts = rng.choice(np.arange(440, 641, 20), 400).astype(float) + rng.choice([0, 0, 0, 7, 13], 400)
    y = (rng.random(400) < 1 / (1 + np.exp((pts - 480) / 30))).astype(int)
    p = 1 / (1 + np.exp((pts - OFFSET) / FACTOR))
    pd.DataFrame({"id": np.arange(400), "y": y, "score": p}).to_csv(run / "scores" / "test.csv", index=False,
                                                                     float_format="%.8g")  # as the runtime writes it
    rows = _band_rows(write_report(run).read_text())
    # independent: bands of 20 points from the 2nd percentile down to a multiple of 20, lower bound included
    lo = math.floor(np.quantile(pts, 0.02) / 20) * 20
    for label, accounts, _, bads, _ in rows:
        nums = [float(v) for v in re.findall(r"\d+", label)]
        if label.startswith("<"):
            mask = pts < nums[0]
        elif label.startswith("≥"):
            mask = pts >= nums[0]
        else:  # "480–499": both ends included, whole points
            mask = (pts >= nums[0]) & (pts <= nums[1])
        assert int(accounts.replace(",", "")) == int(mask.sum()), label
        assert int(bads.replace(",", "")) == int(y[mask].sum()), label
    assert sum(int(r[1].replace(",", "")) for r in rows) == 400
    assert rows[0][0] == f"< {lo + 20:g}"


def test_score_bands_say_their_width_when_widened():
    """Scores spread over more than 12 PDO-wide bands are shown in wider bands; the page said "bands of 20 points"
    whatever width was drawn."""
    rng = np.random.default_rng(0)
    pts = np.round(rng.uniform(300, 800, 500))
    y = (rng.random(500) < 0.2).astype(int)
    _, table = score_bands(pts, y, 20.0, "test")
    said = re.search(r"bands of (\d+) points \((\d+) × PDO", unescape(table))
    assert said, "the band width is not stated"
    labels = [unescape(re.sub("<[^>]+>", "", r)) for r in re.findall(r"<tr><td>(.*?)</td>", table)]
    widths = {int(b) - int(a) + 1 for a, b in (re.findall(r"\d+", lab) for lab in labels[1:-1])}
    assert widths == {int(said.group(1))} and int(said.group(1)) == 20 * int(said.group(2)) > 20


def test_an_empty_score_band_has_no_bad_rate():
    pts = np.array([500.0] * 10 + [560.0] * 10)
    y = np.array([1, 0] * 10)
    _, table = score_bands(pts, y, 20.0, "test")
    cells = [[unescape(re.sub("<[^>]+>", "", c)) for c in re.findall(r"<td>(.*?)</td>", tr)]
             for tr in re.findall(r"<tr>(.*?)</tr>", table)]
    empty = [c for c in cells if c and c[1] == "0"]
    assert empty and all(c[4] == "—" for c in empty)


def test_ks_cut_off_says_it_is_a_probability_and_gives_the_points_on_a_scorecard(tmp_path: Path):
    """The KS chart said "KS 0.42 at score ≥ 0.311" on a scorecard's page, where "score" means points; the cut-off
    is a default probability (the scores file's column). It now says so and gives the points it stands for."""
    from sklearn.metrics import roc_curve

    run = vertical_scorecard_run(tmp_path)
    html = write_report(run).read_text()
    te = pd.read_csv(run / "scores" / "test.csv")
    fpr, tpr, thr = roc_curve(te.y, te.score, drop_intermediate=False)
    i = int(np.argmax(tpr - fpr))
    cut_pts = OFFSET + FACTOR * math.log((1 - thr[i]) / thr[i])
    svg = re.search(r'<svg[^>]*aria-label="KS curve \(test\)".*?</svg>', html, re.S).group(0)
    note = " ".join(unescape(t) for t in re.findall(r'<text[^>]*class="note"[^>]*>([^<]*)</text>', svg))
    assert f"KS {(tpr - fpr)[i]:.3f} at default probability ≥ {thr[i]:.3g} (score ≤ {round(cut_pts):.0f} points)" == note
    sec = unescape(re.search(r'<section id="discrimination">(.*?)</section>', html, re.S).group(1))
    assert "test rows" in sec and "never split" in sec


def test_weighted_score_bands_are_those_of_the_rows_repeated():
    """A weighted run's figures count each row w times ([evaluation] weight): the score bands and the
    points-by-class chart did not (they counted rows beside weighted metrics)."""
    from fedrisk.finance.report_model import points_distribution

    rng = np.random.default_rng(2)
    pts = np.round(rng.normal(560, 50, 300))
    y = (rng.random(300) < 1 / (1 + np.exp((pts - 500) / 30))).astype(int)
    w = rng.integers(0, 4, 300).astype(float)  # 0 drops a row
    rep = np.repeat(np.arange(300), w.astype(int))

    def rows(table):
        return [[unescape(re.sub("<[^>]+>", "", c)) for c in re.findall(r"<td>(.*?)</td>", tr)]
                for tr in re.findall(r"<tr>(.*?)</tr>", table)]

    svg_w, tab_w = score_bands(pts, y, 20.0, "test", weight=w)
    svg_r, tab_r = score_bands(pts[rep], y[rep], 20.0, "test")
    assert rows(tab_w) == rows(tab_r) and svg_w == svg_r
    assert rows(tab_w) != rows(score_bands(pts, y, 20.0, "test")[1])  # the weights change the figures
    assert f"standing for {int(w.sum()):,} accounts" in unescape(tab_w)
    assert points_distribution(pts, y, "test", weight=w) == points_distribution(pts[rep], y[rep], "test")
    # unweighted output is what it was
    assert points_distribution(pts, y, "test") == points_distribution(pts, y, "test", weight=np.ones(300))
