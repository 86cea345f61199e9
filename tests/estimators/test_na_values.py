"""``Federation.vertical/horizontal(..., na_values=[...])``: placeholders in a party's DataFrame ("?" where a number
belongs) are missing values in the job, as ``na_values`` in each party's spec table; without it the job is refused
in one line naming the setting and how to give it in Python."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import fedrisk as fr
from fedrisk.errors import DataError
from fedrisk.estimators.engine import run_task


def _parties(n: int = 300) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(n, 3))
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ [1.0, -0.8, 0.6] - 1)))).astype(int)
    amount = [f"{v:.2f}" for v in 1000 + 300 * X[:, 1]]
    for i in range(0, n, 37):
        amount[i] = "?"
    lender = pd.DataFrame({"id": np.arange(n), "y": y, "a": X[:, 0], "amount": amount})
    payco = pd.DataFrame({"id": np.arange(n), "c": X[:, 2]})
    return {"lender": lender, "payco": payco}


def test_placeholders_in_a_dataframe_are_missing_values_once_declared():
    with pytest.raises(DataError) as info:
        run_task(fr.Federation.vertical(_parties(), id="id", label="y", missing="mean"), "vertical.lr", {"max_iter": 5})
    msg = str(info.value)
    assert "'amount'" in msg and 'na_values = ["?"]' in msg and "party_options={'lender': {'na_values'" in msg, msg
    fed = fr.Federation.vertical(_parties(), id="id", label="y", missing="mean", na_values=["?"])
    run = run_task(fed, "vertical.lr", {"max_iter": 5})
    model = run.files["model.json"]
    assert "amount" in model["features"] and model["imputation"]["amount"] > 0
    # the same through party_options
    fed2 = fr.Federation.vertical(_parties(), id="id", label="y", missing="mean",
                                  party_options={"lender": {"na_values": ["?"]}})
    assert run_task(fed2, "vertical.lr", {"max_iter": 5}).files["model.json"]["features"] == model["features"]


def _bank(n: int, seed: int) -> pd.DataFrame:
    r = np.random.default_rng(seed)
    a = r.normal(size=n)
    amt = r.normal(size=n)
    y = (a - amt + r.normal(size=n) > 0.5).astype(int)
    return pd.DataFrame({"id": [f"{seed}-{i}" for i in range(n)], "y": y, "a": a,
                         "amt": ["?" if i % 9 == 0 else f"{v:.3f}" for i, v in enumerate(amt)]})


@pytest.mark.parametrize("make", [lambda: fr.LogisticRegression(), lambda: fr.SecureBoost(n_trees=3, max_depth=2)],
                         ids=["lr", "gbdt"])
def test_a_horizontal_model_scores_rows_with_the_placeholders_it_was_fitted_with(tmp_path, make):
    """Fitted with na_values=["?"], a horizontal model scores holdout rows holding "?" as it scores the same rows
    with those cells empty (it refused them: "hold text in this data ... convert them to numbers"); so do the model
    reloaded with ``fr.load`` from its saved folder and ``fedrisk predict`` on that folder (the spec copy's
    na_values), and ``--na-values`` for a model file alone."""
    from fedrisk.runtime.predict import predict_file

    fed = fr.Federation.horizontal({"b1": _bank(300, 1), "b2": _bank(300, 2)}, id="id", label="y", na_values=["?"],
                                   seed=1, missing="mean")
    model = make().fit(fed)
    hold = _bank(60, 9)
    blank = hold.assign(amt=pd.to_numeric(hold["amt"], errors="coerce"))
    want = model.predict_proba(blank[["a", "amt"]])[:, 1]
    np.testing.assert_allclose(model.predict_proba(hold[["a", "amt"]])[:, 1], want)
    model.save(tmp_path / "saved")
    np.testing.assert_allclose(fr.load(tmp_path / "saved").predict_proba(hold[["a", "amt"]])[:, 1], want)
    hold.drop(columns="y").to_csv(tmp_path / "new.csv", index=False)
    assert predict_file(tmp_path / "saved" / "model.json", tmp_path / "new.csv", tmp_path / "out.csv") == 60
    np.testing.assert_allclose(pd.read_csv(tmp_path / "out.csv")["score"], want, rtol=1e-6)
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "model.json").write_text((tmp_path / "saved" / "model.json").read_text())
    with pytest.raises(DataError, match="--na-values '\\?'"):
        predict_file(alone / "model.json", tmp_path / "new.csv", alone / "out.csv")
    assert predict_file(alone / "model.json", tmp_path / "new.csv", alone / "out.csv", na_values=["?"]) == 60


def test_a_horizontal_scorecard_scores_rows_with_the_placeholders_it_was_fitted_with():
    """The scorecard bins raw columns: "?" in a numeric column was refused at scoring ("numeric in the model but
    holds non-numeric values"); fitted with na_values=["?"], those cells score as the missing bin, as blanks do."""
    fed = fr.Federation.horizontal({"b1": _bank(400, 1), "b2": _bank(400, 2)}, id="id", label="y", na_values=["?"],
                                   seed=1)
    card = fr.Scorecard().fit(fed)
    hold = _bank(60, 9)
    blank = hold.assign(amt=pd.to_numeric(hold["amt"], errors="coerce"))
    np.testing.assert_allclose(card.predict_proba(hold[["a", "amt"]])[:, 1],
                               card.predict_proba(blank[["a", "amt"]])[:, 1])


def test_a_vertical_model_scores_a_federation_with_the_placeholders_it_was_fitted_with():
    """A split model scored in the notebook reads each party's "?" cells as its fit did, as a horizontal model
    does; the scoring Federation need not repeat ``na_values`` (it was refused with "check the file's schema")."""
    train = _parties(300)
    card = fr.LogisticRegression(max_iter=20).fit(
        fr.Federation.vertical(train, id="id", label="y", missing="mean", na_values=["?"]))
    assert card.party_na_values_ == {"lender": ["?"], "payco": ["?"]}
    given = fr.Federation.vertical(train, id="id", label="y", missing="mean", na_values=["?"])
    bare = fr.Federation.vertical(train, id="id", label="y", missing="mean")
    np.testing.assert_array_equal(card.predict_proba(bare), card.predict_proba(given))
    assert bare.party_options == {}  # the caller's Federation is left as it was
