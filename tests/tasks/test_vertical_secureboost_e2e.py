"""End to end: `fedrisk simulate` / `fedrisk predict` for vertical.secureboost, real processes over mTLS."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedrisk.errors import ConfigError
from fedrisk.runtime.demo import free_ports
from fedrisk.runtime.spec import load_spec

pytestmark = pytest.mark.e2e
FEDRISK = [sys.executable, "-m", "fedrisk"]


def cli(*args, cwd=None, timeout=600):
    return subprocess.run([*FEDRISK, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def three_party_job(tmp: Path, task_extra: str = "", blanks: bool = False, tables: dict | None = None) -> Path:
    """A lender and two feature holders over shuffled, partly overlapping customers (``blanks``:
    empty cells at every party, loaded with missing = "keep")."""
    rng = np.random.default_rng(0)
    n = 900
    ids = np.arange(n) + 100
    X = rng.normal(size=(n, 6))
    z = X[:, 0] - X[:, 2] + 0.8 * X[:, 4] - 0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    if blanks:
        X[rng.random((n, 6)) < 0.1] = np.nan
    pd.DataFrame({"id": ids, "y": y, "a": X[:, 0], "b": X[:, 1]}).to_csv(tmp / "lender.csv", index=False)
    keep = rng.permutation(n)[: n - 40]  # 40 customers unknown to payco
    pd.DataFrame({"id": ids[keep], "c": X[keep, 2], "d": X[keep, 3]}).to_csv(tmp / "payco.csv", index=False)
    order = rng.permutation(n)
    pd.DataFrame({"id": ids[order], "e": X[order, 4], "f": X[order, 5]}).to_csv(tmp / "bureau.csv", index=False)
    ports = free_ports(3)
    spec = tmp / "job.toml"
    policy = 'missing = "keep"' if blanks else ""
    extra = {p: (tables or {}).get(p, "") for p in ("lender", "payco", "bureau")}
    spec.write_text(textwrap.dedent(f"""
        [federation]
        name = "sb-three"
        [parties.lender]
        address = "127.0.0.1:{ports[0]}"
        data = "lender.csv"
        label = "y"
        {policy}
        {extra["lender"]}
        [parties.payco]
        address = "127.0.0.1:{ports[1]}"
        data = "payco.csv"
        {policy}
        {extra["payco"]}
        [parties.bureau]
        address = "127.0.0.1:{ports[2]}"
        data = "bureau.csv"
        {policy}
        {extra["bureau"]}
        [task]
        kind = "vertical.secureboost"
        n_trees = 3
        max_depth = 3
        max_bin = 16
        {task_extra}
        [evaluation]
        test_rule = "id % 5 == 0"
        """))
    return spec


def test_three_parties_simulate_and_predict(tmp_path):
    # three rows per ciphertext over mTLS processes (small jobs pick one row on their own; the
    # in-memory tests show both give the same model bit for bit)
    spec = three_party_job(tmp_path, task_extra="rows_per_ciphertext = 3")
    out = tmp_path / "run"
    r = cli("simulate", spec, "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["intersection"]["size"] == 860 and m["trees"] == 3 and m["rows_per_ciphertext"] == 3
    assert m["test"]["auc"] > 0.7
    lender = json.loads((out / "model.json").read_text())
    assert lender["format"] == "fedrisk.vertical.secureboost" and set(lender["parties"]) == {"lender", "payco", "bureau"}
    for party, own in (("payco", {"c", "d"}), ("bureau", {"e", "f"})):
        part = json.loads((out / f"model-{party}.json").read_text())
        assert part["format"] == "fedrisk.vertical.secureboost.part"
        assert set(part["features"]) == own and set(part["importance"]) <= own
        text = (out / f"model-{party}.json").read_text()
        assert '"leaf"' not in text and '"a"' not in text  # no leaf weights, no other party's names
        for t in lender["trees"]:
            for nd in t["nodes"]:
                if nd.get("owner") == party:
                    assert "threshold" not in nd and "feature" not in nd
    assert len(list((out / "ledger").glob("*.jsonl"))) == 3
    # federated scoring: the lender's rows, scored with both feature holders' help
    new = pd.read_csv(tmp_path / "lender.csv").drop(columns=["y"]).iloc[:200]
    new.to_csv(tmp_path / "new.csv", index=False)
    r = cli("predict", out / "model.json", tmp_path / "new.csv", "--out", tmp_path / "scores.csv")
    assert r.returncode == 0, r.stdout + r.stderr
    allrows = pd.read_csv(tmp_path / "scores.csv")
    assert allrows.id.tolist() == new.id.tolist()  # every input row, unscored ones with a status
    payco_ids = set(pd.read_csv(tmp_path / "payco.csv").id)
    assert set(allrows.id[allrows.status != "scored"]) == {i for i in new.id if i not in payco_ids}
    scores = allrows[allrows.status == "scored"]
    assert set(scores.id) == {i for i in new.id if i in payco_ids}
    # reason codes: the lender's features by name, each partner as one aggregated reason
    lender_feats = set(json.loads((out / "model.json").read_text())["features"])
    reasons = pd.concat([scores[f"reason_{k}"] for k in (1, 2, 3)]).dropna()
    assert reasons.map(lambda r: r in lender_feats or r.startswith("partner features (")).all()
    assert (scores["contribution_1"].dropna() > 0).all()
    trained = pd.concat([pd.read_csv(out / "scores" / f) for f in ("train.csv", "test.csv")]).set_index("id")
    assert np.allclose(scores.set_index("id").score, trained.loc[scores.id, "score"], atol=1e-6)


@pytest.mark.extended(covered_by="tests/algorithms/vertical/test_secureboost.py::test_missing_values_get_their_own_bin_and_a_learned_side "
                                 "and ::test_missing_value_binning_and_split_search (training on blanks equals the pooled "
                                 "sparsity-aware trees; raw rows with NaN score to the learned side), "
                                 "tests/tasks/test_vertical_missing_advice.py::test_blank_cells_name_the_spec_setting_of_the_task"
                                 "[vertical.secureboost-missing = 'keep'] (blanks without the policy refused), "
                                 "::test_three_parties_simulate_and_predict (this job over mTLS processes, federated predict) "
                                 "and tests/tasks/test_horizontal_gbdt_e2e.py::test_mtls_run_then_local_predict "
                                 "(missing = \"keep\" blanks over processes, trained on and scored)")
def test_missing_values_kept_trained_on_and_scored(tmp_path):
    spec = three_party_job(tmp_path, blanks=True)
    out = tmp_path / "run"
    r = cli("simulate", spec, "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["test"]["auc"] > 0.65
    # new rows with blanks are scored like the same rows were in training
    new = pd.read_csv(tmp_path / "lender.csv").drop(columns=["y"]).iloc[:150]
    assert new.isna().any().any()
    new.to_csv(tmp_path / "new.csv", index=False)
    r = cli("predict", out / "model.json", tmp_path / "new.csv", "--out", tmp_path / "scores.csv")
    assert r.returncode == 0, r.stdout + r.stderr
    scores = pd.read_csv(tmp_path / "scores.csv").query("status == 'scored'").set_index("id").score
    trained = pd.concat([pd.read_csv(out / "scores" / f) for f in ("train.csv", "test.csv")]).set_index("id").score
    assert len(scores) > 100 and np.allclose(scores, trained.loc[scores.index], atol=1e-6)
    # without the policy the same files are refused with a clear message
    spec.write_text(spec.read_text().replace('missing = "keep"', ""))
    r = cli("simulate", spec, "--out", tmp_path / "run2")
    assert r.returncode != 0 and "set missing = 'keep' in [parties." in " ".join((r.stdout + r.stderr).split())


def test_bad_task_settings_are_config_errors(tmp_path):
    for extra in ("max_depth = 0", "key_bits = 1024", "early_stopping_rounds = 3", "scheme = 'rsa'", "max_bins = 32"):
        spec = three_party_job(tmp_path, extra)
        with pytest.raises(ConfigError, match="task"):
            load_spec(spec)


@pytest.mark.extended(covered_by="tests/tasks/test_vertical_secureboost_e2e.py::test_three_parties_simulate_and_predict and the acceptance case secureboost (this example)")
def test_simulate_example_on_shared_data(shared_data, repo, tmp_path):
    if not (shared_data / "default_credit_hetero_guest.csv").is_file():
        pytest.skip(f"default_credit_hetero_*.csv not found in {shared_data}")
    out = tmp_path / "run"
    r = cli("simulate", "examples/vertical_secureboost_default_credit.toml", "--out", out, cwd=repo, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["test"]["auc"] >= 0.7841, m["test"]
    assert m["test"]["ks"] > 0.40
    assert m["intersection"]["size"] == 30000 and m["rows"]["test"] == 6000
    payco = json.loads((out / "model-payco.json").read_text())
    assert set(payco["features"]) == {f"x{i}" for i in range(10)}
    assert payco["importance"] and all(v["splits"] > 0 for v in payco["importance"].values())


def _walk(lender: dict, parts: dict, rows: dict) -> np.ndarray:
    """Scores from the model files of every party (the test holds them all): each party's split
    nodes route with its own columns; the lender's leaves add up."""
    n = len(next(iter(rows.values())))
    margin = np.full(n, lender["base_score"])
    for t, tree in enumerate(lender["trees"]):
        nodes = {nd["id"]: nd for nd in tree["nodes"]}
        splits = {nd["id"]: nd for p in parts.values() for nd in p["trees"][t]["nodes"]}
        for i in range(n):
            nd = nodes[0]
            while "leaf" not in nd:
                own = nd if "feature" in nd else splits[nd["id"]]
                nd = nodes[nd["left"] if rows[own["feature"]][i] < own["threshold"] else nd["right"]]
            margin[i] += nd["leaf"]
    return 1 / (1 + np.exp(-margin))


def test_monotone_constraints_at_each_owner(tmp_path):
    """a (lender, +1) and c (payco, -1) are constrained by their owners; scores follow."""
    spec = three_party_job(tmp_path, "", tables={"lender": "monotone = { a = 1 }",
                                                            "payco": "monotone = { c = -1 }"})
    out = tmp_path / "run"
    r = cli("simulate", spec, "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    lender = json.loads((out / "model.json").read_text())
    parts = {p: json.loads((out / f"model-{p}.json").read_text()) for p in ("payco", "bureau")}
    assert json.loads((out / "metrics.json").read_text())["test"]["auc"] > 0.7
    rng = np.random.default_rng(1)
    base = {k: rng.normal(size=150) for k in "abcdef"}
    # the model files walk to the scores training produced (so the walk below is the model)
    trained = pd.read_csv(out / "scores" / "train.csv").set_index("id").score
    cols = {k: pd.read_csv(tmp_path / f).set_index("id") for k, f in (("l", "lender.csv"), ("p", "payco.csv"), ("b", "bureau.csv"))}
    ids = trained.index[:100]
    real = {k: cols[src].loc[ids, k].to_numpy() for k, src in zip("abcdef", "llppbb")}
    assert np.allclose(_walk(lender, parts, real), trained.loc[ids].to_numpy(), atol=1e-9)
    for feat, sign in (("a", 1), ("c", -1)):
        series = [sign * _walk(lender, parts, {**base, feat: np.full(150, v)}) for v in np.linspace(-3, 3, 25)]
        assert (np.diff(np.array(series), axis=0) >= -1e-12).all(), feat
    # an unknown constrained column is one line naming the party and the setting
    spec.write_text(spec.read_text().replace("monotone = { c = -1 }", "monotone = { cc = -1 }"))
    r = cli("simulate", spec, "--out", tmp_path / "run2")
    assert r.returncode != 0 and "monotone constraint on 'cc'" in r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
