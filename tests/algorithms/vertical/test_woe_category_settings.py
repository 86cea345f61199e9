"""``min_category_count`` and ``category_pvalue`` in vertical WOE: settings of the job, as in single-party
:class:`~fedrisk.finance.woe.WoeEncoder` and the horizontal tasks (the vertical tasks used to take the
defaults only).

Both are applied by the label holder to the pooled prebins' counts, for a feature holder's column and for
its own alike. The pooled reference is ``WoeEncoder`` with the same settings on the same rows: equal
groups and IV whenever ``min_category_count`` is at least the release rule's ``need`` (50 rows here): a
feature holder pools every category under ``need`` rows before anything is summed, whatever the setting.
"""
from __future__ import annotations

import numpy as np
import pytest

from fedrisk.algorithms.vertical.woe import vertical_woe_feature_holder, vertical_woe_label_holder
from fedrisk.crypto.additive import generate_keypair
from fedrisk.errors import ConfigError
from fedrisk.finance.woe import WoeEncoder
from fedrisk.runtime.threads import run_roles
from fedrisk.tasks.vertical_woe import Params, local_woe


def _frame(german):
    rng = np.random.default_rng(4)
    X = german[["purpose", "credit_history"]].reset_index(drop=True).copy()
    X["branch"] = [f"BR{k:02d}" for k in rng.integers(0, 10, len(X))]  # 10 levels of ~100 rows, no signal
    return X, (german["creditability"] == "bad").astype(int).to_numpy()


def _groups(fb):
    return sorted(sorted(c for c in g if c != "(other)") for g in fb.groups)


def _both_copies(X, y, params: Params, key):
    """(partner's bins and IVs, label holder's own bins and IVs) under ``params``."""
    out = run_roles({
        "lender": lambda ch: vertical_woe_label_holder(ch, ["payco"], y, key=key, reveal="bins", config=params.binning()),
        "payco": lambda ch: vertical_woe_feature_holder(ch, "lender", X, min_key_bits=1024, config=params.binning()),
    })
    own, _ = local_woe(params, X, y, "lender")
    return ({f: (_groups(out["payco"].bins[f]), out["lender"].iv["payco"][f]) for f in X},
            {f: (_groups(own.woe_[f].bins), own.iv_[f]) for f in X})


@pytest.mark.parametrize("settings", [{"min_category_count": 60, "category_pvalue": 0.01},
                                      {"min_category_count": 60, "category_pvalue": 1.0},
                                      {"min_category_count": 150, "category_pvalue": 0.01}],
                         ids=["count60", "gate-off", "count150"])
def test_the_settings_reach_both_copies_and_match_single_party(german, settings):
    X, y = _frame(german)
    partner, own = _both_copies(X, y, Params(**settings), generate_keypair("paillier", 1024))
    ref = WoeEncoder(**settings).fit(X, y)
    for f in X:
        assert partner[f][0] == own[f][0] == _groups(ref.woe_[f].bins), (f, settings)
        assert partner[f][1] == pytest.approx(ref.iv_[f], abs=1e-9) and own[f][1] == pytest.approx(ref.iv_[f], abs=1e-9)


def test_changing_the_settings_changes_the_grouping(german):
    X, y = _frame(german)
    key = generate_keypair("paillier", 1024)
    base, _ = _both_copies(X, y, Params(min_category_count=60), key)
    fewer, _ = _both_copies(X, y, Params(min_category_count=150), key)
    gate_off, _ = _both_copies(X, y, Params(min_category_count=60, category_pvalue=1.0), key)
    # min_category_count: purpose's categories under 150 rows (car (used), business, education, ...) pool
    assert len(base["purpose"][0]) == 6 and len(fewer["purpose"][0]) == 4
    assert any({"car (used)", "business"} <= set(g) for g in fewer["purpose"][0])
    # category_pvalue: the no-signal 10-level code gets one bin under the chi-square gate, several without it
    assert len(base["branch"][0]) == 1 and base["branch"][1] == 0.0
    assert len(gate_off["branch"][0]) > 1 and gate_off["branch"][1] > 0


@pytest.mark.parametrize("kind", ["vertical.woe", "vertical.scorecard"])
@pytest.mark.parametrize("bad, named", [("min_category_count = 0", "task.min_category_count: Input should be greater"),
                                        ("category_pvalue = 0", "task.category_pvalue: Input should be greater"),
                                        ("category_pvalue = 1.5", "task.category_pvalue: Input should be less"),
                                        ('min_category_count = "many"', "task.min_category_count: Input should be a")])
def test_bad_values_are_refused_in_one_line(tmp_path, kind, bad, named):
    from fedrisk.runtime.spec import load_spec
    from tests.tasks.test_woe_tasks import vertical_german

    spec, _ = vertical_german(tmp_path, kind=kind, task_extra=bad)
    with pytest.raises(ConfigError) as e:
        load_spec(spec)
    assert named in str(e.value) and "\n" not in str(e.value) and "unknown setting" not in str(e.value)
    (tmp_path / "ok").mkdir()
    ok, _ = vertical_german(tmp_path / "ok", kind=kind, task_extra="min_category_count = 30\ncategory_pvalue = 0.05")
    assert load_spec(ok).task["category_pvalue"] == 0.05  # a sound value is a known setting, kept as given


def test_the_python_api_takes_them_as_keywords_on_a_vertical_federation(german):
    import fedrisk as fr

    X, y = _frame(german)
    X, y = X.iloc[:500].reset_index(drop=True), y[:500]  # (fewer rows: a faster run through PSI and Paillier)
    df = X.assign(id=np.arange(len(X)), y=y)
    lender = df[["id", "y", "credit_history"]]
    payco = df[["id", "purpose", "branch"]].sample(frac=1, random_state=1).reset_index(drop=True)
    fed = fr.Federation.vertical({"lender": lender, "payco": payco}, id="id", label="y")
    woe = fr.WoeBinning(min_category_count=40, category_pvalue=1.0, reveal="bins", key_bits=2048).fit(fed)
    ref = WoeEncoder(min_category_count=40, category_pvalue=1.0).fit(X, y)
    default = WoeEncoder().fit(X, y)
    assert all(_groups(default.woe_[f].bins) != _groups(ref.woe_[f].bins) for f in ("purpose", "branch"))  # (they matter)
    from fedrisk.finance.binning import FeatureBins

    for party, cols in (("payco", ["purpose", "branch"]), ("lender", ["credit_history"])):
        doc = woe.files_[f"woe/{party}.json"]["features"]
        for f in cols:
            assert _groups(FeatureBins.from_dict(doc[f]["bins"])) == _groups(ref.woe_[f].bins), (party, f)
    ivs = {r.feature: r.iv for r in woe.iv_.itertuples()}
    assert ivs["purpose"] == pytest.approx(ref.iv_["purpose"], abs=1e-9)
    with pytest.raises(ConfigError) as e:
        fr.WoeBinning(category_pvalue=0.0).fit(fed)
    assert "category_pvalue" in str(e.value) and "task." not in str(e.value) and "\n" not in str(e.value)
