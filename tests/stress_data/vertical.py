"""Hard vertical splits of the shared default-credit hetero files, for federated-vs-pooled tests.

Every case is built at test time from ``default_credit_hetero_{guest,host}.csv`` (joined on ``id``;
test rows ``id % 5 == 0``). The label holder keeps the guest columns and ``y``; the feature holder
gets the host columns, transformed per case:

``heavy_tailed``
    five host columns replaced by ``exp(1.5 x)`` (as raw balances are), and Pareto outliers at 50 to
    200 standard deviations in 1 % of the rows of a sixth column: the feature holder's partial
    score then has a heavy tail, which is what stresses the Chebyshev range ``B``.
``rare_bad``
    defaults downsampled to a 2 % bad rate (non-defaults kept), heavy-tailed host columns as above.
``collinear``
    two host columns nearly collinear (``x0`` and ``x0 + 1e-3 * noise``) plus one host column that is
    a linear mix of two others: an ill-conditioned Hessian.

Besides the cases, :func:`credit_parties` cuts the plain default-credit split over a lender and
several feature holders (the headline federation: lender + payment company + bureau), and
:func:`standardised` turns such frames into the matrices each party trains on.

``load(case, data_dir, rows=...)`` returns a :class:`VerticalCase` with both parties' columns already
standardised on the training rows (what ``vertical.lr`` does at each party), so tests can compare the
federated fit with scikit-learn on exactly the same matrices. ``write_csvs`` writes the two party
files (raw, unstandardised) for end-to-end runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["CASES", "VerticalCase", "load", "frames", "write_csvs", "credit_parties", "standardised"]

CASES = ("heavy_tailed", "rare_bad", "collinear")
HEAVY = ("x4", "x5", "x6", "x7", "x8")
OUTLIER = "x9"


@dataclass
class VerticalCase:
    """One case: standardised label-holder and feature-holder matrices over the same aligned rows."""

    name: str
    XG: np.ndarray
    XH: np.ndarray
    y: np.ndarray
    test: np.ndarray

    @property
    def train(self) -> np.ndarray:
        return ~self.test


def frames(case: str, data_dir: Path, rows: int | None = None, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(label holder frame with ``id``, ``y``; feature holder frame with ``id``), raw values."""
    if case not in CASES:
        raise ValueError(f"unknown vertical stress case {case!r}; one of {CASES}")
    rng = np.random.default_rng(seed)
    g = pd.read_csv(Path(data_dir) / "default_credit_hetero_guest.csv")
    h = pd.read_csv(Path(data_dir) / "default_credit_hetero_host.csv")
    h = h.set_index("id").loc[g.id].reset_index()
    if case == "rare_bad":
        bad = np.flatnonzero(g.y.to_numpy() == 1)
        good = np.flatnonzero(g.y.to_numpy() == 0)
        keep_bad = rng.choice(bad, size=int(round(0.02 / 0.98 * len(good))), replace=False)
        keep = np.sort(np.r_[good, keep_bad])
        g, h = g.iloc[keep].reset_index(drop=True), h.iloc[keep].reset_index(drop=True)
    if rows is not None and rows < len(g):
        pick = np.sort(rng.choice(len(g), size=rows, replace=False))
        g, h = g.iloc[pick].reset_index(drop=True), h.iloc[pick].reset_index(drop=True)
    h = h.copy()
    if case in ("heavy_tailed", "rare_bad"):
        for c in HEAVY:
            h[c] = np.exp(1.5 * h[c])
        out = rng.random(len(h)) < 0.01
        sd = h[OUTLIER].std()
        h.loc[out, OUTLIER] = h[OUTLIER].mean() + sd * (50.0 + 150.0 * rng.random(out.sum())) * \
            rng.choice([-1.0, 1.0], size=out.sum())
    else:  # collinear
        h["x1"] = h["x0"] + 1e-3 * rng.normal(size=len(h))
        h["x2"] = 0.6 * h["x3"] - 0.8 * h["x4"] + 1e-3 * rng.normal(size=len(h))
    return g, h


def load(case: str, data_dir: Path, rows: int | None = None, seed: int = 0) -> VerticalCase:
    """The case as standardised matrices (statistics from the training rows, ``id % 5 != 0``)."""
    g, h = frames(case, data_dir, rows, seed)
    test = (g.id.to_numpy() % 5) == 0
    XG = g.drop(columns=["id", "y"]).to_numpy(dtype=np.float64)
    XH = h.drop(columns=["id"]).to_numpy(dtype=np.float64)

    def std(A: np.ndarray) -> np.ndarray:
        mu, sd = A[~test].mean(axis=0), A[~test].std(axis=0)
        return (A - mu) / sd

    return VerticalCase(case, std(XG), std(XH), g.y.to_numpy(dtype=np.int8), test)


def write_csvs(case: str, data_dir: Path, out: Path, rows: int | None = None, seed: int = 0) -> tuple[Path, Path]:
    """Write ``lender.csv`` (id, y, guest columns) and ``payco.csv`` (id, host columns) for the case."""
    g, h = frames(case, data_dir, rows, seed)
    out.mkdir(parents=True, exist_ok=True)
    pg, ph = out / "lender.csv", out / "payco.csv"
    g.to_csv(pg, index=False)
    h.sample(frac=1.0, random_state=seed).to_csv(ph, index=False)  # partner files are in another order
    return pg, ph


HOLDERS = ("payco", "bureau", "telco")


def credit_parties(data_dir: Path, rows: int | None = None, holders: int = 2, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Default credit as ``lender`` (``id``, ``y``, the guest columns) and ``holders`` feature holders
    (``id`` plus a contiguous group of the host columns), raw values, rows in the same order."""
    g = pd.read_csv(Path(data_dir) / "default_credit_hetero_guest.csv")
    h = pd.read_csv(Path(data_dir) / "default_credit_hetero_host.csv").set_index("id").loc[g.id].reset_index()
    if rows is not None and rows < len(g):
        pick = np.sort(np.random.default_rng(seed).choice(len(g), size=rows, replace=False))
        g, h = g.iloc[pick].reset_index(drop=True), h.iloc[pick].reset_index(drop=True)
    cols = np.array_split(np.array([c for c in h.columns if c != "id"]), holders)
    return {"lender": g, **{n: h[["id", *c]] for n, c in zip(HOLDERS, cols)}}


def standardised(parties: dict[str, pd.DataFrame]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """(standardised feature matrix per party, labels, test mask ``id % 5 == 0``) for frames in the
    same row order, statistics from the training rows (what ``vertical.lr`` does at each party)."""
    g = parties["lender"]
    test = (g.id.to_numpy() % 5) == 0
    out = {}
    for p, df in parties.items():
        A = df.drop(columns=[c for c in ("id", "y") if c in df.columns]).to_numpy(dtype=np.float64)
        out[p] = (A - A[~test].mean(axis=0)) / A[~test].std(axis=0)
    return out, g.y.to_numpy(dtype=np.int8), test
