"""End to end: real `fedrisk` processes talking gRPC over mutual TLS on loopback."""
from __future__ import annotations

import json
import re
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


def cli(*args, cwd=None, timeout=240):
    return subprocess.run([*FEDRISK, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def small_federation(tmp: Path, mutate=None, secure=True, rounds=3) -> Path:
    rng = np.random.default_rng(0)
    ports = free_ports(4)
    parts = []
    for i, name in enumerate(["bank1", "bank2", "bank3"]):
        n = 200 + 50 * i
        X = rng.normal(size=(n, 3))
        y = (rng.random(n) < 1 / (1 + np.exp(-X @ [1.0, -0.5, 0.3]))).astype(int)
        df = pd.DataFrame({"id": np.arange(n) + 1000 * i, "y": y, "x0": X[:, 0], "x1": X[:, 1], "x2": X[:, 2]})
        if mutate:
            df = mutate(name, df)
        df.to_csv(tmp / f"{name}.csv", index=False)
        parts.append(f'[parties.{name}]\naddress = "127.0.0.1:{ports[i + 1]}"\ndata = "{name}.csv"\nid = "id"\nlabel = "y"\n')
    pd.DataFrame({"id": [9000 + k for k in range(100)], "y": rng.integers(0, 2, 100),
                  "x0": rng.normal(size=100), "x1": rng.normal(size=100), "x2": rng.normal(size=100)}).to_csv(tmp / "test.csv", index=False)
    spec = tmp / "job.toml"
    spec.write_text(textwrap.dedent(f"""
        [federation]
        name = "small"
        [coordinator]
        address = "127.0.0.1:{ports[0]}"
        """) + "\n".join(parts) + textwrap.dedent(f"""
        [task]
        kind = "horizontal.lr"
        rounds = {rounds}
        [evaluation]
        test = "test.csv"
        [security]
        secure_aggregation = {str(secure).lower()}
        """))
    return spec


def test_simulate_example_on_shared_data(shared_data, repo, tmp_path):
    out = tmp_path / "run"
    r = cli("simulate", "examples/horizontal_default_credit.toml", "--out", out, cwd=repo)
    assert r.returncode == 0, r.stderr + r.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["auc"] >= 0.7297 - 0.005
    assert 0.3 < metrics["test"]["ks"] < 0.5
    # the default Newton solver converges well before the example's 20-round cap
    assert metrics["solver"] == "newton"
    assert 3 <= len(metrics["rounds"]) <= 15 and "loss" in metrics["rounds"][-1]
    ledgers = sorted(p.stem for p in (out / "ledger").glob("*.jsonl"))
    assert ledgers == ["bank1", "bank2", "bank3", "coordinator"]
    # secure aggregation is the default: no bank ever sent the coordinator a plain model update
    for bank in ("bank1", "bank2", "bank3"):
        kinds = {json.loads(l)["kind"] for l in (out / "ledger" / f"{bank}.jsonl").read_text().splitlines()
                 if json.loads(l)["to"] == "coordinator"}
        assert "model" not in kinds and "masked" in kinds
    model = json.loads((out / "model.json").read_text())
    assert model["format"] == "fedrisk.lr" and len(model["features"]) == 23
    # every party's outbound ledger chains and matches its partners' inbound ledgers (issue 12 item 9)
    r = cli("ledger", "verify", out)
    assert r.returncode == 0 and "error" not in r.stdout, r.stdout + r.stderr
    assert r.stdout.count("all in") >= 6, r.stdout  # at least coordinator <-> each of 3 banks, both ways
    # run outputs are private to the account that ran them (issue 12 item 11)
    for f in [out / "model.json", out / "metrics.json", out / "ledger" / "bank1.jsonl", out / "logs" / "bank1.log",
              out / "ledger", out / "scores"]:
        assert f.stat().st_mode & 0o077 == 0, f"{f} is {f.stat().st_mode & 0o777:o}"
    # local scoring of new rows with the model file
    scores = tmp_path / "scores.csv"
    r = cli("predict", out / "model.json", shared_data / "default_credit_homo_test.csv", "--out", scores)
    assert r.returncode == 0, r.stderr
    s = pd.read_csv(scores)
    ref = pd.read_csv(out / "scores" / "test.csv")
    np.testing.assert_allclose(s["score"].to_numpy(), ref["score"].to_numpy(), rtol=1e-6)
    # the test applicants' reasons at training are predict's, and the report summarises them
    rs = pd.read_csv(out / "scores" / "test_reasons.csv")
    assert rs["reason_1"].tolist() == s["reason_1"].tolist() and "Reason codes" in (out / "report.html").read_text()


@pytest.mark.extended(covered_by="tests/algorithms/horizontal/test_newton_lr.py::test_stress_case_equals_pooled_sklearn[heavy_noniid] "
                                 "(this stress case, the same Newton solver under secure aggregation, against scikit-learn) and "
                                 "::test_simulate_example_on_shared_data (horizontal.lr over mTLS processes with secure "
                                 "aggregation, the default spec)")
def test_heavy_tailed_non_iid_stress_case_over_mtls_equals_pooled_sklearn(shared_data, tmp_path):
    """The public stress case with a spec of only kind = "horizontal.lr": processes, mTLS, secure aggregation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from fedrisk.algorithms.horizontal.logistic import sklearn_C
    from fedrisk.finance.metrics import auc
    from tests.stress_data.horizontal import make_case, write_case

    case = make_case("heavy_noniid", shared_data)
    write_case(case, tmp_path)
    ports = free_ports(4)
    parts = "".join(f'[parties.{b}]\naddress = "127.0.0.1:{ports[k + 1]}"\ndata = "{b}.csv"\nid = "id"\nlabel = "y"\n'
                    for k, b in enumerate(case.banks))
    spec = tmp_path / "job.toml"
    spec.write_text(f'[federation]\nname = "stress"\n[coordinator]\naddress = "127.0.0.1:{ports[0]}"\n{parts}'
                    f'[task]\nkind = "horizontal.lr"\n[evaluation]\ntest = "test.csv"\nholder = "bank1"\n')
    out = tmp_path / "run"
    r = cli("simulate", spec, "--out", out)
    assert r.returncode == 0, r.stderr + r.stdout
    model = json.loads((out / "model.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    X, y = case.pooled()
    sc = StandardScaler().fit(X)
    ref = LogisticRegression(C=sklearn_C(1e-4, len(y)), solver="newton-cholesky", tol=1e-12, max_iter=1000)
    ref.fit(sc.transform(X), y)
    assert np.max(np.abs(np.asarray(model["coef"]) - ref.coef_[0])) <= 1e-4
    assert abs(model["intercept"] - ref.intercept_[0]) <= 1e-4
    assert len(model["history"]) <= 15
    Xt = case.test[case.features].to_numpy(float)
    pooled_auc = auc(case.test["y"].to_numpy(), ref.predict_proba(sc.transform(Xt))[:, 1])
    assert abs(metrics["test"]["auc"] - pooled_auc) <= 1e-4


def test_each_party_as_its_own_fedrisk_party_process(tmp_path):
    spec = small_federation(tmp_path, secure=False)
    certs = tmp_path / "certs"
    assert cli("certs", "--parties", "bank1,bank2,bank3", "--out", certs).returncode == 0
    procs = [subprocess.Popen([*FEDRISK, "party", str(spec), "--as", name, "--out", str(tmp_path / name),
                               "--certs", str(certs), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name in ["coordinator", "bank3", "bank2", "bank1"]]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    # each host has only its own ledger; the evaluation holder (first bank) wrote metrics
    assert [p.name for p in (tmp_path / "bank2" / "ledger").iterdir()] == ["bank2.jsonl"]
    assert (tmp_path / "bank1" / "metrics.json").is_file()
    assert json.loads((tmp_path / "bank2" / "model.json").read_text())["features"] == ["x0", "x1", "x2"]


def drop_col(name, df):
    return df.drop(columns=["x2"]) if name == "bank2" else df


def rename_col(name, df):
    return df.rename(columns={"x1": "income"}) if name == "bank3" else df


def dup_ids(name, df):
    if name == "bank2":
        df.loc[5, "id"] = df.loc[4, "id"]
    return df


def nan_feature(name, df):
    if name == "bank3":
        df.loc[[3, 7], "x1"] = np.nan
    return df


def bad_label(name, df):
    if name == "bank1":
        df.loc[0, "y"] = 2
    return df


def no_label(name, df):
    return df.drop(columns=["y"]) if name == "bank2" else df


def empty(name, df):
    return df.iloc[:0] if name == "bank1" else df


def _loader_variant(mutate, message, unit: str):
    """A bad file the party's loader refuses: the message is tested in tests/data/test_loading.py
    (``unit``); the way over processes to one error line naming the party is the same for every
    loader refusal, and [dup_ids] runs it by default (CI budget: ~5 s a variant)."""
    return pytest.param(mutate, message, marks=pytest.mark.extended(
        covered_by=f"tests/data/test_loading.py::{unit} (the loader's message) and [dup_ids-bank2.*duplicate] here "
                   "(a loader refusal of one bank over `fedrisk simulate`: exit 2, one error line naming the bank)"))


@pytest.mark.parametrize("mutate, message", [
    (drop_col, r"different feature counts"),
    pytest.param(rename_col, r"different feature names", marks=pytest.mark.extended(
        covered_by="tests/data/test_loading.py::test_same_features_first_difference (the message of each kind of "
                   "feature mismatch) and [drop_col-different feature counts] here (the same feature agreement "
                   "between banks over `fedrisk simulate`, one error line)")),
    (dup_ids, r"bank2.*duplicate"),
    _loader_variant(nan_feature, r"bank3.*x1", "test_nan_rejected_with_counts_and_columns"),
    _loader_variant(bad_label, r"bank1.*(binary|0/1)", "test_label_not_binary_shows_values"),
    _loader_variant(no_label, r"bank2.*'y'", "test_missing_label_column_lists_available"),
    _loader_variant(empty, r"bank1.*(empty|no rows|no data)", "test_header_only"),
])
def test_bad_input_fails_with_a_clear_line_naming_the_party(tmp_path, mutate, message):
    spec = small_federation(tmp_path, mutate=mutate, rounds=1)
    r = cli("simulate", spec, "--out", tmp_path / "run", timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    first = r.stderr.strip().splitlines()[0]
    assert first.startswith("error:")
    assert re.search(message, r.stderr, re.I), r.stderr
    assert "Traceback" not in r.stderr


def test_missing_data_file_is_refused_before_any_process_starts(tmp_path):
    spec = small_federation(tmp_path)
    (tmp_path / "bank3.csv").unlink()
    r = cli("simulate", spec, "--out", tmp_path / "run")
    assert r.returncode == 2 and "party 'bank3': data file" in r.stderr
    assert not (tmp_path / "run" / "logs").exists()


def test_demo_runs_and_federation_beats_every_bank_alone(tmp_path):
    out = tmp_path / "demo"
    r = cli("demo", "--out", out)
    assert r.returncode == 0, r.stderr + r.stdout
    comparison = json.loads((out / "metrics.json").read_text())["comparison"]
    fed = comparison["federated"]["auc"]
    assert all(fed > m["auc"] + 0.01 for m in comparison["local_only"].values()), comparison
    assert fed > comparison["centralized"]["auc"] - 0.01
    assert "pooled" in r.stdout and "alone" in r.stdout
    assert len(list((out / "ledger").glob("*.jsonl"))) == 4


@pytest.mark.extended(covered_by="the coordinator's state across a resume: tests/algorithms/horizontal/test_newton_lr.py::test_resume_from_a_checkpoint_reaches_the_same_model and test_fedavg_lr.py::test_resume_from_checkpoint_continues_the_round_count; `--resume` over mTLS processes: tests/runtime/test_resume_e2e.py::test_vertical_lr_exact_resumes_after_a_feature_holder_crash and tests/runtime/test_rejoin_e2e.py (a horizontal bank restarted with --resume); the coordinator-crash e2e cases of test_resume_e2e.py run with FEDRISK_FAULTS=all")
def test_resume_continues_from_the_coordinators_checkpoint(tmp_path):
    spec = small_federation(tmp_path, rounds=4)
    out = tmp_path / "run"
    assert cli("simulate", spec, "--out", out).returncode == 0
    first = json.loads((out / "model.json").read_text())
    ckpt = json.loads((out / "checkpoints" / "coordinator.json").read_text())
    assert ckpt["format"] == "fedrisk.checkpoint" and max(map(int, ckpt["stages"]["train"])) == 4
    # a resumed job starts after the checkpointed round instead of from scratch
    r = cli("simulate", spec, "--out", out, "--resume")
    assert r.returncode == 0, r.stderr
    log = (out / "logs" / "coordinator.log").read_text()
    assert "resuming after round 4" in log
    resumed = json.loads((out / "model.json").read_text())
    assert resumed["coef"] == first["coef"]
    # the resumed run continued each ledger's hash chain (issue 12 item 9)
    r = cli("ledger", "verify", out)
    assert r.returncode == 0, r.stdout + r.stderr
    # a new run over the same folder keeps the earlier run's ledgers instead of deleting them
    before = (out / "ledger" / "bank1.jsonl").read_text()
    assert cli("simulate", spec, "--out", out, "--force").returncode == 0
    previous = sorted((out / "ledger" / "previous").iterdir())
    assert len(previous) == 4 and any(p.read_text() == before for p in previous)
    assert len(list((out / "ledger-inbound" / "previous").iterdir())) == 4
    assert cli("ledger", "verify", out).returncode == 0
