"""Category columns of a vertical WOE or scorecard job, declared as a user of vertical jobs would.

Each party of a vertical job holds different columns (found on data no test had used):

* ``[task] categorical = [...]`` naming a code column only the lender holds was refused by the
  bureau ("task.categorical names [...], which are not feature columns of" its file), so no
  vertical WOE/scorecard job could force any column categorical;
* a party's own ``categorical = [...]`` (how vertical LR and SecureBoost take them, and how a
  notebook's ``Federation(party_options=...)`` declares them) was refused for these tasks with a
  message that contradicted itself ("takes numeric features only ... bin text columns themselves").

Both now bin the named columns as categories at the party holding them; a party's own list still
must name its own columns (one line naming the party).
"""
from __future__ import annotations

import pytest

import fedrisk as fr
from tests.tasks.test_woe_tasks import german_frame

CODE = "installment_rate_in_percentage_of_disposable_income"  # integer codes 1-4


@pytest.fixture(scope="module")
def german():
    df = german_frame()
    lender = df[["id", "y", "duration_in_month", "purpose", CODE]]
    bureau = df[["id", "age_in_years", "credit_history", "number_of_existing_credits_at_this_bank"]]
    return lender, bureau.sample(frac=1, random_state=4).reset_index(drop=True)


def _kinds(woe: fr.WoeBinning) -> dict[str, str]:
    return {f: d.get("kind") for k, doc in woe.files_.items() if k.startswith("woe/") for f, d in doc["features"].items()}


def test_task_categorical_names_one_partys_column(german):
    lender, bureau = german
    fed = fr.Federation.vertical({"lender": lender, "bureau": bureau}, id="id", label="y")
    woe = fr.WoeBinning(categorical=[CODE], reveal="woe").fit(fed.split()[0])
    kinds = _kinds(woe)
    assert kinds[CODE] == "categorical" and kinds["duration_in_month"] == "numeric"
    plain = _kinds(fr.WoeBinning().fit(fed.split()[0]))
    assert plain[CODE] == "numeric"  # the declaration is what made it categorical


def test_a_partys_own_categorical_list_is_honoured_by_woe_and_scorecard(german):
    lender, bureau = german
    code = "number_of_existing_credits_at_this_bank"
    fed = fr.Federation.vertical({"lender": lender, "bureau": bureau}, id="id", label="y",
                                 party_options={"bureau": {"categorical": [code]}, "lender": {"categorical": ["purpose"]}})
    train, test = fed.split()
    assert _kinds(fr.WoeBinning(reveal="woe").fit(train))[code] == "categorical"
    card = fr.Scorecard(max_iter=5).fit(train)
    assert set(card.table_.party) == {"lender", "bureau"}
    p = card.predict_proba(test)[:, 1]  # the same federation (its declarations included) scores
    assert p.shape == (len(test.parties["lender"]),)


def test_a_partys_own_list_must_name_its_columns(german):
    lender, bureau = german
    fed = fr.Federation.vertical({"lender": lender, "bureau": bureau}, id="id", label="y",
                                 party_options={"bureau": {"categorical": ["purpose"]}})
    with pytest.raises(fr.DataError, match=r"party 'bureau'.*its categorical = \[\.\.\.\] names \['purpose'\]") as e:
        fr.WoeBinning().fit(fed)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("make", [lambda: fr.WoeBinning(categorical=["no_such_column"]),
                                  lambda: fr.Scorecard(categorical=["no_such_column"], max_iter=3)],
                         ids=["woe", "scorecard"])
def test_a_task_categorical_name_no_party_holds_is_refused(german, make):
    """Each party skips the names it does not hold, so a misspelt name was ignored by every party."""
    lender, bureau = german
    fed = fr.Federation.vertical({"lender": lender, "bureau": bureau}, id="id", label="y")
    with pytest.raises(fr.DataError, match=r"categorical=? names \['no_such_column'\], which no party holds") as e:
        make().fit(fed)
    assert "\n" not in str(e.value) and "task." not in str(e.value)  # the estimator's keyword, not a spec line
