"""Cross-host end-to-end tests: one party per Linux network namespace (issue 14, "Real hosts").

Each test builds its own small network (:mod:`tests.runtime.netlab`: namespaces on a veth bridge,
addresses from 192.0.2.0/24 only, removed by the fixture's finalizer whatever happens), and lays
out one directory per host the way docs/operations.md tells an operator to:

    HOST/job.toml        the job spec; only this host's own ``data`` path is set
    HOST/certs/          ca.pem, every participant's certificate (public; secure aggregation
                         verifies the banks' signed keys with them) and NAME-key.pem: this
                         host's key and nobody else's
    HOST/data/NAME.csv   this host's rows
    HOST/run/            the run directory ``fedrisk party`` writes

The certificates come from ``fedrisk certs`` run by a "CA officer" directory that no host sees.
Every party is ``ip netns exec NS python -m fedrisk party HOST/job.toml --as NAME ...``, so peers
can reach each other only over the bridge, at the addresses in the spec.

Covered:

* vertical.lr (surrogate solver) between a lender and a payment company in two namespaces, then
  ``fedrisk serve`` at the payment company scoring two sessions of ``fedrisk predict --no-spawn``
  from the lender's host, health-checked, stopped by SIGTERM;
* horizontal.lr (Newton, secure aggregation) with a coordinator and two banks in three
  namespaces, one bank behind a TLS-passthrough relay in a fourth "gateway" namespace: it binds
  ``listen = "0.0.0.0:PORT"`` while its peers dial a different ``address`` (NAT / load balancer).
  The model must equal the pooled scikit-learn optimum.

Skipped with the reason when not root or when the kernel refuses namespaces.
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.runtime.netlab import NetLab, lab_or_skip, start_relay

pytestmark = pytest.mark.e2e
FEDRISK = [sys.executable, "-m", "fedrisk"]


@pytest.fixture
def lab():
    lab = lab_or_skip()
    try:
        yield lab
    finally:
        lab.close()
        assert not lab.namespaces_left(), "the lab's namespaces must be gone"


def issue_certs(tmp: Path, names: list[str], coordinator: bool = False) -> Path:
    """``fedrisk certs`` in a CA officer's folder that no host gets."""
    officer = tmp / "ca-officer"
    r = subprocess.run([*FEDRISK, "certs", "--parties", ",".join(names), "--out", str(officer),
                        "--coordinator" if coordinator else "--no-coordinator"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return officer


def lay_out_host(tmp: Path, officer: Path, name: str, spec: str, data: pd.DataFrame | None) -> Path:
    """HOST/{job.toml, certs/{ca.pem, *.pem, NAME-key.pem}, data/NAME.csv}: what one host is given."""
    host = tmp / "hosts" / name
    (host / "certs").mkdir(parents=True)
    public = [f.name for f in officer.glob("*.pem") if not f.name.endswith("-key.pem")]
    for f in [*public, f"{name}-key.pem"]:
        shutil.copy2(officer / f, host / "certs" / f)
    if data is not None:
        (host / "data").mkdir()
        data.to_csv(host / "data" / f"{name}.csv", index=False)
    (host / "job.toml").write_text(spec)
    return host


def assert_only_own_key(hosts: dict[str, Path]) -> None:
    for name, host in hosts.items():
        keys = sorted(p.name for p in host.rglob("*key*.pem"))
        assert keys == [f"{name}-key.pem"], f"{name} holds {keys}"
        assert not (host / "certs" / "private-ca").exists()


def party_cmd(host: Path, name: str) -> list[str]:
    return [*FEDRISK, "party", str(host / "job.toml"), "--as", name, "--out", str(host / "run"),
            "--certs", str(host / "certs"), "--quiet"]


def wait_all(procs: dict[str, subprocess.Popen], hosts: dict[str, Path], timeout: float = 180) -> float:
    t0 = time.monotonic()
    for name, p in procs.items():
        try:
            p.wait(max(1.0, timeout - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{name} did not finish in {timeout} s; log:\n{_tail(hosts[name] / 'party.out')}")
        assert p.returncode == 0, f"{name} exited {p.returncode}:\n{_tail(hosts[name] / 'party.out')}"
    return time.monotonic() - t0


def _tail(path: Path, n: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else "(no output)"


def verify_ledgers_across(hosts: list[Path]) -> None:
    r = subprocess.run([*FEDRISK, "ledger", "verify", *(str(h / "run") for h in hosts)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# -- vertical: lender + payco, then fedrisk serve ------------------------------------------------------
def vertical_frames(data: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """4000 lender rows and 4000 payco rows overlapping on 3500 ids, plus 300 new applicants to score."""
    guest = pd.read_csv(data / "default_credit_hetero_guest.csv", nrows=4500)
    host = pd.read_csv(data / "default_credit_hetero_host.csv", nrows=4500)
    lender, payco = guest.iloc[:4000], host.iloc[500:4500]
    new = guest.iloc[1000:1300].drop(columns=["y"])
    new = pd.concat([new, guest.iloc[100:110].drop(columns=["y"])])  # 10 ids payco does not know
    return lender, payco, new


def vertical_spec(addr: dict[str, str], me: str) -> str:
    data = {n: f'data = "data/{n}.csv"\n' if n == me else "" for n in addr}
    return textwrap.dedent(f"""
        [federation]
        name = "xhost-vertical"
        seed = 0
        [parties.lender]
        address = "{addr['lender']}"
        {data['lender']}id = "id"
        label = "y"
        [parties.payco]
        address = "{addr['payco']}"
        {data['payco']}id = "id"
        [task]
        kind = "vertical.lr"
        solver = "surrogate"
        epochs = 5
        batch_size = 1024
        learning_rate = 0.5
        [evaluation]
        test_rule = "id % 5 == 0"
        [security]
        connect_timeout = 30
        recv_timeout = 120
        """)


def test_vertical_job_across_namespaces_then_serve_scores_two_sessions(lab: NetLab, tmp_path, shared_data):
    lab.add_host("lender", "11")
    lab.add_host("payco", "12")
    addr = {"lender": "192.0.2.11:44011", "payco": "192.0.2.12:44012"}
    officer = issue_certs(tmp_path, list(addr))
    lender_rows, payco_rows, new = vertical_frames(shared_data)
    hosts = {"lender": lay_out_host(tmp_path, officer, "lender", vertical_spec(addr, "lender"), lender_rows),
             "payco": lay_out_host(tmp_path, officer, "payco", vertical_spec(addr, "payco"), payco_rows)}
    assert_only_own_key(hosts)

    procs = {n: lab.popen(n, party_cmd(h, n), h / "party.out") for n, h in hosts.items()}
    took = wait_all(procs, hosts)
    metrics = json.loads((hosts["lender"] / "run" / "metrics.json").read_text())
    assert metrics["test"]["auc"] > 0.68, metrics["test"]
    common = set(lender_rows["id"]) & set(payco_rows["id"])  # PSI over the bridge found exactly these
    assert len(common) == 3500 and metrics["train"]["n"] + metrics["test"]["n"] == 3500
    assert metrics["test"]["n"] == sum(1 for i in common if i % 5 == 0)
    # the pooled reference on the same aligned training rows: federated surrogate LR is close to it
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    pooled = lender_rows.merge(payco_rows, on="id", suffixes=("_l", "_p"))
    feats = [c for c in pooled.columns if c not in ("id", "y")]
    train, test = pooled[pooled.id % 5 != 0], pooled[pooled.id % 5 == 0]
    ref = LogisticRegression(max_iter=1000).fit(train[feats], train["y"])
    ref_auc = roc_auc_score(test["y"], ref.predict_proba(test[feats])[:, 1])
    assert abs(metrics["test"]["auc"] - ref_auc) < 0.03, (metrics["test"]["auc"], ref_auc)
    # each host keeps its own part of the model; the run directory has the spec it ran
    assert (hosts["lender"] / "run" / "model.json").is_file() and (hosts["lender"] / "run" / "job.toml").is_file()
    assert (hosts["payco"] / "run" / "model-payco.json").is_file()
    assert not (hosts["lender"] / "run" / "model-payco.json").exists()
    assert "listening on 192.0.2.11:44011" in (hosts["lender"] / "run" / "logs" / "lender.log").read_text()
    verify_ledgers_across(list(hosts.values()))

    # -- scoring: payco runs the long-running service; the lender scores twice ----------------
    health_port = 44099
    serve = lab.popen("payco", [*FEDRISK, "serve", str(hosts["payco"] / "job.toml"), "--as", "payco",
                                "--model", str(hosts["payco"] / "run" / "model-payco.json"),
                                "--certs", str(hosts["payco"] / "certs"), "--out", str(hosts["payco"] / "serve"),
                                "--health", f"127.0.0.1:{health_port}"], hosts["payco"] / "serve.out")
    (hosts["lender"] / "new.csv").write_text(new.to_csv(index=False))
    health = lab.run("payco", [sys.executable, "-m", "fedrisk", "health", f"127.0.0.1:{health_port}", "--wait", "30"])
    assert health.returncode == 0, health.stdout + health.stderr + _tail(hosts["payco"] / "serve.out")
    t0 = time.monotonic()
    scores = []
    for s in ("morning", "noon"):
        r = lab.run("lender", [*FEDRISK, "predict", str(hosts["lender"] / "run" / "model.json"),
                               str(hosts["lender"] / "new.csv"), "--out", str(hosts["lender"] / f"scores-{s}.csv"),
                               "--session", s, "--no-spawn", "--certs", str(hosts["lender"] / "certs")])
        assert r.returncode == 0, r.stdout + r.stderr + _tail(hosts["payco"] / "serve.out")
        scores.append(pd.read_csv(hosts["lender"] / f"scores-{s}.csv"))
    scoring_s = time.monotonic() - t0
    for sc in scores:
        assert len(sc) == len(new) and (sc["status"] == "scored").sum() == 300
        assert sc.loc[sc["status"] != "scored", "id"].tolist() == new["id"].iloc[300:].tolist()
    np.testing.assert_allclose(scores[0]["score"].dropna(), scores[1]["score"].dropna(), atol=1e-3)
    status = json.loads(lab.run("payco", [*FEDRISK, "health", f"127.0.0.1:{health_port}", "--json"]).stdout)
    assert status["status"] == "serving" and status["sessions_done"] == 2 and status["sessions_failed"] == 0
    for s in ("morning", "noon"):  # one log per session at the service
        assert (hosts["payco"] / "serve" / "sessions" / s / "session.log").is_file()
    serve.send_signal(signal.SIGTERM)  # ip netns exec execs the command: this is the service itself
    assert serve.wait(30) == 0, _tail(hosts["payco"] / "serve.out")
    assert "stopped" in (hosts["payco"] / "serve.out").read_text()
    assert not lab.wait_empty(), "nothing may be left running in the namespaces"
    print(f"\nXHOST vertical.lr: training {took:.1f} s (wall, from party start); 2 scoring sessions {scoring_s:.1f} s")


# -- horizontal: coordinator + two banks, one behind a relay ------------------------------------
def horizontal_frames(data: Path) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    banks = {"bank1": pd.read_csv(data / "default_credit_homo_guest.csv", nrows=2500),
             "bank2": pd.read_csv(data / "default_credit_homo_host_1.csv", nrows=2500)}
    return banks, pd.read_csv(data / "default_credit_homo_test.csv", nrows=1500)


def horizontal_spec(addr: dict[str, str], me: str, listen: dict[str, str]) -> str:
    def table(n: str) -> str:
        lines = [f'address = "{addr[n]}"']
        if n == me and n in listen:
            lines.append(f'listen = "{listen[n]}"')  # local: not part of the shared settings
        if n == me:
            lines.append(f'data = "data/{n}.csv"')
        return "\n".join(lines) + '\nid = "id"\nlabel = "y"\n'

    test = 'test = "data/test.csv"\n' if me == "bank1" else ""
    return (textwrap.dedent(f"""
        [federation]
        name = "xhost-horizontal"
        seed = 0
        [coordinator]
        address = "{addr['coordinator']}"
        """) + "".join(f"[parties.{n}]\n{table(n)}" for n in ("bank1", "bank2")) + textwrap.dedent(f"""
        [task]
        kind = "horizontal.lr"
        solver = "newton"
        rounds = 20
        l2 = 0.0001
        [evaluation]
        holder = "bank1"
        {test}[security]
        secure_aggregation = true
        connect_timeout = 30
        recv_timeout = 120
        """))


def test_horizontal_job_across_namespaces_with_a_bank_behind_a_relay(lab: NetLab, tmp_path, shared_data):
    lab.add_host("coordinator", "10")
    lab.add_host("bank1", "21")
    lab.add_host("bank2", "22")
    lab.add_host("gateway", "1")
    # bank2 binds every interface on a private port; its peers dial the gateway's public port,
    # which forwards the TLS bytes untouched (bank2's certificate still names bank2)
    addr = {"coordinator": "192.0.2.10:44010", "bank1": "192.0.2.21:44021", "bank2": "192.0.2.1:44522"}
    listen = {"bank2": "0.0.0.0:44022"}
    relay_count = start_relay(lab, "gateway", ("192.0.2.1", 44522), ("192.0.2.22", 44022), tmp_path)
    officer = issue_certs(tmp_path, ["bank1", "bank2"], coordinator=True)
    frames, test = horizontal_frames(shared_data)
    hosts = {n: lay_out_host(tmp_path, officer, n, horizontal_spec(addr, n, listen), frames.get(n))
             for n in ("coordinator", "bank1", "bank2")}
    test.to_csv(hosts["bank1"] / "data" / "test.csv", index=False)
    assert_only_own_key(hosts)

    procs = {n: lab.popen(n, party_cmd(h, n), h / "party.out") for n, h in hosts.items()}
    took = wait_all(procs, hosts)
    model = json.loads((hosts["coordinator"] / "run" / "model.json").read_text())
    metrics = json.loads((hosts["bank1"] / "run" / "metrics.json").read_text())
    assert metrics["test"]["auc"] > 0.7, metrics["test"]
    # exact Newton over the wire: the pooled optimum on the agreed scale
    from sklearn.linear_model import LogisticRegression

    from fedrisk.algorithms.horizontal.logistic import sklearn_C

    pooled = pd.concat(list(frames.values()))
    X = pooled[model["features"]].to_numpy(float)
    Xs = (X - np.asarray(model["mean"])) / np.asarray(model["scale"])
    ref = LogisticRegression(C=sklearn_C(1e-4, len(pooled)), solver="newton-cholesky", tol=1e-12, max_iter=1000)
    ref.fit(Xs, pooled["y"].to_numpy())
    assert np.max(np.abs(np.asarray(model["coef"]) - ref.coef_[0])) < 1e-4
    assert abs(model["intercept"] - ref.intercept_[0]) < 1e-4
    # bank2 was reached only through the relay, and bound what its listen said
    assert int(relay_count.read_text()) > 10_000
    assert "listening on 0.0.0.0:44022" in (hosts["bank2"] / "run" / "logs" / "bank2.log").read_text()
    verify_ledgers_across(list(hosts.values()))
    print(f"\nXHOST horizontal.lr: {took:.1f} s (wall, from party start); relayed {int(relay_count.read_text()):,} bytes")
