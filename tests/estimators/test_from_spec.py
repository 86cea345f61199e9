"""Federation.from_spec: the same estimators with each party its own process (``simulate``), and
fr.run's Run object (metrics, model, ledger, report)."""
from __future__ import annotations

import numpy as np
import pytest

import fedrisk as fr

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture
def horizontal_spec(tmp_path, shared_data):
    names = {"bank1": "guest", "bank2": "host_1", "bank3": "host_2"}
    # the addresses are placeholders: every run below asks for free ports
    parties = "".join(f'[parties.{b}]\naddress = "127.0.0.1:{i + 2}"\n'
                      f'data = "{(shared_data / f"default_credit_homo_{n}.csv").as_posix()}"\nid = "id"\nlabel = "y"\n'
                      for i, (b, n) in enumerate(names.items()))
    spec = tmp_path / "job.toml"
    spec.write_text('[federation]\nname = "from-spec"\nseed = 3\n[coordinator]\naddress = "127.0.0.1:1"\n' + parties
                    + '[task]\nkind = "horizontal.lr"\nrounds = 3\n'
                    + f'[evaluation]\ntest = "{(shared_data / "default_credit_homo_test.csv").as_posix()}"\n')
    return spec


def test_processes_and_threads_train_the_same_model(horizontal_spec, horizontal_frames):
    _, holdout = horizontal_frames
    procs = fr.Federation.from_spec(horizontal_spec, free_ports=True)
    threads = fr.Federation.from_spec(horizontal_spec, processes=False)
    assert procs.kind == threads.kind == "horizontal" and procs.seed == 3 and list(procs.parties) == ["bank1", "bank2", "bank3"]
    a = fr.LogisticRegression(rounds=4).fit(procs)
    b = fr.LogisticRegression(rounds=4).fit(threads)
    assert np.allclose(a.coef_, b.coef_, rtol=0, atol=1e-12)
    assert np.allclose(a.predict_proba(holdout), b.predict_proba(holdout), rtol=0, atol=1e-12)
    assert set(a.ledger_["from"]) == set(b.ledger_["from"]) == {"bank1", "bank2", "bank3", "coordinator"}
    assert a.metrics_["test"]["auc"] > 0.7  # the spec's evaluation file, scored by the evaluation holder
    assert "rounds = 4" in a.run_.spec


def test_fr_run_returns_metrics_model_ledger_and_report(horizontal_spec, tmp_path, shared_data):
    import pandas as pd

    run = fr.run(horizontal_spec, out=tmp_path / "run", free_ports=True)
    assert run.metrics["task"] == "horizontal.lr" and run.metrics["test"]["auc"] > 0.7
    model = run.model
    assert isinstance(model, fr.LogisticRegression)
    holdout = pd.read_csv(shared_data / "default_credit_homo_test.csv")
    p = model.predict_proba(holdout)[:, 1]
    assert abs(fr.metrics.auc(holdout.y, p) - run.metrics["test"]["auc"]) <= 1e-9
    scores = pd.read_csv(tmp_path / "run" / "scores" / "test.csv")
    assert np.allclose(scores["score"].to_numpy(), p, rtol=1e-6)
    ledger = run.ledger
    assert list(ledger.columns) == ["time", "from", "to", "tag", "kind", "bytes"] and len(ledger) > 50
    report = run.report()
    assert "<iframe" in report._repr_html_() and "AUC" in report.html
    assert report.save(tmp_path / "r.html").read_text(encoding="utf-8") == report.html
