"""``[psi] protocol = "unbalanced"``: spec validation, the bureau's offline commands, and a vertical job
over real party processes (mTLS) that fetches the encoded set once, then reuses it, and trains on the
same rows in the same order as an ECDH-aligned job."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedrisk.errors import ConfigError
from fedrisk.runtime.spec import load_spec, shared_settings
from tests.tasks.test_vertical_lr_e2e import cli, synthetic

_UB = '\n[psi]\nprotocol = "unbalanced"\nkey_holder = "bureau"\n'


def _two_party(folder: Path, psi: str = _UB) -> Path:
    spec = synthetic(folder, hosts=("bureau",))
    text = spec.read_text()
    for name in ("lender", "bureau"):
        text = text.replace(f'data = "{name}.csv"\n', f'data = "{name}.csv"\npsi_store = "store-{name}"\n')
    spec.write_text(text + psi)
    return spec


def test_spec_validation(tmp_path):
    spec = _two_party(tmp_path)
    s = load_spec(spec)
    assert s.psi.protocol == "unbalanced" and s.psi.key_holder == "bureau" and s.psi.fetch_encoded
    assert shared_settings(s)["psi"]["key_holder"] == "bureau"
    assert "psi_store" not in json.dumps(shared_settings(s))  # local, like data
    spec.write_text(spec.read_text().replace('key_holder = "bureau"', 'key_holder = "nobody"'))
    with pytest.raises(ConfigError, match="key_holder = one of"):
        load_spec(spec)
    (tmp_path / "three").mkdir()
    three = synthetic(tmp_path / "three")
    three.write_text(three.read_text() + _UB)
    with pytest.raises(ConfigError, match="exactly two parties"):
        load_spec(three)


def test_offline_commands_are_one_line_errors(tmp_path):
    spec = _two_party(tmp_path)
    r = cli("psi", "encode", spec, "--party", "bureau")
    assert r.returncode == 2 and "no OPRF key file" in r.stdout + r.stderr and "Traceback" not in r.stderr
    r = cli("psi", "key", spec, "--party", "lender")
    assert r.returncode == 2 and "not the job's key holder" in r.stdout + r.stderr
    r = cli("psi", "key", spec, "--party", "bureau")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "store-bureau" / "key.json").stat().st_mode & 0o777 == 0o600
    r = cli("psi", "key", spec, "--party", "bureau")
    assert r.returncode == 2 and "--rotate" in r.stdout + r.stderr
    r = cli("psi", "key", spec, "--party", "bureau", "--rotate")
    assert r.returncode == 0 and "epoch 2" in r.stdout


def _ledger(out: Path) -> list[dict]:
    return [json.loads(line) for f in (out / "ledger").glob("*.jsonl") for line in f.read_text().splitlines()]


def _rows(out: Path) -> dict[str, list]:
    return {s: pd.read_csv(out / "scores" / f"{s}.csv").id.tolist() for s in ("train", "test")}


@pytest.mark.e2e
@pytest.mark.extended(covered_by="tests/algorithms/vertical/test_unbalanced_psi.py (protocol, what each party receives, cache reuse and rotation) and tests/tasks/test_psi_protocol_choice_e2e.py (a job aligned by another PSI protocol over mTLS)")
def test_vertical_job_aligned_by_unbalanced_psi_over_mtls(tmp_path):
    (tmp_path / "e").mkdir()
    ecdh = _two_party(tmp_path / "e", psi="")
    r = cli("simulate", ecdh, "--out", tmp_path / "e" / "run")
    assert r.returncode == 0, r.stderr[-2000:]
    (tmp_path / "u").mkdir()
    spec = _two_party(tmp_path / "u")
    for cmd in ("key", "encode"):
        r = cli("psi", cmd, spec, "--party", "bureau")
        assert r.returncode == 0, r.stderr[-2000:]
    runs = {}
    for name in ("first", "second"):
        out = tmp_path / "u" / name
        r = cli("simulate", spec, "--out", out)
        assert r.returncode == 0, r.stderr[-2000:]
        runs[name] = out
    m_e = json.loads((tmp_path / "e" / "run" / "metrics.json").read_text())
    for name, out in runs.items():
        m = json.loads((out / "metrics.json").read_text())
        assert m["intersection"]["size"] == m_e["intersection"]["size"]
        assert _rows(out) == _rows(tmp_path / "e" / "run")  # same rows, same canonical order
        assert m["test"]["auc"] == pytest.approx(m_e["test"]["auc"], abs=0.01)
        psi = [e for e in _ledger(out) if e["tag"].startswith("psi.")]
        assert psi and all(e["tag"].startswith("psi.ub.") for e in psi)
        assert {e["kind"] for e in psi} <= {"public-parameter", "masked", "control", "plaintext-by-design"}
        cache = [e for e in psi if e["tag"].startswith("psi.ub.cache.")]
        # the encoded set crosses once, at the first job of the epoch, through the ledger; then the cache serves
        assert bool(cache) == (name == "first")
    assert list((tmp_path / "u" / "store-lender" / "cache" / "bureau").glob("epoch-1-*.bin"))
    _predict_aligns_by_ecdh(tmp_path / "u", runs["second"])


def _predict_aligns_by_ecdh(folder: Path, run: Path) -> None:
    """Federated predict of an unbalanced-trained model (no store settings reach it) aligns its batch by
    ECDH over the run's certificates and gives each customer the score it had in training."""
    new = pd.read_csv(folder / "lender.csv").drop(columns=["y"]).sample(200, random_state=0)
    new.to_csv(folder / "new.csv", index=False)
    r = cli("predict", run / "model.json", folder / "new.csv", "--out", folder / "scores.csv")
    assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]
    s = pd.read_csv(folder / "scores.csv")
    train = pd.concat([pd.read_csv(run / "scores" / f"{x}.csv") for x in ("train", "test")])
    both = s.merge(train, on="id")
    assert len(both) > 100 and np.allclose(both.score_x, both.score_y, atol=1e-9)
    ledger = [json.loads(line) for f in (run / "predict").rglob("*.jsonl") if "ledger" in str(f)
              for line in f.read_text().splitlines()]
    psi = [e for e in ledger if e["tag"].startswith("psi.")]
    assert psi and not any(e["tag"].startswith("psi.ub.") for e in psi)  # ECDH's tags, not the cache protocol
