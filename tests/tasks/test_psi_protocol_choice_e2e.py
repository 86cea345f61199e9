"""``[psi] protocol`` in the job spec: validated with the other settings, and a vertical job aligned by
RR22 over real processes (mTLS, the job's certificates) trains the same model as one aligned by ECDH."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fedrisk.crypto import spu_binding
from fedrisk.errors import ConfigError
from fedrisk.runtime.spec import load_spec, shared_settings
from tests.tasks.test_vertical_lr_e2e import cli, synthetic


def _with_psi(spec, protocol):
    spec.write_text(spec.read_text() + f'\n[psi]\nprotocol = "{protocol}"\n')
    return spec


def test_psi_table_is_validated_with_the_spec(tmp_path):
    spec = synthetic(tmp_path)
    assert load_spec(spec).psi.protocol == "ecdh"
    text = spec.read_text()
    spec.write_text(text + '\n[psi]\nprotocol = "kkrt"\n')
    with pytest.raises(ConfigError, match=r"psi\.protocol"):
        load_spec(spec)
    spec.write_text(text + '\n[psi]\nprotcol = "rr22"\n')
    with pytest.raises(ConfigError, match=r"did you mean 'protocol'"):
        load_spec(spec)
    horizontal = tmp_path / "h.toml"
    horizontal.write_text(
        '[federation]\nname = "h"\n[coordinator]\naddress = "127.0.0.1:1"\n'
        '[parties.a]\naddress = "127.0.0.1:2"\ndata = "a.csv"\nlabel = "y"\n'
        '[parties.b]\naddress = "127.0.0.1:3"\ndata = "b.csv"\nlabel = "y"\n'
        '[task]\nkind = "horizontal.lr"\n[psi]\nprotocol = "rr22"\n')
    with pytest.raises(ConfigError, match="vertical jobs only"):
        load_spec(horizontal)


def test_parties_must_agree_on_the_protocol(tmp_path):
    spec = synthetic(tmp_path)
    ecdh = shared_settings(load_spec(spec))
    spec.write_text(spec.read_text() + '\n[psi]\nprotocol = "ecdh"\n')
    assert shared_settings(load_spec(spec)) == ecdh  # the default spelled out is the same job
    if spu_binding.available():
        (tmp_path / "r").mkdir()
        rr22 = _with_psi(synthetic(tmp_path / "r"), "rr22")
        psi = shared_settings(load_spec(rr22))["psi"]
        assert psi["protocol"] == "rr22" and psi != ecdh["psi"]


@pytest.mark.e2e
@pytest.mark.skipif(not spu_binding.available(),
                    reason="RR22 PSI needs the optional extra, not installed here: pip install --no-deps spu==0.9.5 "
                           "(or pip install 'fedrisk[psi]')")
def test_vertical_job_aligned_by_rr22_over_mtls_trains_the_ecdh_model(vsmall_ecdh_run, tmp_path):
    # the ECDH reference is the same synthetic() job's default-PSI run (tests/tasks/conftest.py), which
    # test_vertical_lr_e2e's three-party test also uses: one simulate less per CI run
    ecdh_folder, ecdh_out = vsmall_ecdh_run
    assert load_spec(ecdh_folder / "job.toml").psi.protocol == "ecdh"
    folder = tmp_path / "rr22"
    folder.mkdir()
    spec = _with_psi(synthetic(folder), "rr22")
    r = cli("simulate", spec, "--out", folder / "run")
    assert r.returncode == 0, r.stderr[-2000:]
    outs = {"ecdh": ecdh_out, "rr22": folder / "run"}
    runs = {}
    for protocol, out in outs.items():
        ledger = [json.loads(line) for f in (out / "ledger").glob("*.jsonl") for line in f.read_text().splitlines()]
        runs[protocol] = (json.loads((out / "metrics.json").read_text()), ledger)
    (m_e, led_e), (m_r, led_r) = runs["ecdh"], runs["rr22"]
    assert m_r["intersection"]["size"] == m_e["intersection"]["size"]
    # the same rows in the same (canonical) order reach training under both protocols
    for split in ("train", "test"):
        ids = [pd.read_csv(outs[p] / "scores" / f"{split}.csv").id.tolist() for p in ("ecdh", "rr22")]
        assert ids[0] == ids[1] and len(ids[0]) > 100
    # (the secure training itself is not bit-reproducible across runs, so the models agree closely)
    assert m_r["test"]["auc"] == pytest.approx(m_e["test"]["auc"], abs=0.01)
    rr22_frames = [e for e in led_r if e["tag"].startswith("psi.rr22.")]
    assert rr22_frames and not any(e["tag"].startswith("psi.") and not e["tag"].startswith("psi.rr22.")
                                   for e in led_r)
    assert {e["kind"] for e in rr22_frames} <= {"masked", "control", "public-parameter", "plaintext-by-design"}
    psi_bytes = {k: sum(e["bytes"] for e in led if e["tag"].startswith("psi.")) for k, led in
                 (("ecdh", led_e), ("rr22", led_r))}
    assert psi_bytes["rr22"] > 0 and psi_bytes["ecdh"] > 0
    # federated predict of the rr22-trained model aligns by rr22 too and scores as in training
    folder = tmp_path / "rr22"
    lender = pd.read_csv(folder / "lender.csv")
    new = lender.drop(columns=["y"]).sample(200, random_state=0)
    new.to_csv(folder / "new.csv", index=False)
    r = cli("predict", folder / "run" / "model.json", folder / "new.csv", "--out", folder / "scores.csv")
    assert r.returncode == 0, r.stderr[-2000:]
    s = pd.read_csv(folder / "scores.csv")
    train = pd.concat([pd.read_csv(folder / "run" / "scores" / "train.csv"),
                       pd.read_csv(folder / "run" / "scores" / "test.csv")])
    both = s.merge(train, on="id")
    assert len(both) > 100 and np.allclose(both.score_x, both.score_y, atol=1e-9)
    pred_ledger = [json.loads(line) for f in (folder / "run" / "predict").rglob("*.jsonl") if "ledger" in str(f)
                   for line in f.read_text().splitlines()]
    assert any(e["tag"].startswith("psi.rr22.") for e in pred_ledger)
