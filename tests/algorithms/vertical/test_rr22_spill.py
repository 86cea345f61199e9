"""RR22 under ``memory_mb``: the party's keys spilled to disk give the in-memory result, and the peak
memory of the party process and of the library's process stays under the budget plus stated overheads."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fedrisk.algorithms.vertical import rr22_psi
from fedrisk.algorithms.vertical.psi_stream import IdChunks, chunks_of
from fedrisk.algorithms.vertical.rr22_psi import Rr22Stats, _OwnKeys, rr22_align
from fedrisk.algorithms.vertical.rr22_spill import SpilledKeys, file_names
from fedrisk.crypto import spu_binding
from fedrisk.errors import DataError, ProtocolError
from fedrisk.runtime.threads import run_roles
from fedrisk.transport.channel import InMemoryNetwork

needs_extra = pytest.mark.skipif(
    not spu_binding.available(),
    reason="RR22 PSI needs the optional extra, not installed here: pip install --no-deps spu==0.9.5 "
           "(or pip install 'fedrisk[psi]')")


def _spilled(digests, budget=64 * 1024, rows=1000, me="lender"):
    return SpilledKeys(me, (digests[i:i + rows] for i in range(0, len(digests), rows)), len(digests), budget)


@pytest.mark.parametrize("width", [12, 16])
def test_spilled_keys_give_the_in_memory_rows_order_and_digest(width):
    rng = np.random.default_rng(3)
    d = rng.integers(0, 256, (20_000, 16), dtype=np.uint8)
    d[7, :12] = d[8, :12]  # two keys sharing 96 bits: not unique at 12 bytes, still at 16
    mem = _OwnKeys(d)
    with _spilled(d) as sp:
        assert sp.bits > 0 and sp.n == 20_000  # really partitioned
        assert sp.prefix_unique(16) and not sp.prefix_unique(12) and not mem.prefix_unique(12)
        pick = rng.permutation(np.setdiff1d(np.arange(20_000), [7, 8]))[:6000]
        chunks = [d[pick[i:i + 700], :width] for i in range(0, len(pick), 700)]
        rows = sp.match(iter(chunks))
        want = mem.match(iter(chunks), "lender")
        assert np.array_equal(rows, want)
        assert sp.sorted_digest(rows) == mem.sorted_digest(want)
        # the keys are handed to the library in key order, all of them
        order = np.concatenate(list(sp.digest_chunks(999)))
        assert np.array_equal(order, d[mem.order])
        folder = sp.folder
    assert not folder.exists()


def test_spilled_keys_refuse_a_foreign_or_repeated_key_and_name_duplicate_rows(tmp_path):
    rng = np.random.default_rng(4)
    d = rng.integers(0, 256, (5000, 16), dtype=np.uint8)
    with _spilled(d) as sp:
        foreign = rng.integers(0, 256, (1, 12), dtype=np.uint8)
        with pytest.raises(ProtocolError, match="does not hold"):
            sp.match(iter([d[:10, :12], foreign]))
        with pytest.raises(ProtocolError, match="twice"):
            sp.match(iter([d[:10, :12], d[3:4, :12]]))
        assert np.array_equal(sp.match(iter([d[5:6, :12]])), [5])  # usable after a refusal
    d[4321] = d[17]
    with pytest.raises(DataError, match=r"rows 17 and 4321"):
        _spilled(d)


@needs_extra
def test_rr22_under_a_budget_gives_the_in_memory_result_and_leaves_no_file(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    traces = set(Path("/tmp").glob("psi_*.trace"))  # the library's own, compiled-in folder
    rng = np.random.default_rng(5)
    pool = rng.choice(10**12, 30_000, replace=False)
    a = np.array([f"CUST-{x}" for x in rng.permutation(pool[:20_000])], dtype=object)
    b = np.array([f"CUST-{x}" for x in rng.permutation(pool[10_000:])], dtype=object)
    seen: list[list[str]] = []
    real = SpilledKeys.__init__

    def spy(self, *args, **kw):
        real(self, *args, **kw)
        seen.append(file_names(self))
        blobs = b"".join(p.read_bytes() for p in self.folder.iterdir())
        assert b"CUST-" not in blobs and len(blobs) == 20 * self.n  # keys and row numbers only
    monkeypatch.setattr(SpilledKeys, "__init__", spy)

    def run(kw_l, kw_f):
        net = InMemoryNetwork(["lender", "payco"], tag_prefixes=("psi.",), recv_timeout=600)
        return run_roles({"lender": lambda ch: rr22_align(ch, "payco", a if "ids" not in kw_l else kw_l.pop("ids"),
                                                          leader=True, salt="s", **kw_l),
                          "payco": lambda ch: rr22_align(ch, "lender", b, leader=False, salt="s", **kw_f)}, network=net)

    ref = run({}, {})
    assert not seen
    # the budget is per party: a spilling lender with an in-memory payco, ids given in chunks too
    got = run({"memory_mb": 0.5, "ids": IdChunks(chunks_of(a, 3000))}, {"memory_mb": 0.5})
    assert len(seen) == 2 and all(len(s) > 1 for s in seen)
    for p in ("lender", "payco"):
        assert got[p].size == ref[p].size == 10_000
        assert np.array_equal(got[p].indices, ref[p].indices)  # same rows, same (canonical) order
    assert rr22_psi._spill(20_000, 0.5) and not rr22_psi._spill(20_000, 100)
    assert list(tmp_path.glob("fedrisk-rr22-*")) == []
    assert set(Path("/tmp").glob("psi_*.trace")) <= traces  # the library's trace files are removed too
    # in a job the party's run folder holds the spilled keys and the library's folder, not the system's temp
    made: list = []
    real_lib = rr22_psi._Library.__init__

    def lib_spy(self, *args, **kw):
        real_lib(self, *args, **kw)
        made.append(self.folder.name)

    def keys_spy(self, *args, **kw):
        real(self, *args, **kw)
        made.append(str(self.folder))
    monkeypatch.setattr(rr22_psi._Library, "__init__", lib_spy)
    monkeypatch.setattr(SpilledKeys, "__init__", keys_spy)
    runs = {p: tmp_path / f"run-{p}" / "tmp" for p in ("lender", "payco")}
    again = run({"memory_mb": 0.5, "spill_dir": runs["lender"]}, {"memory_mb": 0.5, "spill_dir": runs["payco"]})
    assert np.array_equal(again["lender"].indices, ref["lender"].indices)
    assert len(made) == 4  # two library folders, two spilled key sets
    assert all(any(os.path.commonpath([m, str(r)]) == str(r) for r in runs.values()) for m in made)
    assert list(tmp_path.glob("fedrisk-rr22-*")) == []  # nothing in the system's temporary folder
    assert all(list(r.iterdir()) == [] for r in runs.values())  # and nothing left in the run folders


_CHILD = textwrap.dedent("""
    import json, sys, tracemalloc
    import numpy as np
    import psutil
    from fedrisk.algorithms.vertical.rr22_psi import Rr22Stats, rr22_align
    from fedrisk.runtime.threads import run_roles
    from fedrisk.transport.channel import InMemoryNetwork
    n, budget = int(sys.argv[1]), float(sys.argv[2])
    mem = budget if budget > 0 else None
    if mem is None:  # the reference: keys in memory, one 2^20 bucket, and the library's default allocator
        from fedrisk.algorithms.vertical import rr22_psi
        rr22_psi._library_env = lambda memory_mb: {}

    def sets(n):
        rng = np.random.default_rng(7)
        pool = rng.choice(10**12, 2 * n - n // 2, replace=False)
        a, b = rng.permutation(pool[:n]), rng.permutation(np.concatenate([pool[:n // 2], pool[n:]]))
        return [np.array([f"C{x:013d}" for x in s], dtype=object) for s in (a, b)]

    def run(a, b):
        st = {"lender": Rr22Stats(), "payco": Rr22Stats()}
        net = InMemoryNetwork(["lender", "payco"], tag_prefixes=("psi.",), recv_timeout=600)
        res = run_roles({
            "lender": lambda ch: rr22_align(ch, "payco", a, leader=True, salt="s", memory_mb=mem, stats=st["lender"]),
            "payco": lambda ch: rr22_align(ch, "lender", b, leader=False, salt="s", memory_mb=mem, stats=st["payco"]),
        }, network=net)
        return res, st

    run(*sets(3000))  # warm-up: imports, threads, the relay, allocator arenas
    a, b = sets(n)

    from fedrisk.runtime.rss import peak_rss_mb, reset_peak

    base = psutil.Process().memory_info().rss
    assert reset_peak()  # the peak from here on (the warm-up's not counted)
    tracemalloc.start()
    res, st = run(a, b)
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    peak = peak_rss_mb() * 2**20
    print(json.dumps({"size": res["lender"].size, "traced": traced, "grew": peak - base,
                      "same": bool(np.array_equal(a[res["lender"].indices], b[res["payco"].indices])),
                      "lib": {p: [s.library_base_rss_mb, s.library_rss_mb] for p, s in st.items()}}))
""")

#: Stated overheads that do not follow the budget (docs/scale.md, "RR22 memory"):
#: the relay's socket reads (two 1 MiB buffers per party) and the channel's ledger entries;
_PARTY_FIXED_MB = 3.0
#: the party process's RSS beyond what it allocates (allocator arenas, thread stacks: the
#: relay's and the library's event reader), for two parties;
_PARTY_RSS_FIXED_MB = 48.0
#: the library's process beyond its loaded size: its threads, link and CSV reader buffers
#: (measured 50-62 MB at 3k-600k ids with two arenas), plus what it keeps per item outside its
#: hash buckets (measured about 50 bytes per id from 200k to 600k ids).
_LIBRARY_FIXED_MB, _LIBRARY_BYTES_PER_ID = 64.0, 64


def _child(n, budget):
    env = dict(os.environ)
    env.pop("MALLOC_ARENA_MAX", None)  # (the library's process gets it from rr22_psi)
    if budget > 0:
        env["MALLOC_ARENA_MAX"] = "2"  # the party process too, as psi_stream's memory test
    out = subprocess.run([sys.executable, "-c", _CHILD, str(n), str(budget)], capture_output=True, text=True,
                         env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@needs_extra
def test_peak_memory_of_party_and_library_stays_under_the_bound():
    """Two parties (threads of one process, each with its own library process), 100k string ids each,
    ``memory_mb = 4``: what the parties allocate stays under their budgets plus the relay's fixed
    buffers; the process's RSS grows by less than that plus its fixed overhead; each library process
    grows above its loaded size by less than its half of the budget plus its stated overhead. The same
    run without a budget (keys in memory, one 2^20-item bucket) and with the library's default allocator
    (one arena per thread) exceeds both the allocation bound and the library bound (so the test can fail)."""
    n, budget = 100_000, 4.0
    bounded, free = _child(n, budget), _child(n, 0)
    assert bounded["size"] == free["size"] == n // 2 and bounded["same"] and free["same"]
    mb = 2**20
    lib_bound = budget / 2 + _LIBRARY_FIXED_MB + _LIBRARY_BYTES_PER_ID * n / mb
    party_bound = budget + 2 * _PARTY_FIXED_MB
    grew = {k: {p: v[1] - v[0] for p, v in r["lib"].items()} for k, r in (("bounded", bounded), ("free", free))}
    print(f"party allocations at peak: {bounded['traced'] / mb:.1f} MB under the budget, {free['traced'] / mb:.1f} MB "
          f"without (bound {party_bound:.0f}); party RSS growth {bounded['grew'] / mb:.1f} / {free['grew'] / mb:.1f} MB; "
          f"library growth {grew['bounded']} / {grew['free']} MB (bound {lib_bound:.0f})")
    assert bounded["traced"] / mb <= party_bound
    assert bounded["grew"] / mb <= party_bound + _PARTY_RSS_FIXED_MB
    assert all(g <= lib_bound for g in grew["bounded"].values())
    assert free["traced"] / mb > party_bound  # without the budget the party keeps 48+ bytes per id
    assert all(g > lib_bound for g in grew["free"].values())  # and the library one arena per thread
