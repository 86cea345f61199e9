"""Text columns in ``horizontal.woe`` / ``horizontal.scorecard``: no category value leaves a bank.

* attack (reproduced before the fix): a bank whose file has a near-unique text column (an e-mail
  address per customer) runs an honest WOE or scorecard job; every value used to cross to the
  coordinator in the schema step (``hwoe.schema``) and the union back to every bank (``hwoe.plan``).
  Now such a column without a declared vocabulary stops the job with one line *before anything is
  sent*, and with a vocabulary only the declared names (public, from the spec) and secure sums cross;
* levels are agreed as in ``horizontal.lr``/``gbdt`` (:mod:`fedrisk.algorithms.horizontal.category_levels`):
  declared categories under ``min_category_count`` rows federation-wide and undeclared values go to
  ``"(other)"``; the federated IV equals the pooled IV with the same bins;
* the Python API (``fr.WoeBinning(categories=...)``, ``fr.Scorecard(categories=...)``) runs the same.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fedrisk.errors import DataError
from fedrisk.runtime.spec import load_spec
from fedrisk.finance.binning import FeatureBins
from fedrisk.finance.woe import WoeEncoder
from tests.tasks.test_horizontal_categorical import MIN_COUNT, _strings, run_captured, toml_categories, vocabulary
from tests.tasks.test_woe_tasks import horizontal_spec, split_german


NUMERIC = ["duration_in_month", "credit_amount", "age_in_years", "installment_rate_in_percentage_of_disposable_income"]


def _with_emails(tmp, parts, keep_text: bool = False):
    """Every bank's file gains an ``email`` column, unique per customer (rewritten in place)."""
    out = {}
    for b, df in parts.items():
        if not keep_text:
            df = df[["id", "y", *NUMERIC]]
        df = df.assign(email=[f"customer{i}@example.org" for i in df["id"]])
        df.to_csv(tmp / ("test.csv" if b == "test" else f"{b}.csv"), index=False)
        out[b] = df
    return out


def _run_keeping_network(spec_path, out):
    """``run_captured``, returning the network and the error the run raised (if any)."""
    keep: list = []
    try:
        run_captured(spec_path, out, keep)
    except DataError as exc:
        return keep[0], exc
    return keep[0], None


def _everything_received(net, names) -> set[str]:
    return set().union(*(_strings(e.body) for who in names for e in net[who].captured))


@pytest.mark.parametrize("kind", ["horizontal.woe", "horizontal.scorecard"])
def test_a_near_unique_text_column_without_vocabulary_never_crosses(tmp_path, kind):
    sc = kind == "horizontal.scorecard"
    parts = _with_emails(tmp_path, split_german(tmp_path, banks=3, test=sc))
    emails = set().union(*(set(df["email"]) for df in parts.values()))
    spec = horizontal_spec(tmp_path, kind, test=sc, task_extra="rounds = 20\n" if sc else "")
    net, err = _run_keeping_network(spec, tmp_path / "run")
    leaked = _everything_received(net, load_spec(spec).participants()) & emails
    assert not leaked, f"{len(leaked)} of {len(emails)} e-mail addresses crossed, e.g. {sorted(leaked)[:2]}"
    assert err is not None
    msg = str(err)
    assert "\n" not in msg and "email" in msg and "[task] categories" in msg and "categories=" in msg


def test_with_a_vocabulary_only_declared_names_and_sums_cross(tmp_path):
    parts = _with_emails(tmp_path, split_german(tmp_path, banks=3), keep_text=True)
    vocab = vocabulary(parts)
    declared = sorted(parts["bank1"]["email"])[:3] + ["nobody@example.org"]
    vocab["email"] = declared
    spec = horizontal_spec(tmp_path, "horizontal.woe", task_extra=toml_categories(vocab))
    net = run_captured(spec, tmp_path / "run")
    names = load_spec(spec).participants()
    emails = set().union(*(set(df["email"]) for df in parts.values()))
    assert not (_everything_received(net, names) & (emails - set(declared)))
    # what the banks sent the coordinator carries no category at all (declared or not): names, kinds, masked sums
    labels = {v for cats in vocab.values() for v in cats} | emails
    from_banks = [e for e in net["coordinator"].captured if e.sender != "coordinator"]
    assert from_banks and not set().union(*(_strings(e.body) for e in from_banks)) & labels
    # the category counts arrive masked (secure aggregation), one vector per bank
    masked = [e for e in from_banks if e.tag.startswith("hwoe.cat.") and e.tag.endswith(".sa.masked")]
    assert sorted(e.sender for e in masked) == ["bank1", "bank2", "bank3"]
    assert all(isinstance(e.body, np.ndarray) and e.body.dtype == np.uint64 for e in masked)
    # federated IV = pooled IV with the federation's bins; the e-mail column is one "(other)" bin, IV 0
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    doc = json.loads((tmp_path / "run" / "woe" / "bank1.json").read_text())
    bins = {f: FeatureBins.from_dict(d["bins"]) for f, d in doc["features"].items()}
    pooled = pd.concat(parts.values()).reset_index(drop=True)
    enc = WoeEncoder().fit_bins(pooled.drop(columns=["id", "y"]), pooled["y"].to_numpy(), bins)
    for r in m["iv"]["federation"]:
        assert r["iv"] == pytest.approx(enc.iv_[r["feature"]], abs=1e-9), r["feature"]
    assert bins["email"].n_bins == 1 and "(other)" in bins["email"].groups[0]
    assert {r["feature"]: r["iv"] for r in m["iv"]["federation"]}["email"] == 0.0
    # a purpose level under min_category_count rows federation-wide is in "(other)", with undeclared values
    counts = pooled["purpose"].value_counts()
    rare = [c for c in vocab["purpose"] if counts.get(c, 0) < MIN_COUNT]
    assert rare and all(any(c in g and "(other)" in g for g in bins["purpose"].groups) for c in rare)
    assert bins["purpose"].assign(pd.Series(["a purpose nobody declared"]))[0] != bins["purpose"].n_bins
