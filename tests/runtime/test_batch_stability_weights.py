"""``fedrisk predict --weight COLUMN`` and a weighted run's ``scores/train.csv``: the batch PSI weighted like the
evaluation, checked against :func:`population_stability_index` on the rows repeated ``w`` times."""
from __future__ import annotations

import numpy as np
import pandas as pd
from typer.testing import CliRunner

import fedrisk as fr
from fedrisk.cli import app
from fedrisk.finance.metrics import population_stability_index
from fedrisk.runtime.batch_stability import batch_stability


def _model(tmp_path, rng):
    banks = {}
    for i in range(2):
        x = rng.normal(size=(300, 2))
        banks[f"bank{i}"] = pd.DataFrame({"id": np.arange(300) + 1000 * i, "a": x[:, 0], "b": x[:, 1],
                                          "y": (rng.random(300) < 1 / (1 + np.exp(1 - x[:, 0]))).astype(int)})
    m = fr.LogisticRegression().fit(fr.Federation.horizontal(banks, id="id", label="y"))
    m.save(tmp_path / "m")
    return m, pd.concat(banks.values())


def test_training_weights_and_batch_weights_weight_the_batch_psi(tmp_path):
    rng = np.random.default_rng(3)
    m, pooled = _model(tmp_path, rng)
    p_train = m.predict_proba(pooled)[:, 1]
    w_train = rng.integers(1, 4, len(pooled))  # a weighted run keeps its training rows' weights in train.csv
    (tmp_path / "m" / "scores").mkdir()
    pd.DataFrame({"id": pooled["id"], "y": pooled["y"], "score": p_train, "weight": w_train}).to_csv(
        tmp_path / "m" / "scores" / "train.csv", index=False)
    new = pooled.drop(columns="y").head(250).assign(exposure=rng.integers(0, 5, 250))
    new.to_csv(tmp_path / "new.csv", index=False)
    r = CliRunner().invoke(app, ["predict", str(tmp_path / "m"), str(tmp_path / "new.csv"), "--out",
                                 str(tmp_path / "s.csv"), "--weight", "exposure"])
    assert r.exit_code == 0, r.output
    scored = pd.read_csv(tmp_path / "s.csv")
    assert "exposure" not in scored.columns  # the weight is no feature and not written with the scores
    p_new = scored["score"].to_numpy()
    want = population_stability_index(np.repeat(p_train, w_train), np.repeat(p_new, new["exposure"]))
    out = " ".join(r.output.split())
    assert f"PSI {want['psi']:.3f}" in out
    assert "250 scored rows (weighted by --weight: " in out and "(weighted by the run's evaluation weight: " in out
    st = batch_stability(tmp_path / "m", tmp_path / "s.csv", weights=new["exposure"].to_numpy(dtype=float))
    assert st["psi"] == want["psi"] and st["n_actual"] == new["exposure"].sum()
    # without --weight only the training side is weighted
    st = batch_stability(tmp_path / "m", tmp_path / "s.csv")
    assert st["psi"] == population_stability_index(np.repeat(p_train, w_train), p_new)["psi"]


def test_bad_batch_weight_column_is_one_line(tmp_path):
    rng = np.random.default_rng(4)
    _, pooled = _model(tmp_path, rng)
    new = pooled.drop(columns="y").head(50).assign(exposure=-1.0)
    new.to_csv(tmp_path / "new.csv", index=False)
    runner = CliRunner()
    r = runner.invoke(app, ["predict", str(tmp_path / "m"), str(tmp_path / "new.csv"), "--out", str(tmp_path / "s.csv"),
                            "--weight", "exposure"])
    out = " ".join(r.output.split())
    assert r.exit_code != 0 and "--weight column 'exposure' is negative in 50 of 50 rows" in out, r.output
    r = runner.invoke(app, ["predict", str(tmp_path / "m"), str(tmp_path / "new.csv"), "--out", str(tmp_path / "s.csv"),
                            "--weight", "wt"])
    out = " ".join(r.output.split())
    assert r.exit_code != 0 and "column 'wt'" in out and "not found" in out, r.output
    assert "Traceback" not in r.output
