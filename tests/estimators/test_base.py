"""scikit-learn conventions of the federated classifiers that the shared-data tests did not reach
(found by bug hunting on German credit with its own ``"good"``/``"bad"`` labels):

* ``classes_`` and ``predict`` follow the user's label coding (``positive = "bad"`` keeps
  ``"good"``/``"bad"``; a 1/2 coding keeps 1/2), with ``predict_proba``'s columns in
  ``classes_`` order, so column 1 stays P(default);
* 0/1 labels keep ``[0, 1]``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import fedrisk as fr
from sklearn.base import clone as sklearn_clone
from fedrisk.estimators.base import label_classes
from tests.tasks.test_woe_tasks import german_frame

NUM = ["duration_in_month", "credit_amount", "age_in_years"]


@pytest.fixture(scope="module")
def text_label_banks():
    df = german_frame()[["id", "y", *NUM]]
    df["creditability"] = np.where(df.pop("y") == 1, "bad", "good")
    test, train = df[df.id % 5 == 0].reset_index(drop=True), df[df.id % 5 != 0]
    banks = {f"bank{k + 1}": train[train.id % 3 == k].reset_index(drop=True) for k in range(3)}
    return banks, test


def test_predict_returns_the_users_label_coding(text_label_banks):
    banks, test = text_label_banks
    fed = fr.Federation.horizontal(banks, id="id", label="creditability",
                                   party_options={b: {"positive": "bad"} for b in banks})
    m = fr.LogisticRegression().fit(fed)
    assert list(m.classes_) == ["good", "bad"]
    p = m.predict_proba(test)
    pred = m.predict(test)
    assert set(pred) <= {"good", "bad"}
    # predict_proba's columns follow classes_: the predicted class is the column with the larger probability
    np.testing.assert_array_equal(pred, m.classes_[p.argmax(axis=1)])
    # the same model as on 0/1 labels (1 = bad)
    coded = {b: f.assign(creditability=(f.creditability == "bad").astype(int)) for b, f in banks.items()}
    m01 = fr.LogisticRegression().fit(fr.Federation.horizontal(coded, id="id", label="creditability"))
    assert list(m01.classes_) == [0, 1]
    np.testing.assert_allclose(m01.predict_proba(test), p, atol=1e-9)
    np.testing.assert_array_equal(m01.predict(test), (pred == "bad").astype(int))


def test_label_classes_of_each_coding():
    frame = pd.DataFrame({"id": [1, 2, 3], "y": [0, 1, 0]})
    assert list(label_classes(fr.Federation.horizontal({"b1": frame, "b2": frame}, label="y"))) == [0, 1]
    two = frame.assign(y=[1, 2, 1])
    fed = fr.Federation.horizontal({"b1": two, "b2": two}, label="y",
                                   party_options={"b1": {"positive": 2}, "b2": {"positive": 2}})
    assert list(label_classes(fed)) == [1, 2]
    mapped = frame.assign(y=["ok", "default", "ok"])
    fed = fr.Federation.vertical({"lender": mapped, "payco": frame.drop(columns="y")}, label="y",
                                 party_options={"lender": {"positive": {"ok": 0, "default": 1}}})
    assert list(label_classes(fed)) == ["ok", "default"]
    # banks that code their labels differently: no single user coding, so 0/1
    fed = fr.Federation.horizontal({"b1": two, "b2": mapped}, label="y",
                                   party_options={"b1": {"positive": 2}, "b2": {"positive": "default"}})
    assert list(label_classes(fed)) == [0, 1]


def test_banks_with_the_same_columns_in_another_order_fit_as_aligned(text_label_banks):
    """A notebook's DataFrames match by column name (predict_proba already did): a bank whose frame
    lists the columns in another order was refused at fit ("list the same features in a different order")."""
    banks, test = text_label_banks
    opts = {b: {"positive": "bad"} for b in banks}
    shuffled = dict(banks, bank2=banks["bank2"][list(banks["bank2"].columns[::-1])])
    for est in (fr.LogisticRegression(), fr.SecureBoost(n_trees=3, max_depth=2)):
        a = sklearn_clone(est).fit(fr.Federation.horizontal(banks, id="id", label="creditability", party_options=opts))
        b = sklearn_clone(est).fit(fr.Federation.horizontal(shuffled, id="id", label="creditability", party_options=opts))
        assert list(b.feature_names_in_) == list(a.feature_names_in_)
        np.testing.assert_allclose(b.predict_proba(test), a.predict_proba(test), atol=1e-9)


def test_scoring_text_where_the_model_has_numbers_is_one_clear_error(text_label_banks):
    """A holdout whose amount column came in as text, or a raw array with text in it, raised numpy's bare
    'could not convert string to float' from predict_proba."""
    banks, test = text_label_banks
    m = fr.LogisticRegression().fit(fr.Federation.horizontal(
        banks, id="id", label="creditability", party_options={b: {"positive": "bad"} for b in banks}))
    shown = test.assign(credit_amount=test.credit_amount.map(lambda v: f"{v:,} DM"))
    with pytest.raises(fr.FedriskError, match=r"numeric feature columns \['credit_amount'\] hold text"):
        m.predict_proba(shown)
    with pytest.raises(fr.FedriskError, match="non-numeric values"):
        m.predict(test.assign(credit_amount="n/a")[["duration_in_month", "credit_amount", "age_in_years"]].to_numpy())
    # numbers stored as text still score as the numbers they are
    as_text = test.assign(credit_amount=test.credit_amount.astype(str))
    np.testing.assert_allclose(m.predict_proba(as_text), m.predict_proba(test))


def test_vertical_predict_leaves_unscored_rows_without_a_class():
    """Rows whose id is not at the feature holder get a NaN probability; predict called them goods."""
    df = german_frame()[["id", "y", *NUM]]
    lender, payco = df[["id", "y", "duration_in_month"]], df[["id", "credit_amount", "age_in_years"]]
    fed = fr.Federation.vertical({"lender": lender, "payco": payco}, id="id", label="y")
    m = fr.LogisticRegression().fit(fed)
    new = fr.Federation.vertical({"lender": lender.head(40), "payco": payco.head(40).iloc[5:]}, id="id", label="y")
    p = m.predict_proba(new)[:, 1]
    pred = m.predict(new)
    assert np.isnan(p[:5]).all() and np.isfinite(p[5:]).all()
    assert all(v is None for v in pred[:5])
    np.testing.assert_array_equal(pred[5:].astype(int), (p[5:] >= 0.5).astype(int))


def test_scikit_learn_sees_classifiers_and_scores_them_in_the_users_coding(text_label_banks):
    """is_classifier was False, so scikit-learn's scorers and displays refused the estimators
    ("... should be a classifier"); they now score a horizontal model of 'good'/'bad' labels."""
    from sklearn.base import is_classifier
    from sklearn.metrics import accuracy_score, get_scorer, roc_auc_score

    banks, test = text_label_banks
    assert all(is_classifier(e()) for e in (fr.LogisticRegression, fr.SecureBoost, fr.Scorecard))
    m = fr.Scorecard().fit(fr.Federation.horizontal(banks, id="id", label="creditability",
                                                    party_options={b: {"positive": "bad"} for b in banks}))
    X, y = test.drop(columns=["creditability"]), test.creditability
    p = m.predict_proba(X)[:, 1]
    # scikit-learn's scorers take the positive class as classes_[-1] (the default label here) and
    # 0/1 (or boolean) targets with 1 = default
    assert get_scorer("roc_auc")(m, X, (y == "bad").astype(int)) == pytest.approx(roc_auc_score(y == "bad", p))
    assert m.score(X, y) == pytest.approx(accuracy_score(y, m.predict(X)))
    points, prob = m.points(X)
    np.testing.assert_allclose(prob, p)
    np.testing.assert_array_equal(m.score(X)[0], points)  # score(X) without y: the points, as before
