"""Federation.connect: the label holder's modeller drives a cross-host job from a notebook while the
partner runs ``fedrisk party`` as its own process (mTLS); the result equals the in-process fit."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import fedrisk as fr
from fedrisk.errors import ConfigError
from fedrisk.runtime.demo import free_ports
from fedrisk.transport.certs import make_dev_pki

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_connect_as_label_holder_equals_in_process(tmp_path, repo, vertical_frames):
    lender, payco = vertical_frames
    payco.to_csv(tmp_path / "payco.csv", index=False)
    ports = free_ports(2)
    spec = tmp_path / "job.toml"
    spec.write_text(f'[federation]\nname = "connect"\nseed = 0\n'
                    f'[parties.lender]\naddress = "127.0.0.1:{ports[0]}"\ndata = "lender-not-here.csv"\nid = "id"\nlabel = "y"\n'
                    f'[parties.payco]\naddress = "127.0.0.1:{ports[1]}"\ndata = "payco.csv"\nid = "id"\n'
                    '[task]\nkind = "vertical.secureboost"\nn_trees = 2\nmax_depth = 2\n[evaluation]\ntest_rule = "id % 5 == 0"\n')
    certs = make_dev_pki(["lender", "payco"], tmp_path / "certs")
    fed = fr.Federation.connect(spec, me="lender", data=lender, certs=certs, out=tmp_path / "lender-run")
    with pytest.raises(ConfigError, match="n_trees=3 \\(spec: 2\\)"):
        fr.SecureBoost(n_trees=3, max_depth=2).fit(fed)  # refused before anyone connects
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    partner = subprocess.Popen([sys.executable, "-m", "fedrisk", "party", str(spec), "--as", "payco",
                                "--out", str(tmp_path / "payco-run"), "--certs", str(certs), "--quiet"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        sb = fr.SecureBoost(n_trees=2, max_depth=2).fit(fed)
        assert partner.wait(120) == 0, partner.stdout.read().decode()[-2000:]
    finally:
        if partner.poll() is None:
            partner.kill()
    assert set(sb.files_) == {"model.json"} and sb.n_estimators_ == 2  # only the lender's part comes back
    assert set(sb.ledger_["from"]) == {"lender"} and (tmp_path / "payco-run" / "model-payco.json").is_file()
    # the same training in-process on the same rows gives the same trees and test AUC
    train, test = fr.Federation.vertical({"lender": lender, "payco": payco}, name="connect").split("id % 5 == 0")
    ref = fr.SecureBoost(n_trees=2, max_depth=2).fit(train)
    assert sb.files_["model.json"]["trees"] == ref.files_["model.json"]["trees"]
    p = ref.predict_proba(test)[:, 1]
    assert abs(sb.metrics_["test"]["auc"] - fr.metrics.auc(test.y, p)) <= 1e-9
    with pytest.raises(ConfigError, match="fedrisk serve"):
        sb.predict_proba(test)
