"""Rows to score that a modeller brings: the outcome column need not be two-class, a batch may be empty.

* A vertical model scored the test half of a split through the label holder's label column: a test batch
  holding only goods (a small or recent sample) was refused ("label column never holds positive = 'bad'"),
  though scoring reads no label (``fedrisk predict`` scored the same rows).
* ``explain`` on an empty batch raised numpy's "cannot reshape array of size 0"; it returns no rows with
  the same columns, as ``predict_proba`` returns shape (0, 2).
"""
from __future__ import annotations

import numpy as np
import pytest
import pandas as pd

import fedrisk as fr
from tests.tasks.test_woe_tasks import german_frame
from tests.estimators.levels import banks_with_a_text_column


def test_a_test_batch_of_goods_only_is_scored_like_any_other():
    df = german_frame().assign(y=lambda d: np.where(d.y == 1, "bad", "good"))
    lender, bureau = df[["id", "y", "duration_in_month", "purpose"]], df[["id", "age_in_years", "credit_history"]]
    train, test = fr.Federation.vertical({"lender": lender, "bureau": bureau}, id="id", label="y",
                                         positive="bad").split()
    lr = fr.LogisticRegression().fit(train)
    every = lr.predict_proba(test)[:, 1]
    goods = test.parties["lender"].y == "good"
    batch = test._with({"lender": test.parties["lender"][goods].reset_index(drop=True), "bureau": test.parties["bureau"]})
    np.testing.assert_allclose(lr.predict_proba(batch)[:, 1], every[goods.to_numpy()], atol=1e-4)


def test_explain_of_an_empty_batch_has_the_columns_and_no_rows(shared_data):
    banks = {f"bank{i}": pd.read_csv(shared_data / f"default_credit_homo_{n}.csv", nrows=300)
             for i, n in enumerate(["guest", "host_1"], 1)}
    fed = fr.Federation.horizontal(banks, id="id", label="y")
    for est in (fr.LogisticRegression(), fr.SecureBoost(n_trees=2)):
        table = est.fit(fed).explain(banks["bank1"].head(0))
        assert len(table) == 0 and list(table.columns[:2]) == ["score", "reason_1"]


@pytest.fixture(scope="module")
def default_banks(shared_data):
    return {f"bank{i}": pd.read_csv(shared_data / f"default_credit_homo_{n}.csv", nrows=300)
            for i, n in enumerate(["guest", "host_1"], 1)}


def test_horizontal_scorecard_explain_of_an_empty_batch_has_the_columns_and_no_rows(default_banks):
    card = fr.Scorecard(n_reasons=2).fit(fr.Federation.horizontal(default_banks, id="id", label="y"))
    table = card.explain(default_banks["bank1"].head(0))
    assert len(table) == 0 and list(table.columns) == ["points", "probability", "reason_1", "reason_2",
                                                       "points_lost_1", "points_lost_2"]
    assert card.points(default_banks["bank1"].head(0))[0].shape == (0,)


def test_a_column_twice_is_one_line_for_scorecards_and_text_column_models(default_banks):
    """The check ran only for numeric horizontal models; pandas' errors reached a scorecard's and a
    one-hot model's user ('The truth value of a Series is ambiguous', 'Cannot construct a Series')."""
    card = fr.Scorecard().fit(fr.Federation.horizontal(default_banks, id="id", label="y"))
    X = default_banks["bank2"].head(20)
    col = card.features_[0]  # a column the card kept (selection by IV)
    twice = pd.concat([X, X[[col]]], axis=1)
    for call, who in ((card.explain, "Scorecard.explain"), (card.points, "Scorecard.points"),
                      (card.predict_proba, "Scorecard.predict_proba")):
        with pytest.raises(fr.DataError, match=rf"{who}: the data has the model's feature columns \['{col}'\] more than once"):
            call(twice)
    df = german_frame()
    banks = {"a": df.iloc[::2][["id", "y", "duration_in_month", "purpose"]],
             "b": df.iloc[1::2][["id", "y", "duration_in_month", "purpose"]]}
    lr = fr.LogisticRegression(categories={"purpose": sorted(df.purpose.unique())}).fit(
        fr.Federation.horizontal(banks, id="id", label="y"))
    rows = df[["duration_in_month", "purpose"]].head(5)
    with pytest.raises(fr.DataError, match=r"LogisticRegression.explain: the data has the model's feature columns "
                                           r"\['purpose'\] more than once"):
        lr.explain(pd.concat([rows, rows[["purpose"]]], axis=1))


def test_explain_errors_name_explain(default_banks):
    fed = fr.Federation.horizontal(default_banks, id="id", label="y")
    X = default_banks["bank1"].head(5)
    with pytest.raises(fr.DataError, match=r"^LogisticRegression\.explain: .*blank \(NaN\)"):
        fr.LogisticRegression().fit(fed).explain(X.assign(x1=np.nan))
    with pytest.raises(fr.DataError, match=r"^SecureBoost\.explain: expected"):
        fr.SecureBoost(n_trees=2).fit(fed).explain(np.zeros((2, 3)))


def test_vertical_explain_keeps_the_label_holders_index():
    df = german_frame()
    lender = df[["id", "y", "duration_in_month", "purpose"]].set_index(df.id.map("C-{:05d}".format))
    bureau = df[["id", "age_in_years", "credit_history"]]
    fed = fr.Federation.vertical({"lender": lender, "bureau": bureau}, id="id", label="y")
    card = fr.Scorecard(max_iter=5).fit(fed.split()[0])
    table = card.explain(fed)
    assert table.index.equals(fed.parties["lender"].index) and table.index[0] == "C-00000"
    np.testing.assert_allclose(table["points"].to_numpy(float), card.points(fed)[0])


def test_vertical_woe_fit_transform_needs_reveal_woe_before_fitting():
    df = german_frame()
    fed = fr.Federation.vertical({"lender": df[["id", "y", "duration_in_month"]], "bureau": df[["id", "age_in_years"]]},
                                 id="id", label="y")
    woe = fr.WoeBinning()
    with pytest.raises(fr.ConfigError, match=r"reveal='woe'") as e:
        woe.fit_transform(fed)
    assert "\n" not in str(e.value) and not hasattr(woe, "files_"), "refused before any federated work"
    out = fr.WoeBinning(reveal="woe").fit_transform(fed)
    assert set(out) == {"lender", "bureau"}


def test_rows_with_categories_the_model_never_saw_are_counted_in_a_warning(caplog, tmp_path):
    """``fedrisk predict`` warns when rows hold categories the model never saw ("NORTH" where training
    had "north"): they are scored as the '(other)' / reference level. A notebook's ``predict_proba`` of
    a horizontal LR, tree model or scorecard scored them silently (here every row: scores moved by up
    to 0.07 with no word). The warning counts rows per column and shows no value."""
    import logging

    banks = banks_with_a_text_column(5, {"bank1": 200, "bank2": 150}, "region", ["north", "south", "east"], "south", -0.5)
    cats = {"region": ["north", "south", "east"]}
    fed = fr.Federation.horizontal(banks, secure_aggregation=False)
    new = banks["bank1"].head(40).assign(region=lambda d: d.region.str.upper())
    new.loc[:9, "region"] = "south"  # ten rows the model knows
    for est in (fr.LogisticRegression(categories=cats), fr.SecureBoost(n_trees=2, max_depth=2, categories=cats),
                fr.Scorecard(categories=cats)):
        est.fit(fed)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            est.predict_proba(new)
        notes = [r.getMessage() for r in caplog.records if "never seen" in r.getMessage()]
        assert len(notes) == 1, (type(est).__name__, [r.getMessage() for r in caplog.records])
        assert "'region' (30 of 40 rows)" in notes[0] and "NORTH" not in notes[0], notes[0]
        assert notes[0].startswith(f"{type(est).__name__}.predict_proba: "), notes[0]  # (not "party 'predict'")
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            est.explain(new)
        notes = [r.getMessage() for r in caplog.records if "never seen" in r.getMessage()]
        assert len(notes) == 1 and notes[0].startswith(f"{type(est).__name__}.explain: "), notes
        # `fedrisk predict` of the same model file on the same rows says it too (it did for scorecards only)
        from fedrisk.runtime.predict import predict_file

        folder = tmp_path / type(est).__name__
        est.save(folder)
        new.to_csv(tmp_path / "new.csv", index=False)
        model = next(folder.glob("*.json"), None) if not (folder / "model.json").is_file() else folder / "model.json"
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            predict_file(model, tmp_path / "new.csv", tmp_path / "scores.csv")
        notes = [r.getMessage() for r in caplog.records if "never seen" in r.getMessage()]
        assert len(notes) == 1 and "(30 of 40 rows)" in notes[0], (type(est).__name__, notes)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            est.predict_proba(banks["bank2"])
        assert not [r for r in caplog.records if "never seen" in r.getMessage()], type(est).__name__
