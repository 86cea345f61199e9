"""Outputs a run or `fedrisk predict` writes are whole or absent: an interruption mid-write never
leaves a file that looks complete (issue 14: "partial outputs are never left looking complete")."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedrisk.runtime.predict import write_predictions
from fedrisk.tasks.horizontal_scorecard import write_reasons


class _Stop(KeyboardInterrupt):
    """What a Ctrl-C in the middle of a write looks like to the writer."""


def test_predictions_interrupted_mid_write_leave_the_previous_file(tmp_path, monkeypatch):
    out = tmp_path / "scores.csv"
    out.write_text("id,score\nold,0.5\n")
    table = pd.DataFrame({"score": np.linspace(0, 1, 5000)})
    real = pd.DataFrame.to_csv

    def half(self, path, *a, **kw):
        real(self.iloc[: len(self) // 2], path, *a, **kw)  # half the rows reach the disk, then Ctrl-C
        raise _Stop()

    monkeypatch.setattr(pd.DataFrame, "to_csv", half)
    with pytest.raises(_Stop):
        write_predictions(out, np.arange(5000), table)
    assert out.read_text() == "id,score\nold,0.5\n"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.csv"]  # no temp file left behind either
    monkeypatch.setattr(pd.DataFrame, "to_csv", real)
    write_predictions(out, np.arange(5000), table)
    assert len(pd.read_csv(out)) == 5000


def test_reason_codes_interrupted_mid_write_leave_nothing(tmp_path, monkeypatch):
    out = tmp_path / "scores" / "test_reasons.csv"
    import csv

    real_writer = csv.writer

    class Breaking:
        def __init__(self, fh):
            self.w, self.n = real_writer(fh), 0

        def writerow(self, row):
            self.n += 1
            if self.n == 50:
                raise _Stop()
            self.w.writerow(row)

    monkeypatch.setattr(csv, "writer", Breaking)
    reasons = [[{"feature": "age", "label": "< 30", "points_lost": 3.0}]] * 100
    with pytest.raises(_Stop):
        write_reasons(out, list(range(100)), np.zeros(100), reasons, 1)
    assert not out.exists() and list(out.parent.iterdir()) == []
    monkeypatch.setattr(csv, "writer", real_writer)
    write_reasons(out, list(range(100)), np.zeros(100), reasons, 1)
    assert len(out.read_text().splitlines()) == 101
