"""A notebook fit has the report a validator signs, as a CLI run has (``fedrisk report``).

``fr.run(spec).report()`` rendered a CLI run's page, but an estimator fitted in a notebook had none:
the model validation page (discrimination, stability, IV and points tables, the communication
ledger) could not be produced for it. ``est.report()`` renders it from the fit's own run.
"""
from __future__ import annotations

import pytest

import fedrisk as fr
from tests.estimators.levels import declared_levels
from tests.tasks.test_woe_tasks import german_frame


def _sections(html: str) -> set[str]:
    import re

    return set(re.findall(r'<section id="([^"]+)"', html))


def test_a_horizontal_scorecard_fit_has_its_report():
    df = german_frame()
    banks = {"bank1": df[df.id % 2 == 0], "bank2": df[df.id % 2 == 1]}
    card = fr.Scorecard(categories=declared_levels(df)).fit(fr.Federation.horizontal(banks, id="id", label="y"))
    page = card.report().html
    assert {"scorecard", "iv", "ledger"} <= _sections(page), _sections(page)
    assert "Scorecard (horizontal.scorecard)" in page
    # the ledger section counts the messages the fit sent
    assert f"{len(card.ledger_):,}" in page
    assert not any(str(i) in page for i in ("fedrisk-report-",))


def test_a_vertical_scorecard_fit_has_its_report():
    df = german_frame()
    lender = df[["id", "y", "duration_in_month", "purpose"]]
    bureau = df[["id", "age_in_years", "credit_history"]]
    train, _ = fr.Federation.vertical({"lender": lender, "bureau": bureau}, id="id", label="y").split()
    card = fr.Scorecard(max_iter=20).fit(train)
    page = card.report().html
    assert {"iv", "ledger", "discrimination"} <= _sections(page), _sections(page)
    assert "credit_history" in page  # the bureau's IV row (the label holder learns it)


def test_a_loaded_model_has_no_run_to_report(tmp_path):
    df = german_frame()
    banks = {"bank1": df[df.id % 2 == 0], "bank2": df[df.id % 2 == 1]}
    fr.Scorecard(categories=declared_levels(df)).fit(fr.Federation.horizontal(banks, id="id", label="y")).save(tmp_path / "m")
    with pytest.raises(fr.ConfigError, match=r"report\(\): fit it first"):
        fr.load(tmp_path / "m").report()
