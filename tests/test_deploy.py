"""The container image definition and the deploy/ example, checked without Docker.

No image is built here (no registry access for the base image); what can be checked is:

* the Dockerfile: slim Python base matching the supported Python, a non-root user, the compiled
  kernel built in and required, ``fedrisk`` as entrypoint, and every ``COPY`` source present in
  the build context and not excluded by ``.dockerignore`` (which must keep data, keys, runs and a
  local build of the kernel out);
* deploy/compose/compose.yaml: parses; every bind-mounted path exists; the command's files are
  inside the mounts; the published port is the one the job spec binds (``listen``); ``--as`` is
  a party of the spec; the health check probes the port ``serve --health`` opens; Docker's stop
  grace period outlasts the service's drain timeout; the command parses with fedrisk's own CLI;
* deploy/compose/config/job.toml loads as a job spec;
* the systemd units pass ``systemd-analyze verify`` (skipped where it is not installed) and run
  commands the CLI accepts.
"""
from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose"


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def _ignored(path: str, patterns: list[str]) -> bool:
    hit = False
    for p in patterns:
        neg = p.startswith("!")
        p = p.lstrip("!").rstrip("/")
        pats = [p, p.removeprefix("**/")] if p.startswith("**/") else [p]
        if any(fnmatch.fnmatch(path, q) or fnmatch.fnmatch(path.split("/")[-1], q) or path.startswith(q + "/")
               for q in pats):
            hit = not neg
    return hit


def test_dockerfile_is_slim_non_root_with_the_compiled_kernel_and_fedrisk_entrypoint():
    ins = _instructions((ROOT / "Dockerfile").read_text())
    froms = [a for op, a in ins if op == "FROM"]
    assert froms and all("slim" in f for f in froms), froms
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11"' in pyproject
    assert any(op == "ARG" and a == "PYTHON_VERSION=3.11" for op, a in ins)
    runs = " ".join(a for op, a in ins if op == "RUN")
    assert "libgmp-dev" in runs and "python -m fedrisk.crypto.montgomery" in runs
    assert runs.count('grep -q "compiled kernel"') == 2  # required in the build stage and the final image
    users = [a for op, a in ins if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    final = ins[max(i for i, (op, _) in enumerate(ins) if op == "FROM"):]
    assert [a for op, a in final if op == "ENTRYPOINT"] == ['["fedrisk"]']
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    for op, a in ins:
        if op == "COPY" and "--from" not in a:
            for src in shlex.split(a)[:-1]:
                assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
                assert not _ignored(src, ignore), f"COPY {src} is excluded by .dockerignore"
    for secret in ("data/x.csv", "certs/bank-key.pem", "fedrisk/crypto/_montgomery.cpython-311-x86_64-linux-gnu.so",
                   ".venv", "runs", ".git"):
        assert _ignored(secret, ignore), f".dockerignore must exclude {secret}"


def _compose() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML (dev extra) parses the compose file")
    return yaml.safe_load((COMPOSE / "compose.yaml").read_text())


def _mounts(svc: dict) -> dict[str, tuple[str, bool]]:
    """container path -> (host path or volume name, read-only)."""
    out = {}
    for v in svc.get("volumes", []):
        parts = v.split(":")
        out[parts[1]] = (parts[0], len(parts) > 2 and parts[2] == "ro")
    return out


def _inside(path: str, mounts: dict) -> tuple[str, str] | None:
    for target, (src, _) in mounts.items():
        if path == target or path.startswith(target.rstrip("/") + "/"):
            return src, path[len(target):].lstrip("/")
    return None


def _option(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_compose_example_mounts_ports_health_and_commands_agree_with_the_spec():
    from fedrisk.runtime.spec import load_spec

    doc = _compose()
    spec = load_spec(COMPOSE / "config" / "job.toml")
    services = doc["services"]
    assert {"party", "serve"} <= set(services)
    for name, svc in services.items():
        mounts = _mounts(svc)
        for target, (src, ro) in mounts.items():
            if src.startswith("."):
                assert (COMPOSE / src).is_dir(), f"{name}: bind mount {src} does not exist in deploy/compose"
                assert ro, f"{name}: {src} (config/data) must be mounted read-only"
            else:
                assert src in doc.get("volumes", {}), f"{name}: volume {src} is not declared"
        cmd = svc["command"]
        assert svc.get("user", "").split(":")[0] not in ("", "0", "root")
        job = cmd[1]
        src, rel = _inside(job, mounts)
        assert (COMPOSE / src / rel).is_file(), f"{name}: {job} is not in a mount"
        me = _option(cmd, "--as")
        assert me in spec.parties
        certs = _inside(_option(cmd, "--certs"), mounts)
        assert certs and (COMPOSE / certs[0] / certs[1]).is_dir()
        assert str(spec.security.certs) == _option(cmd, "--certs")
        data = _inside(str(spec.parties[me].data), mounts)
        assert data and (COMPOSE / data[0]).is_dir(), "the party's data file must be inside a mount"
        port = spec.listen_address(me).rsplit(":", 1)[1]
        assert [p.split(":")[1] for p in svc["ports"]] == [port], "publish exactly the port the party binds"
        out = _option(cmd, "--out")
        writable = [t for t, (_, ro) in mounts.items() if not ro and out.startswith(t.rstrip("/") + "/")]
        assert writable, f"{name}: --out {out} must be on a writable volume"
        help_ = subprocess.run([sys.executable, "-m", "fedrisk", cmd[0], "--help"], capture_output=True, text=True)
        for opt in [c for c in cmd if c.startswith("--")]:
            assert opt in help_.stdout, f"{name}: `fedrisk {cmd[0]}` has no option {opt}"
    serve = services["serve"]
    health = _option(serve["command"], "--health")
    assert health.startswith("127.0.0.1:"), "the health endpoint stays on loopback"
    assert serve["healthcheck"]["test"] == ["CMD", "fedrisk", "health", health]
    model = _inside(_option(serve["command"], "--model"), _mounts(serve))
    party_out = _option(services["party"]["command"], "--out")
    assert _option(serve["command"], "--model").startswith(party_out + "/"), "serve scores with the model party trains"
    assert model is not None
    drain = float(_option(serve["command"], "--drain-timeout"))
    assert float(serve["stop_grace_period"].rstrip("s")) > drain


def test_systemd_units_verify_and_run_commands_the_cli_accepts(tmp_path):
    units = sorted((DEPLOY / "systemd").glob("*.service"))
    assert {u.name for u in units} == {"fedrisk-party.service", "fedrisk-serve.service"}
    fedrisk = shutil.which("fedrisk") or str(Path(sys.executable).parent / "fedrisk")
    for u in units:
        text = u.read_text()
        exec_start = re.search(r"^ExecStart=(.*?)(?<!\\)$", text, re.S | re.M).group(1).replace("\\\n", " ")
        argv = shlex.split(exec_start)
        assert argv[0] == "/opt/fedrisk/bin/fedrisk"
        help_ = subprocess.run([sys.executable, "-m", "fedrisk", argv[1], "--help"], capture_output=True, text=True)
        for opt in [a for a in argv if a.startswith("--")]:
            assert opt in help_.stdout, f"{u.name}: `fedrisk {argv[1]}` has no option {opt}"
        assert "User=fedrisk" in text and "KillSignal=SIGTERM" in text
        # the local copy runs as a user that exists here and the fedrisk installed here
        (tmp_path / u.name).write_text(text.replace("/opt/fedrisk/bin/fedrisk", fedrisk)
                                       .replace("User=fedrisk", "User=root").replace("Group=fedrisk", "Group=root"))
    serve = (DEPLOY / "systemd" / "fedrisk-serve.service").read_text()
    drain = float(re.search(r"--drain-timeout (\d+)", serve).group(1))
    assert float(re.search(r"TimeoutStopSec=(\d+)", serve).group(1)) > drain
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed; the units were checked against the CLI only")
    r = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / u.name) for u in units)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
