"""Per-party checkpoints (fedrisk.runtime.checkpoint): exact round trip, atomic files, refusal, agreement."""
from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrisk.runtime.checkpoint import KEEP, CheckpointError, CheckpointStore, Resumption, fingerprint
from fedrisk.runtime.spec import load_spec
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork


def spec_in(tmp: Path, task: str = "max_iter = 5") -> Path:
    (tmp / "a.csv").write_text("id,y,x\n1,0,0.5\n2,1,0.25\n")
    (tmp / "b.csv").write_text("id,z\n1,3\n2,4\n")
    p = tmp / "job.toml"
    p.write_text(textwrap.dedent(f"""
        [federation]
        name = "ck"
        [parties.a]
        address = "127.0.0.1:1"
        data = "a.csv"
        id = "id"
        label = "y"
        [parties.b]
        address = "127.0.0.1:2"
        data = "b.csv"
        id = "id"
        [task]
        kind = "vertical.lr"
        {task}
        """))
    return p


def store(tmp: Path, party: str = "a", **kw) -> CheckpointStore:
    spec = load_spec(spec_in(tmp, **kw))
    return CheckpointStore.for_spec(tmp / "run", spec, party)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=True, width=64), min_size=0, max_size=20))
def test_states_round_trip_exactly(tmp_path_factory, values):
    tmp = tmp_path_factory.mktemp("rt")
    s = store(tmp)
    state = {"w": np.array(values, dtype=np.float64), "S": [np.array(values[:3])], "loss": values[0] if values else 0.0,
             "best": np.inf, "n": np.int64(3), "trees": [{"nodes": [{"id": 0, "leaf": 0.1}]}]}
    s.save("train", 1, state)
    again = CheckpointStore.for_spec(tmp / "run", load_spec(tmp / "job.toml"), "a")
    assert again.open_for_resume()
    got = again.load("train", 1)
    assert got["w"].dtype == np.float64 and got["w"].tobytes() == state["w"].tobytes()
    assert got["S"][0].tobytes() == np.array(values[:3]).tobytes()
    assert got["best"] == np.inf and got["n"] == 3 and got["trees"] == state["trees"]


def test_only_the_last_steps_are_kept_and_no_temp_file_is_left(tmp_path):
    s = store(tmp_path)
    for k in range(1, 8):
        s.save("train", k, {"w": np.full(2, float(k))})
    assert s.steps("train") == list(range(8 - KEEP, 8))
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["a.json"]
    doc = json.loads((tmp_path / "run" / "checkpoints" / "a.json").read_text())
    assert doc["format"] == "fedrisk.checkpoint" and doc["party"] == "a" and doc["fingerprint"] == s.fp


def test_the_file_is_the_whole_document_for_every_stage_and_the_store_reads_back_what_it_wrote(tmp_path):
    # the file is assembled from each step's text, encoded once when saved: it must be the very document
    # json.dumps of {format, version, party, job, task, fingerprint, stages} gives, for several stages
    s = store(tmp_path)
    states = {("woe", 1): {"bins": [1.5, -2.25], "nan": float("nan")},
              **{("train", k): {"w": np.arange(3.0) * k, "n": np.int64(k), "inf": -np.inf} for k in range(1, 6)}}
    for (stage, k), state in states.items():
        s.save(stage, k, state)
    text = (tmp_path / "run" / "checkpoints" / "a.json").read_text()
    doc = json.loads(text)
    assert list(doc) == ["format", "version", "party", "job", "task", "fingerprint", "stages"]
    assert doc["fingerprint"] == s.fp and sorted(doc["stages"]) == ["train", "woe"]
    assert sorted(doc["stages"]["train"], key=int) == [str(k) for k in range(6 - KEEP, 6)]
    assert doc["stages"]["train"]["5"]["w"]["__ndarray__"] == [0.0, 5.0, 10.0] and doc["stages"]["train"]["5"]["inf"] == -np.inf
    assert np.isnan(doc["stages"]["woe"]["1"]["nan"])
    # this process (no resume) and a resumed one read the same states
    again = CheckpointStore.for_spec(tmp_path / "run", load_spec(tmp_path / "job.toml"), "a")
    assert again.open_for_resume()
    for st_ in (s, again):
        got = st_.load("train", 5)
        assert got["w"].tolist() == [0.0, 5.0, 10.0] and got["n"] == 5 and got["inf"] == -np.inf
        assert np.isnan(st_.load("woe", 1)["nan"])
    # a resumed store that saves again keeps the steps it read, re-written from their texts
    again.save("train", 6, {"w": np.zeros(1)})
    doc2 = json.loads((tmp_path / "run" / "checkpoints" / "a.json").read_text())
    assert sorted(doc2["stages"]["train"], key=int) == ["4", "5", "6"] and doc2["stages"]["woe"] == doc["stages"]["woe"]


def test_a_checkpoint_without_a_stages_table_is_refused_with_one_line(tmp_path):
    s = store(tmp_path)
    s.save("train", 1, {"w": np.zeros(2)})
    path = tmp_path / "run" / "checkpoints" / "a.json"
    doc = json.loads(path.read_text())
    doc["stages"] = ["train"]
    path.write_text(json.dumps(doc))
    again = CheckpointStore.for_spec(tmp_path / "run", load_spec(tmp_path / "job.toml"), "a")
    with pytest.raises(CheckpointError, match="damaged.*--resume"):
        again.open_for_resume()


def test_changed_data_settings_job_or_format_are_refused_with_one_line(tmp_path):
    s = store(tmp_path)
    s.save("train", 1, {"w": np.zeros(2)})

    def reopen(party="a"):
        return CheckpointStore.for_spec(tmp_path / "run", load_spec(tmp_path / "job.toml"), party).open_for_resume()

    assert reopen()
    assert not reopen("b")  # no checkpoint yet: a fresh start, not an error
    (tmp_path / "a.csv").write_text("id,y,x\n1,0,0.5\n2,1,0.26\n")
    with pytest.raises(CheckpointError, match=r"party 'a': .* other data") as e:
        reopen()
    assert "\n" not in str(e.value)
    spec_in(tmp_path)  # the data back as it was
    spec_in(tmp_path, task="max_iter = 6")
    with pytest.raises(CheckpointError, match="other job settings"):
        reopen()
    spec_in(tmp_path)
    assert reopen()
    # addresses may move between a crash and a resume: not part of the fingerprint
    text = (tmp_path / "job.toml").read_text().replace("127.0.0.1:2", "127.0.0.1:3")
    (tmp_path / "job.toml").write_text(text)
    assert reopen()
    path = tmp_path / "run" / "checkpoints" / "a.json"
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "job": "other"}))
    with pytest.raises(CheckpointError, match="belongs to job 'other'"):
        reopen()
    path.write_text("{ torn")
    with pytest.raises(CheckpointError, match="unreadable"):
        reopen()
    path.write_text(json.dumps({"format": "fedrisk.checkpoint", "version": 99}))
    with pytest.raises(CheckpointError, match="not a fedrisk checkpoint"):
        reopen()


def test_the_fingerprint_ignores_other_parties_files(tmp_path):
    spec = load_spec(spec_in(tmp_path))
    before = fingerprint(spec, "a")
    (tmp_path / "b.csv").write_text("id,z\n1,3\n2,5\n")
    assert fingerprint(spec, "a") == before and fingerprint(spec, "b") != fingerprint(load_spec(spec_in(tmp_path)), "a")


def _ctx(name, channel, tmp, resume, steps):
    spec = load_spec(tmp / "job.toml")
    st_ = CheckpointStore.for_spec(tmp / "run", spec, name)
    for k in steps:
        st_.save("train", k, {"w": np.array([float(k)]), "who": name})
    ctx = SimpleNamespace(name=name, channel=channel, resume=resume, log=logging.getLogger("test"))
    return Resumption(ctx, st_)


@pytest.mark.parametrize("steps,expected", [({"a": [3, 4, 5], "b": [2, 3, 4]}, 4),
                                            ({"a": [5, 6, 7], "b": [2, 3, 4]}, 0),
                                            ({"a": [], "b": [1]}, 0)])
def test_holders_agree_on_the_last_step_they_all_have(tmp_path, steps, expected):
    spec_in(tmp_path)
    net = InMemoryNetwork(["a", "b"], capture=True)
    res = run_roles({p: (lambda ch, p=p: _ctx(p, ch, tmp_path, True, steps[p]).start("train", ["a", "b"]))
                     for p in ("a", "b")}, network=net)
    for p in ("a", "b"):
        step, state = res[p]
        assert step == expected
        assert (state is None) if expected == 0 else (state["who"] == p and state["w"][0] == expected)
    # the only messages: step numbers, as control
    got = net["a"].captured + net["b"].captured
    assert {e.tag for e in got} == {"ckpt.steps.train", "ckpt.step.train"}
    assert all(e.kind == "control" for e in got)
    assert net["b"].captured[0].body == {"step": expected}


def test_a_run_without_resume_sends_nothing_and_starts_afresh(tmp_path):
    spec_in(tmp_path)
    net = InMemoryNetwork(["a", "b"], capture=True)
    res = run_roles({p: (lambda ch, p=p: _ctx(p, ch, tmp_path, False, [1, 2]).start("train", ["a", "b"]))
                     for p in ("a", "b")}, network=net)
    assert res == {"a": (0, None), "b": (0, None)}
    assert net["a"].captured == [] and net["b"].captured == []


def test_a_step_saved_from_other_inputs_is_not_offered(tmp_path):
    spec_in(tmp_path)
    net = InMemoryNetwork(["a"])
    r = _ctx("a", net["a"], tmp_path, True, [])
    r.start("train", ["a"], inputs=np.array([1.0, 2.0]))
    r.save("train", 1, {"w": np.zeros(1)})
    r2 = Resumption(r.ctx, CheckpointStore.for_spec(tmp_path / "run", load_spec(tmp_path / "job.toml"), "a"))
    r2.store.open_for_resume()
    assert r2.start("train", ["a"], inputs=np.array([1.0, 2.0]))[0] == 1
    assert r2.start("train", ["a"], inputs=np.array([1.0, 2.5])) == (0, None)


def test_large_arrays_go_to_a_binary_side_file_and_round_trip_exactly(tmp_path):
    s = store(tmp_path)
    rng = np.random.default_rng(0)
    for k in range(1, 6):
        margin = rng.normal(size=24_000)
        margin[:3] = [np.nan, np.inf, -0.0]
        s.save("train", k, {"margin": margin, "best": margin.copy(), "small": np.arange(3.0), "k": k})
    ck = tmp_path / "run" / "checkpoints"
    doc = json.loads((ck / "a.json").read_text())
    # the JSON names the arrays (no values), the side files hold the kept steps only, one array each
    # (the byte-identical copy is stored once)
    assert len((ck / "a.json").read_text()) < 5_000
    named = {doc["stages"]["train"][str(k)]["margin"]["__ndarray_file__"] for k in s.steps("train")}
    assert {f.name for f in (ck / "a.arrays").iterdir()} == named and len(named) == KEEP
    for f in (ck / "a.arrays").iterdir():
        with np.load(f, allow_pickle=False) as z:
            assert len(z.files) == 1
    again = CheckpointStore.for_spec(tmp_path / "run", load_spec(tmp_path / "job.toml"), "a")
    assert again.open_for_resume()
    got = again.load("train", 5)
    assert got["margin"].dtype == np.float64 and got["margin"].tobytes() == margin.tobytes()
    assert got["best"].tobytes() == margin.tobytes() and got["small"].tolist() == [0.0, 1.0, 2.0] and got["k"] == 5
    # a fresh run's first save forgets the earlier run's side files
    fresh = store(tmp_path)
    fresh.save("train", 1, {"margin": np.zeros(5_000)})
    assert len(list((ck / "a.arrays").iterdir())) == 1


def test_a_damaged_or_missing_side_file_is_refused_with_one_line(tmp_path):
    s = store(tmp_path)
    s.save("train", 1, {"margin": np.linspace(0, 1, 10_000)})
    side = next((tmp_path / "run" / "checkpoints" / "a.arrays").iterdir())
    with np.load(side, allow_pickle=False) as z:
        (key,) = z.files
    bad = np.linspace(0, 1, 10_000)
    bad[7] += 1e-9
    np.savez(side, **{key: bad})
    again = CheckpointStore.for_spec(tmp_path / "run", load_spec(tmp_path / "job.toml"), "a")
    assert again.open_for_resume()
    with pytest.raises(CheckpointError, match="'a'.*does not match its checkpoint"):
        again.load("train", 1)
    side.unlink()
    with pytest.raises(CheckpointError, match="'a'.*missing or unreadable"):
        again.load("train", 1)
