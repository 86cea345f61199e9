"""Text categorical columns in horizontal jobs: levels agreed by secure sums, encodings vs pooled references.

* ``horizontal.lr`` on German credit (3 banks, 13 text columns): the agreed levels are the
  spec's categories with at least ``min_category_count`` rows in the pooled data, and the
  coefficients equal a pooled scikit-learn logistic regression on the same one-hot encoding;
* capture: what the coordinator received in the level agreement is masked ring elements and
  public parameters only — no category label, no bank's counts — and no bank received another
  bank's counts;
* bad input: a text column without a vocabulary is one ``error:`` line naming the bank and the fix;
* ``fedrisk predict`` on raw text rows (an unseen category included) reproduces the run's scores.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from fedrisk.algorithms.horizontal.logistic import sklearn_C
from fedrisk.crypto import ring64
from fedrisk.data.categorical import CategoryEncoder
from fedrisk.errors import DataError
from fedrisk.runtime.context import PartyContext, ProgressLog
from fedrisk.runtime.spec import load_spec
from fedrisk.runtime.tasks import get_task
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork
from tests.tasks.test_woe_tasks import horizontal_spec, split_german
from tests.estimators.levels import banks_with_a_text_column

MIN_COUNT = 15


def vocabulary(parts: dict[str, pd.DataFrame]) -> dict[str, list[str]]:
    pooled = pd.concat(parts.values())
    text = [c for c in pooled.columns if not pd.api.types.is_numeric_dtype(pooled[c])]
    return {c: sorted(pooled[c].astype(str).unique()) for c in text}


def toml_categories(vocab: dict[str, list[str]]) -> str:
    items = ", ".join(f'{c} = {json.dumps(v)}' for c, v in vocab.items())
    return f"categories = {{ {items} }}\nmin_category_count = {MIN_COUNT}\n"


def run_captured(spec_path: Path, out: Path, keep: list | None = None) -> InMemoryNetwork:
    """Run the job in-process with capture; ``keep`` receives the network first (to read it after an error)."""
    spec = load_spec(spec_path)
    task = get_task(spec.task["kind"])
    names = spec.participants()
    net = InMemoryNetwork(names, job=spec.job_id, tag_prefixes=task.TAG_PREFIXES, recv_timeout=300, capture=True)
    if keep is not None:
        keep.append(net)

    def role(name):
        def go(ch):
            log = logging.getLogger(f"test.{name}")
            ctx = PartyContext(name=name, spec=spec, channel=ch, out=out, log=log,
                               progress=ProgressLog(out / "progress.jsonl" if name == task.driver(spec) else None, log))
            task.run(ctx)
        return go

    run_roles({p: role(p) for p in names}, network=net, recv_timeout=300)
    return net


def _strings(obj) -> set[str]:
    """Every text value inside a message body (bytes, e.g. ciphertexts, are not text)."""
    if isinstance(obj, str):
        return {obj}
    if isinstance(obj, dict):
        return set().union(*(_strings(k) | _strings(v) for k, v in obj.items())) if obj else set()
    if isinstance(obj, (list, tuple)):
        return set().union(*(_strings(v) for v in obj)) if obj else set()
    return set()


@pytest.fixture(scope="module")
def lr_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hcat")
    parts = split_german(tmp, banks=3, test=True)
    vocab = vocabulary({k: v for k, v in parts.items() if k != "test"})
    spec = horizontal_spec(tmp, "horizontal.lr", test=True, task_extra=toml_categories(vocab))
    net = run_captured(spec, tmp / "run")
    return tmp, parts, vocab, net


def test_levels_are_the_spec_categories_with_enough_rows(lr_run):
    tmp, parts, vocab, _ = lr_run
    pooled = pd.concat([parts[b] for b in ("bank1", "bank2", "bank3")])
    model = json.loads((tmp / "run" / "model.json").read_text())
    assert model["category_encoding"] == "onehot" and set(model["categories"]) == set(vocab)
    for c, cats in vocab.items():
        counts = pooled[c].astype(str).value_counts()
        kept = [v for v in cats if counts.get(v, 0) >= MIN_COUNT]
        enc = model["categories"][c]
        assert enc["levels"][:len(kept)] == kept
        rare = [v for v in cats if counts.get(v, 0) < MIN_COUNT]
        assert (enc["other"] >= 0) == bool(rare), c
    assert any(enc["other"] >= 0 for enc in model["categories"].values())  # the threshold binds somewhere


def test_coefficients_equal_pooled_sklearn_on_the_same_one_hot_encoding(lr_run):
    tmp, parts, vocab, _ = lr_run
    model = json.loads((tmp / "run" / "model.json").read_text())
    pooled = pd.concat([parts[b] for b in ("bank1", "bank2", "bank3")], ignore_index=True)
    cols = []
    for c in pooled.columns:
        if c in ("id", "y"):
            continue
        if c in vocab:
            cols.append(CategoryEncoder.from_json(model["categories"][c]).onehot(pooled[c])[0])
        else:
            cols.append(pooled[[c]].to_numpy(dtype=float))
    X = np.hstack(cols)
    assert X.shape[1] == len(model["features"])
    mean, std = X.mean(0), X.std(0)
    ok = std > 0
    Z = (X[:, ok] - mean[ok]) / std[ok]
    ref = LogisticRegression(C=sklearn_C(1e-4, len(pooled)), solver="newton-cholesky", tol=1e-12, max_iter=1000)
    ref.fit(Z, pooled["y"].to_numpy())
    fed = np.asarray(model["coef"])[ok]
    assert np.max(np.abs(fed - ref.coef_[0])) <= 1e-4, np.max(np.abs(fed - ref.coef_[0]))
    m = json.loads((tmp / "run" / "metrics.json").read_text())
    assert m["test"]["auc"] > 0.72


def test_coordinator_learns_no_category_and_no_bank_count(lr_run):
    tmp, parts, vocab, net = lr_run
    labels = {v for cats in vocab.values() for v in cats}
    got = [e for e in net["coordinator"].captured if e.tag.startswith("hcat.")]
    assert got
    for env in got:
        assert env.kind in {"public-parameter", "ciphertext", "masked", "plaintext-by-design"}, (env.tag, env.kind)
        if isinstance(env.body, np.ndarray):
            assert env.kind == "masked" and env.body.dtype == np.uint64
        assert not (_strings(env.body) & labels), env.tag
    from fedrisk.algorithms.horizontal.category_levels import count_vector

    for b in ("bank1", "bank2", "bank3"):
        plain, _ = count_vector(parts[b].reset_index(drop=True), vocab)
        masked = [e.body for e in got if e.sender == b and e.tag.endswith(".sa.masked")]
        assert len(masked) == 1
        enc = ring64.encode(plain, n_summands=3)
        assert masked[0].shape == enc.shape and np.mean(masked[0] == enc) < 0.05
    # banks hear the levels (names from the public spec) but no count
    for b in ("bank1", "bank2", "bank3"):
        lv = [e.body for e in net[b].captured if e.tag == "hcat.levels"]
        assert len(lv) == 1 and all(set(v) == {"kept", "absent", "other", "missing"} for v in lv[0].values())
        # kept / absent: declared names only (which reach min_category_count, which no bank has), no count
        assert all(set(v["kept"]) | set(v["absent"]) <= set(map(str, vocab[c])) for c, v in lv[0].items())


def test_text_column_without_vocabulary_is_one_error_line(tmp_path):
    parts = split_german(tmp_path, banks=2, test=True)
    vocab = vocabulary({k: v for k, v in parts.items() if k != "test"})
    vocab.pop("purpose")
    spec = horizontal_spec(tmp_path, "horizontal.lr", banks=2, test=True, task_extra=toml_categories(vocab))
    with pytest.raises(DataError) as e:
        run_captured(spec, tmp_path / "run")
    msg = str(e.value)
    assert "\n" not in msg and "purpose" in msg and "[task] categories" in msg


def test_predict_encodes_raw_rows_with_the_agreed_levels(lr_run):
    import subprocess
    import sys

    tmp, parts, vocab, _ = lr_run
    test = parts["test"].drop(columns=["y"]).reset_index(drop=True)
    test.loc[0, "purpose"] = "space travel"  # never declared: goes to (other) or the reference level
    test.to_csv(tmp / "new.csv", index=False)
    r = subprocess.run([sys.executable, "-m", "fedrisk", "predict", tmp / "run" / "model.json", tmp / "new.csv",
                        "--out", tmp / "new_scores.csv"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    s = pd.read_csv(tmp / "new_scores.csv")
    ref = pd.read_csv(tmp / "run" / "scores" / "test.csv")
    assert len(s) == len(test)
    np.testing.assert_allclose(s["score"].to_numpy()[1:], ref["score"].to_numpy()[1:], atol=1e-7)


def test_gbdt_with_text_columns_close_to_pooled_xgboost_and_predicts_raw_rows(tmp_path):
    """horizontal.gbdt on German credit's text columns (partition splits on the agreed levels) vs
    pooled XGBoost ``enable_categorical`` on the same levels and rows; predict scores raw text."""
    import subprocess
    import sys

    xgb = pytest.importorskip("xgboost")
    from fedrisk.finance.metrics import auc

    parts = split_german(tmp_path, banks=3, test=True)
    vocab = vocabulary({k: v for k, v in parts.items() if k != "test"})
    task = toml_categories(vocab) + "n_trees = 20\nmax_depth = 3\nlearning_rate = 0.3\n"
    spec = horizontal_spec(tmp_path, "horizontal.gbdt", test=True, task_extra=task)
    net = run_captured(spec, tmp_path / "run")
    model = json.loads((tmp_path / "run" / "model.json").read_text())
    assert model["category_encoding"] == "codes" and set(model["categories"]) == set(vocab)
    part_nodes = [nd for t in model["trees"] for nd in t["nodes"] if "categories_left" in nd]
    assert part_nodes, "no categorical split in 20 trees of German credit"
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    fed_auc = m["test"]["auc"]

    def encode(df):
        out = pd.DataFrame(index=range(len(df)))
        for c in df.columns:
            if c in ("id", "y"):
                continue
            if c in vocab:
                codes, _ = CategoryEncoder.from_json(model["categories"][c]).codes(df[c].reset_index(drop=True))
                k = len(CategoryEncoder.from_json(model["categories"][c]).all_levels())
                out[c] = pd.Categorical(codes.astype(int), categories=range(k))
            else:
                out[c] = df[c].to_numpy(dtype=float)
        return out

    train = pd.concat([parts[b] for b in ("bank1", "bank2", "bank3")], ignore_index=True)
    test = parts["test"].reset_index(drop=True)
    clf = xgb.XGBClassifier(n_estimators=20, max_depth=3, learning_rate=0.3, tree_method="hist", enable_categorical=True,
                            max_cat_to_onehot=4, max_bin=32, reg_lambda=1.0, min_child_weight=1.0)
    clf.fit(encode(train), train["y"])
    ref_auc = auc(test["y"].to_numpy(), clf.predict_proba(encode(test))[:, 1])
    print(f"horizontal.gbdt German credit test AUC {fed_auc:.4f} vs pooled XGBoost enable_categorical {ref_auc:.4f}")
    assert fed_auc > ref_auc - 0.03, (fed_auc, ref_auc)
    # predict on raw text rows: the run's test scores, with TreeSHAP reasons
    raw = test.drop(columns=["y"])
    raw.to_csv(tmp_path / "new.csv", index=False)
    r = subprocess.run([sys.executable, "-m", "fedrisk", "predict", tmp_path / "run" / "model.json", tmp_path / "new.csv",
                        "--out", tmp_path / "s.csv"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    s = pd.read_csv(tmp_path / "s.csv")
    ref = pd.read_csv(tmp_path / "run" / "scores" / "test.csv")
    np.testing.assert_allclose(s["score"].to_numpy(), ref["score"].to_numpy(), atol=1e-7)
    assert {"reason_1", "contribution_1", "status"} <= set(s.columns)
    assert set(s["reason_1"].dropna()) <= set(model["features"])


def test_a_bank_storing_an_amount_as_text_trains_the_same_model(lr_run, tmp_path):
    """bank2's Parquet export keeps credit_amount and age as text ("1169.0"): they load as the numbers the
    other banks store, and the model is the one of the all-numeric run (it was refused as a text column
    without a vocabulary)."""
    tmp, parts, vocab, _ = lr_run
    for name in ("bank1", "bank3", "test"):
        (tmp_path / f"{name}.csv").write_text((tmp / f"{name}.csv").read_text())
    bank2 = parts["bank2"].copy()
    bank2["credit_amount"] = bank2["credit_amount"].astype(float).map(lambda v: f"{v:.1f}")
    bank2["age_in_years"] = bank2["age_in_years"].astype(str)
    bank2.to_parquet(tmp_path / "bank2.parquet", index=False)
    spec = horizontal_spec(tmp_path, "horizontal.lr", test=True, task_extra=toml_categories(vocab))
    spec.write_text(spec.read_text().replace('data = "bank2.csv"', 'data = "bank2.parquet"'))
    run_captured(spec, tmp_path / "run")
    got = json.loads((tmp_path / "run" / "model.json").read_text())
    want = json.loads((tmp / "run" / "model.json").read_text())
    assert got["features"] == want["features"]
    np.testing.assert_allclose(got["coef"], want["coef"], atol=1e-9)


def test_a_bank_that_does_not_collect_a_numeric_column_trains_with_text_columns_too():
    """A small bank without an income field (blank in every row) trains with ``missing = "mean"``
    (its rows get the pooled mean, as pooled mean imputation would) or ``"keep"`` -- as it did without
    text columns; with a ``[task] categories`` vocabulary its bank was refused instead ("feature
    columns 'income' have no values at all; drop them (exclude)", which then breaks the shared
    schema). The model equals pooled scikit-learn on the pooled-mean-imputed one-hot rows."""
    import fedrisk as fr

    rng = np.random.default_rng(4)
    banks = {}
    for b, n in (("bank1", 300), ("bank2", 200), ("bank3", 80)):
        income = rng.lognormal(10, 0.6, n)
        region = rng.choice(["north", "south", "east"], n)
        z = -1.0 - 0.8 * (np.log(income) - 10) + 0.7 * (region == "south")
        df = pd.DataFrame({"id": np.arange(n), "y": (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int),
                           "income": income, "age": rng.integers(20, 70, n), "region": region})
        banks[b] = df
    banks["bank3"]["income"] = np.nan  # this bank does not collect it
    cats = {"region": ["north", "south", "east"]}
    plain = dict(secure_aggregation=False)  # (the loading is under test; secure sums are tested elsewhere)
    lr = fr.LogisticRegression(categories=cats).fit(fr.Federation.horizontal(banks, missing="mean", **plain))
    pooled = pd.concat(banks.values(), ignore_index=True)
    X = pd.DataFrame({"income": pooled["income"].fillna(pooled["income"].mean()), "age": pooled["age"]})
    for level in ("south", "east"):
        X[f"region={level}"] = (pooled["region"] == level).astype(float)
    X = X[list(lr.feature_names_in_)]
    mu, sd = X.mean(), X.std(ddof=0)
    ref = LogisticRegression(C=sklearn_C(1e-4, len(pooled)), solver="newton-cholesky", tol=1e-12, max_iter=1000)
    ref.fit((X - mu) / sd, pooled["y"])
    assert np.max(np.abs(lr.coef_.ravel() * sd.to_numpy() - ref.coef_[0])) < 1e-6
    gb = fr.SecureBoost(n_trees=3, max_depth=2, categories=cats).fit(fr.Federation.horizontal(banks, missing="keep",
                                                                                           **plain))
    assert np.isfinite(gb.predict_proba(banks["bank3"])[:, 1]).all()
    with pytest.raises(DataError) as info:  # with "reject" (the default) the bank is told what to do
        fr.LogisticRegression(categories=cats).fit(fr.Federation.horizontal(banks, **plain))
    assert "'bank3'" in str(info.value) and "'income'" in str(info.value) and "\n" not in str(info.value)
    # the notebook / Parquet shape of the same bank: an object column of None (a string column null in every
    # row) was "text columns ['income'] are not numeric and have no vocabulary"; it is the same missing column
    banks["bank3"]["income"] = None
    assert banks["bank3"]["income"].dtype == object
    again = fr.LogisticRegression(categories=cats).fit(fr.Federation.horizontal(banks, missing="mean", **plain))
    np.testing.assert_allclose(again.coef_, lr.coef_, atol=1e-9)
    numeric = {b: df.drop(columns="region") for b, df in banks.items()}  # (and without text columns)
    assert np.isfinite(fr.LogisticRegression().fit(fr.Federation.horizontal(numeric, missing="mean", **plain)).coef_).all()


def test_a_category_column_a_bank_leaves_blank_is_a_warning_at_that_bank(caplog):
    """A bank whose text column is blank in every row trains (its rows take the missing level), even under
    ``missing = "reject"``: a field the bank does not collect must not break the shared schema. It did so
    silently; the bank's own log now says so (the column, no value)."""
    import fedrisk as fr

    banks = banks_with_a_text_column(8, {"bank1": 200, "bank2": 120}, "region", ["north", "south", "east"], "south", -0.5)
    banks["bank2"]["region"] = None
    with caplog.at_level(logging.WARNING):
        fr.LogisticRegression(categories={"region": ["north", "south", "east"]}).fit(
            fr.Federation.horizontal(banks, secure_aggregation=False))
    notes = [r for r in caplog.records if "blank in every row" in r.getMessage()]
    assert len(notes) == 1 and "'region'" in notes[0].getMessage() and "bank2" in notes[0].name, \
        [(r.name, r.getMessage()) for r in caplog.records]


def test_a_column_named_in_a_refusal_does_not_reach_the_partners(tmp_path):
    """The refusal of a text column without a vocabulary names the setting to write with the column in it; the
    name was written unquoted there (``{ purpose = [...] }``), so the abort reason the partners received kept a
    column of the bank's private file (the reason's redaction removes quoted names only)."""
    parts = split_german(tmp_path, banks=2, test=True)
    vocab = vocabulary({k: v for k, v in parts.items() if k != "test"})
    text = list(vocab)
    vocab.pop("purpose")
    for extra in (toml_categories(vocab), ""):  # the category step's refusal, and the table load's (no vocabulary)
        spec = horizontal_spec(tmp_path, "horizontal.lr", banks=2, test=True, task_extra=extra)
        keep = []
        with pytest.raises(DataError) as e:
            run_captured(spec, tmp_path / "run", keep)
        received = keep[0]["coordinator"].mailbox.failure
        assert "purpose" in str(e.value) and received and "categories" in received, (str(e.value), received)
        shared = vocab if extra else {}  # (names in the job's shared settings are public)
        assert "purpose" not in received and not [c for c in text if c not in shared and (
            f"'{c}'" in received or f"{{ {c} =" in received or f'"{c}"' in received)], received
