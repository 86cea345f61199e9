"""The job spec a participant keeps in its run directory (fedrisk.runtime.spec_copy)."""
from __future__ import annotations

import subprocess
import tomllib

import numpy as np
import pandas as pd
import pytest

from fedrisk.runtime.spec import load_spec
from fedrisk.runtime.spec_copy import dumps, party_view

from tests.e2e_helpers import FEDRISK, lender_payco_spec


SPEC = """
[federation]
name = "copy"
seed = 3
[parties.lender]
address = "127.0.0.1:1"
data = "data/lender.csv"
id = "id"
label = "y"
positive = {bad = 1, good = 0}
sep = ";"
[parties.payco]
address = "127.0.0.1:2"
data = "/elsewhere/payco.csv"
id = "id"
features = ["c", "d"]
monotone = {c = 1}
[task]
kind = "vertical.lr"
max_iter = 3
l2 = 1e-4
[evaluation]
test_fraction = 0.2
[security]
certs = "pki"
connect_timeout = 20
"""


def test_a_partys_view_resolves_its_own_paths_and_leaves_out_the_others_data(tmp_path):
    raw = tomllib.loads(SPEC)
    mine = party_view(raw, tmp_path, "lender", "lender")
    text = dumps(mine)
    back = tomllib.loads(text)
    assert back["parties"]["lender"]["data"] == str(tmp_path / "data" / "lender.csv")
    assert "data" not in back["parties"]["payco"] and "/elsewhere" not in text
    assert back["security"]["certs"] == str(tmp_path / "pki")
    # everything else survives the round trip unchanged
    for k in ("federation", "task", "evaluation"):
        assert back[k] == raw[k]
    assert back["parties"]["lender"]["positive"] == {"bad": 1, "good": 0}
    assert back["parties"]["payco"]["monotone"] == {"c": 1}
    assert back["parties"]["payco"]["features"] == ["c", "d"]
    theirs = tomllib.loads(dumps(party_view(raw, tmp_path, "payco", "lender")))
    assert theirs["parties"]["payco"]["data"] == "/elsewhere/payco.csv" and "data" not in theirs["parties"]["lender"]


def test_a_horizontal_banks_view_keeps_the_test_file_only_at_the_evaluation_holder(tmp_path):
    raw = {"federation": {"name": "h"}, "coordinator": {"address": "127.0.0.1:9"},
           "parties": {"b1": {"address": "127.0.0.1:1", "data": "b1.csv", "id": "id", "label": "y"},
                       "b2": {"address": "127.0.0.1:2", "data": "b2.csv", "id": "id", "label": "y"}},
           "task": {"kind": "horizontal.lr"}, "evaluation": {"test": "test.csv"}}
    holder = tomllib.loads(dumps(party_view(raw, tmp_path, "b1", "b1")))
    other = tomllib.loads(dumps(party_view(raw, tmp_path, "b2", "b1")))
    coord = tomllib.loads(dumps(party_view(raw, tmp_path, "coordinator", "b1")))
    assert holder["evaluation"]["test"] == str(tmp_path / "test.csv")
    assert "test" not in other.get("evaluation", {}) and "test" not in coord.get("evaluation", {})
    assert "data" not in coord["parties"]["b1"] and "data" not in coord["parties"]["b2"]


@pytest.mark.parametrize("value", ["plain", 'quote " and \\ backslash', "tab\tand é", ""])
def test_strings_survive_the_toml_emitter(value):
    assert tomllib.loads(dumps({"t": {"k": value, "l": [value, 1, 2.5, True]}}))["t"] == {"k": value, "l": [value, 1, 2.5, True]}


@pytest.mark.e2e
def test_predict_no_spawn_works_from_each_hosts_run_directory_alone(tmp_path):
    """Two `fedrisk party` processes with their own run directories (as on two hosts), then the
    original spec is gone: the label holder's predict --no-spawn and the feature holder's serve
    run from what each run directory holds."""
    from fedrisk.transport.certs import make_dev_pki

    rng = np.random.default_rng(0)
    n = 600
    ids = np.arange(n) + 100
    X = rng.normal(size=(n, 4))
    y = (rng.random(n) < 1 / (1 + np.exp(-(X[:, 0] - X[:, 2])))).astype(int)
    src = tmp_path / "src"
    src.mkdir()
    pd.DataFrame({"id": ids, "y": y, "a": X[:, 0], "b": X[:, 1]}).to_csv(src / "lender.csv", index=False)
    pd.DataFrame({"id": ids, "c": X[:, 2], "d": X[:, 3]}).to_csv(src / "payco.csv", index=False)
    pd.DataFrame({"id": ids[:50], "a": X[:50, 0], "b": X[:50, 1]}).to_csv(tmp_path / "new.csv", index=False)
    spec = lender_payco_spec(src / "job.toml", "twohosts", """
        kind = "vertical.lr"
        max_iter = 4
        """, """
        [evaluation]
        test_fraction = 0.2
        [security]
        certs = "../pki"
        connect_timeout = 30
        """)
    make_dev_pki(["lender", "payco"], tmp_path / "pki")
    runs = {p: tmp_path / f"host-{p}" for p in ("lender", "payco")}
    procs = {p: subprocess.Popen([*FEDRISK, "party", str(spec), "--as", p, "--out", str(d), "--quiet"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for p, d in runs.items()}
    for p, pr in procs.items():
        _, err = pr.communicate(timeout=600)
        assert pr.returncode == 0, (p, err)
    spec.unlink()  # nothing below may read the original spec
    kept = {p: tomllib.loads((d / "job.toml").read_text()) for p, d in runs.items()}
    assert kept["lender"]["parties"]["lender"]["data"] == str(src / "lender.csv")
    assert "data" not in kept["lender"]["parties"]["payco"] and "data" not in kept["payco"]["parties"]["lender"]
    assert load_spec(runs["payco"] / "job.toml").data_path("payco") == src / "payco.csv"
    serve = subprocess.Popen([*FEDRISK, "serve", str(runs["payco"] / "job.toml"), "--as", "payco",
                              "--model", str(runs["payco"] / "model-payco.json"), "--session", "s1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        r = subprocess.run([*FEDRISK, "predict", str(runs["lender"] / "model.json"), str(tmp_path / "new.csv"),
                            "--out", str(tmp_path / "scores.csv"), "--no-spawn", "--session", "s1"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        _, err = serve.communicate(timeout=120)
        assert serve.returncode == 0, err
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert (scores["status"] == "scored").sum() == 50 and scores["score"].between(0, 1).all()
