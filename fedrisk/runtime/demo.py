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
    lines += ["[task]", 'kind = "horizontal.lr"', f"rounds = {rounds}", "l2 = 0.0001", "", "[evaluation]", f'test = "{test.as_posix()}"',
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


def _pooled_stability(out: Path, data) -> dict[str, Any] | None:
    """PSI of the federated model's score: all banks' training rows (pooled) vs the market-wide test set.

    The evaluation holder alone sees only its own segment, so its train-vs-test PSI compares one
    bank's customers with the whole market (PSI ~2, "shift", though nothing drifted). The demo
    generated every bank's rows, so it can score the like-for-like population: the federation's
    training rows against the test set drawn from the same market. A real federation cannot pool;
    there the report names the samples and warns (see ``stability_labels``).
    """
    import pandas as pd

    from fedrisk.finance.metrics import population_stability_index
    from fedrisk.model_files import load_model, score_lr

    path = out / "model.json"
    if not path.is_file():
        return None
    model = load_model(path)
    feats = list(model["features"])
    pooled = pd.concat(list(data.banks.values()), ignore_index=True)
    p_tr = score_lr(model, pooled[feats].to_numpy(float))
    p_te = score_lr(model, data.test[feats].to_numpy(float))
    stab = population_stability_index(p_tr, p_te)
    stab.update(expected_label="all banks' train", actual_label="market test",
                expected=f"all {len(data.banks)} banks' training rows ({len(pooled):,}), pooled by the demo that generated them",
                actual=f"the market-wide test set ({len(data.test):,})")
    return stab


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
    result = simulate(spec_path, out, on_progress=on_progress)
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
    stab = _pooled_stability(out, data)
    if stab is not None:
        # keep the holder-only figure under its own name: it compares bank_a's segment with the market
        metrics["stability_holder_only"] = metrics.get("stability")
        metrics["stability"] = stab
        summary["stability"] = stab
    write_json(metrics_path, metrics)
    return summary
