"""``fedrisk demo``: three synthetic banks federate over mutual TLS, compared with the alternatives.

The demo is the smallest honest answer to "why federate?": each bank serves a skewed customer
segment and is too small to learn the whole market alone; pooling the rows would fix that but is
not allowed. The federated model gets close to the pooled one without a row leaving a bank.
The centralised and single-bank references are computed here, in the demo process, because the
demo generated all the data; in a real federation nobody could compute the pooled reference.
"""
from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any, Callable


from fedrisk.runtime.context import write_json
from fedrisk.runtime.simulate import simulate

__all__ = ["run_demo", "free_ports"]


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports that were free a moment ago on ``host``."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _spec_text(banks: dict[str, Path], test: Path, ports: list[int], rounds: int, seed: int) -> str:
    lines = ['[federation]', 'name = "demo-three-banks"', f"seed = {seed}", "",
             "[coordinator]", f'address = "127.0.0.1:{ports[0]}"', ""]
    for (name, path), port in zip(banks.items(), ports[1:]):
        lines += [f"[parties.{name}]", f'address = "127.0.0.1:{port}"', f'data = "{path.as_posix()}"',
                  'id = "id"', 'label = "y"', ""]
    lines += ["[task]", 'kind = "horizontal.lr"', f"rounds = {rounds}", "local_epochs = 2", "batch_size = 32",
              "learning_rate = 0.05", "l2 = 0.0001", "", "[evaluation]", f'test = "{test.as_posix()}"',
              f'holder = "{next(iter(banks))}"', "", "[security]", 'certs = "certs"', "secure_aggregation = true", ""]
    return "\n".join(lines)


def _reference(train_frames: list, test, features: list[str]) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from fedrisk.finance.metrics import auc, gini, ks

    import pandas as pd

    train = pd.concat(train_frames, ignore_index=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    model.fit(train[features].to_numpy(float), train["y"].to_numpy())
    p = model.predict_proba(test[features].to_numpy(float))[:, 1]
    y = test["y"].to_numpy()
    return {"auc": auc(y, p), "ks": ks(y, p), "gini": gini(y, p), "n_train": int(len(train))}


def run_demo(out: str | Path, seed: int = 0, rounds: int = 30,
             on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Generate the data, run the federation as separate processes, and compare; return the summary."""
    from fedrisk.data.synthetic import make_demo_federation, write_demo_federation

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = make_demo_federation(seed)
    paths = write_demo_federation(data, out / "data")
    banks = {name: Path(paths[name]) for name in data.banks}
    spec_path = out / "job.toml"
    spec_path.write_text(_spec_text(banks, Path(paths["test"]), free_ports(len(banks) + 1), rounds, seed))
    # the demo owns its directory (data it just generated, a previous demo run): replace the run
    result = simulate(spec_path, out, on_progress=on_progress, force=True)
    features = data.feature_names
    fed = dict(result["test"])
    fed["n_train"] = int(sum(len(f) for f in data.banks.values()))
    summary = {
        "federated": fed,
        "centralized": _reference(list(data.banks.values()), data.test, features),
        "local_only": {name: _reference([frame], data.test, features) for name, frame in data.banks.items()},
        "wall_s": result["wall_s"],
    }
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["comparison"] = {k: summary[k] for k in ("federated", "centralized", "local_only")}
    write_json(metrics_path, metrics)
    return summary
