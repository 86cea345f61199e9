"""The vertical label holder's note on selected features whose IV does not beat noise (few defaults): its own
log and metrics.json only, naming features and the count of defaults; the partner learns nothing new."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from fedrisk.runtime.demo import free_ports
from tests.tasks.test_woe_tasks import run_in_process


def _rare_federation(tmp: Path, n: int = 800, bads: int = 16, seed: int = 11) -> Path:
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=int)
    y[rng.choice(n, bads, replace=False)] = 1
    ids = np.arange(1000, 1000 + n)
    pd.DataFrame({"id": ids, "y": y, "signal": rng.normal(size=n) + 2.5 * y,
                  "age": rng.integers(20, 70, size=n)}).to_csv(tmp / "lender.csv", index=False)
    pd.DataFrame({"id": ids, "debt": rng.pareto(1.2, size=n).round(3),
                  "plan": rng.choice(["basic", "plus", "pro"], size=n)}).sample(frac=1, random_state=1).to_csv(
        tmp / "payco.csv", index=False)
    ports = free_ports(2)
    spec = tmp / "job.toml"
    spec.write_text(f'[federation]\nname = "rare-noise"\n'
                    f'[parties.lender]\naddress = "127.0.0.1:{ports[0]}"\ndata = "lender.csv"\nid = "id"\nlabel = "y"\n'
                    f'[parties.payco]\naddress = "127.0.0.1:{ports[1]}"\ndata = "payco.csv"\nid = "id"\n'
                    '[task]\nkind = "vertical.woe"\nkey_bits = 2048\n')
    return spec


def test_selected_features_not_beating_noise_are_named_at_the_label_holder_only(tmp_path, caplog):
    spec = _rare_federation(tmp_path)
    with caplog.at_level(logging.WARNING):
        m = run_in_process(spec, tmp_path / "run")
    rows = {(p, r["feature"]): r for p, rs in m["iv"].items() for r in rs}
    weak = sorted(f for (p, f), r in rows.items() if r["selected"] and r["iv_p_value"] > 0.05)
    assert weak and "signal" not in weak  # noise passed the IV >= 0.02 bar (selection unchanged) ...
    assert rows[("lender", "signal")]["iv_p_value"] < 1e-6
    note = m["iv_noise_note"]  # ... and is named, with the count of defaults
    assert note.startswith("with 16 defaults, ") and all(f"'{f}'" in note for f in weak)
    lender_log = [r.getMessage() for r in caplog.records if r.name == "test.lender"]
    assert note in lender_log
    # nothing of it at the partner: not in its log, not in its files
    assert not any("defaults" in r.getMessage() for r in caplog.records if r.name == "test.payco")
    payco_doc = (tmp_path / "run" / "woe" / "payco.json").read_text()
    assert "iv_p_value" not in payco_doc and "defaults" not in payco_doc
    assert json.loads(payco_doc)["party"] == "payco"
