"""Runtime reliability, end to end over mTLS processes: real ids, a used run directory, Ctrl-C, start-up failures.

Each test starts real ``fedrisk`` processes and checks what an operator sees: the files, the one
``error:`` line, the time it took, and that no process is left behind.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from fedrisk import __version__
from fedrisk.runtime.demo import free_ports

pytestmark = pytest.mark.e2e
FEDRISK = [sys.executable, "-m", "fedrisk"]


def cli(*args, timeout=600, cwd=None):
    return subprocess.run([*FEDRISK, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def job(tmp: Path, kind: str = "vertical.secureboost", evaluation: str = "test_fraction = 0.2", task: str = "",
        n: int = 900, security: str = "", test_column: bool = False, blanks: bool = False) -> Path:
    """A lender and a payco over shuffled, partly overlapping customers keyed by zero-padded text ids."""
    rng = np.random.default_rng(0)
    ids = np.array([f"C{i:07d}" for i in rng.choice(10**6, size=n, replace=False)])
    X = rng.normal(size=(n, 4))
    y = (rng.random(n) < 1 / (1 + np.exp(-(X[:, 0] - X[:, 2] + 0.8 * X[:, 3])))).astype(int)
    lender = pd.DataFrame({"cust_id": ids, "y": y, "a": X[:, 0], "b": X[:, 1]})
    if blanks:
        lender.loc[rng.random(n) < 0.1, "a"] = np.nan
    if test_column:
        lender["is_test"] = (rng.random(n) < 0.25).astype(int)
    lender.to_csv(tmp / "lender.csv", index=False)
    keep = rng.permutation(n)[: n - 30]  # 30 customers unknown to payco
    pd.DataFrame({"cust_id": ids[keep], "c": X[keep, 2], "d": X[keep, 3]}).to_csv(tmp / "payco.csv", index=False)
    ports = free_ports(2)
    spec = tmp / "job.toml"
    spec.write_text(textwrap.dedent(f"""
        [federation]
        name = "reliability"
        [parties.lender]
        address = "127.0.0.1:{ports[0]}"
        data = "lender.csv"
        id = "cust_id"
        label = "y"
        {'missing = "mean"' if blanks else ""}
        [parties.payco]
        address = "127.0.0.1:{ports[1]}"
        data = "payco.csv"
        id = "cust_id"
        [task]
        kind = "{kind}"
        """) + textwrap.dedent(task) + "\n[evaluation]\n" + evaluation + "\n" + textwrap.dedent(security))
    return spec


def session_processes(sid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getsid(p.pid) == sid:
                out.append(p)
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass
    return out


def test_string_ids_with_a_hashed_test_split_train_score_and_predict(tmp_path):
    spec = job(tmp_path, task="n_trees = 3\nmax_depth = 3\nmax_bin = 16\n")
    out = tmp_path / "run"
    r = cli("simulate", spec, "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["split"].startswith("test_fraction 0.2") and m["intersection"]["size"] == 870
    assert 0.15 * 870 < m["test"]["n"] < 0.25 * 870 and m["test"]["n"] == m["rows"]["test"]
    assert m["test"]["auc"] > 0.7
    test_ids = pd.read_csv(out / "scores" / "test.csv", dtype={"id": str}).id
    assert test_ids.str.match(r"^C\d{7}$").all()  # zero-padded text ids kept as they are
    assert (out / "job.toml").is_file()  # the party wrote the spec it ran into the run directory

    # predict: the id column defaults to the one the model was trained with (cust_id, not id)
    new = pd.read_csv(tmp_path / "lender.csv", dtype={"cust_id": str}).drop(columns=["y"]).head(100)
    new.to_csv(tmp_path / "new.csv", index=False)
    r = cli("predict", out / "model.json", tmp_path / "new.csv", "--out", tmp_path / "scores.csv")
    assert r.returncode == 0, r.stdout + r.stderr
    scores = pd.read_csv(tmp_path / "scores.csv", dtype={"id": str})
    trained = pd.concat([pd.read_csv(out / "scores" / f, dtype={"id": str}) for f in ("train.csv", "test.csv")])
    both = scores.merge(trained, on="id", suffixes=("", "_trained"))
    assert len(both) > 80 and np.allclose(both.score, both.score_trained, atol=1e-6)

    # predict --no-spawn needs the session name the feature holders were started with: fail at once
    t0 = time.perf_counter()
    r = cli("predict", out / "model.json", tmp_path / "new.csv", "--out", tmp_path / "s2.csv", "--no-spawn", timeout=60)
    assert r.returncode == 2 and "--no-spawn needs --session" in r.stderr and time.perf_counter() - t0 < 30

    # the run directory is used now: refused, then replaced with --force
    r = cli("simulate", spec, "--out", out)
    assert r.returncode == 2 and "is not empty" in r.stderr and "--force" in r.stderr
    assert (out / "metrics.json").is_file()
    (out / "notes.txt").write_text("mine")
    r = cli("simulate", spec, "--out", out, "--force")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (out / "notes.txt").read_text() == "mine"  # --force removes fedrisk's outputs only
    assert not (out / "predict").exists()


@pytest.mark.extended(covered_by="tests/tasks/test_vertical_split.py::test_test_column_is_sent_by_the_label_holder_and_nothing_else "
                                 "(both parties take the label holder's test rows; the 0/1 mask is the one message, "
                                 "plaintext-by-design) and tests/tasks/test_vertical_scorecard_split_named.py::"
                                 "test_test_column_is_named_and_a_shifted_test_population_is_flagged (test_column over "
                                 "`fedrisk simulate` mTLS processes: the test rows are the column's, the column is in no "
                                 "model file)")
def test_test_column_at_the_label_holder_chooses_the_test_rows_for_everyone(tmp_path):
    spec = job(tmp_path, kind="vertical.lr", evaluation='test_column = "is_test"', test_column=True,
               task="epochs = 3\n")
    out = tmp_path / "run"
    r = cli("simulate", spec, "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    lender = pd.read_csv(tmp_path / "lender.csv", dtype={"cust_id": str})
    payco_ids = set(pd.read_csv(tmp_path / "payco.csv", dtype={"cust_id": str}).cust_id)
    expected = set(lender.cust_id[(lender.is_test == 1) & lender.cust_id.isin(payco_ids)])
    got = set(pd.read_csv(out / "scores" / "test.csv", dtype={"id": str}).id)
    assert got == expected
    m = json.loads((out / "metrics.json").read_text())
    assert m["test"]["n"] == len(expected) and "is_test" not in json.dumps(m.get("features", ""))
    model = json.loads((out / "model.json").read_text())
    assert "is_test" not in json.dumps(model)  # the split column is never a feature
    # the feature holder received the mask, and its ledger at the lender says so
    lines = [json.loads(x) for x in (out / "ledger" / "lender.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in lines if e["tag"] == "psi.split"] == ["plaintext-by-design"]


@pytest.mark.extended(covered_by="tests/tasks/test_vertical_training_means.py (the fill values are the aligned training rows' "
                                 "means, LR and SecureBoost) and "
                                 "tests/estimators/test_engine.py::test_vertical_scoring_fills_with_the_training_means_not_the_batch_means "
                                 "(vertical LR trained with missing = 'mean': every column's training mean in the model "
                                 "file, a blank row scored alike in any batch and as `fedrisk predict`'s formula) and "
                                 "tests/runtime/test_predict.py::test_horizontal_lr_predict_blank_cells_and_dialects (a "
                                 "model file's fill values used by predict for a blank cell, not the batch's)")
def test_training_means_fill_blanks_at_scoring(tmp_path):
    """missing = "mean": the model stores the training means (of the aligned training rows: not the test rows, not
    customers outside the intersection), and predict fills with them (not the new file's)."""
    spec = job(tmp_path, kind="vertical.lr", task="epochs = 3\n", blanks=True)
    out = tmp_path / "run"
    r = cli("simulate", spec, "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    lender = pd.read_csv(tmp_path / "lender.csv", dtype={"cust_id": str})
    model = json.loads((out / "model.json").read_text())
    train_ids = set(pd.read_csv(out / "scores" / "train.csv", dtype={"id": str}).id)
    assert model["imputation"]["a"] == pytest.approx(lender.a[lender.cust_id.isin(train_ids)].mean())
    assert model["imputation"]["a"] != pytest.approx(lender.a.mean())
    # one blank row alone: its own file has no mean to fill with, the model's mean is used
    payco_ids = set(pd.read_csv(tmp_path / "payco.csv", dtype={"cust_id": str}).cust_id)
    row = lender[lender.a.isna() & lender.cust_id.isin(payco_ids)].drop(columns=["y"]).head(1)
    row.to_csv(tmp_path / "one.csv", index=False)
    r = cli("predict", out / "model.json", tmp_path / "one.csv", "--out", tmp_path / "one-scores.csv")
    assert r.returncode == 0, r.stdout + r.stderr
    got = pd.read_csv(tmp_path / "one-scores.csv", dtype={"id": str})
    trained = pd.concat([pd.read_csv(out / "scores" / f, dtype={"id": str}) for f in ("train.csv", "test.csv")])
    assert got.status.tolist() == ["scored"]
    assert got.score.iloc[0] == pytest.approx(trained.set_index("id").score[row.cust_id.iloc[0]], abs=1e-9)


def test_version():
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"fedrisk {__version__}"


def test_ctrl_c_stops_every_process_with_one_line(tmp_path):
    spec = job(tmp_path, task="n_trees = 400\nmax_depth = 4\nmax_bin = 16\n", n=3000)
    out = tmp_path / "run"
    proc = subprocess.Popen([*FEDRISK, "simulate", str(spec), "--out", str(out)], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "logs" / "lender.log"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (log.exists() and "train 1/" in log.read_text()):
        time.sleep(0.2)
    assert proc.poll() is None, "the job finished before it could be interrupted"
    t0 = time.perf_counter()
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    try:
        _, err = proc.communicate(timeout=30)
        stop_s = time.perf_counter() - t0
        until = time.monotonic() + 3  # the acceptance check looks 3 s after the command returned
        while session_processes(proc.pid) and time.monotonic() < until:
            time.sleep(0.1)
        left = session_processes(proc.pid)
    finally:
        for p in session_processes(proc.pid):
            p.kill()
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert proc.returncode == 130
    assert len(lines) == 1 and lines[0].startswith("error: interrupted by SIGINT during train"), err
    assert stop_s < 30
    assert left == [], [(p.pid, p.status()) for p in left]
    assert not (out / "metrics.json").exists()
    print(f"stopped {stop_s:.1f} s after SIGINT: {lines[0]}")


def test_killed_party_takes_its_worker_processes_with_it(tmp_path):
    """``kill -9`` of a party mid-PSI: its crypto workers notice their parent is gone and exit."""
    spec = job(tmp_path, n=40000, task="n_trees = 2\n")
    out = tmp_path / "run"
    proc = subprocess.Popen([*FEDRISK, "simulate", str(spec), "--out", str(out)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, FEDRISK_WORKERS="2"))
    try:
        deadline = time.monotonic() + 120
        party = workers = None
        while time.monotonic() < deadline:
            kids = psutil.Process(proc.pid).children()
            party = next((k for k in kids if "--as" in k.cmdline() and "payco" in k.cmdline()), None)
            workers = party.children() if party else []
            if workers:
                break
            time.sleep(0.1)
        assert workers, "the party never started its worker pool"
        party.kill()
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert alive == [], f"workers outlived their party: {alive}"
        _, err = proc.communicate(timeout=60)
        assert proc.returncode != 0 and "payco" in err
    finally:
        for p in session_processes(proc.pid):
            p.kill()


def test_killed_simulate_takes_its_participants_with_it(tmp_path):
    """``kill -9`` of ``simulate`` itself: the participants it started notice and stop cleanly."""
    spec = job(tmp_path, task="n_trees = 400\nmax_depth = 4\nmax_bin = 16\n", n=3000)
    out = tmp_path / "run"
    proc = subprocess.Popen([*FEDRISK, "simulate", str(spec), "--out", str(out)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        log = out / "logs" / "lender.log"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (log.exists() and "train 1/" in log.read_text()):
            time.sleep(0.2)
        proc.kill()
        proc.wait()
        until = time.monotonic() + 20
        while session_processes(proc.pid) and time.monotonic() < until:
            time.sleep(0.2)
        assert session_processes(proc.pid) == []
        assert "interrupted by SIGTERM during train" in log.read_text()
    finally:
        for p in session_processes(proc.pid):
            p.kill()


def test_a_partner_that_never_starts_is_named_within_connect_timeout(tmp_path):
    spec = job(tmp_path, security="[security]\nconnect_timeout = 4\n")
    assert cli("certs", "--parties", "lender,payco", "--out", tmp_path / "certs").returncode == 0
    t0 = time.perf_counter()
    r = cli("party", spec, "--as", "lender", "--out", tmp_path / "run", "--certs", tmp_path / "certs", "--quiet",
            timeout=120)
    took = time.perf_counter() - t0
    addr = [ln.split('"')[1] for ln in spec.read_text().splitlines() if ln.startswith("address")][1]
    assert r.returncode == 2
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and f"'payco' at {addr} not listening after 4 s" in err, err
    assert took < 4 + 20  # start-up + the deadline + telling the partner, never ten minutes
    log = (tmp_path / "run" / "logs" / "lender.log").read_text()
    assert f"waiting for payco at {addr}" in log


def test_a_certificate_from_another_ca_is_named_at_once(tmp_path):
    spec = job(tmp_path, security="[security]\nconnect_timeout = 30\n")
    for d in ("ca1", "ca2"):
        assert cli("certs", "--parties", "lender,payco", "--out", tmp_path / d).returncode == 0
    payco = subprocess.Popen([*FEDRISK, "party", str(spec), "--as", "payco", "--out", str(tmp_path / "p"),
                              "--certs", str(tmp_path / "ca2"), "--quiet"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    addr = [ln.split('"')[1] for ln in spec.read_text().splitlines() if ln.startswith("address")][1]
    try:
        # payco listening first (on a loaded machine its start alone can take longer than connect_timeout)
        host, port = addr.rsplit(":", 1)
        deadline = time.monotonic() + 120
        while True:
            assert payco.poll() is None, payco.stderr.read()
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "payco never started listening"
                time.sleep(0.2)
        t0 = time.perf_counter()
        r = cli("party", spec, "--as", "lender", "--out", tmp_path / "l", "--certs", tmp_path / "ca1", "--quiet",
                timeout=120)
        took = time.perf_counter() - t0
        assert r.returncode == 2
        assert f"payco at {addr} presented a certificate from another CA" in r.stderr, r.stderr
        assert took < 15  # not after connect_timeout (30 s)
    finally:
        payco.terminate()
        payco.wait(30)


def test_resume_reuses_the_psi_alignment_when_every_party_can(tmp_path):
    spec = job(tmp_path, kind="vertical.lr", task="epochs = 3\n")
    out = tmp_path / "run"
    assert cli("simulate", spec, "--out", out).returncode == 0
    first = pd.read_csv(out / "scores" / "test.csv", dtype={"id": str})
    assert (out / "checkpoints" / "lender-psi.json").is_file() and (out / "checkpoints" / "payco-psi.json").is_file()
    r = cli("simulate", spec, "--out", out, "--resume")
    assert r.returncode == 0, r.stdout + r.stderr
    for party in ("lender", "payco"):
        assert "PSI alignment resumed" in (out / "logs" / f"{party}.log").read_text()
    again = pd.read_csv(out / "scores" / "test.csv", dtype={"id": str})
    # same rows in the same order; scores agree up to vertical LR's CKKS noise between two runs
    assert list(again.id) == list(first.id) and np.allclose(again.score, first.score, atol=1e-3)
    # payco's file changed: its checkpoints no longer match its data, so the resume is refused
    # with one line naming payco (fedrisk.runtime.checkpoint); without --resume it starts again
    payco = pd.read_csv(tmp_path / "payco.csv", dtype={"cust_id": str})
    payco.iloc[10:].to_csv(tmp_path / "payco.csv", index=False)
    r = cli("simulate", spec, "--out", out, "--resume")
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode != 0 and len(err) == 1 and "'payco'" in err[0] and "other data" in err[0], r.stderr
    r = cli("simulate", spec, "--out", out, "--force")
    assert r.returncode == 0, r.stdout + r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["intersection"]["size"] == 860


def test_progress_is_plain_lines_when_stdout_is_not_a_terminal(tmp_path):
    """Under nohup, CI or systemd (stdout a file or pipe) the bar used to appear only once, at the end:
    no progress at all while the job ran. Now each round is a plain line (no bar glyphs, no escapes)."""
    spec = job(tmp_path, kind="vertical.lr", task='solver = "surrogate"\nepochs = 3\nbatch_size = 256\n')
    r = cli("simulate", spec, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("progress: ")]
    assert lines and lines[-1].startswith("progress: train 3/3") and "val_loss=" in lines[-1], r.stdout
    head = r.stdout.split("vertical.lr")[0]  # everything before the results table
    assert "━" not in head and "\x1b" not in r.stdout and "\r" not in r.stdout


@pytest.mark.parametrize("command", ["simulate", "party", "predict"])
def test_an_output_path_under_a_file_is_one_line(tmp_path, command):
    """`--out` naming an existing file (or a path below one) crashed with FileExistsError/NotADirectoryError."""
    spec = job(tmp_path, kind="vertical.lr")
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder\n")
    if command == "simulate":
        r = cli("simulate", spec, "--out", blocker, timeout=120)
    elif command == "party":
        r = cli("party", spec, "--as", "lender", "--out", blocker / "run", timeout=120)
    else:
        from types import SimpleNamespace

        from fedrisk.model_files import save_lr_model

        lr = SimpleNamespace(feature_names=["a", "b"], mean=np.zeros(2), scale=np.ones(2), coef=np.array([0.5, -0.2]),
                             intercept=0.1, history=[],
                             raw_coefficients=lambda: (np.array([0.5, -0.2]), 0.1))
        model = save_lr_model(tmp_path / "model.json", lr, "horizontal.lr", "reliability")
        r = cli("predict", model, tmp_path / "lender.csv", "--id", "cust_id", "--out", blocker / "scores.csv", timeout=120)
    assert r.returncode == 2, (r.stdout, r.stderr)
    err = r.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert "is a file, not a folder" in err and "taken" in err, err


def test_predict_with_another_id_column_names_the_predict_flag(tmp_path):
    """The hint said only "set the id column in the job spec", which predict does not read."""
    from types import SimpleNamespace

    from fedrisk.model_files import save_lr_model

    job(tmp_path, kind="vertical.lr")
    lr = SimpleNamespace(feature_names=["a", "b"], mean=np.zeros(2), scale=np.ones(2), coef=np.array([0.5, -0.2]),
                         intercept=0.1, history=[], raw_coefficients=lambda: (np.array([0.5, -0.2]), 0.1))
    # a model file outside a run directory: a run's job.toml would name the id column itself
    (tmp_path / "models").mkdir()
    model = save_lr_model(tmp_path / "models" / "model.json", lr, "horizontal.lr", "reliability")
    r = cli("predict", model, tmp_path / "lender.csv", "--out", tmp_path / "s.csv", timeout=120)
    assert r.returncode == 2 and "id column 'id' not found" in r.stderr and "--id" in r.stderr, r.stderr


def test_a_held_port_is_one_line_on_stderr(tmp_path):
    """gRPC's C core printed its own `E... add_port.cc ... Address already in use` line before ours."""
    import socket

    spec = job(tmp_path, kind="vertical.lr")
    from fedrisk.runtime.spec import load_spec

    host, port = load_spec(spec).parties["lender"].address.rsplit(":", 1)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
        s.listen()
        env = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
        from fedrisk.transport.certs import make_dev_pki

        certs = make_dev_pki(["lender", "payco"], tmp_path / "certs")
        r = subprocess.run([*FEDRISK, "party", str(spec), "--as", "lender", "--out", str(tmp_path / "run"), "--quiet",
                            "--certs", str(certs)],
                           capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "another process is using that port" in lines[0], r.stderr
