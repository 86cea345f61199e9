"""Larger vertical data sets grown from the shared default-credit split, for the scale benchmark.

``grow_default_credit(train_rows, out_dir)`` writes a label holder file and a feature holder file
with about ``train_rows / 0.8`` customers (the ``id % 5 == 0`` test rule keeps a fifth for
testing): copy 0 is the original 30,000 rows; every further copy gets fresh ids (``id + k * M``
with ``M`` a multiple of 5 above the largest id, so ``id % 5`` and hence the test split are
kept) and its continuous columns jittered by 5 % of their standard deviation (discrete columns,
such as the PAY_x status codes, are kept as they are, so every copy keeps the data's character
and the model's quality stays meaningful). The feature holder's rows are shuffled, so PSI has real
alignment work. Files go to ``out_dir`` (a temporary directory), never into the repository.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

#: columns with more distinct values than this are treated as continuous and jittered
_CONTINUOUS_AT = 50
_JITTER = 0.05
TEST_SHARE = 0.2


def grow_default_credit(data: Path, train_rows: int, out_dir: Path, seed: int = 0) -> dict:
    """Write ``guest.csv`` / ``host.csv`` under ``out_dir``; return their paths and row counts."""
    g = pd.read_csv(data / "default_credit_hetero_guest.csv")
    h = pd.read_csv(data / "default_credit_hetero_host.csv")
    if not g.id.equals(h.id):
        h = h.set_index("id").loc[g.id].reset_index()
    total = int(round(train_rows / (1 - TEST_SHARE)))
    copies = -(-total // len(g))
    step = (int(g.id.max()) // 5 + 1) * 5
    rng = np.random.default_rng(seed)
    gs, hs = [], []
    for k in range(copies):
        gk, hk = g.copy(), h.copy()
        if k:
            for df in (gk, hk):
                df["id"] = df["id"] + k * step
                for c in df.columns:
                    if c in ("id", "y"):
                        continue
                    col = df[c].to_numpy(dtype=float)
                    if len(np.unique(col[~np.isnan(col)])) > _CONTINUOUS_AT:
                        df[c] = col + rng.normal(0.0, _JITTER * np.nanstd(col), len(col))
        gs.append(gk)
        hs.append(hk)
    G = pd.concat(gs, ignore_index=True)
    H = pd.concat(hs, ignore_index=True)
    if total < len(G):
        keep = np.sort(rng.choice(len(G), size=total, replace=False))
        G, H = G.iloc[keep], H.iloc[keep]
    H = H.iloc[rng.permutation(len(H))]
    out_dir.mkdir(parents=True, exist_ok=True)
    gp, hp = out_dir / "guest.csv", out_dir / "host.csv"
    G.to_csv(gp, index=False)
    H.to_csv(hp, index=False)
    n_test = int((G.id % 5 == 0).sum())
    return {"guest": gp, "host": hp, "rows": len(G), "train_rows": len(G) - n_test, "test_rows": n_test}
