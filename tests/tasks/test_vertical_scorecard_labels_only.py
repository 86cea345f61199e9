"""A lender that brings only the default flag, every feature at the bureau: vertical.woe and
vertical.scorecard used to refuse it at load ("no feature columns left"), although the label holder needs
no feature of its own for either (vertical.lr and vertical.secureboost already accept it). Now the IV is
the pooled IV on the released bins, the scorecard's coefficients are the pooled WOE logistic regression,
and the lender's scoring rows may hold ids only."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fedrisk.finance.binning import FeatureBins
from fedrisk.finance.woe import WoeEncoder
from fedrisk.runtime.demo import free_ports
from fedrisk.runtime.spec import load_spec
from tests.tasks.test_woe_tasks import german_frame, run_in_process


def _spec(tmp, kind: str, task: str = "") -> tuple:
    df = german_frame()
    cols = [c for c in df.columns if c not in ("id", "y")][:10]
    ports = free_ports(2)
    df[["id", "y"]].sample(frac=1, random_state=0).to_csv(tmp / "lender.csv", index=False)
    df[["id", *cols]].sample(frac=1, random_state=1).to_csv(tmp / "bureau.csv", index=False)
    spec = tmp / "job.toml"
    spec.write_text(f'[federation]\nname = "labels-only-{kind.replace(".", "-")}"\n'
                    f'[parties.lender]\naddress = "127.0.0.1:{ports[0]}"\ndata = "lender.csv"\nlabel = "y"\n'
                    f'[parties.bureau]\naddress = "127.0.0.1:{ports[1]}"\ndata = "bureau.csv"\n'
                    f'[task]\nkind = "{kind}"\n{task}\n[evaluation]\ntest_rule = "id % 5 == 0"\n')
    return spec, df, cols


def test_vertical_woe_with_a_labels_only_lender_equals_pooled_iv(tmp_path):
    spec, df, cols = _spec(tmp_path, "vertical.woe", 'reveal = "bins"\nkey_bits = 2048')
    m = run_in_process(spec, tmp_path / "run")
    train = df[df.id % 5 != 0].reset_index(drop=True)
    assert m["iv"]["lender"] == [] and {r["feature"] for r in m["iv"]["bureau"]} == set(cols)
    doc = json.loads((tmp_path / "run" / "woe" / "bureau.json").read_text())
    for r in m["iv"]["bureau"]:
        b = FeatureBins.from_dict(doc["features"][r["feature"]]["bins"])
        ref = WoeEncoder().fit_bins(train[[r["feature"]]], train.y, {r["feature"]: b})
        assert r["iv"] == pytest.approx(ref.iv_[r["feature"]], abs=1e-9)


def test_vertical_scorecard_with_a_labels_only_lender_is_the_pooled_woe_lr(tmp_path):
    from sklearn.linear_model import LogisticRegression

    from fedrisk.tasks.vertical_scorecard import load_table

    spec, df, _ = _spec(tmp_path, "vertical.scorecard", "l2 = 0.001")
    out = tmp_path / "run"
    run_in_process(spec, out)
    train = df[df.id % 5 != 0].reset_index(drop=True)
    lender = json.loads((out / "scorecard-lender.json").read_text())
    card = json.loads((out / "scorecard-bureau.json").read_text())
    assert lender["features"] == [] and card["features"]
    W = np.column_stack([np.asarray(card["woe"][f])[FeatureBins.from_dict(card["bins"][f]).assign(train[f])]
                         for f in card["features"]])
    sk = LogisticRegression(C=1.0 / (0.001 * len(train)), tol=1e-12, max_iter=20000).fit(W, train.y)
    assert np.abs(np.array([card["coef"][f] for f in card["features"]]) - sk.coef_[0]).max() < 1e-3
    assert abs(lender["intercept"] - sk.intercept_[0]) < 1e-3
    # scoring: the lender's new rows are ids only
    (tmp_path / "new.csv").write_text("id\n" + "\n".join(str(i) for i in df.id[:5]) + "\n")
    rows = load_table(load_spec(spec), "lender", path=tmp_path / "new.csv", features=[])
    assert rows.X.shape == (5, 0) and list(rows.ids) == [str(i) for i in df.id[:5]]
