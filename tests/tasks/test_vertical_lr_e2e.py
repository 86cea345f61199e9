"""vertical.lr end to end: real processes over mTLS, PSI on shuffled partial-overlap files, federated
predict, and one clear error per kind of bad input."""
from __future__ import annotations

import json
import logging
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedrisk.algorithms.vertical.hetero_lr import HeteroLRConfig
from fedrisk.errors import ConfigError, FedriskError
from fedrisk.runtime.context import PartyContext, ProgressLog
from fedrisk.runtime.demo import free_ports
from fedrisk.runtime.handshake import handshake
from fedrisk.runtime.spec import load_spec, shared_settings
from fedrisk.runtime.threads import run_roles
from fedrisk.tasks import vertical_lr
from fedrisk.transport.channel import InMemoryNetwork

from tests.e2e_helpers import FEDRISK, lender_payco_spec



def cli(*args, cwd=None, timeout=300):
    return subprocess.run([*FEDRISK, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def synthetic(tmp: Path, *, n=1200, hosts=("payco", "bureau"), mutate=None, task_extra="") -> Path:
    """A label holder and feature holders over partially overlapping, shuffled customer sets."""
    rng = np.random.default_rng(5)
    ids = np.arange(100_000, 100_000 + n)
    X = rng.normal(size=(n, 7))
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ [1.0, -0.8, 0.5, 0.7, -0.6, 0.9, 0.4] - 1)))).astype(int)
    cols = {"lender": [0, 1, 2], hosts[0]: [3, 4, 5], **({hosts[1]: [6]} if len(hosts) > 1 else {})}
    ports = free_ports(len(cols))
    parts = []
    for i, (name, cs) in enumerate(cols.items()):
        keep = rng.random(n) < 0.9  # each party misses ~10% of the customers
        df = pd.DataFrame({"id": ids, **({"y": y} if name == "lender" else {}),
                           **{f"f{c}": X[:, c] for c in cs}})[keep].sample(frac=1, random_state=i)
        extra = pd.DataFrame({"id": 900_000 + 1000 * i + np.arange(50), **({"y": 0} if name == "lender" else {}),
                              **{f"f{c}": 0.0 for c in cs}})
        df = pd.concat([df, extra])
        if mutate:
            df = mutate(name, df)
        df.to_csv(tmp / f"{name}.csv", index=False)
        parts.append(f'[parties.{name}]\naddress = "127.0.0.1:{ports[i]}"\ndata = "{name}.csv"\nid = "id"\n'
                     + ('label = "y"\n' if name == "lender" else ""))
    spec = tmp / "job.toml"
    spec.write_text('[federation]\nname = "vsmall"\n' + "\n".join(parts) + textwrap.dedent(f"""
        [task]
        kind = "vertical.lr"
        epochs = 3
        batch_size = 256
        {task_extra}
        [evaluation]
        test_rule = "id % 5 == 0"
        """))
    return spec


def run_threads(spec_path: Path, out: Path) -> dict:
    """Run every party's task over the in-memory network (same code path as `fedrisk party`)."""
    spec = load_spec(spec_path)
    net = InMemoryNetwork(list(spec.parties), job=spec.job_id, capture=True, tag_prefixes=vertical_lr.TAG_PREFIXES)

    def role(name):
        def go(ch):
            log = logging.getLogger(f"test.{name}")
            ctx = PartyContext(name=name, spec=spec, channel=ch, out=out, log=log, progress=ProgressLog(None, log))
            vertical_lr.run(ctx)
        return go

    run_roles({p: role(p) for p in spec.parties}, network=net)
    return {"net": net, "metrics": json.loads((out / "metrics.json").read_text())}


# -- real processes ----------------------------------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.extended(covered_by="tests/tasks/test_vertical_lr_e2e.py::test_lender_payco_bureau_over_mtls_match_pooled (shared data over mTLS) and the acceptance case vertical-lr (this example)")
def test_simulate_example_on_shared_data(shared_data, repo, tmp_path):
    out = tmp_path / "run"
    r = cli("simulate", "examples/vertical_lr_default_credit.toml", "--out", out, cwd=repo)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["test"]["auc"] >= 0.7238 and m["test"]["ks"] > 0.35
    assert m["intersection"]["size"] == 30000
    model = json.loads((out / "model.json").read_text())
    part = json.loads((out / "model-payco.json").read_text())
    assert model["format"] == "fedrisk.vertical.lr" and set(model["parties"]) == {"lender", "payco"}
    assert len(part["coef"]) == 10 and "intercept" not in part and len(model["coef"]) == 13
    assert len(list((out / "ledger").glob("*.jsonl"))) >= 2


@pytest.mark.e2e
def test_three_party_simulate_then_federated_predict(vsmall_ecdh_run, tmp_path):
    # the simulate run of synthetic() (tests/tasks/conftest.py), shared with the RR22 test's ECDH reference
    folder, out = vsmall_ecdh_run
    m = json.loads((out / "metrics.json").read_text())
    lender = pd.read_csv(folder / "lender.csv")
    common = set(lender.id)
    for h in ("payco", "bureau"):
        common &= set(pd.read_csv(folder / f"{h}.csv").id)
    assert m["intersection"]["size"] == len(common) < len(lender)
    assert m["test"]["auc"] > 0.7
    for f in ("model.json", "model-payco.json", "model-bureau.json"):
        assert (out / f).is_file()
    assert len(list((out / "ledger").glob("*.jsonl"))) == 3
    new = lender.drop(columns=["y"]).sample(200, random_state=0)
    new.to_csv(tmp_path / "new.csv", index=False)
    r = cli("predict", out / "model.json", tmp_path / "new.csv", "--out", tmp_path / "scores.csv")
    assert r.returncode == 0, r.stderr[-2000:]
    s = pd.read_csv(tmp_path / "scores.csv")
    # every input row is in the output; those not at every feature holder say so and have no score
    assert list(s.id) == list(new.id)
    unscored = s[s.status != "scored"]
    assert set(unscored.id) == set(new.id) - common and unscored.score.isna().all()
    assert unscored.status.str.startswith("not scored").all()
    s = s[s.status == "scored"]
    assert set(s.id) == set(new.id) & common and s.score.between(0, 1).all()
    # reason codes: the lender's own columns by name, both partners as one summed reason (the label
    # holder receives only the masked sum of their partial scores)
    reasons = set(pd.concat([s[f"reason_{k}"] for k in (1, 2, 3)]).dropna())
    partners = "partner features (payco, bureau)"
    assert partners in reasons and reasons <= set(lender.columns) | {partners}, reasons
    assert (s[["contribution_1", "contribution_2"]].dropna().diff(axis=1).iloc[:, 1] <= 1e-12).all()
    # the same reasons for the test applicants at training, in the report's reason-code summary
    rs, ts = pd.read_csv(out / "scores" / "test_reasons.csv"), pd.read_csv(out / "scores" / "test.csv")
    assert list(rs.id) == list(ts.id) and np.allclose(rs.score, ts.score, atol=1e-12)
    assert partners in set(rs.reason_1) and "Reason codes" in (out / "report.html").read_text()
    train = pd.concat([pd.read_csv(out / "scores" / "train.csv"), pd.read_csv(out / "scores" / "test.csv")])
    both = s.merge(train, on="id")
    assert np.allclose(both.score_x, both.score_y, atol=1e-9)


# -- bad input, each one line ----------------------------------------------------------------------
def _fails(spec, tmp_path, pattern):
    with pytest.raises(FedriskError, match=pattern) as e:
        run_threads(spec, tmp_path / "out")
    assert "\n" not in str(e.value)


def test_label_column_on_a_feature_holder(tmp_path):
    spec = synthetic(tmp_path, hosts=("payco",), mutate=lambda n, d: d.assign(y=1) if n == "payco" else d)
    _fails(spec, tmp_path, "'y' is present but this party must not hold the label")


def test_label_missing_on_the_label_holder(tmp_path):
    spec = synthetic(tmp_path, hosts=("payco",), mutate=lambda n, d: d.drop(columns=["y"]) if n == "lender" else d)
    _fails(spec, tmp_path, "label column 'y' not found")


def test_feature_holder_with_only_constant_columns(tmp_path):
    spec = synthetic(tmp_path, hosts=("payco",),
                     mutate=lambda n, d: d.assign(f3=1.0, f4=2.0, f5=0.0) if n == "payco" else d)
    _fails(spec, tmp_path, "no usable feature columns")


def test_all_nan_column_is_refused(tmp_path):
    spec = synthetic(tmp_path, hosts=("payco",), mutate=lambda n, d: d.assign(f4=np.nan) if n == "payco" else d)
    _fails(spec, tmp_path, "'f4' are empty in every row; list them in exclude")


def test_no_overlapping_ids(tmp_path):
    spec = synthetic(tmp_path, hosts=("payco",), mutate=lambda n, d: d.assign(id=d.id + 10**7) if n == "payco" else d)
    _fails(spec, tmp_path, "intersection .* is empty")


def test_constant_column_is_dropped_with_a_warning(tmp_path):
    spec = synthetic(tmp_path, hosts=("payco",), mutate=lambda n, d: d.assign(f5=3.0) if n == "payco" else d)
    res = run_threads(spec, tmp_path / "out")
    part = json.loads((tmp_path / "out" / "model-payco.json").read_text())
    assert part["dropped"] == ["f5"] and part["features"] == ["f3", "f4"]
    assert res["metrics"]["test"]["auc"] > 0.6


def test_mismatched_specs_are_refused_by_the_handshake(tmp_path):
    spec_a = load_spec(synthetic(tmp_path, hosts=("payco",)))
    (tmp_path / "b").mkdir()
    spec_b = load_spec(synthetic(tmp_path / "b", hosts=("payco",), task_extra="learning_rate = 0.1"))
    spec_b = spec_b.model_copy(update={"parties": spec_a.parties})  # same addresses, different task
    net = InMemoryNetwork(["lender", "payco"], job=spec_a.job_id)
    roles = {"lender": lambda ch: handshake(ch, "lender", ["lender", "payco"], shared_settings(spec_a)),
             "payco": lambda ch: handshake(ch, "lender", ["lender", "payco"], shared_settings(spec_b))}
    with pytest.raises(ConfigError, match="task.learning_rate"):
        run_roles(roles, network=net)


@pytest.fixture(scope="module")
def two_holder_runs(tmp_path_factory) -> tuple[Path, list[dict]]:
    """The three-party synthetic job run twice over the in-memory network with capture: the privacy
    test inspects the first run's messages, the same-seed test compares the two runs (one job pair
    instead of three runs of the same job)."""
    tmp = tmp_path_factory.mktemp("two_holders")
    spec = synthetic(tmp)
    return tmp, [run_threads(spec, tmp / f"out{k}") for k in (1, 2)]


def test_privacy_of_a_full_training_run(two_holder_runs):
    """What each party actually received in PSI, training and scoring: no ids, labels or features."""
    tmp, runs = two_holder_runs
    net = runs[0]["net"]
    lender = pd.read_csv(tmp / "lender.csv")
    for p in ("lender", "payco", "bureau"):
        for env in net[p].captured:
            assert env.kind in {"masked", "public-parameter", "control", "ciphertext", "aggregate",
                                "plaintext-by-design"}
            if env.kind == "plaintext-by-design":
                assert env.tag.endswith((".keep", ".seed")) or env.tag.startswith("vlr.score")
            b = env.body
            gram = env.tag.startswith("vlr.c.") and getattr(b, "size", 0) <= 5 + 4 * HeteroLRConfig().memory  # compact L-BFGS
            if isinstance(b, np.ndarray) and b.dtype == np.float64 and (b.size <= 4 or gram):
                assert env.kind == "aggregate"  # exact solver: range interval, (P, K), L-BFGS sums
            elif isinstance(b, np.ndarray) and b.dtype == np.float64:
                assert p == "lender" and env.tag.startswith("vlr.score")  # masked partial scores only
                assert not np.isin(np.round(b, 6), np.round(lender.y.values, 6)).all()
            elif isinstance(b, np.ndarray) and env.tag.startswith("vlr."):  # scores modulo the sigmoid's period, under uniform masks
                assert b.dtype == np.uint64 and env.kind == "masked" and env.tag.startswith(("vlr.m.", "vlr.o."))


# -- same seed, same model (issue 10, item 3) ------------------------------------------------------
def _scores_and_coef(out: Path) -> tuple[np.ndarray, np.ndarray]:
    s = pd.read_csv(out / "scores" / "test.csv").sort_values("id").score.to_numpy()
    coef = np.r_[[c for f in sorted(out.glob("model*.json")) for c in json.loads(f.read_text())["coef"]]]
    return s, coef


@pytest.mark.parametrize("hosts", [("payco",), ("payco", "bureau")], ids=["one-holder", "two-holders"])
def test_same_seed_same_model(tmp_path, hosts, request):
    """Two runs of the task (PSI included: its row order is random per run) give the same model and
    scores to 1e-6, not bit-exactly: CKKS is approximate arithmetic with fresh keys every run; masks
    and flooding noise cancel, so only its intrinsic ~1e-8 error differs (the exact solver with one
    feature holder and with two: hetero_lr_multi). The two-holder runs are the privacy test's."""
    if len(hosts) == 2:
        tmp_path, _ = request.getfixturevalue("two_holder_runs")
    else:
        spec = synthetic(tmp_path, hosts=hosts)
        for k in (1, 2):
            run_threads(spec, tmp_path / f"out{k}")
    runs = [_scores_and_coef(tmp_path / f"out{k}") for k in (1, 2)]
    assert np.abs(runs[0][0] - runs[1][0]).max() < 1e-6
    assert np.abs(runs[0][1] - runs[1][1]).max() < 1e-6
    m = json.loads((tmp_path / "out1" / "metrics.json").read_text())
    assert m["solver"] == "exact"


@pytest.mark.e2e
@pytest.mark.extended(covered_by="tests/algorithms/vertical/test_hetero_lr.py::test_exact_solver_matches_pooled_on_every_stress_case[collinear] "
                                 "(this collinear stress case, the same one-holder exact solver, against scikit-learn), "
                                 "tests/runtime/test_resume_e2e.py::test_vertical_lr_exact_resumes_after_a_feature_holder_crash "
                                 "(one-holder exact vertical.lr over mTLS processes) and "
                                 "::test_lender_payco_bureau_over_mtls_match_pooled (processes vs pooled scikit-learn)")
def test_stress_case_over_mtls_matches_pooled(shared_data, tmp_path):
    """A hard vertical split (nearly collinear feature-holder columns) end to end over mTLS processes,
    compared with scikit-learn on the same standardised training rows."""
    from sklearn.linear_model import LogisticRegression

    from tests.stress_data import vertical as sv

    sv.write_csvs("collinear", shared_data, tmp_path, rows=3000)
    spec = lender_payco_spec(tmp_path / "job.toml", "stress-collinear", """
        kind = "vertical.lr"
        l2 = 0.001
        max_iter = 40
        """, """
        [evaluation]
        test_rule = "id % 5 == 0"
        """)
    out = tmp_path / "run"
    r = cli("simulate", spec, "--out", out, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    c = sv.load("collinear", shared_data, rows=3000)
    lh = json.loads((out / "model.json").read_text())
    part = json.loads((out / "model-payco.json").read_text())
    A = np.hstack([c.XG, c.XH])
    sk = LogisticRegression(C=1.0 / (0.001 * c.train.sum()), tol=1e-12, max_iter=20000).fit(A[c.train], c.y[c.train])
    fed = np.r_[lh["coef"], part["coef"]]
    assert lh["features"] == [f"x{i}" for i in range(c.XG.shape[1])]
    assert np.abs(fed - sk.coef_[0]).max() < 1e-3
    m = json.loads((out / "metrics.json").read_text())
    from fedrisk.finance.metrics import auc
    assert abs(m["test"]["auc"] - auc(c.y[c.test], sk.predict_proba(A[c.test])[:, 1])) < 0.002


def test_vertical_scorecard_coefficients_are_the_pooled_woe_lr(tmp_path):
    """vertical.scorecard trains with the same (exact) solver: its coefficients are scikit-learn's
    penalised logistic regression on the same WOE columns of the same training rows."""
    from sklearn.linear_model import LogisticRegression

    from fedrisk.finance.binning import FeatureBins
    from tests.tasks.test_woe_tasks import german_frame, run_in_process

    df = german_frame()
    cols = [c for c in df.columns if c not in ("id", "y")]
    ports = free_ports(2)
    split = {"lender": cols[:10], "payco": cols[10:]}
    parts = []
    for i, (name, cs) in enumerate(split.items()):
        df[["id"] + (["y"] if name == "lender" else []) + cs].sample(frac=1, random_state=i).to_csv(
            tmp_path / f"{name}.csv", index=False)
        parts.append(f'[parties.{name}]\naddress = "127.0.0.1:{ports[i]}"\ndata = "{name}.csv"\nid = "id"\n'
                     + ('label = "y"\n' if name == "lender" else ""))
    spec = tmp_path / "job.toml"
    spec.write_text('[federation]\nname = "german-vsc-exact"\n' + "".join(parts)
                    + '[task]\nkind = "vertical.scorecard"\nl2 = 0.001\nmax_iter = 40\n'
                    + '[evaluation]\ntest_rule = "id % 5 == 0"\n')
    out = tmp_path / "run"
    run_in_process(spec, out)
    train = df[df.id % 5 != 0].reset_index(drop=True)
    cards = [json.loads((out / f"scorecard-{p}.json").read_text()) for p in split]
    W, coef = [], []
    for card in cards:
        for f in card["selection"]["selected"]:
            assert f in card["features"]  # exact solver: no selected feature ends with a zero coefficient
            b = FeatureBins.from_dict(card["bins"][f])
            W.append(np.asarray(card["woe"][f])[b.assign(train[f])])
            coef.append(card["coef"][f] if isinstance(card["coef"], dict) else card["coef"][card["features"].index(f)])
    W = np.column_stack(W)
    sk = LogisticRegression(C=1.0 / (0.001 * len(train)), tol=1e-12, max_iter=20000).fit(W, train.y)
    assert np.abs(np.asarray(coef) - sk.coef_[0]).max() < 1e-3
    assert abs(cards[0]["intercept"] - sk.intercept_[0]) < 1e-3


@pytest.mark.e2e
def test_lender_payco_bureau_over_mtls_match_pooled(shared_data, tmp_path):
    """The headline vertical federation -- a lender (labels) with a payment company and a bureau (two
    feature holders) -- on default credit, end to end over mTLS processes (PSI on shuffled files),
    with the default solver: the exact one (hetero_lr_multi), compared with scikit-learn on the same
    standardised training rows."""
    from sklearn.linear_model import LogisticRegression

    from fedrisk.finance.metrics import auc
    from tests.stress_data import vertical as sv

    frames = sv.credit_parties(shared_data, rows=3000, holders=2)
    ports = free_ports(len(frames))
    parts = []
    for i, (name, df) in enumerate(frames.items()):
        df.sample(frac=1.0, random_state=i).to_csv(tmp_path / f"{name}.csv", index=False)
        parts.append(f'[parties.{name}]\naddress = "127.0.0.1:{ports[i]}"\ndata = "{name}.csv"\nid = "id"\n'
                     + ('label = "y"\n' if name == "lender" else ""))
    spec = tmp_path / "job.toml"
    spec.write_text('[federation]\nname = "credit-three-party"\n' + "".join(parts)
                    + '[task]\nkind = "vertical.lr"\nl2 = 0.001\n[evaluation]\ntest_rule = "id % 5 == 0"\n')
    out = tmp_path / "run"
    r = cli("simulate", spec, "--out", out, timeout=1200)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["solver"] == "exact" and m["parties"] == ["lender", "payco", "bureau"]
    X, y, test = sv.standardised(frames)
    models = {p: json.loads((out / vertical_lr.model_file(p, "lender")).read_text()) for p in frames}
    for p, df in frames.items():
        assert models[p]["features"] == [c for c in df.columns if c not in ("id", "y")]
    A = np.hstack([X[p] for p in frames])
    sk = LogisticRegression(C=1.0 / (0.001 * (~test).sum()), tol=1e-12, max_iter=20000).fit(A[~test], y[~test])
    fed = np.r_[np.concatenate([models[p]["coef"] for p in frames]), models["lender"]["intercept"]]
    assert np.abs(fed - np.r_[sk.coef_[0], sk.intercept_[0]]).max() < 1e-3
    assert abs(m["test"]["auc"] - auc(y[test], sk.predict_proba(A[test])[:, 1])) < 0.002


def test_an_intersection_below_the_minimum_is_refused_naming_it(tmp_path):
    """8 common customers: the job used to go on and fail later with a misleading line about labels
    ("the aligned training rows have only label 0"). Now every party names the intersection size."""
    def few(name, df):
        if name == "lender":
            return df
        df = df.copy()
        df["id"] = np.where(df["id"].isin(sorted(df["id"])[:8]), df["id"], df["id"] + 5_000_000)
        return df
    spec = synthetic(tmp_path, hosts=("payco",), mutate=few)
    with pytest.raises(FedriskError, match=r"the PSI intersection holds only [0-9] rows .*psi\.min_intersection"):
        run_threads(spec, tmp_path / "run")
    text = spec.read_text().replace("[evaluation]", "[psi]\nmin_intersection = 5\n\n[evaluation]")
    spec.write_text(text)
    with pytest.raises(FedriskError) as e:  # below 20 but above the job's own minimum: it goes on (and fails later)
        run_threads(spec, tmp_path / "run2")
    assert "min_intersection" not in str(e.value)
