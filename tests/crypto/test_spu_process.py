"""The PSI library's child process: its environment, its ``loaded`` report, and its end."""
from __future__ import annotations

from pathlib import Path

import pytest

from fedrisk.crypto import spu_binding
from fedrisk.crypto.spu_process import LibraryProcess, WorkerGone

needs_extra = pytest.mark.skipif(not spu_binding.available(), reason="needs the optional extra (spu 0.9.5)")


@needs_extra
def test_child_gets_its_folder_and_extra_environment_and_ends_on_close(tmp_path):
    w = LibraryProcess(tmp_path / "lib", {"MALLOC_ARENA_MAX": "2"})
    try:
        ev = w.wait("loaded", 120)
        assert ev["event"] == "loaded" and ev["rss_mb"] > 10  # its RSS once loaded: the base of the memory bound
        env = dict(kv.split(b"=", 1) for kv in Path(f"/proc/{w.proc.pid}/environ").read_bytes().split(b"\0") if b"=" in kv)
        assert env[b"MALLOC_ARENA_MAX"] == b"2" and env[b"TMPDIR"] == str(tmp_path / "lib").encode()
    finally:
        w.close(grace=10)
    assert w.proc.poll() is not None  # stdin closed: the child exits by itself
    with pytest.raises(WorkerGone):
        w.wait("linked", 5)


@needs_extra
def test_child_without_extra_environment_inherits_the_party_s(tmp_path, monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    w = LibraryProcess(tmp_path / "lib")
    try:
        w.wait("loaded", 120)
        env = Path(f"/proc/{w.proc.pid}/environ").read_bytes().split(b"\0")
        assert not any(kv.startswith(b"MALLOC_ARENA_MAX=") for kv in env)
    finally:
        w.kill()
    assert w.proc.poll() is not None
