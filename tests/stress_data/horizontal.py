"""Hard horizontal federations built from the shared default-credit homo files.

Every case starts from the 24,000 pooled training rows of ``default_credit_homo_{guest,host_1,host_2}``
and the 6,000 rows of ``default_credit_homo_test`` and makes them look like real balances and real
banks (issue 10's test matrix):

* heavy-tailed amounts: ``x11, x12, x13, x17, x18`` replaced by ``exp(1.5 x)`` (train and test),
  as raw balances are;
* non-IID banks: rows sorted by one feature and cut into terciles, the banks then sampling
  8000 / 2400 / 480 rows of their tercile (skewed sizes, skewed populations);
* ``pareto_outliers``: 0.2 % of the training amounts moved 50-200 standard deviations out
  (Pareto-distributed distance);
* ``rare_bad``: defaults downsampled to a 2 % bad rate at every bank (and in the test file);
* ``collinear_constant_small``: a column that is an exact affine copy of another (``x23 = 2 x4 + 1``),
  a column constant at one bank, and a bank with only 60 rows.

``acceptance`` is the public stress case of ``../shared/acceptance/check.py exact-lr`` (banks by
``x0`` tercile at 100 % / 30 % / 6 %). Nothing is copied into the repository; cases are built at
test time (tests take the ``shared_data`` fixture, which skips cleanly when the files are absent).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["HEAVY", "CASES", "HorizontalCase", "load_homo", "make_case", "write_case"]

HEAVY = ["x11", "x12", "x13", "x17", "x18"]
CASES = ("heavy_noniid", "pareto_outliers", "rare_bad", "collinear_constant_small", "acceptance")
SIZES = (8000, 2400, 480)


@dataclass
class HorizontalCase:
    """One federation: banks' frames (``id, y, features...``), a held-out test frame, the feature list."""

    name: str
    banks: dict[str, pd.DataFrame]
    test: pd.DataFrame
    features: list[str]

    def arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {b: (f[self.features].to_numpy(float), f["y"].to_numpy(float)) for b, f in self.banks.items()}

    def pooled(self) -> tuple[np.ndarray, np.ndarray]:
        df = pd.concat(self.banks.values(), ignore_index=True)
        return df[self.features].to_numpy(float), df["y"].to_numpy(float)


def load_homo(data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pooled homo training rows and the homo test rows, heavy-tailed amounts applied to both."""
    data_dir = Path(data_dir)
    train = pd.concat([pd.read_csv(data_dir / f"default_credit_homo_{n}.csv") for n in ("guest", "host_1", "host_2")],
                      ignore_index=True)
    test = pd.read_csv(data_dir / "default_credit_homo_test.csv")
    for d in (train, test):
        for c in HEAVY:
            d[c] = np.exp(1.5 * d[c])
    return train, test


def _by_quantile(train: pd.DataFrame, feature: str, sizes, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """Sort by ``feature``, cut in terciles, bank k samples ``sizes[k]`` rows of tercile k."""
    order = train.sort_values([feature, "id"], kind="mergesort").reset_index(drop=True)
    cuts = np.array_split(np.arange(len(order)), len(sizes))
    banks = {}
    for k, (idx, size) in enumerate(zip(cuts, sizes), 1):
        take = np.sort(rng.choice(idx, size=min(size, len(idx)), replace=False))
        banks[f"bank{k}"] = order.iloc[take].reset_index(drop=True)
    return banks


def _downsample_bads(df: pd.DataFrame, rate: float, rng: np.random.Generator) -> pd.DataFrame:
    bad = np.flatnonzero(df["y"].to_numpy() == 1)
    good = np.flatnonzero(df["y"].to_numpy() == 0)
    keep = max(1, int(round(rate * len(good) / (1 - rate))))
    chosen = np.sort(np.concatenate([good, rng.choice(bad, size=min(keep, len(bad)), replace=False)]))
    return df.iloc[chosen].reset_index(drop=True)


def make_case(name: str, data_dir: Path, seed: int = 0) -> HorizontalCase:
    """Build case ``name`` (one of :data:`CASES`) from the shared files; deterministic in ``seed``."""
    if name not in CASES:
        raise ValueError(f"unknown horizontal stress case {name!r}; choose one of {CASES}")
    rng = np.random.default_rng(seed)
    train, test = load_homo(data_dir)
    feats = [c for c in test.columns if c not in ("id", "y")]
    if name == "heavy_noniid":
        banks = _by_quantile(train, "x0", SIZES, rng)
    elif name == "pareto_outliers":
        train = train.copy()
        for c in HEAVY[:3]:
            v = train[c].to_numpy(dtype=float, copy=True)
            rows = rng.choice(len(v), size=max(1, len(v) // 500), replace=False)
            k = np.clip(50.0 * (1.0 + rng.pareto(1.5, size=rows.size)), 50.0, 200.0)
            v[rows] = v.mean() + k * v.std()
            train[c] = v
        banks = _by_quantile(train, "x4", SIZES, rng)
    elif name == "rare_bad":
        banks = {b: _downsample_bads(f, 0.02, rng) for b, f in _by_quantile(train, "x1", SIZES, rng).items()}
        test = _downsample_bads(test, 0.02, rng)
    elif name == "collinear_constant_small":
        for d in (train, test):
            d["x23"] = 2.0 * d["x4"] + 1.0
        feats = feats + ["x23"]
        banks = _by_quantile(train, "x5", (SIZES[0], SIZES[1], 60), rng)
        banks["bank2"]["x1"] = float(banks["bank2"]["x1"].iloc[0])
    else:  # acceptance: the public check's construction
        order = train.sort_values("x0").reset_index(drop=True)
        cut = np.array_split(np.arange(len(order)), 3)
        banks = {"bank1": order.iloc[cut[0]], "bank2": order.iloc[cut[1]].sample(frac=0.3, random_state=1),
                 "bank3": order.iloc[cut[2]].sample(frac=0.06, random_state=2)}
        banks = {b: f.reset_index(drop=True) for b, f in banks.items()}
    banks = {b: f[["id", "y", *feats]] for b, f in banks.items()}
    return HorizontalCase(name, banks, test[["id", "y", *feats]].reset_index(drop=True), feats)


def write_case(case: HorizontalCase, folder: Path) -> dict[str, Path]:
    """Write the banks and the test file as CSVs into ``folder`` (a tmp dir); returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for b, f in {**case.banks, "test": case.test}.items():
        paths[b] = folder / f"{b}.csv"
        f.to_csv(paths[b], index=False)
    return paths
