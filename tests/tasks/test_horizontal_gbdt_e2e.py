"""End to end: horizontal.gbdt as real `fedrisk` processes over gRPC + mutual TLS on loopback."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedrisk.runtime.demo import free_ports

pytestmark = pytest.mark.e2e
FEDRISK = [sys.executable, "-m", "fedrisk"]


def cli(*args, cwd=None, timeout=300):
    return subprocess.run([*FEDRISK, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def federation(tmp: Path, task: str = "", privacy: str = "", n_trees: int = 5, bank_extra: str = "") -> Path:
    rng = np.random.default_rng(0)
    ports = free_ports(4)
    parts = []

    def frame(n, start):
        X = rng.normal(size=(n, 3))
        y = (rng.random(n) < 1 / (1 + np.exp(-(1.5 * X[:, 0] - X[:, 1] + 0.5 * X[:, 2] ** 2 - 0.5)))).astype(int)
        df = pd.DataFrame({"id": np.arange(n) + start, "y": y, "x0": X[:, 0], "x1": X[:, 1], "x2": X[:, 2]})
        df.loc[rng.random(n) < 0.1, "x1"] = np.nan  # missing values: their own bin, a learned side
        return df

    for i, name in enumerate(["bank1", "bank2", "bank3"]):
        frame(600 + 200 * i, 10_000 * i).to_csv(tmp / f"{name}.csv", index=False)
        parts.append(f'[parties.{name}]\naddress = "127.0.0.1:{ports[i + 1]}"\ndata = "{name}.csv"\nid = "id"\n'
                     f'label = "y"\nmissing = "keep"\n{bank_extra}')
    frame(800, 90_000).to_csv(tmp / "test.csv", index=False)
    spec = tmp / "job.toml"
    spec.write_text(textwrap.dedent(f"""
        [federation]
        name = "small-gbdt"
        [coordinator]
        address = "127.0.0.1:{ports[0]}"
        """) + "\n".join(parts) + textwrap.dedent(f"""
        [task]
        kind = "horizontal.gbdt"
        n_trees = {n_trees}
        max_depth = 3
        max_bin = 16
        """) + task + textwrap.dedent("""
        [evaluation]
        test = "test.csv"
        holder = "bank1"
        """) + privacy)
    return spec


def test_mtls_run_then_local_predict(tmp_path):
    spec = federation(tmp_path)
    out = tmp_path / "run"
    r = cli("simulate", spec, "--out", out)
    assert r.returncode == 0, r.stderr + r.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == "horizontal.gbdt" and m["test"]["auc"] > 0.7
    assert m["trees"] == 5 and len(m["rounds"]) == 5 and "test_auc" in m["rounds"][-1]
    extra = m["binning"]["zoom_rounds"] + m["binning"]["refine_rounds"]  # the bins' zoom / refine sums
    assert m["aggregations"] == 2 + 5 * 3 + 1 + extra and 1 <= extra <= 6
    assert {"x0", "x1"} <= set(m["importance"]) and all(v["splits"] >= 1 for v in m["importance"].values())
    assert {"binning", "aggregation", "split_finding", "network", "train_s"} <= set(m["timing"])
    assert "privacy" not in m
    # the banks sent the coordinator nothing unmasked: no model, metric or plain histogram
    for bank in ("bank1", "bank2", "bank3"):
        kinds = {json.loads(l)["kind"] for l in (out / "ledger" / f"{bank}.jsonl").read_text().splitlines()
                 if json.loads(l)["to"] == "coordinator"}
        assert "masked" in kinds and kinds <= {"masked", "public-parameter", "ciphertext", "plaintext-by-design", "control"}
    model = json.loads((out / "model.json").read_text())
    assert model["format"] == "fedrisk.gbdt" and model["features"] == ["x0", "x1", "x2"]
    assert any(nd.get("feature") == "x1" for t in model["trees"] for nd in t["nodes"])
    # local scoring at a bank (NaN rows included) reproduces the run's test scores
    scores = tmp_path / "scores.csv"
    r = cli("predict", out / "model.json", tmp_path / "test.csv", "--out", scores)
    assert r.returncode == 0, r.stderr
    s = pd.read_csv(scores)
    ref = pd.read_csv(out / "scores" / "test.csv")
    np.testing.assert_allclose(s["score"].to_numpy(), ref["score"].to_numpy(), atol=1e-7)
    r = cli("report", out)
    assert r.returncode == 0, r.stderr
    html = (out / "report.html").read_text()
    assert "Feature importance" in html and "x0" in html


def test_privacy_budget_is_spent_and_reported(tmp_path):
    spec = federation(tmp_path, privacy="\n[privacy]\nepsilon = 4.0\ndelta = 1e-5\n", n_trees=3)
    out = tmp_path / "run"
    r = cli("simulate", spec, "--out", out)
    assert r.returncode == 0, r.stderr + r.stdout
    m = json.loads((out / "metrics.json").read_text())
    p = m["privacy"]
    assert 3.9 < p["epsilon"] <= 4.0 and p["delta"] == 1e-5 and p["mechanisms_planned"] == 2 + 3 * 4 + 1
    assert "dp-accounting" in p["accountant"]
    log = (out / "logs" / "coordinator.log").read_text()
    assert "differential privacy: epsilon = " in log
    assert cli("report", out).returncode == 0
    assert "Privacy ε" in (out / "report.html").read_text()


@pytest.mark.extended(covered_by="tests/crypto/test_dp.py::test_fixed_multiplier_reports_its_epsilon_and_refuses_an_unmeetable_budget "
                                 "(the planner's one-line refusal, for trees x levels) and "
                                 "::test_private_horizontal_lr_over_budget_refuses_to_start (the same refusal by `fedrisk "
                                 "simulate` before any process starts, no metrics written)")
def test_unmeetable_budget_refuses_to_start(tmp_path):
    spec = federation(tmp_path, privacy="\n[privacy]\nepsilon = 0.5\nnoise_multiplier = 1.0\n")
    r = cli("simulate", spec, "--out", tmp_path / "run")
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), r.stderr
    assert "privacy budget epsilon = 0.5" in err[0] and "would need noise_multiplier >=" in err[0]
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("task,privacy,needle", [
    ("n_trees = 0\n", "", "task.n_trees"),
    ("learning_rat = 0.1\n", "", "did you mean 'learning_rate'"),
    ("early_stopping_rounds = 3\n", "", "early_stopping_rounds needs validation_fraction"),
    ("", "\n[privacy]\ndelta = 1e-5\n", "privacy: set epsilon"),
])
def test_bad_parameters_are_one_line_errors(tmp_path, task, privacy, needle):
    spec = federation(tmp_path, privacy=privacy)
    text = spec.read_text()
    if task:
        text = text.replace("n_trees = 5\n", "") if task.startswith("n_trees") else text
        text = text.replace("max_bin = 16\n", "max_bin = 16\n" + task)
    spec.write_text(text)
    r = cli("simulate", spec, "--out", tmp_path / "run")
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], r.stderr


def lr_spec(spec: Path, solver: str = "") -> Path:
    """The same federation as a ``horizontal.lr`` job."""
    spec.write_text(spec.read_text().replace('kind = "horizontal.gbdt"', 'kind = "horizontal.lr"')
                    .replace("n_trees = 5\nmax_depth = 3\nmax_bin = 16\n", f"rounds = 4\n{solver}")
                    .replace("n_trees = 3\nmax_depth = 3\nmax_bin = 16\n", f"rounds = 4\n{solver}")
                    .replace('missing = "keep"', 'missing = "mean"'))
    return spec


def test_privacy_on_fedavg_lr_is_refused(tmp_path):
    spec = lr_spec(federation(tmp_path, privacy="\n[privacy]\nepsilon = 4.0\n"), 'solver = "fedavg"\n')
    r = cli("simulate", spec, "--out", tmp_path / "run")
    err = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(err) == 1 and err[0].startswith("error:"), r.stderr
    assert "privacy table applies to solver = 'newton'" in err[0]


@pytest.mark.extended(covered_by="tests/algorithms/horizontal/test_newton_lr_privacy.py (the private Newton LR: calibration "
                                 "against the accountant, noise on the released sums, refusal to resume), "
                                 "::test_private_horizontal_lr_over_budget_refuses_to_start (the LR [privacy] table planned "
                                 "by the CLI) and ::test_privacy_budget_is_spent_and_reported (a private job over mTLS "
                                 "processes: the budget spent, logged and in the report)")
def test_private_horizontal_lr_spends_and_reports_its_budget(tmp_path):
    spec = lr_spec(federation(tmp_path, privacy="\n[privacy]\nepsilon = 4.0\ndelta = 1e-5\n", n_trees=3))
    out = tmp_path / "run"
    r = cli("simulate", spec, "--out", out)
    assert r.returncode == 0, r.stderr + r.stdout
    m = json.loads((out / "metrics.json").read_text())
    p = m["privacy"]
    # 3 standardisation sums + 6 noisy Newton steps (task.privacy_rounds), composed by the accountant
    assert 3.9 < p["epsilon"] <= 4.0 and p["mechanisms_planned"] == 3 + 6 and "dp-accounting" in p["accountant"]
    assert m["test"]["auc"] > 0.7
    assert "differential privacy: epsilon = " in (out / "logs" / "coordinator.log").read_text()
    assert cli("report", out).returncode == 0
    assert "Privacy ε" in (out / "report.html").read_text()


def test_private_horizontal_lr_over_budget_refuses_to_start(tmp_path):
    spec = lr_spec(federation(tmp_path, privacy="\n[privacy]\nepsilon = 0.5\nnoise_multiplier = 1.0\n"))
    r = cli("simulate", spec, "--out", tmp_path / "run")
    err = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(err) == 1 and err[0].startswith("error:"), r.stderr
    assert "privacy budget epsilon = 0.5" in err[0] and "Newton steps" in err[0] and "would need noise_multiplier >=" in err[0]
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.extended(covered_by="tests/tasks/test_horizontal_gbdt_e2e.py::test_mtls_run_then_local_predict (horizontal.gbdt "
                                 "over mTLS processes, ledgers, predict, report) and the acceptance case horizontal-gbdt "
                                 "(benchmarks/cases/horizontal_gbdt.py runs this example against pooled XGBoost)")
def test_example_on_shared_data(shared_data, repo, tmp_path):
    out = tmp_path / "run"
    r = cli("simulate", "examples/horizontal_gbdt_default_credit.toml", "--out", out, cwd=repo)
    assert r.returncode == 0, r.stderr + r.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["test"]["auc"] >= 0.7818  # pooled XGBoost with the same parameters: 0.7848
    assert m["aggregations"] == 93 + m["binning"]["zoom_rounds"] + m["binning"]["refine_rounds"]
    assert len(m["rounds"]) == 30


@pytest.mark.extended(covered_by="tests/algorithms/vertical/test_monotone.py::test_horizontal_gbdt_monotone_equals_reference_and_is_monotone "
                                 "and ::test_horizontal_gbdt_banks_must_agree_on_monotone (the federated trainer with the "
                                 "banks' directions, against the pooled reference; disagreeing banks refused), "
                                 "tests/runtime/test_spec.py::test_bad_monotone_tables_fail_with_one_line and "
                                 "::test_monotone_only_for_tree_tasks (the [parties.NAME] monotone table), and "
                                 "tests/tasks/test_vertical_secureboost_e2e.py::test_monotone_constraints_at_each_owner "
                                 "(monotone tables from the spec over mTLS processes)")
def test_monotone_constraint_from_the_spec(tmp_path):
    """x2 acts U-shaped on y; with monotone x2 = 1 at every bank the trained model's score never
    falls as x2 rises (fedrisk predict over a grid), and a bank that disagrees stops the job."""
    spec = federation(tmp_path, bank_extra="monotone = { x2 = 1 }\n")
    out = tmp_path / "run"
    r = cli("simulate", spec, "--out", out)
    assert r.returncode == 0, r.stderr + r.stdout
    rng = np.random.default_rng(5)
    base = rng.normal(size=(40, 3))
    grid = np.linspace(-3, 3, 31)
    rows = pd.DataFrame([{"id": i * 100 + k, "x0": b[0], "x1": b[1], "x2": v}
                         for i, b in enumerate(base) for k, v in enumerate(grid)])
    rows.to_csv(tmp_path / "grid.csv", index=False)
    r = cli("predict", out / "model.json", tmp_path / "grid.csv", "--out", tmp_path / "grid_scores.csv")
    assert r.returncode == 0, r.stderr
    s = pd.read_csv(tmp_path / "grid_scores.csv")["score"].to_numpy().reshape(len(base), len(grid))
    assert (np.diff(s, axis=1) >= -1e-12).all()
    model = json.loads((out / "model.json").read_text())
    assert any(nd.get("feature") == "x2" for t in model["trees"] for nd in t["nodes"])  # it is used, monotonically
    text = spec.read_text()
    spec.write_text(text.replace("monotone = { x2 = 1 }", "", 1))
    r = cli("simulate", spec, "--out", tmp_path / "run2")
    assert r.returncode != 0 and "different monotone constraints" in r.stdout + r.stderr
