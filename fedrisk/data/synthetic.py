"""A small synthetic credit market that shows *why* banks federate.

The story
---------
One market, one true relation between a customer's profile and default, and three lenders that
each see a skewed slice of it — skewed both by *who walks in* (their customer segment) and by
*whom they accept* (their underwriting policy):

* ``bank_a`` — a digital card lender for young people new to credit. No mortgage product, and
  customers with a long history stay at their old bank: nobody in its book has a mortgage or 5+
  years of history. Many defaults (about 23%).
* ``bank_b`` — a private bank for affluent mortgage holders. Its policy declines anyone with a
  recent delinquency or a card above 50% utilisation. Very few defaults (about 2%).
* ``bank_c`` — a small regional bank (600 rows) lending to long-standing relationships only: 3+
  years of history and a clean last year. Older customers, a couple of dozen defaults.

Each bank's data is enough to fit *a* model but not *the* model:

* a feature that matters market-wide is constant inside a bank — bank A never sees a mortgage,
  banks B and C never see a delinquency — so its weight is simply unknown there;
* a feature's range is truncated — bank A sees only the first five years of history, where the
  thin-file penalty makes history look far more valuable than it is over a lifetime, and
  extrapolates that slope to 30-year customers;
* a bank with 20–40 defaults cannot estimate nine weights precisely.

On the market-wide test set — the customers any of them might see next — every single-bank
logistic regression therefore ranks clearly worse than the one trained on the pooled rows of all
three, which comes within about 0.01 AUC of the true model. That gap is what a federated model
recovers without the pool ever existing. Measured with seed 0 (standardised features, sklearn
``LogisticRegression(C=1.0)``): pooled 0.811, bank A 0.783, bank B 0.738, bank C 0.784, true
model 0.814; over seeds 0–11 the smallest pooled-minus-best-bank margin is 0.014, the median
about 0.029.

The signal
----------
Default is drawn from one logistic model, the same at every bank (no concept drift — the banks
differ in *who* their customers are, not in how risk works)::

    logit P(y=1 | x) = TRUE_INTERCEPT + sum_j TRUE_COEF[j] * x_j
                       + TRUE_COEF["thin_file_years"] * max(0, THIN_FILE_YEARS - tenure_years)
                       + e,   e ~ Normal(0, SHOCK_SD)

with ``x_j`` the raw feature values as they appear in the tables (``income_k`` in thousands, rates
in [0, 1], counts as integers). All terms are linear in the columns except one hinge: a file with
under two years of history carries extra risk, as bureau data does. The shock ``e`` stands for
what no table records (job loss, illness) and keeps AUCs at a realistic ~0.8. A logistic
regression on pooled data gets close to :data:`TRUE_COEF` — a useful check for the federated
algorithms — and default rates differ by bank only through their customers' profiles.

Everything is drawn from ``numpy.random.default_rng(seed)``: a seed fixes the data, no files are
read, and the whole federation is about 3,000 training rows so a federated run takes seconds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

__all__ = [
    "DemoData",
    "FEATURES",
    "TRUE_COEF",
    "TRUE_INTERCEPT",
    "THIN_FILE_YEARS",
    "SHOCK_SD",
    "BANK_SIZES",
    "TEST_SIZE",
    "true_logit",
    "make_demo_federation",
    "write_demo_federation",
]

#: feature columns, in table order (after ``id`` and ``y``)
FEATURES: tuple[str, ...] = (
    "utilisation",            # revolving balance / limit, in [0, 1]
    "delinquencies_12m",      # count of 30+ days-past-due events in the last 12 months
    "recent_inquiries",       # hard credit searches in the last 6 months
    "debt_to_income",         # monthly debt service / income, in [0, 1]
    "income_k",               # annual income, thousands (right-skewed)
    "age",                    # years
    "tenure_years",           # years as a customer / length of credit history
    "num_accounts",           # open credit accounts
    "has_mortgage",           # 0/1
)

#: the known signal: change in the log-odds of default per unit of each raw feature, plus the
#: weight of the thin-file hinge ``thin_file_years = max(0, THIN_FILE_YEARS - tenure_years)``
TRUE_COEF: dict[str, float] = {
    "utilisation": 2.0,
    "delinquencies_12m": 1.0,
    "recent_inquiries": 0.2,
    "debt_to_income": 2.0,
    "income_k": -0.006,
    "age": -0.01,
    "tenure_years": -0.06,
    "num_accounts": -0.06,
    "has_mortgage": -1.0,
    "thin_file_years": 0.7,
}

#: history length below which a file counts as thin; ``thin_file_years = max(0, 2 - tenure)``
THIN_FILE_YEARS: float = 2.0

#: intercept of the true logit, tuned so the market default rate is about 9%
TRUE_INTERCEPT: float = -2.5

#: standard deviation of an idiosyncratic log-odds shock (job loss, illness, ...) that no table
#: records; it keeps even the true model's AUC at a realistic ~0.8 instead of near 0.9+
SHOCK_SD: float = 1.0

#: rows per bank; small on purpose — a handful of defaults per bank is the problem being shown
BANK_SIZES: dict[str, int] = {"bank_a": 1000, "bank_b": 1500, "bank_c": 600}

#: rows in the market-wide test set
TEST_SIZE: int = 4000

# columns written as integers (counts, years of age, flags)
_INT_FEATURES = frozenset({"delinquencies_12m", "recent_inquiries", "age", "num_accounts", "has_mortgage"})

# Customer segments: the market is a mixture of them, each bank mostly draws from one.
_SEGMENTS = ("young", "affluent", "regional", "mainstream")
_MARKET_MIX = {"young": 0.15, "affluent": 0.2, "regional": 0.2, "mainstream": 0.45}
_BANK_MIX = {
    "bank_a": {"young": 0.9, "mainstream": 0.1},
    "bank_b": {"affluent": 0.9, "mainstream": 0.1},
    "bank_c": {"regional": 0.9, "mainstream": 0.1},
}
# Each bank's book is what its own underwriting let in; these rules are why a feature that
# matters market-wide can be (nearly) constant inside one bank.
_BANK_POLICY: dict[str, Callable[[dict[str, np.ndarray]], np.ndarray]] = {
    # a digital card lender for people new to credit: no mortgage products, and customers with
    # a long history stay with their old bank, so nobody with a mortgage or 5+ years of history
    "bank_a": lambda c: (c["has_mortgage"] == 0) & (c["tenure_years"] < 5.0),
    # a prime lender: declines anyone with a recent delinquency or a card near its limit
    "bank_b": lambda c: (c["delinquencies_12m"] == 0) & (c["utilisation"] <= 0.5),
    # a cautious regional bank that lends to established relationships only: 3+ years of
    # history and a clean last year
    "bank_c": lambda c: (c["tenure_years"] >= 3.0) & (c["delinquencies_12m"] == 0),
}
# Where each bank's customer ids start, so ids are unique across the whole demo (the test set
# gets its own range): horizontal banks serve different customers.
_ID_BASE = {"bank_a": 100_000, "bank_b": 200_000, "bank_c": 300_000, "test": 900_000}


@dataclass
class DemoData:
    """The demo federation: three banks with the same schema, and a market-wide test set.

    Attributes
    ----------
    banks : dict of str to pandas.DataFrame
        ``bank_a``, ``bank_b``, ``bank_c``; columns ``id``, ``y``, then :attr:`feature_names`.
    test : pandas.DataFrame
        A sample of the whole market (all segments), same columns.
    feature_names : list of str
    true_coef : dict of str to float
        The log-odds weight per raw feature unit that generated ``y``, plus the thin-file hinge
        weight under ``"thin_file_years"`` (see :data:`TRUE_COEF`).
    true_intercept : float
    seed : int
    segments : dict of str to numpy.ndarray
        Per frame (bank name or ``"test"``), the customer segment of each row (``"young"``,
        ``"affluent"``, ``"regional"``, ``"mainstream"``). Not a feature: it is there to explain
        results ("bank A's model misranks mortgage holders"), never to train on.
    """

    banks: dict[str, pd.DataFrame]
    test: pd.DataFrame
    feature_names: list[str]
    true_coef: dict[str, float]
    true_intercept: float = TRUE_INTERCEPT
    seed: int = 0
    segments: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def true_logit(self, frame: pd.DataFrame) -> np.ndarray:
        """The generating log-odds for the rows of ``frame``, without the unrecorded shock.

        Ranking the test set by it gives the best AUC any model of these columns can reach.
        """
        return true_logit(frame, self.true_coef, self.true_intercept)


def true_logit(frame: pd.DataFrame, coef: dict[str, float] | None = None,
               intercept: float = TRUE_INTERCEPT) -> np.ndarray:
    """The known signal per row: ``intercept + sum_j coef[j] * x_j`` (without the shock).

    ``x_j`` is the column ``j`` of ``frame``, except for ``"thin_file_years"``, which is
    ``max(0, THIN_FILE_YEARS - tenure_years)``.
    """
    coef = TRUE_COEF if coef is None else coef
    out = np.full(len(frame), float(intercept))
    for name, w in coef.items():
        if name == "thin_file_years":
            x = np.maximum(THIN_FILE_YEARS - frame["tenure_years"].to_numpy(dtype=np.float64), 0.0)
        else:
            x = frame[name].to_numpy(dtype=np.float64)
        out += w * x
    return out


def _draw_segment(rng: np.random.Generator, segment: str, n: int) -> dict[str, np.ndarray]:
    """Draw ``n`` customer profiles of one segment, with realistic ranges and correlations."""
    if segment == "young":
        age = 19.0 + rng.gamma(2.0, 3.0, n)                       # mostly 19-30
        income = np.exp(rng.normal(np.log(40.0), 0.35, n))         # median 40k
        tenure = np.minimum(rng.exponential(2.5, n), age - 18.0)
        accounts = 1 + rng.poisson(1.0, n)
        mortgage = rng.random(n) < 0.04
        util = rng.beta(2.0, 6.0, n)                                # mean ~0.25
        dti = rng.beta(2.0, 8.0, n)                                 # mean 0.2
        inquiries = rng.poisson(0.9, n)
        delinq_rate = 0.15
    elif segment == "affluent":
        age = np.clip(rng.normal(47.0, 9.0, n), 28.0, 80.0)
        income = np.exp(rng.normal(np.log(110.0), 0.45, n))        # median 110k, long tail
        tenure = (age - 18.0) * rng.beta(4.0, 3.0, n)
        accounts = 3 + rng.poisson(3.5, n)
        mortgage = rng.random(n) < 0.9
        util = rng.beta(1.2, 7.0, n)                                # mean ~0.15
        dti = rng.beta(5.0, 9.0, n)                                 # mortgages: mean 0.36
        inquiries = rng.poisson(0.5, n)
        delinq_rate = 0.06
    elif segment == "regional":
        age = np.clip(rng.normal(54.0, 12.0, n), 21.0, 90.0)
        income = np.exp(rng.normal(np.log(40.0), 0.35, n))
        tenure = (age - 18.0) * rng.beta(5.0, 2.0, n)               # long, loyal relationships
        accounts = 1 + rng.poisson(2.0, n)
        mortgage = rng.random(n) < 0.45
        util = rng.beta(1.5, 5.0, n)
        dti = rng.beta(2.0, 7.0, n)
        inquiries = rng.poisson(0.4, n)
        delinq_rate = 0.08
    elif segment == "mainstream":
        age = np.clip(rng.normal(40.0, 11.0, n), 20.0, 85.0)
        income = np.exp(rng.normal(np.log(55.0), 0.5, n))
        tenure = (age - 18.0) * rng.beta(2.5, 3.0, n)
        accounts = 1 + rng.poisson(3.0, n)
        mortgage = rng.random(n) < 0.5
        util = rng.beta(2.0, 4.0, n)
        dti = rng.beta(3.0, 7.0, n)
        inquiries = rng.poisson(1.0, n)
        delinq_rate = 0.25
    else:  # pragma: no cover - internal table
        raise ValueError(segment)
    # Delinquencies are more frequent for stretched customers: the Poisson rate rises with
    # utilisation, as in real bureau data (the two are correlated, not independent draws).
    delinq = rng.poisson(delinq_rate * (0.4 + 1.6 * util), n)
    age = np.floor(age)
    # history cannot be longer than adult life, also after rounding
    tenure = np.minimum(np.round(tenure, 1), age - 18.0)
    return {
        "utilisation": np.round(util, 3),
        "delinquencies_12m": delinq.astype(np.float64),
        "recent_inquiries": inquiries.astype(np.float64),
        "debt_to_income": np.round(np.clip(dti, 0.0, 1.0), 3),
        "income_k": np.round(income, 1),
        "age": age,
        "tenure_years": tenure,
        "num_accounts": accounts.astype(np.float64),
        "has_mortgage": mortgage.astype(np.float64),
    }


def _draw_accepted(rng: np.random.Generator, segment: str, k: int,
                   policy: Callable[[dict[str, np.ndarray]], np.ndarray] | None
                   ) -> dict[str, np.ndarray]:
    """Draw applicants of one segment until ``k`` pass the bank's acceptance ``policy``."""
    got: list[dict[str, np.ndarray]] = []
    have = 0
    while have < k:
        batch = _draw_segment(rng, segment, max(2 * (k - have), 16))
        if policy is not None:
            keep = policy(batch)
            batch = {f: v[keep] for f, v in batch.items()}
        got.append(batch)
        have += len(batch["age"])
    return {f: np.concatenate([g[f] for g in got])[:k] for f in FEATURES}


def _draw_population(rng: np.random.Generator, mix: dict[str, float], n: int, id_base: int,
                     policy: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None,
                     ) -> tuple[pd.DataFrame, np.ndarray]:
    """Draw ``n`` customers from a segment mixture, label them from the true model, shuffle."""
    names = list(mix)
    probs = np.array([mix[s] for s in names], dtype=np.float64)
    counts = rng.multinomial(n, probs / probs.sum())
    parts: list[dict[str, np.ndarray]] = []
    seg_labels: list[np.ndarray] = []
    for seg, k in zip(names, counts):
        if k:
            parts.append(_draw_accepted(rng, seg, int(k), policy))
            seg_labels.append(np.full(int(k), seg, dtype=object))
    cols = {f: np.concatenate([p[f] for p in parts]) for f in FEATURES}
    X = np.column_stack([cols[f] for f in FEATURES])
    logit = true_logit(pd.DataFrame(cols)) + rng.normal(0.0, SHOCK_SD, n)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    order = rng.permutation(n)
    # Ids: distinct, non-sequential within the bank's range, so row order carries no signal.
    ids = id_base + rng.choice(90_000, size=n, replace=False)
    frame = pd.DataFrame({"id": ids.astype(np.int64), "y": y[order]})
    for j, f in enumerate(FEATURES):
        col = X[order, j]
        frame[f] = col.astype(np.int64) if f in _INT_FEATURES else col
    return frame, np.concatenate(seg_labels)[order]


def make_demo_federation(seed: int = 0) -> DemoData:
    """Generate the three-bank demo federation and its market-wide test set.

    Parameters
    ----------
    seed : int
        Seed for ``numpy.random.default_rng``; the same seed gives identical frames.

    Returns
    -------
    DemoData
        Banks of :data:`BANK_SIZES` rows, a test set of :data:`TEST_SIZE` rows drawn from the
        whole market. With seed 0 a pooled logistic regression beats every bank's own model on
        the test set by at least 0.02 AUC (checked in ``tests/data/test_synthetic.py``).

    Notes
    -----
    The draw order is fixed (bank A, B, C, then the test set, all from one generator), so changing
    any bank's size changes every later frame; treat :data:`BANK_SIZES` as part of the seed.
    """
    rng = np.random.default_rng(seed)
    banks: dict[str, pd.DataFrame] = {}
    segments: dict[str, np.ndarray] = {}
    for bank, n in BANK_SIZES.items():
        banks[bank], segments[bank] = _draw_population(rng, _BANK_MIX[bank], n, _ID_BASE[bank],
                                                         _BANK_POLICY[bank])
    test, segments["test"] = _draw_population(rng, _MARKET_MIX, TEST_SIZE, _ID_BASE["test"])
    return DemoData(banks=banks, test=test, feature_names=list(FEATURES), true_coef=dict(TRUE_COEF),
                    true_intercept=TRUE_INTERCEPT, seed=seed, segments=segments)


def write_demo_federation(data: DemoData, out_dir: str | Path) -> dict[str, Path]:
    """Write each bank's table and the test set as CSV files in ``out_dir``.

    Returns
    -------
    dict of str to Path
        ``{"bank_a": .../bank_a.csv, ..., "test": .../test.csv}`` — the paths a job spec points at.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, frame in {**data.banks, "test": data.test}.items():
        path = out / f"{name}.csv"
        frame.to_csv(path, index=False)
        paths[name] = path
    return paths
