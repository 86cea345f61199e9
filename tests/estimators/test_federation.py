"""Federation with the ids and files real partners bring: text ids, hashed splits, the spec's dialect.

Found by running the notebook API on shapes the other tests had not used: a vertical federation
with text customer keys ("C0005002") could neither be split (``split`` knew only ``id % K == R``)
nor fitted unsplit; ``from_spec`` read each file with pandas defaults, so a ``;``-separated file,
``positive = "bad"`` and zero-padded ids ("007" became 7) all differed from what ``fedrisk party``
reads.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import fedrisk as fr
from fedrisk.data.split import hashed_test_mask, split_key
from fedrisk.errors import ConfigError


def _text_id_frames(n: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ [1.0, -0.8, 0.7] - 1)))).astype(int)
    ids = np.array([f"C{i:07d}" for i in range(n)])
    lender = pd.DataFrame({"cid": ids, "y": y, "a": X[:, 0], "b": X[:, 1]})
    payco = pd.DataFrame({"cid": ids, "c": X[:, 2]}).sample(frac=1, random_state=2).reset_index(drop=True)
    return lender, payco


def test_text_ids_split_by_the_keyed_hash_of_evaluation_test_fraction():
    lender, payco = _text_id_frames()
    fed = fr.Federation.vertical({"lender": lender, "payco": payco}, id="cid", label="y", name="text-ids", seed=4)
    train, test = fed.split()  # text ids: the spec's default, test_fraction = 0.2
    assert train.test_fraction == test.test_fraction == 0.2 and train.test_rule is None
    want = hashed_test_mask(lender["cid"].to_numpy(), 0.2, split_key("text-ids", 4))  # what every party computes
    assert sorted(test.parties["lender"]["cid"]) == sorted(lender["cid"][want])
    assert sorted(test.parties["payco"]["cid"]) == sorted(test.parties["lender"]["cid"])
    assert len(train.parties["lender"]) + len(test.parties["lender"]) == len(lender)
    assert "test_fraction = 0.2" in repr(test)
    # the train half trains under the same fraction: none of its rows is a test row
    assert train.training_evaluation() == {"test_fraction": 0.2}
    # an unsplit federation trains on every row: a fraction below every id's hash
    frac = fed.no_test_evaluation()["test_fraction"]
    for df in fed.parties.values():
        assert not hashed_test_mask(df["cid"].to_numpy(), frac, split_key("text-ids", 4)).any()
    with pytest.raises(ConfigError, match="not both"):
        fed.split("id % 5 == 0", test_fraction=0.2)
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        fed.split(test_fraction=1.5)
    # an id rule on text ids: the fix offered is the notebook's, not a job spec setting
    with pytest.raises(fr.FedriskError) as e:
        fed.split("id % 5 == 0")
    msg = str(e.value)
    assert "split(test_fraction=0.2)" in msg and "evaluation.test_fraction" not in msg and "\n" not in msg, msg
    # integer ids keep the id % 5 == 0 default
    ints = fr.Federation.vertical({"lender": lender.assign(cid=np.arange(len(lender))),
                                   "payco": payco.assign(cid=np.arange(len(payco)))}, id="cid", label="y")
    assert ints.split()[0].test_rule == "id % 5 == 0"


def test_text_ids_fit_unsplit_and_split_and_score():
    lender, payco = _text_id_frames()
    fed = fr.Federation.vertical({"lender": lender, "payco": payco}, id="cid", label="y", name="text-ids")
    whole = fr.LogisticRegression().fit(fed)
    assert whole.metrics_["rows"]["test"] == 0 and whole.metrics_["rows"]["train"] == len(lender)
    train, test = fed.split(test_fraction=0.25)
    lr = fr.LogisticRegression().fit(train)
    assert lr.metrics_["rows"]["test"] == 0 and lr.metrics_["rows"]["train"] == len(train.parties["lender"])
    p = lr.predict_proba(test)[:, 1]
    assert np.isfinite(p).all() and fr.metrics.auc(test.y, p) > 0.7
    # a job with its own test rows says which rule chose them (it said test_rule under any rule)
    held = fr.LogisticRegression().fit(fed._with(fed.parties, test_fraction=0.2, part="train"))  # spec-like: 20 % held out
    assert held.metrics_["stability"]["actual"].startswith("the test rows (test_fraction 0.2")


def test_from_spec_reads_files_as_fedrisk_party_does(tmp_path):
    """';' CSV with decimal commas, positive = "bad", zero-padded text ids: the frames and labels
    the notebook sees are the ones the party processes load."""
    rng = np.random.default_rng(1)
    n = 400
    ids = [f"{i:06d}" for i in range(n)]
    x = rng.normal(size=n)
    y = np.where(rng.random(n) < 1 / (1 + np.exp(-(1.5 * x - 1))), "bad", "good")
    pd.DataFrame({"id": ids, "y": y, "x": x}).to_csv(tmp_path / "lender.csv", sep=";", decimal=",", index=False)
    pd.DataFrame({"id": ids[::-1], "z": rng.normal(size=n)}).to_csv(tmp_path / "payco.csv", index=False)
    (tmp_path / "job.toml").write_text(
        '[federation]\nname = "dialect"\n'
        '[parties.lender]\naddress = "127.0.0.1:1"\ndata = "lender.csv"\nid = "id"\nlabel = "y"\n'
        'sep = ";"\ndecimal = ","\npositive = "bad"\n'
        '[parties.payco]\naddress = "127.0.0.1:2"\ndata = "payco.csv"\nid = "id"\n'
        '[task]\nkind = "vertical.lr"\n')
    fed = fr.Federation.from_spec(tmp_path / "job.toml", processes=False)
    lender = fed.parties["lender"]
    assert list(lender.columns) == ["id", "y", "x"] and lender["x"].dtype == float
    assert lender["id"].iloc[7] == "000007"  # text, as PSI sees it (pandas defaults made it 7)
    assert fed.y.tolist() == (y == "bad").astype(int).tolist()  # the spec's label coding
    train, test = fed.split()
    assert train.test_rule == "id % 5 == 0"  # all-digit ids: the default rule, as fedrisk simulate picks
    lr = fr.LogisticRegression().fit(train)
    assert fr.metrics.auc(test.y, lr.predict_proba(test)[:, 1]) > 0.7
