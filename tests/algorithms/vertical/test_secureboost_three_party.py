"""SecureBoost with a label holder and two feature holders, one of which owns few or no splits.

Regression: scoring (training's test rows and ``fedrisk predict``) used to ask every feature holder
a question in every round, empty ones included, so a feature holder that owns no split in a tree
(or fewer splits than the walk has rounds) saw more rounds than it has split nodes and refused with
"asked more scoring rounds than this party has split nodes". Now the label holder asks a feature
holder only about rounds with its own nodes, and each feature holder's bound still holds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedrisk.algorithms.vertical.secureboost import SecureBoostParams
from fedrisk.finance.metrics import auc
from tests.algorithms.vertical.test_secureboost import FAST, pooled_reference, train

GERMAN = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "germancredit.csv"
#: the label holder's strong columns, a partner with medium ones, a partner with weak ones
COLUMNS = [["status_of_existing_checking_account", "duration_in_month", "credit_history", "credit_amount"],
           ["age_in_years", "savings_account_and_bonds"],
           ["number_of_people_being_liable_to_provide_maintenance_for", "telephone", "present_residence_since"]]


def german_parts() -> tuple[list[np.ndarray], np.ndarray]:
    df = pd.read_csv(GERMAN)
    y = (df["creditability"] == "bad").to_numpy(dtype=float)
    parts = []
    for cols in COLUMNS:
        enc = {c: (df[c] if pd.api.types.is_numeric_dtype(df[c]) else pd.factorize(df[c], sort=True)[0]) for c in cols}
        parts.append(pd.DataFrame(enc).to_numpy(dtype=np.float64))
    return parts, y


def _owned_per_tree(model) -> list[int]:
    return [len(t["nodes"]) for t in model.trees]


@pytest.mark.skipif(not GERMAN.is_file(), reason=f"shared data not found at {GERMAN}")
def test_weak_feature_holder_without_splits_in_some_tree_scores():
    parts, y = german_parts()
    params = SecureBoostParams(**{**FAST, "n_trees": 3, "max_depth": 3})
    res, net = train(parts, y, params, names=COLUMNS, capture=True)
    est, p = res["lh"]
    h1, h2 = res["h1"].model_, res["h2"].model_
    owned = {"h1": _owned_per_tree(h1), "h2": _owned_per_tree(h2)}
    # the case of the bug: a feature holder owns no split in some tree, or fewer splits than the
    # walk needs rounds for the other one
    assert any(0 in v for v in owned.values()), owned
    # scoring went through and equals the training margins and the pooled plaintext reference
    assert np.allclose(p, 1 / (1 + np.exp(-est.train_margin_)))
    assert np.max(np.abs(p - pooled_reference(parts, y, params))) < 1e-6
    assert auc(y, p) > 0.7
    # each feature holder was asked only about its own nodes, never an empty round, and at most one
    # round per own split node (its refusal bound)
    for h, model in (("h1", h1), ("h2", h2)):
        qs = [e for e in net[h].captured if e.tag.startswith("sbi.t.q")]
        asked = [e for e in qs if not e.body.get("done")]
        assert qs[-1].body.get("done") and len(qs) == len(asked) + 1
        assert all(len(e.body["nodes"]) for e in asked), f"{h} got an empty scoring question"
        assert len(asked) <= sum(owned[h])
        own = {(t, int(nd["id"])) for t, tree in enumerate(model.trees) for nd in tree["nodes"]}
        got = {tuple(k) for e in asked for k in np.asarray(e.body["nodes"]).reshape(-1, 2).tolist()}
        assert got <= own
