"""Render the HTML report in headless Chromium: charts in the DOM, no console errors, a screenshot.

Skips when no Chromium binary is installed (``apt-get install -y chromium`` on Debian).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fedrisk.finance.report import write_report

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium); browser rendering test skipped"
)


def _chromium(run: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", *extra, (run / "report.html").as_uri(),
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def _console_errors(stderr: str) -> list[str]:
    # chromium prints page console messages as 'CONSOLE(line)] "msg"'; failed fetches (e.g. a
    # remote resource the report should not have) as 'Failed to load resource'
    return [l for l in stderr.splitlines() if "CONSOLE" in l or "Failed to load resource" in l or "Uncaught" in l]


def test_report_renders_in_chromium(fake_run: Path, tmp_path: Path):
    write_report(fake_run)
    dom = _chromium(fake_run, tmp_path / "profile-dom", "--dump-dom", "--enable-logging=stderr", "--v=0")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    charts = re.findall(r"<svg\b[^>]*class=\"chart\"", html)
    assert len(charts) >= 6, f"only {len(charts)} charts in the rendered DOM"
    assert html.count("<polyline") >= 8 and html.count("<rect") >= 40
    assert "Flows by direction and message kind" in html
    assert not _console_errors(dom.stderr), _console_errors(dom.stderr)

    png = fake_run / "report.png"
    shot = _chromium(fake_run, tmp_path / "profile-shot", f"--screenshot={png}", "--window-size=1280,4000",
                     "--enable-logging=stderr", "--v=0")
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a blank page compresses to a few kB; charts and tables make it far larger
    assert png.stat().st_size > 100_000
    assert not _console_errors(shot.stderr), _console_errors(shot.stderr)


def _task_runs(root: Path) -> dict[str, Path]:
    """Run directories per task kind, in the shapes the tasks write (see test_report_tasks)."""
    import shutil

    from tests.finance.test_report_tasks import _ledger, vertical_scorecard_run, woe_run

    runs = {"scorecard": vertical_scorecard_run(root / "sc"), "woe": woe_run(root / "woe")}
    own = root / "holder"
    (own / "woe").mkdir(parents=True)
    for f in ("scorecard-payco.json", "run-payco.json", "woe/payco.json"):
        shutil.copy(runs["scorecard"] / f, own / f)
    _ledger(own, "payco", "lender")
    runs["feature-holder"] = own
    return runs


# section titles each report must show in the rendered DOM, and charts it must draw
EXPECTED = {
    "scorecard": (["Model documentation", "Scorecard: points table", "Score bands", "Reason codes",
                   "Discrimination: ROC and KS", "Population stability", "Communication ledger"], 8),
    "feature-holder": (["Model documentation", "Scorecard: points table", "Communication ledger"], 2),
    "woe": (["Model documentation", "Information value by party", "Binning tables and WOE", "Communication ledger"], 3),
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_task_reports_render_their_sections(kind: str, tmp_path: Path):
    run = _task_runs(tmp_path)[kind]
    write_report(run)
    dom = _chromium(run, tmp_path / "profile-dom", "--dump-dom", "--enable-logging=stderr", "--v=0")
    assert dom.returncode == 0, dom.stderr[-2000:]
    titles, n_charts = EXPECTED[kind]
    h2 = re.findall(r"<h2>([^<]*)</h2>", dom.stdout)
    for t in titles:
        assert t in h2, (t, h2)
    assert len(re.findall(r"<svg\b[^>]*class=\"chart\"", dom.stdout)) >= n_charts
    assert not _console_errors(dom.stderr), _console_errors(dom.stderr)
    png = run / "report.png"
    shot = _chromium(run, tmp_path / "profile-shot", f"--screenshot={png}", "--window-size=1280,3000")
    assert shot.returncode == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
