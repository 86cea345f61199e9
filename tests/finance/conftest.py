"""Shared fixtures for finance tests: a fake run directory like the runtime writes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedrisk.finance.metrics import evaluate, population_stability_index


def build_run_dir(root: Path, seed: int = 0) -> Path:
    """Write metrics.json, scores/ and ledger/ for a plausible 3-party federated run."""
    rng = np.random.default_rng(seed)
    run = root / "run"
    (run / "scores").mkdir(parents=True)
    (run / "ledger").mkdir()
    split = {}
    for name, n in (("train", 3000), ("test", 1000)):
        y = (rng.random(n) < 0.22).astype(int)
        z = rng.normal(size=n) + 1.1 * y + (0.15 if name == "test" else 0.0)
        p = 1 / (1 + np.exp(-(z - 1.6)))
        split[name] = (y, p)
        lines = ["id,y,score"] + [f"{i},{a},{b:.6f}" for i, (a, b) in enumerate(zip(y, p))]
        (run / "scores" / f"{name}.csv").write_text("\n".join(lines) + "\n")
    rounds = [{"round": r, "loss": 0.62 * np.exp(-r / 6) + 0.44, "test_auc": 0.78 - 0.1 * np.exp(-r / 4)} for r in range(1, 21)]
    metrics = {
        "task": "horizontal.lr",
        "job": "credit-consortium-demo",
        "test": evaluate(*split["test"]),
        "train": evaluate(*split["train"]),
        "rounds": rounds,
        "stability": population_stability_index(split["train"][1], split["test"][1]),
        "comparison": {
            "federated": {"auc": 0.781, "ks": 0.43},
            "centralized": {"auc": 0.786, "ks": 0.44},
            "local_only": {"bank_a": {"auc": 0.74, "ks": 0.37}, "bank_b": {"auc": 0.72, "ks": 0.35}},
        },
        "iv": {
            "bank_a": [{"feature": "limit_bal", "iv": 0.18, "n_bins": 8}, {"feature": "age", "iv": 0.03, "n_bins": 6},
                       {"feature": "pay_0<script>", "iv": 0.71, "n_bins": 5}],
        },
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    parties = ["coordinator", "bank_a", "bank_b"]
    for p in parties:
        entries = []
        for r in range(20):
            if p == "coordinator":
                for q in parties[1:]:
                    entries.append({"time": "t", "from": p, "to": q, "tag": f"hlr.model.r{r}", "kind": "model", "bytes": 1200})
            else:
                entries.append({"time": "t", "from": p, "to": "coordinator", "tag": f"hlr.update.r{r}", "kind": "masked", "bytes": 2400})
                entries.append({"time": "t", "from": p, "to": "coordinator", "tag": f"hlr.metric.r{r}", "kind": "metric", "bytes": 90})
        (run / "ledger" / f"{p}.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    return run


@pytest.fixture
def fake_run(tmp_path: Path) -> Path:
    return build_run_dir(tmp_path)
