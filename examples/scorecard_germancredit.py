"""German credit scorecard, single party: binning -> WOE/IV -> selection -> logistic regression -> points.

Usage::

    python examples/scorecard_germancredit.py [--data ../shared/data/germancredit.csv] [--report RUN_DIR]

Rows whose index % 5 == 0 are the test set (the project's split rule); the rest train.
With ``--report`` it also writes ``RUN_DIR/metrics.json``, ``RUN_DIR/scores/*.csv`` and
``RUN_DIR/report.html``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from fedrisk.finance.metrics import evaluate, population_stability_index
from fedrisk.finance.report import write_report
from fedrisk.finance.scorecard import Scorecard
from fedrisk.finance.woe import WoeEncoder, select_features

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "germancredit.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--report", type=Path, default=None, help="write a run directory with report.html here")
    args = ap.parse_args()

    df = pd.read_csv(args.data)
    y = (df.pop("creditability") == "bad").astype(int).to_numpy()
    test = np.arange(len(df)) % 5 == 0
    X_tr, X_te, y_tr, y_te = df[~test], df[test], y[~test], y[test]

    enc = WoeEncoder(method="monotonic", max_bins=6).fit(X_tr, y_tr)
    W_tr = enc.transform(X_tr)
    sel = select_features(enc.iv_, W_tr, iv_threshold=0.02, max_corr=0.7, party="lender")
    feats = sel["selected"]

    print("Information value (train, monotonic bins)")
    print(f"  {'feature':<58} {'IV':>7}  {'bins':>4}  strength")
    for r in enc.iv_table():
        mark = "" if r["feature"] in feats else "   (dropped)"
        print(f"  {r['feature']:<58} {r['iv']:>7.4f}  {r['n_bins']:>4}  {r['strength']}{mark}")

    lr = LogisticRegression(C=1.0, max_iter=1000).fit(W_tr[feats], y_tr)
    card = Scorecard.from_logistic(enc, lr, feats, base_score=600, base_odds=50, pdo=20)
    print()
    print(card.summary())

    s_te = card.score(X_te)
    p_te = card.probability(s_te)
    p_tr = card.probability(card.score(X_tr))
    m_te, m_tr = evaluate(y_te, p_te), evaluate(y_tr, p_tr)
    print(f"\nTest: AUC {m_te['auc']:.3f}  KS {m_te['ks']:.3f}  Gini {m_te['gini']:.3f}  (n={m_te['n']})")
    print(f"Score range on test: {s_te.min():.0f} .. {s_te.max():.0f}")
    print("\nFirst three test applicants: score and top reasons")
    for (idx, _), sc, reasons in zip(X_te.head(3).iterrows(), s_te[:3], card.reason_codes(X_te.head(3))):
        why = "; ".join(f"{r['feature']} = {r['label']} (-{r['points_lost']:.0f})" for r in reasons)
        print(f"  row {idx}: {sc:.0f} points — {why}")

    if args.report:
        run = args.report
        (run / "scores").mkdir(parents=True, exist_ok=True)
        for name, ids, yy, pp in (("train", X_tr.index, y_tr, p_tr), ("test", X_te.index, y_te, p_te)):
            pd.DataFrame({"id": ids, "y": yy, "score": pp}).to_csv(run / "scores" / f"{name}.csv", index=False)
        metrics = {
            "task": "finance.scorecard", "job": "germancredit-scorecard", "test": m_te, "train": m_tr,
            "rounds": [], "stability": population_stability_index(p_tr, p_te),
            "iv": {"lender": [{"feature": r["feature"], "iv": r["iv"], "bins": r["n_bins"],
                               "selected": r["feature"] in feats} for r in enc.iv_table()]},
        }
        (run / "metrics.json").write_text(json.dumps(metrics, indent=1))
        print(f"\nreport: {write_report(run)}")


if __name__ == "__main__":
    main()
