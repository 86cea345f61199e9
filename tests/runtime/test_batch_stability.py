"""``fedrisk predict`` prints the scored batch's score stability against the run's training scores.

Credit models are monitored batch by batch with the PSI of the new scores against the development sample's;
``fedrisk predict`` printed only "scored N rows". Now, when the model's run directory holds
``scores/train.csv``, it prints the PSI, its reading and the sample sizes (a warning unless stable).
"""
from __future__ import annotations

import numpy as np
import pytest
import pandas as pd
from typer.testing import CliRunner

import fedrisk as fr
from fedrisk.cli import app
from fedrisk.finance.metrics import population_stability_index
from fedrisk.runtime.batch_stability import batch_stability, reference_scores


def _run(tmp_path, train_scores):
    (tmp_path / "scores").mkdir(parents=True)
    pd.DataFrame({"id": range(len(train_scores)), "y": 0, "score": train_scores}).to_csv(
        tmp_path / "scores" / "train.csv", index=False)
    if not (tmp_path / "model.json").exists():
        (tmp_path / "model.json").write_text("{}")
    return tmp_path / "model.json"


def test_psi_of_the_scored_rows_against_the_training_scores(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.beta(2, 8, 3000)
    model = _run(tmp_path, train)
    same, shifted = rng.beta(2, 8, 1000), rng.beta(4, 6, 1000)
    pd.DataFrame({"id": range(1003), "score": np.r_[same, [np.nan] * 3],
                  "status": ["scored"] * 1000 + ["not scored: id not found at every feature holder"] * 3}).to_csv(
        tmp_path / "a.csv", index=False)
    pd.DataFrame({"id": range(1000), "points": 500, "probability": shifted}).to_csv(tmp_path / "b.csv", index=False)
    a, b = batch_stability(model, tmp_path / "a.csv"), batch_stability(tmp_path, tmp_path / "b.csv")
    assert a["psi"] == population_stability_index(train, same)["psi"] and a["band"] == "stable"
    assert a["n_actual"] == 1000 and a["reference"] == str(tmp_path / "scores" / "train.csv")
    assert b["psi"] == population_stability_index(train, shifted)["psi"] > 0.25 and b["band"] == "shift"
    (tmp_path / "scores" / "train.csv").unlink()
    assert reference_scores(model) is None and batch_stability(model, tmp_path / "a.csv") is None


def test_fedrisk_predict_prints_it_after_scoring(tmp_path):
    rng = np.random.default_rng(1)
    banks = {}
    for i in range(2):
        x = rng.normal(size=(400, 2))
        banks[f"bank{i}"] = pd.DataFrame({"id": np.arange(400) + 1000 * i, "a": x[:, 0], "b": x[:, 1],
                                          "y": (rng.random(400) < 1 / (1 + np.exp(1 - x[:, 0]))).astype(int)})
    m = fr.LogisticRegression().fit(fr.Federation.horizontal(banks, id="id", label="y"))
    m.save(tmp_path / "m")
    pooled = pd.concat(banks.values())
    _run(tmp_path / "m", m.predict_proba(pooled)[:, 1])
    new = pooled.drop(columns="y").head(300)
    new.to_csv(tmp_path / "new.csv", index=False)
    new.assign(a=new["a"] + 2).to_csv(tmp_path / "moved.csv", index=False)
    runner = CliRunner()
    quiet = runner.invoke(app, ["predict", str(tmp_path / "m"), str(tmp_path / "new.csv"), "--out", str(tmp_path / "s.csv")])
    assert quiet.exit_code == 0, quiet.output
    assert "score stability of this batch against the training scores" in quiet.output and ", stable (300 scored rows" in quiet.output
    moved = runner.invoke(app, ["predict", str(tmp_path / "m"), str(tmp_path / "moved.csv"), "--out", str(tmp_path / "t.csv")])
    assert moved.exit_code == 0 and "warning:" in moved.output and ", shift (300" in moved.output, moved.output


def test_csi_is_the_psi_of_the_bin_shares_and_a_small_batch_names_nothing():
    from fedrisk.finance.binning import FeatureBins
    from fedrisk.finance.metrics import characteristic_stability
    from fedrisk.runtime.batch_stability import characteristic_note

    train, new = np.array([500, 300, 200, 0]), np.array([100, 300, 600, 0])
    e, a = train / train.sum(), new / new.sum()
    st = characteristic_stability(train, new)
    want = float(sum((a[i] - e[i]) * np.log(a[i] / e[i]) for i in range(3)))
    assert st["csi"] == pytest.approx(want, rel=1e-12) and st["band"] == "shift"
    bins = {"x": FeatureBins(name="x", kind="numeric", edges=np.array([1.0, 2.0]))}
    rng = np.random.default_rng(0)
    moved = pd.DataFrame({"x": rng.choice([0.5, 1.5, 2.5], 1000, p=[0.1, 0.3, 0.6])})
    note = characteristic_note(bins, {"x": train}, moved, "bank1")
    assert note.startswith("bank1: characteristic stability of this batch (1,000 rows)") and "'x' CSI" in note
    assert characteristic_note(bins, {"x": train}, moved.head(4), "bank1") is None  # 4 rows: chance, not a shift
    same = pd.DataFrame({"x": rng.choice([0.5, 1.5, 2.5], 1000, p=[0.5, 0.3, 0.2])})
    assert characteristic_note(bins, {"x": train}, same, "bank1") is None
