"""Ledgers (issue 12 item 9): hash chain, durable before the frame leaves, inbound copy, never deleted."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedrisk.cli import app
from fedrisk.transport import ledger as ledger_mod
from fedrisk.transport.channel import InMemoryNetwork
from fedrisk.transport.ledger import (GENESIS, Ledger, _line_hash, archive_previous, read_ledger, verify_chain,
                                      verify_ledgers)


def _run(tmp_path: Path, n: int = 5) -> Path:
    """A run directory whose ledgers hold a few messages each way between a and b."""
    run = tmp_path / "run"
    net = InMemoryNetwork(["a", "b"], job="j", ledger_dir=str(run / "ledger"), inbound_dir=str(run / "ledger-inbound"))
    for i in range(n):
        net["a"].send("b", f"t.x.{i}", np.full(3, i), kind="masked")
        net["b"].recv("a", f"t.x.{i}")
        net["b"].send("a", f"t.y.{i}", {"i": i}, kind="metric")
        net["a"].recv("b", f"t.y.{i}")
    for ch in net.channels.values():
        ch.close()
    return run


def test_lines_are_hash_chained_and_verify(tmp_path):
    run = _run(tmp_path)
    lines = (run / "ledger" / "a.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["prev"] == GENESIS
    for before, line in zip(lines, lines[1:]):
        assert json.loads(line)["prev"] == _line_hash(before)
    res = verify_ledgers([run])
    assert res.errors == 0 and res.warnings == 0, res.lines
    assert sum("all in" in line for line in res.lines) == 2  # a -> b and b -> a reconciled


@pytest.mark.parametrize("attack", ["edit", "drop", "swap"])
def test_editing_dropping_or_reordering_a_line_breaks_the_chain(tmp_path, attack):
    run = _run(tmp_path)
    f = run / "ledger" / "a.jsonl"
    lines = f.read_text().splitlines()
    if attack == "edit":  # under-report what left
        e = json.loads(lines[2])
        e["bytes"] = 1
        lines[2] = json.dumps(e, separators=(",", ":"))
    elif attack == "drop":
        del lines[2]
    else:
        lines[1], lines[2] = lines[2], lines[1]
    f.write_text("\n".join(lines) + "\n")
    rep = verify_chain(f)
    # the chain breaks at the line after the change (the last line is covered by the peer's copy)
    assert not rep.ok and any(f"line {k}" in p for k in (2, 3, 4) for p in rep.problems), rep.problems


def test_a_rewritten_consistent_chain_is_caught_by_the_receivers_inbound_ledger(tmp_path):
    run = _run(tmp_path)
    f = run / "ledger" / "a.jsonl"
    kept = [json.loads(line) for line in f.read_text().splitlines()][1:]  # hide the first message...
    prev, out = GENESIS, []
    for seq, e in enumerate(kept, 1):  # ...and re-chain the rest so the file verifies on its own
        e.update(seq=seq, prev=prev)
        line = json.dumps(e, separators=(",", ":"))
        out.append(line)
        prev = _line_hash(line)
    f.write_text("\n".join(out) + "\n")
    assert verify_chain(f).ok
    res = verify_ledgers([run])
    assert res.errors == 1 and "received but not in the sender's ledger: t.x.0" in "\n".join(res.lines)


def test_line_is_durable_before_the_frame_leaves(tmp_path, monkeypatch):
    events = []
    real_fsync = os.fsync
    monkeypatch.setattr(ledger_mod.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    net = InMemoryNetwork(["a", "b"], ledger_dir=str(tmp_path / "ledger"))
    path = tmp_path / "ledger" / "a.jsonl"
    real_deliver = net["a"]._deliver

    def deliver(to, frame):
        # at hand-over the line is already on disk
        events.append(("deliver", len(read_ledger(path))))
        real_deliver(to, frame)

    net["a"]._deliver = deliver
    net["a"].send("b", "t.1", 1, kind="metric")
    net["a"].send("b", "t.2", 2, kind="metric")
    assert events == ["fsync", ("deliver", 1), "fsync", ("deliver", 2)]


def test_receiver_keeps_an_inbound_ledger_with_frame_digests(tmp_path):
    run = _run(tmp_path, n=2)
    sent = [e for e in read_ledger(run / "ledger" / "a.jsonl")]
    got = read_ledger(run / "ledger-inbound" / "b.jsonl")
    assert [e["sha256"] for e in got] == [e["sha256"] for e in sent]
    assert {e["dir"] for e in got} == {"in"} and {e["from"] for e in got} == {"a"}


def test_rerun_archives_instead_of_deleting(tmp_path):
    path = tmp_path / "ledger" / "a.jsonl"
    first = Ledger("a", path)
    first.record("b", "t.1", "metric", 10, b"frame-1")
    first.close()
    old = path.read_text()
    moved = archive_previous(path)
    assert moved is not None and moved.read_text() == old and moved.parent.name == "previous"
    second = Ledger("a", path)
    second.record("b", "t.1", "metric", 10, b"frame-2")
    second.close()
    assert verify_chain(path).ok and len(read_ledger(path)) == 1
    assert archive_previous(path) != moved  # a third run keeps both earlier ones
    assert len(list((tmp_path / "ledger" / "previous").iterdir())) == 2


def test_resumed_run_continues_the_chain(tmp_path):
    path = tmp_path / "a.jsonl"
    for i in range(3):
        led = Ledger("a", path)
        led.record("b", f"t.{i}", "metric", 1, b"x")
        led.close()
    rep = verify_chain(path)
    assert rep.ok and [e["seq"] for e in rep.entries] == [1, 2, 3]


def test_files_are_private(tmp_path):
    led = Ledger("a", tmp_path / "new" / "a.jsonl")
    led.record("b", "t", "metric", 1, b"x")
    led.close()
    assert (tmp_path / "new" / "a.jsonl").stat().st_mode & 0o077 == 0
    assert (tmp_path / "new").stat().st_mode & 0o077 == 0


def test_cli_ledger_verify(tmp_path):
    run = _run(tmp_path)
    r = CliRunner().invoke(app, ["ledger", "verify", str(run)])
    assert r.exit_code == 0, r.output
    assert "chain intact" in r.output and "a -> b" in r.output
    # across hosts: each side passes its own files and the partner's
    r = CliRunner().invoke(app, ["ledger", "verify", str(run / "ledger" / "a.jsonl"), str(run / "ledger-inbound" / "b.jsonl")])
    assert r.exit_code == 0 and "a -> b: 5 messages received" in r.output, r.output
    f = run / "ledger-inbound" / "b.jsonl"
    f.write_text(f.read_text().replace('"tag":"t.x.1"', '"tag":"t.x.9"'))
    r = CliRunner().invoke(app, ["ledger", "verify", str(run)])
    assert r.exit_code == 2 and "b.jsonl: line 3" in r.output and "received but not in the sender's ledger: t.x.9" in r.output
