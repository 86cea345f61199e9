"""The ``holders`` part of ``benchmarks/run.py scale``: vertical jobs as feature holders are added.

``python benchmarks/run.py scale --only holders [--holders 1,2,3,4] [--kinds secureboost,lr]
[--trees 10] --out FILE.json``

The default-credit vertical split (30,000 customers; the lender holds the label and 13 columns,
the payment company 10) is re-cut so that the payment company's 10 columns are shared out among
``h`` feature holders (``np.array_split`` in column order: 10 / 5+5 / 4+3+3 / 3+3+2+2 / 2 each):
the same rows and the same 23 features in total, only spread over more parties. Each holder's
file lists the customers in its own shuffled order, so PSI aligns every holder for real. For each
``h`` and kind ``fedrisk simulate`` runs the job (``h + 1`` party processes, gRPC + mTLS on
loopback, PSI first, ``test_rule = "id % 5 == 0"``):

* ``secureboost``: the example job's settings (OU 2048-bit, depth 3, 32 bins) with ``--trees``
  trees (default 10 to keep the part to a few minutes);
* ``lr``: vertical logistic regression with ``solver = "auto"`` (the other settings of the
  example job); the solver that actually ran is reported from the job's metrics (``exact`` or
  ``surrogate``), since ``auto`` picks by the number of holders.

Reported per run: ``simulate_wall_s`` (whole job: process start, PSI, training, scoring),
``train_wall_s`` (SecureBoost: the label holder's training phase; LR, which reports no such
figure: the span of the label holder's training progress lines, i.e. iterations 2..N),
``cpu_s_per_party`` (each process's CPU over the whole job, its worker processes included,
sampled from the process counters) and their sum, ``bytes_sent`` per party (the ledgers),
test AUC, and per kind the ratios to the one-holder run of the same invocation. Timings on a
shared machine are inflated by other load: compare ratios and CPU-seconds.
"""
from __future__ import annotations

import argparse
import tempfile
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.measure import PartyCpuSampler, bytes_by_party, require_shared_data, simulate_measured

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = {"secureboost": REPO / "examples" / "vertical_secureboost_default_credit.toml",
            "lr": REPO / "examples" / "vertical_lr_default_credit.toml"}
GUEST, HOST = "default_credit_hetero_guest.csv", "default_credit_hetero_host.csv"


def split_holders(data: Path, holders: int, out_dir: Path, seed: int = 0) -> dict[str, Path]:
    """Write the lender's file and ``holders`` feature-holder files sharing the host's columns out.

    Returns ``{party name: path}``; the lender is ``lender``, the holders ``holder1..holderH``.
    """
    host = pd.read_csv(data / HOST)
    cols = [c for c in host.columns if c != "id"]
    if not 1 <= holders <= len(cols):
        raise SystemExit(f"error: --holders {holders}: the feature holder file has {len(cols)} columns to share out")
    rng = np.random.default_rng(seed)
    files = {"lender": data / GUEST}
    for k, part in enumerate(np.array_split(np.array(cols), holders), start=1):
        f = out_dir / f"holder{k}.csv"
        host.iloc[rng.permutation(len(host))][["id", *part]].to_csv(f, index=False)
        files[f"holder{k}"] = f
    return files


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


def write_spec(tmp: Path, files: dict[str, Path], task: dict) -> Path:
    """A job spec over ``files`` (the lender first) with ``task``, on free loopback ports."""
    from fedrisk.runtime.demo import free_ports

    ports = free_ports(len(files))
    lines = ['[federation]', f'name = "scale-holders-{len(files) - 1}"', "seed = 0", ""]
    for (name, path), port in zip(files.items(), ports):
        lines += [f"[parties.{name}]", f'address = "127.0.0.1:{port}"', f"data = {_toml_value(str(path))}", 'id = "id"']
        if name == "lender":
            lines.append('label = "y"')
        lines.append("")
    lines += ["[task]", *(f"{k} = {_toml_value(v)}" for k, v in task.items()), "",
              "[evaluation]", 'test_rule = "id % 5 == 0"', ""]
    path = tmp / "job.toml"
    path.write_text("\n".join(lines))
    return path


def task_for(kind: str, trees: int | None) -> dict:
    """The example job's task table, adjusted: SecureBoost with ``trees``; LR with ``solver = "auto"``."""
    task = dict(tomllib.loads(EXAMPLES[kind].read_text())["task"])
    if kind == "secureboost" and trees:
        task["n_trees"] = trees
    if kind == "lr":
        task["solver"] = "auto"
    return task


def measure(data: Path, kind: str, holders: int, trees: int | None) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"fedrisk-holders-{kind}-{holders}-") as tmp:
        files = split_holders(data, holders, Path(tmp))
        widths = [int(pd.read_csv(f, nrows=0).shape[1] - 1) for p, f in files.items() if p != "lender"]
        with PartyCpuSampler() as cpu:
            run = simulate_measured(write_spec(Path(tmp), files, task_for(kind, trees)))
    m = run["metrics"]
    timing = m.get("timing", {})
    per_party = {p: round(cpu.total(p), 2) for p in files}
    out = {
        "holders": holders, "kind": kind,
        "features_per_holder": widths,
        "simulate_wall_s": round(run["wall_s"], 2),
        "train_wall_s": round(float(timing["train_s"]), 2) if "train_s" in timing else _progress_span(run["run_files"]),
        "cpu_s_per_party": per_party, "cpu_s_total": round(sum(per_party.values()), 2),
        "bytes_sent": bytes_by_party(run["ledger"]),
        "test_auc": round(float(m["test"]["auc"]), 4),
    }
    out["bytes_total"] = sum(out["bytes_sent"].values())
    if kind == "lr":
        out["solver"] = m.get("solver")
        out["iterations"] = m.get("iterations")
    else:
        out["trees"] = m.get("trees_built")
    return out


def _progress_span(run_files: dict[str, str]) -> float | None:
    """Seconds between the label holder's first and last training progress lines (LR reports no train_s)."""
    import json

    text = run_files.get("progress/lender.jsonl", "")
    stamps = [json.loads(line)["time"] for line in text.splitlines() if line.strip() and '"train"' in line]
    return round(stamps[-1] - stamps[0], 2) if len(stamps) > 1 else None


def run(args: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="benchmarks/run.py scale --only holders")
    ap.add_argument("--holders", default="1,2,3,4", help="feature holders per job, comma-separated (up to 10; 5 on request)")
    ap.add_argument("--kinds", default="secureboost,lr", help="secureboost, lr or both")
    ap.add_argument("--trees", type=int, default=10, help="SecureBoost trees per job")
    a, _ = ap.parse_known_args(args)
    data = require_shared_data(GUEST, HOST)
    counts = sorted(int(h) for h in a.holders.split(","))
    kinds = [k for k in a.kinds.split(",") if k]
    if set(kinds) - set(EXAMPLES):
        raise SystemExit(f"error: --kinds {a.kinds!r}: choose among {', '.join(EXAMPLES)}")
    out: dict = {"runs": {k: [] for k in kinds}, "ratios": {}}
    for kind in kinds:
        for h in counts:
            print(f"scale/holders: {kind} with {h} feature holder(s) ...", flush=True)
            try:
                r = measure(data, kind, h, a.trees)
            except (Exception, SystemExit) as e:  # noqa: BLE001 - report it, measure the other sizes
                out.setdefault("errors", {})[f"{kind}.{h}"] = f"{type(e).__name__}: {e}"[:500]
                print(f"  failed: {out['errors'][f'{kind}.{h}']}", flush=True)
                continue
            out["runs"][kind].append(r)
            print(f"  {r['simulate_wall_s']} s wall, {r['cpu_s_total']} CPU-s, AUC {r['test_auc']}"
                  + (f", solver {r['solver']}" if kind == "lr" else ""), flush=True)
        done = out["runs"][kind]
        base = done[0] if done else None
        for r in done[1:]:
            key = f"{kind}_{r['holders']}_vs_{base['holders']}"
            for m in ("simulate_wall_s", "train_wall_s", "cpu_s_total", "bytes_total"):
                if base[m] and r[m] is not None:
                    out["ratios"][f"{key}.{m}"] = round(r[m] / base[m], 3)
    out["setup"] = (f"default-credit vertical split, the feature holder's 10 columns shared out among the holders; "
                    f"SecureBoost {a.trees} trees (the example's other settings), vertical LR solver auto; "
                    "one process per party, gRPC + mTLS on loopback, PSI included")
    return out
