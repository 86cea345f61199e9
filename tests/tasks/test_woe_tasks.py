"""horizontal.woe and vertical.woe through the real task functions: federated IV equals pooled IV.

In-process runs use the same ``run(ctx)`` as ``fedrisk party`` over the in-memory network; one
``fedrisk simulate`` run checks the process path and the files a user reads.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedrisk.errors import ConfigError, DataError, FedriskError
from fedrisk.finance.binning import FeatureBins
from fedrisk.finance.woe import WoeEncoder
from fedrisk.runtime.context import PartyContext, ProgressLog
from fedrisk.runtime.demo import free_ports
from fedrisk.runtime.spec import load_spec
from fedrisk.runtime.tasks import get_task
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork

GERMAN = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "germancredit.csv"


def german_frame() -> pd.DataFrame:
    if not GERMAN.is_file():
        pytest.skip(f"germancredit.csv not found at {GERMAN}; put the shared data sets in ../shared/data")
    df = pd.read_csv(GERMAN)
    df.insert(0, "id", np.arange(len(df)))
    df["y"] = (df.pop("creditability") == "bad").astype(int)
    return df


def split_german(tmp: Path, banks: int = 3, test: bool = False) -> dict[str, pd.DataFrame]:
    """Germancredit as ``banks`` banks (id % banks), optionally holding out id % 5 == 0 as test.csv.

    The same split as documented in examples/README.md; files go to ``tmp`` only.
    """
    df = german_frame()
    out = {}
    if test:
        df[df.id % 5 == 0].to_csv(tmp / "test.csv", index=False)
        out["test"] = df[df.id % 5 == 0]
        df = df[df.id % 5 != 0]
    for k in range(banks):
        part = df[df.id % banks == k]
        part.to_csv(tmp / f"bank{k + 1}.csv", index=False)
        out[f"bank{k + 1}"] = part
    return out


def categories_toml(parts: dict[str, pd.DataFrame], also: tuple[str, ...] = ()) -> str:
    """``categories = {...}`` declaring every category of the banks' text columns (and of ``also``)."""
    from fedrisk.finance.binning import category_text

    pooled = pd.concat([v for k, v in parts.items() if k != "test"])
    cols = [c for c in pooled.columns if c not in ("id", "y") and (c in also or not pd.api.types.is_numeric_dtype(pooled[c]))]
    items = ", ".join(f"{c} = {json.dumps(sorted(set(category_text(pooled[c].dropna()))))}" for c in cols)
    return f"categories = {{ {items} }}\n"


def horizontal_spec(tmp: Path, kind: str, banks: int = 3, task_extra: str = "", test: bool = False,
                    secure: bool = True) -> Path:
    ports = free_ports(banks + 1)
    parts = "".join(f'[parties.bank{k + 1}]\naddress = "127.0.0.1:{ports[k + 1]}"\ndata = "bank{k + 1}.csv"\n'
                    f'id = "id"\nlabel = "y"\n' for k in range(banks))
    spec = tmp / "job.toml"
    spec.write_text(f'[federation]\nname = "german-{kind.replace(".", "-")}"\n[coordinator]\naddress = "127.0.0.1:{ports[0]}"\n'
                    + parts + f'[task]\nkind = "{kind}"\n{task_extra}\n'
                    + ('[evaluation]\ntest = "test.csv"\n' if test else "")
                    + f"[security]\nsecure_aggregation = {'true' if secure else 'false'}\n")
    return spec


def run_in_process(spec_path: Path, out: Path) -> dict:
    """Every participant's ``run(ctx)`` as threads over the in-memory network."""
    spec = load_spec(spec_path)
    task = get_task(spec.task["kind"])
    names = spec.participants()
    net = InMemoryNetwork(names, job=spec.job_id, tag_prefixes=task.TAG_PREFIXES, recv_timeout=300)

    def role(name):
        def go(ch):
            log = logging.getLogger(f"test.{name}")
            driver = name == task.driver(spec)
            ctx = PartyContext(name=name, spec=spec, channel=ch, out=out, log=log,
                               progress=ProgressLog(out / "progress.jsonl" if driver else None, log))
            task.run(ctx)
        return go

    run_roles({p: role(p) for p in names}, network=net, recv_timeout=300)
    return json.loads((out / "metrics.json").read_text())


# -- horizontal --------------------------------------------------------------------------------
#: features whose IV noise figures are recomputed single-party (~0.2 s each): numeric, a declared text column,
#: a forced-categorical numeric one
NOISE_CHECKED = ("duration_in_month", "credit_amount", "purpose", "installment_rate_in_percentage_of_disposable_income")


def test_horizontal_woe_iv_equals_pooled_iv(tmp_path):
    parts = split_german(tmp_path)
    forced = "installment_rate_in_percentage_of_disposable_income"
    spec = horizontal_spec(tmp_path, "horizontal.woe", task_extra=f'categorical = ["{forced}"]\n'
                           + categories_toml(parts, also=(forced,)))
    m = run_in_process(spec, tmp_path / "run")
    pooled = pd.concat(parts.values())
    rows = m["iv"]["federation"]
    assert {r["feature"] for r in rows} == set(pooled.columns) - {"id", "y"}
    assert all({"feature", "iv", "bins", "kind", "selected", "reason"} <= r.keys() for r in rows)
    doc = json.loads((tmp_path / "run" / "woe" / "bank2.json").read_text())
    bins = {f: FeatureBins.from_dict(d["bins"]) for f, d in doc["features"].items()}
    assert bins["installment_rate_in_percentage_of_disposable_income"].kind == "categorical"
    X = pooled.drop(columns=["id", "y"]).reset_index(drop=True)
    enc = WoeEncoder().fit_bins(X, pooled["y"].to_numpy(), bins)
    # the noise figures: single-party binning's of the pooled rows (the permutation null of the binning, seeded
    # by the job seed, 0 here, and the feature's name), for a numeric and a categorical feature of each kind
    single = WoeEncoder(categorical=[forced]).fit(X[list(NOISE_CHECKED)], pooled["y"].to_numpy())
    for r in rows:
        assert abs(r["iv"] - enc.iv_[r["feature"]]) < 1e-9, r["feature"]
        assert r["bins"] == bins[r["feature"]].n_bins
        assert r["iv_null"] == "permutation" and 0 < r["iv_p_value"] <= 1, r["feature"]
        if r["feature"] in NOISE_CHECKED:
            sig = single.woe_[r["feature"]].significance()
            assert (r["iv_p_value"], r["iv_noise_95"]) == (sig["iv_p_value"], sig["iv_noise_95"]), r["feature"]
        assert r["selected"] == (r["feature"] in m["selection"]["selected"])
        if not r["selected"]:
            assert "IV" in r["reason"] or "corr" in r["reason"]
    # per-bin tables are the pooled counts; the bank's own IV stays in its own file
    table = doc["features"]["duration_in_month"]["table"]
    assert sum(t["n"] for t in table) == len(pooled)
    assert set(doc["local"]["iv"]) == set(bins) and doc["local"]["n"] == len(parts["bank2"])


def test_horizontal_woe_bad_settings_one_line(tmp_path):
    split_german(tmp_path, banks=2)
    spec = horizontal_spec(tmp_path, "horizontal.woe", banks=2, task_extra="max_bins = 0")
    with pytest.raises(ConfigError) as e:
        load_spec(spec)
    assert "task.max_bins" in str(e.value) and "\n" not in str(e.value)
    spec = horizontal_spec(tmp_path, "horizontal.woe", banks=2, task_extra="max_bin = 5")
    with pytest.raises(ConfigError, match="did you mean 'max_bins'"):
        load_spec(spec)
    spec = horizontal_spec(tmp_path, "horizontal.woe", banks=2, task_extra='categorical = ["no_such_column"]')
    with pytest.raises(FedriskError, match="no_such_column"):
        run_in_process(spec, tmp_path / "run")


# -- vertical ----------------------------------------------------------------------------------
def vertical_german(tmp: Path, kind: str = "vertical.woe", task_extra: str = "", rule: bool = True) -> tuple[Path, pd.DataFrame]:
    """Germancredit split by columns: lender (label + 8 columns), payco (6), bureau (6); shuffled, partial overlap."""
    df = german_frame()
    cols = [c for c in df.columns if c not in ("id", "y")]
    split = {"lender": cols[:8], "payco": cols[8:14], "bureau": cols[14:]}
    rng = np.random.default_rng(3)
    ports = free_ports(3)
    parts = []
    keep_all = np.ones(len(df), dtype=bool)
    for i, (name, cs) in enumerate(split.items()):
        keep = rng.random(len(df)) < 0.95
        keep_all &= keep
        part = df.loc[keep, ["id"] + (["y"] if name == "lender" else []) + cs].sample(frac=1, random_state=i)
        part.to_csv(tmp / f"{name}.csv", index=False)
        parts.append(f'[parties.{name}]\naddress = "127.0.0.1:{ports[i]}"\ndata = "{name}.csv"\nid = "id"\n'
                     + ('label = "y"\n' if name == "lender" else ""))
    spec = tmp / "job.toml"
    spec.write_text(f'[federation]\nname = "german-{kind.replace(".", "-")}"\n' + "".join(parts)
                    + f'[task]\nkind = "{kind}"\n{task_extra}\n'
                    + ('[evaluation]\ntest_rule = "id % 5 == 0"\n' if rule else ""))
    return spec, df[keep_all]


#: a numeric and a text column of the label holder and of a partner
VERTICAL_NOISE_CHECKED = ("duration_in_month", "status_of_existing_checking_account", "age_in_years", "housing")


def _pooled_nulls(X: pd.DataFrame, y: np.ndarray, label_holder: bool) -> dict:
    """Each column's IV permutation null as single-party code builds it from the pooled rows: the label holder's
    own binning (:func:`label_holder_bins`), or a partner's prebins (pooled under the release rule) merged
    and released as the label holder does with their decrypted counts."""
    from functools import partial

    from fedrisk.algorithms.vertical.woe import ReleaseRule, _prebins, label_holder_bins, merge_prebins
    from fedrisk.finance.binning import BinningConfig, class_counts
    from fedrisk.finance.iv_noise import BinningNull, feature_seed

    nulls: dict = {}
    if label_holder:
        label_holder_bins(X, y, nulls=nulls)
        return nulls
    rule, cfg = ReleaseRule(), BinningConfig()
    need = rule.rows_needed(len(y))
    pre, idx = _prebins(X, list(X.columns), set(), cfg.n_prebins, rule)
    for j, fb in enumerate(pre):
        g, b = class_counts(idx[:, j], y, fb.n_bins + 1)
        if 0 < g[-1] + b[-1] < need:  # a missing bin too small to sum: the partner sends it empty
            g[-1], b[-1] = 0.0, 0.0
        nulls[fb.name] = BinningNull(g, b, partial(merge_prebins, kind=fb.kind, cfg=cfg, rule=rule, need=need), 0.5,
                                     feature_seed(fb.name), keep_missing=partial(rule.ok, need=need))
    return nulls


def test_vertical_woe_iv_equals_pooled_iv(tmp_path):
    spec, pooled = vertical_german(tmp_path, task_extra='reveal = "bins"\nkey_bits = 2048')
    m = run_in_process(spec, tmp_path / "run")
    train = pooled[pooled.id % 5 != 0]
    assert m["intersection"]["size"] == len(pooled) and m["rows"] == len(train)
    y = train["y"].to_numpy()
    assert set(m["iv"]) == {"lender", "payco", "bureau"}
    for party in ("lender", "payco", "bureau"):
        doc = json.loads((tmp_path / "run" / "woe" / f"{party}.json").read_text())
        own = set(doc["features"])
        assert own == {r["feature"] for r in m["iv"][party]}  # each party's file: its own features only
        bins = {f: FeatureBins.from_dict(d["bins"]) for f, d in doc["features"].items()}
        enc = WoeEncoder().fit_bins(train[list(own)].reset_index(drop=True), y, bins)
        nulls = _pooled_nulls(train[list(own)].reset_index(drop=True), y, party == "lender")
        for r in m["iv"][party]:
            assert abs(r["iv"] - enc.iv_[r["feature"]]) < 1e-9, (party, r["feature"])
            assert r["bins"] == bins[r["feature"]].n_bins
            assert r["iv_null"] == "permutation", (party, r["feature"])
            # the permutation null: the label holder's (own and decrypted partner) prebin counts are the pooled
            # rows' ones; its figures those of the same binning of the pooled rows (a few features: ~0.2 s each)
            null = nulls[r["feature"]]
            assert abs(null.iv(null.goods, null.bads) - r["iv"]) < 1e-9, (party, r["feature"])
            if r["feature"] in VERTICAL_NOISE_CHECKED:
                sig = null.significance()
                assert (r["iv_p_value"], r["iv_noise_95"]) == (sig["iv_p_value"], sig["iv_noise_95"]), r["feature"]
            assert isinstance(r["selected"], bool) and r["reason"]
        if party != "lender":
            assert "woe" not in next(iter(doc["features"].values()))  # reveal = "bins" gives no WOE
    # the label holder's own local binning: the ordinary single-party one for numbers; text columns as a
    # feature holder's copy would be binned (rare categories pooled first)
    from fedrisk.algorithms.vertical.woe import label_holder_bins

    lender_feats = [r["feature"] for r in m["iv"]["lender"]]
    X = train[lender_feats].reset_index(drop=True)
    local = WoeEncoder().fit(X, y)
    same = WoeEncoder().fit_bins(X, y, label_holder_bins(X, y))
    for r in m["iv"]["lender"]:
        assert abs(r["iv"] - same.iv_[r["feature"]]) < 1e-9
        if same.woe_[r["feature"]].bins.kind == "numeric":
            assert abs(r["iv"] - local.iv_[r["feature"]]) < 1e-9


def test_vertical_woe_refuses_label_at_feature_holder(tmp_path):
    spec, _ = vertical_german(tmp_path)
    df = pd.read_csv(tmp_path / "payco.csv")
    df["y"] = 0
    df.to_csv(tmp_path / "payco.csv", index=False)
    with pytest.raises(DataError, match="payco.*'y'.*must not hold the label"):
        run_in_process(spec, tmp_path / "run")


def simulate_vertical_default_credit(tmp_path, shared_data, kind: str, timeout: float = 300):
    """``fedrisk simulate`` a lender + payco job of ``kind`` on the default-credit split; return the run dir."""
    ports = free_ports(2)
    spec = tmp_path / "job.toml"
    spec.write_text(textwrap.dedent(f"""
        [federation]
        name = "dc-{kind.replace('.', '-')}"
        [parties.lender]
        address = "127.0.0.1:{ports[0]}"
        data = "{shared_data / 'default_credit_hetero_guest.csv'}"
        id = "id"
        label = "y"
        [parties.payco]
        address = "127.0.0.1:{ports[1]}"
        data = "{shared_data / 'default_credit_hetero_host.csv'}"
        id = "id"
        [task]
        kind = "{kind}"
        [evaluation]
        test_rule = "id % 5 == 0"
        """))
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "fedrisk", "simulate", str(spec), "--out", str(out)],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


@pytest.mark.extended(covered_by="tests/tasks/test_woe_tasks.py::test_vertical_woe_iv_equals_pooled_iv (this task over the in-memory network, the code "
                                 "`fedrisk party` runs, IV equal to the pooled IV), tests/algorithms/vertical/test_woe.py::"
                                 "test_vertical_iv_equals_pooled_iv and ::test_what_each_party_sees (the protocol and what "
                                 "each party received), tests/tasks/test_vertical_scorecard_split_named.py::"
                                 "test_test_column_is_named_and_a_shifted_test_population_is_flagged (a vertical WOE stage "
                                 "over `fedrisk simulate` mTLS processes, report written) and tests/finance/test_report_tasks.py::"
                                 "test_woe_task_report_has_binning_not_empty_model_sections (the WOE report)")
def test_vertical_woe_simulate_e2e(tmp_path, shared_data):
    """``fedrisk simulate`` on the default-credit vertical split: processes, mTLS, files, report."""
    out = simulate_vertical_default_credit(tmp_path, shared_data, "vertical.woe")
    m = json.loads((out / "metrics.json").read_text())
    g = pd.read_csv(shared_data / "default_credit_hetero_guest.csv")
    h = pd.read_csv(shared_data / "default_credit_hetero_host.csv").set_index("id")
    train = g[(g.id % 5 != 0) & g.id.isin(h.index)]
    enc = WoeEncoder().fit(h.loc[train.id].reset_index(drop=True), train["y"].to_numpy())
    iv = {r["feature"]: r["iv"] for r in m["iv"]["payco"]}
    assert set(iv) == set(enc.iv_)
    for f, v in iv.items():
        assert abs(v - enc.iv_[f]) < 1e-9, f
    assert json.loads((out / "woe" / "payco.json").read_text())["reveal"] == "iv"
    ledger = [json.loads(line) for line in (out / "ledger" / "payco.jsonl").read_text().splitlines()]
    assert {e["kind"] for e in ledger if e["tag"].startswith("vwoe.")} <= {"aggregate", "ciphertext", "metric"}
    from fedrisk.finance.report import write_report

    html = write_report(out).read_text()
    assert "Information value by party" in html and "x5" in html
