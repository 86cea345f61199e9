"""Same engine, same numbers, same files: the Python API against ``fedrisk simulate``.

The estimators run each task's own ``run(ctx)`` in-process; ``simulate`` runs it as one process
per participant over mTLS. For the same data and settings the AUCs must agree to 1e-6 (here they
agree exactly), the model files must be the same files, and each side must read the other's.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import fedrisk as fr
from fedrisk.runtime.demo import free_ports
from fedrisk.runtime.predict import predict_file
from fedrisk.runtime.simulate import simulate

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

HLR = {"rounds": 20, "local_epochs": 1, "batch_size": 64, "learning_rate": 0.1, "lr_decay": 0.95, "l2": 0.0001}
SB = {"n_trees": 3, "max_depth": 2, "learning_rate": 0.3, "max_bin": 16}


def _toml(d: dict) -> str:
    return "\n".join(f"{k} = {json.dumps(v)}" for k, v in d.items())


def test_horizontal_lr_equals_the_cli(tmp_path, shared_data):
    names = {"bank1": "guest", "bank2": "host_1", "bank3": "host_2"}
    ports = free_ports(4)
    parties = "".join(f'[parties.{b}]\naddress = "127.0.0.1:{ports[i + 1]}"\n'
                      f'data = "{(shared_data / f"default_credit_homo_{n}.csv").as_posix()}"\nid = "id"\nlabel = "y"\n'
                      for i, (b, n) in enumerate(names.items()))
    holdout_csv = shared_data / "default_credit_homo_test.csv"
    spec = tmp_path / "job.toml"
    spec.write_text(f'[federation]\nname = "parity-h"\nseed = 0\n[coordinator]\naddress = "127.0.0.1:{ports[0]}"\n'
                    f'{parties}[task]\nkind = "horizontal.lr"\n{_toml(HLR)}\n'
                    f'[evaluation]\ntest = "{holdout_csv.as_posix()}"\nholder = "bank1"\n')
    cli = simulate(spec, tmp_path / "cli")

    banks = {b: pd.read_csv(shared_data / f"default_credit_homo_{n}.csv") for b, n in names.items()}
    hfed = fr.Federation.horizontal(banks, id="id", label="y", name="parity-h")
    hlr = fr.LogisticRegression(**HLR).fit(hfed)
    holdout = pd.read_csv(holdout_csv)
    p = hlr.predict_proba(holdout)[:, 1]
    assert abs(fr.metrics.auc(holdout.y, p) - cli["test"]["auc"]) <= 1e-6
    cli_model = json.loads((tmp_path / "cli" / "model.json").read_text())
    assert np.allclose(hlr.files_["model.json"]["coef"], cli_model["coef"], rtol=0, atol=1e-12)
    # the same file: fedrisk predict scores a notebook-saved model; fr.load reads the CLI's
    saved = hlr.save(tmp_path / "saved")
    assert set(json.loads((saved / "model.json").read_text())) == set(cli_model)
    assert predict_file(saved / "model.json", holdout_csv, tmp_path / "pred.csv") == len(holdout)
    assert np.allclose(pd.read_csv(tmp_path / "pred.csv")["score"].to_numpy(), p, rtol=1e-6)
    back = fr.load(tmp_path / "cli")
    assert isinstance(back, fr.LogisticRegression)
    assert np.allclose(back.predict_proba(holdout)[:, 1], p, rtol=0, atol=1e-12)
    assert np.allclose(back.coef_, hlr.coef_) and back.n_features_in_ == 23


def test_secureboost_equals_the_cli(tmp_path, shared_data):
    lender = pd.read_csv(shared_data / "default_credit_hetero_guest.csv", nrows=3000)
    payco = pd.read_csv(shared_data / "default_credit_hetero_host.csv", nrows=3000).sample(frac=1, random_state=2)
    lender.to_csv(tmp_path / "lender.csv", index=False)
    payco.to_csv(tmp_path / "payco.csv", index=False)
    ports = free_ports(2)
    spec = tmp_path / "job.toml"
    spec.write_text(f'[federation]\nname = "parity-sb"\nseed = 0\n'
                    f'[parties.lender]\naddress = "127.0.0.1:{ports[0]}"\ndata = "lender.csv"\nid = "id"\nlabel = "y"\n'
                    f'[parties.payco]\naddress = "127.0.0.1:{ports[1]}"\ndata = "payco.csv"\nid = "id"\n'
                    f'[task]\nkind = "vertical.secureboost"\n{_toml(SB)}\n[evaluation]\ntest_rule = "id % 5 == 0"\n')
    cli = simulate(spec, tmp_path / "cli")

    fed = fr.Federation.vertical({"lender": pd.read_csv(tmp_path / "lender.csv"),
                                  "payco": pd.read_csv(tmp_path / "payco.csv")}, id="id", label="y", name="parity-sb")
    train, test = fed.split(test_rule="id % 5 == 0")
    sb = fr.SecureBoost(**SB).fit(train)
    p = sb.predict_proba(test)[:, 1]
    assert abs(fr.metrics.auc(test.y, p) - cli["test"]["auc"]) <= 1e-6
    scores = pd.read_csv(tmp_path / "cli" / "scores" / "test.csv")
    mine = pd.Series(p, index=test.parties["lender"]["id"].to_numpy())
    assert np.allclose(mine.loc[scores["id"].to_numpy()].to_numpy(), scores["score"].to_numpy(), atol=1e-7)
    # same files (one per party, same fields); the CLI's model read back scores the same
    for rel in ("model.json", "model-payco.json"):
        cli_doc = json.loads((tmp_path / "cli" / rel).read_text())
        assert set(sb.files_[rel]) == set(cli_doc) and sb.files_[rel]["trees"] == cli_doc["trees"]
    back = fr.load(tmp_path / "cli")
    assert isinstance(back, fr.SecureBoost) and back.get_params()["max_bin"] == 16
    assert np.allclose(back.predict_proba(test)[:, 1], p, atol=1e-12)
    assert back.feature_importances_.shape == (23,) and np.isclose(back.feature_importances_.sum(), 1)
    saved = fr.load(sb.save(tmp_path / "saved"))
    assert np.allclose(saved.predict_proba(test)[:, 1], p, atol=1e-12)
    # new applicants carry no label: the model names its label holder
    applicants = fr.Federation.vertical({"lender": test.parties["lender"].drop(columns="y"),
                                         "payco": test.parties["payco"]}, id="id", label="y")
    assert np.allclose(saved.predict_proba(applicants)[:, 1], p, atol=1e-12)


def test_vertical_lr_coef_reproduces_the_federated_scores_and_round_trips(tmp_path, vfed):
    train, test = vfed.split()
    lr = fr.LogisticRegression(epochs=2).fit(train)
    p = lr.predict_proba(test)[:, 1]
    # coef_/intercept_ on the original scale, every party's part side by side (names clash: prefixed)
    X = pd.concat([test.parties[q].drop(columns=["y"], errors="ignore").set_index("id").add_prefix(f"{q}:")
                   for q in ("lender", "payco")], axis=1)[list(lr.feature_names_in_)]
    z = X.to_numpy() @ lr.coef_[0] + lr.intercept_[0]
    mine = pd.Series(p, index=test.parties["lender"]["id"].to_numpy()).loc[X.index].to_numpy()
    assert np.allclose(1 / (1 + np.exp(-z)), mine, atol=1e-6)
    back = fr.load(lr.save(tmp_path / "saved"))
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["job.toml", "model-payco.json", "model.json"]
    assert np.allclose(back.predict_proba(test)[:, 1], p, atol=1e-6) and np.allclose(back.coef_, lr.coef_)
