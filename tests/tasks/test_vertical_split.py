"""Test rows of a vertical job: every party derives the same mask; only ``test_column`` sends anything."""
from __future__ import annotations

import logging
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest

from fedrisk.errors import ConfigError
from fedrisk.runtime.spec import load_spec
from fedrisk.runtime.threads import run_roles
from fedrisk.tasks.vertical_roles import SPLIT_TAG, choose_test_rows
from fedrisk.transport.channel import InMemoryNetwork


def _spec(tmp_path, evaluation: str):
    for f in ("l.csv", "p.csv"):
        (tmp_path / f).write_text("id,y\n1,0\n")
    path = tmp_path / "job.toml"
    path.write_text(textwrap.dedent(f"""
        [federation]
        name = "split-job"
        seed = 7
        [parties.lender]
        address = "127.0.0.1:1"
        data = "l.csv"
        label = "y"
        [parties.payco]
        address = "127.0.0.1:2"
        data = "p.csv"
        [task]
        kind = "vertical.lr"
        [evaluation]
        {evaluation}
        """))
    return load_spec(path)


def _run(spec, ids_by_party, column=None):
    net = InMemoryNetwork(["lender", "payco"], job=spec.job_id, capture=True)

    def role(name):
        def go(ch):
            ctx = SimpleNamespace(spec=spec, name=name, channel=ch, log=logging.getLogger("t"))
            return choose_test_rows(ctx, ids_by_party[name], column if name == "lender" else None)
        return go

    return run_roles({p: role(p) for p in ("lender", "payco")}, network=net), net


def test_test_column_is_sent_by_the_label_holder_and_nothing_else(tmp_path):
    spec = _spec(tmp_path, 'test_column = "is_test"')
    ids = np.array([f"C{i:04d}" for i in range(50)], dtype=object)
    column = (np.arange(50) % 3 == 0).astype(int)
    out, net = _run(spec, {"lender": ids, "payco": ids}, column)
    assert out["lender"][0].tolist() == out["payco"][0].tolist() == (column == 1).tolist()
    got = net["payco"].captured
    assert [e.tag for e in got] == [SPLIT_TAG] and got[0].kind == "plaintext-by-design"
    assert np.asarray(got[0].body).dtype == np.uint8  # the 0/1 mask only: no ids, labels or features
    assert net["lender"].captured == []


def test_fraction_and_rule_send_nothing(tmp_path):
    ids = np.array([str(i) for i in range(1000)], dtype=object)
    for ev, expect in (("test_fraction = 0.3", None), ('test_rule = "id % 4 == 1"', np.arange(1000) % 4 == 1)):
        spec = _spec(tmp_path, ev)
        out, net = _run(spec, {"lender": ids, "payco": ids})
        assert out["lender"][0].tolist() == out["payco"][0].tolist()
        assert net["payco"].captured == [] and net["lender"].captured == []
        if expect is not None:
            assert out["lender"][0].tolist() == expect.tolist()
        else:
            assert 0.25 < out["lender"][0].mean() < 0.35


def test_default_split_follows_the_id_type(tmp_path):
    spec = _spec(tmp_path, "")
    ints = np.array([str(i) for i in range(500)], dtype=object)
    out, _ = _run(spec, {"lender": ints, "payco": ints})
    assert out["lender"][0].tolist() == (np.arange(500) % 5 == 0).tolist() and "id % 5" in out["lender"][1]
    text = np.array([f"C{i:07d}" for i in range(500)], dtype=object)
    out, _ = _run(spec, {"lender": text, "payco": text})
    assert "test_fraction 0.2" in out["lender"][1] and 0.1 < out["lender"][0].mean() < 0.3


def test_only_one_rule_at_a_time(tmp_path):
    with pytest.raises(ConfigError, match="set only one of test_rule, test_fraction"):
        _spec(tmp_path, 'test_rule = "id % 5 == 0"\n        test_fraction = 0.2')
    with pytest.raises(ConfigError, match="test_fraction"):
        _spec(tmp_path, "test_fraction = 1.5")


def test_test_rows_of_one_class_are_refused_before_training(tmp_path):
    """Rare bads: when no bad lands among the test rows, the label holder says so at once, with the
    fix, instead of training the whole model and failing on the test AUC with no party named."""
    from types import SimpleNamespace

    from fedrisk.errors import DataError

    spec = _spec(tmp_path, 'test_rule = "id % 5 == 0"')
    ids = np.array([str(i) for i in range(400)], dtype=object)
    ctx = SimpleNamespace(spec=spec, name="lender", channel=None, log=logging.getLogger("t"))
    y = np.zeros(400, dtype=np.int8)
    y[[1, 2, 3]] = 1  # three bads, none with id % 5 == 0
    with pytest.raises(DataError, match=r"party 'lender': all 80 test rows \(test_rule 'id % 5 == 0'\) are goods \(0\).*"
                                        r"evaluation.test_fraction"):
        choose_test_rows(ctx, ids, labels=y)
    y[10] = 1  # one bad among the test rows: fine
    mask, _ = choose_test_rows(ctx, ids, labels=y)
    assert mask.sum() == 80
