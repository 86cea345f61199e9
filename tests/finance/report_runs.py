"""Real run directories of every task kind, for the report screenshots (tests/finance/test_report_screenshots.py).

Each task runs through ``fedrisk simulate`` (real party processes over mTLS on loopback) on small
slices of the shared data sets, so the report under test is exactly what a user gets. Also
runnable by hand to regenerate the screenshots::

    PYTHONPATH=$PWD python -m tests.finance.report_runs OUT_DIR [KIND ...]
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from fedrisk.runtime.demo import free_ports

from tests.e2e_helpers import lender_payco_spec

FEDRISK = [sys.executable, "-m", "fedrisk"]
KINDS = ["demo", "vertical.lr", "vertical.secureboost", "vertical.woe", "vertical.scorecard", "horizontal.woe",
         "horizontal.scorecard", "horizontal.gbdt"]


def cli(*args, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FEDRISK, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def _vertical_data(root: Path, data: Path, n: int) -> None:
    g = pd.read_csv(data / "default_credit_hetero_guest.csv")
    h = pd.read_csv(data / "default_credit_hetero_host.csv")
    g[g.id < n].to_csv(root / "lender.csv", index=False)
    h[h.id < n].sample(frac=1.0, random_state=0).to_csv(root / "payco.csv", index=False)


def _german_banks(root: Path, data: Path) -> str:
    """The banks' files; returns the ``categories = {...}`` line declaring their text columns' categories."""
    df = pd.read_csv(data / "germancredit.csv")
    df.insert(0, "id", np.arange(len(df)))
    df["y"] = (df.pop("creditability") == "bad").astype(int)
    df[df.id % 5 == 0].to_csv(root / "test.csv", index=False)
    rest = df[df.id % 5 != 0]
    for k in range(3):
        rest[rest.id % 3 == k].to_csv(root / f"bank{k + 1}.csv", index=False)
    from tests.tasks.test_woe_tasks import categories_toml

    return categories_toml({"all": rest})


def _homo_banks(root: Path, data: Path, n: int) -> None:
    for k, name in enumerate(["default_credit_homo_guest", "default_credit_homo_host_1", "default_credit_homo_host_2"]):
        pd.read_csv(data / f"{name}.csv").head(n).to_csv(root / f"bank{k + 1}.csv", index=False)
    pd.read_csv(data / "default_credit_homo_test.csv").head(2 * n).to_csv(root / "test.csv", index=False)


def vertical_spec(root: Path, kind: str, task: str) -> Path:
    task = f'kind = "{kind}"\n' + textwrap.dedent(task)
    return lender_payco_spec(root / "job.toml", f"shots-{kind.replace('.', '-')}", task,
                             '[evaluation]\ntest_rule = "id % 5 == 0"', seed=0)


def horizontal_spec(root: Path, kind: str, task: str, test: bool = True) -> Path:
    ports = free_ports(4)
    parts = "".join(f'[parties.bank{k + 1}]\naddress = "127.0.0.1:{ports[k + 1]}"\ndata = "bank{k + 1}.csv"\n'
                    f'id = "id"\nlabel = "y"\n' for k in range(3))
    spec = root / "job.toml"
    spec.write_text(f'[federation]\nname = "shots-{kind.replace(".", "-")}"\nseed = 0\n'
                    f'[coordinator]\naddress = "127.0.0.1:{ports[0]}"\n' + parts
                    + f'[task]\nkind = "{kind}"\n' + textwrap.dedent(task) + "\n"
                    + ('[evaluation]\ntest = "test.csv"\n' if test else "")
                    + "[security]\nsecure_aggregation = true\n")
    return spec


def build(kind: str, root: Path, data: Path) -> Path:
    """Run one task kind into ``root / <kind>`` and return its run directory (the report's viewer's)."""
    work = root / kind
    work.mkdir(parents=True, exist_ok=True)
    out = work / "run"
    if kind == "demo":
        r = cli("demo", "--out", out, "--rounds", "8")
    elif kind.startswith("vertical."):
        _vertical_data(work, data, 2500)
        task = {"vertical.lr": "max_iter = 15\n",
                "vertical.secureboost": "n_trees = 4\nmax_depth = 3\nmax_bin = 16\n",
                "vertical.woe": "max_bins = 5\n",
                "vertical.scorecard": "max_bins = 5\n"}[kind]
        r = cli("simulate", vertical_spec(work, kind, task), "--out", out)
    elif kind in ("horizontal.woe", "horizontal.scorecard"):
        cats = _german_banks(work, data)
        r = cli("simulate", horizontal_spec(work, kind, "max_bins = 5\n" + cats, test=kind.endswith("scorecard")),
                "--out", out)
    elif kind == "horizontal.gbdt":
        _homo_banks(work, data, 1500)
        r = cli("simulate", horizontal_spec(work, kind, "n_trees = 6\nmax_depth = 3\n"), "--out", out)
    else:
        raise ValueError(kind)
    if r.returncode != 0:
        raise RuntimeError(f"{kind}: fedrisk exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return out


if __name__ == "__main__":
    import time

    dest = Path(sys.argv[1])
    shared = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    for k in sys.argv[2:] or KINDS:
        t = time.time()
        build(k, dest, shared)
        print(k, f"{time.time() - t:.0f}s", flush=True)
