"""The Ray test: a party's heavy kernels on a real two-node Ray cluster give the same results.

A real local cluster on loopback — a head (``ray start --head``) and a second node
(``ray start --address``), one CPU each, small object stores, ports from one free block — is
started once for this module and stopped at the end, and the test checks that no process it
started survives. Jobs then run with ``fedrisk simulate`` (one process per party, mTLS) twice,
once with some parties on ``compute = "ray"`` and once all local, and their models / WOE tables
must be identical:

* vertical SecureBoost, 6,000 customers, 3 trees: the label holder (encryption, decryption) and a
  feature holder (encrypted histograms) on Ray, the other feature holder local;
* vertical WOE over 40,000 ids per side, 32,000 shared (PSI hashing/blinding and encrypted bin
  sums of the feature holder on Ray: 32,000 rows x 2 features is above ``PARALLEL_HISTOGRAM_AT``,
  so the bin sums are split over the workers; 100,000 ids per side, as before, tested nothing more
  and cost about 2.5x the time).

Skipped with a message when Ray (the ``fedrisk[ray]`` extra) is not installed. ``ray stop`` is
not used to stop the cluster: it kills every Ray process of the machine, including other users'
clusters; the processes started here are found by a marker in their environment instead.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import psutil
import pytest

from fedrisk.runtime.demo import free_ports

# generous: a loaded shared machine runs these jobs many times slower than an idle one
pytestmark = [pytest.mark.ray, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1200)]

if os.environ.get("FEDRISK_REQUIRE_RAY") == "1":  # CI: a missing extra is a failure, not a skip
    import ray  # noqa: F401
else:
    ray = pytest.importorskip("ray", reason="Ray is not installed: `pip install fedrisk[ray]` runs the Ray compute test")

REPO = Path(__file__).resolve().parents[2]
FEDRISK = [sys.executable, "-m", "fedrisk"]
RAY_CLI = str(Path(sys.executable).with_name("ray"))
#: where the cluster's ports are taken from (a block of free ones); override for another machine
PORT_RANGE = tuple(int(x) for x in os.environ.get("FEDRISK_RAY_TEST_PORTS", "47000-47999").split("-"))
PORTS_PER_NODE = 40  # 8 service ports and 32 worker ports


def _free_block(lo: int, hi: int, size: int) -> int:
    """The first port ``p`` in ``[lo, hi]`` with ``p .. p + size - 1`` all free on loopback and any address."""
    p = lo
    while p + size - 1 <= hi:
        for q in range(p, p + size):
            with socket.socket() as s:
                try:
                    s.bind(("", q))
                except OSError:
                    p = q + 1
                    break
        else:
            return p
    pytest.skip(f"no block of {size} free ports in {lo}-{hi} for the Ray cluster (set FEDRISK_RAY_TEST_PORTS)")


def _node_args(base: int) -> list[str]:
    return ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--object-store-memory", str(100 * 2**20),
            "--node-manager-port", str(base + 1), "--object-manager-port", str(base + 2),
            "--metrics-export-port", str(base + 3), "--dashboard-agent-listen-port", str(base + 4),
            "--dashboard-agent-grpc-port", str(base + 5), "--runtime-env-agent-port", str(base + 6),
            "--min-worker-port", str(base + 8), "--max-worker-port", str(base + PORTS_PER_NODE - 1),
            "--disable-usage-stats"]


class LocalRayCluster:
    """A head and one more node on this machine, and every process they started (by marker)."""

    def __init__(self) -> None:
        base = _free_block(*PORT_RANGE, 2 * PORTS_PER_NODE)
        self.port = base
        self.address = f"127.0.0.1:{base}"
        self.marker = uuid.uuid4().hex
        #: pid -> create time of every process of this cluster seen so far
        self.known: dict[int, float] = {}
        # short: Ray puts unix sockets under it (108-byte path limit)
        self.tmp = Path(tempfile.mkdtemp(prefix="frray", dir="/tmp"))
        self.env = {**os.environ, "FEDRISK_RAY_TEST_MARKER": self.marker, "RAY_USAGE_STATS_ENABLED": "0",
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        self.env.pop("RAY_ADDRESS", None)
        head = [RAY_CLI, "start", "--head", "--port", str(base), "--ray-client-server-port", str(base + 7),
                "--include-dashboard", "false", "--temp-dir", str(self.tmp / "head"), *_node_args(base)]
        node = [RAY_CLI, "start", "--address", self.address, "--temp-dir", str(self.tmp / "node"),
                *_node_args(base + PORTS_PER_NODE)]
        try:
            for cmd in (head, node):
                r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=120)
                self.processes()  # remember the raylet's agents while they are still its children
                assert r.returncode == 0, f"{' '.join(cmd[:3])} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
        except BaseException:
            self.stop()
            raise

    def processes(self) -> list[psutil.Process]:
        """Every live process of this cluster: those carrying its marker (Ray's daemons, workers)
        and their descendants (the agents a raylet starts rewrite their environment block), plus
        any seen before that is still alive."""
        me = os.getpid()
        found: dict[int, psutil.Process] = {}
        for p in psutil.process_iter():
            try:
                if p.pid != me and p.environ().get("FEDRISK_RAY_TEST_MARKER") == self.marker:
                    found[p.pid] = p
                    for c in p.children(recursive=True):
                        found.setdefault(c.pid, c)
            except (psutil.Error, OSError):
                continue
        for pid, created in list(self.known.items()):
            try:
                p = psutil.Process(pid)
                if p.create_time() == created:
                    found.setdefault(pid, p)
            except psutil.Error:
                self.known.pop(pid, None)
        alive = []
        for p in found.values():
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
                    self.known[p.pid] = p.create_time()
            except psutil.Error:
                continue
        return alive

    def stop(self) -> None:
        """SIGTERM every process of this cluster, SIGKILL what is left after 5 s (Ray's agents
        ignore SIGTERM once their raylet is gone)."""
        for _ in range(3):  # workers may still be starting while the first round stops the rest
            procs = self.processes()
            if not procs:
                break
            for p in procs:
                try:
                    p.send_signal(signal.SIGTERM)
                except psutil.Error:
                    pass
            _, alive = psutil.wait_procs(procs, timeout=5)
            for p in alive:
                try:
                    p.kill()
                except psutil.Error:
                    pass
            psutil.wait_procs(alive, timeout=10)
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    c = LocalRayCluster()
    try:
        yield c
    finally:
        c.stop()
        left = c.processes()
        assert not left, f"Ray processes survived the test: {[p.pid for p in left]}"


def simulate(spec: Path, out: Path, env: dict) -> subprocess.CompletedProcess:
    r = subprocess.run([*FEDRISK, "simulate", str(spec), "--out", str(out)], capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def _log(out: Path, party: str) -> str:
    return (out / "logs" / f"{party}.log").read_text()


def _spec(tmp: Path, body: str, tables: dict[str, str]) -> Path:
    """Write ``body`` with each ``{party}`` placeholder replaced by that party's extra settings."""
    spec = tmp / "job.toml"
    spec.write_text(textwrap.dedent(body).format(**tables))
    return spec


def _ray_table(c: LocalRayCluster) -> str:
    return f'compute = "ray"\nray_address = "{c.address}"'


def _ray_and_local_runs(cluster: LocalRayCluster, tmp_path: Path, job: Callable[[Path, dict[str, str], list[int]], Path],
                        parties: tuple[str, ...], on_ray: tuple[str, ...]) -> tuple[Path, Path]:
    """Simulate ``job`` twice on the same ports and data: ``on_ray`` parties on the cluster, then every
    party on its local pool. Returns the two run directories (Ray first)."""
    ports = free_ports(len(parties))
    runs = {}
    for mode in ("ray", "local"):
        d = tmp_path / mode
        d.mkdir()
        table = _ray_table(cluster) if mode == "ray" else ""
        spec = job(d, {p: table if p in on_ray else "" for p in parties}, ports)
        simulate(spec, d / "run", os.environ)
        runs[mode] = d / "run"
    return runs["ray"], runs["local"]


def _tasks_on_ray(out: Path, party: str) -> dict[str, int]:
    """The kernel tasks the party says it sent to Ray, by kernel (empty when it ran locally)."""
    text = _log(out, party)
    if "kernel tasks on Ray (" not in text:
        return {}
    inside = text.split("kernel tasks on Ray (", 1)[1].split(")\n", 1)[0]
    return {name: int(n) for name, n in (item.rsplit(" ", 1) for item in inside.split(", "))}


def _secureboost_job(tmp: Path, tables: dict[str, str], ports: list[int]) -> Path:
    rng = np.random.default_rng(7)
    n = 6000  # 4,560 training rows: root histograms and label encryption are large enough for the pool
    ids = np.arange(n) + 1000
    X = rng.normal(size=(n, 6))
    z = X[:, 0] - X[:, 2] + 0.8 * X[:, 4] - 0.5 * X[:, 5] - 0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    pd.DataFrame({"id": ids, "y": y, "a": X[:, 0], "b": X[:, 1]}).to_csv(tmp / "lender.csv", index=False)
    keep = rng.permutation(n)[: n - 300]
    pd.DataFrame({"id": ids[keep], "c": X[keep, 2], "d": X[keep, 3]}).to_csv(tmp / "payco.csv", index=False)
    order = rng.permutation(n)
    pd.DataFrame({"id": ids[order], "e": X[order, 4], "f": X[order, 5]}).to_csv(tmp / "bureau.csv", index=False)
    return _spec(tmp, f"""
        [federation]
        name = "ray-sb"
        seed = 3
        [parties.lender]
        address = "127.0.0.1:{ports[0]}"
        data = "lender.csv"
        label = "y"
        {{lender}}
        [parties.payco]
        address = "127.0.0.1:{ports[1]}"
        data = "payco.csv"
        {{payco}}
        [parties.bureau]
        address = "127.0.0.1:{ports[2]}"
        data = "bureau.csv"
        {{bureau}}
        [task]
        kind = "vertical.secureboost"
        n_trees = 3
        max_depth = 3
        max_bin = 16
        [evaluation]
        test_rule = "id % 5 == 0"
        """, tables)


def _same_rows(summary: dict) -> dict:
    """An alignment summary without its timing."""
    return {k: v for k, v in summary.items() if k != "seconds"}


def _model_core(path: Path) -> dict:
    doc = json.loads(path.read_text())
    return {k: doc.get(k) for k in ("base_score", "features", "trees", "importance", "parties")}


def test_secureboost_with_parties_on_ray_learns_the_local_model(cluster, tmp_path):
    # the label holder (encryption, decryption) and one feature holder (histograms) on the
    # cluster, the other feature holder on its local pool: backends mix freely in one job
    ray_run, local_run = _ray_and_local_runs(cluster, tmp_path, _secureboost_job, ("lender", "bureau", "payco"),
                                             on_ray=("lender", "bureau"))
    for party in ("lender", "bureau"):
        assert f"heavy kernels run on Ray at {cluster.address} with 2 CPUs on 2 nodes" in _log(ray_run, party)
        assert not _tasks_on_ray(local_run, party)
    assert not _tasks_on_ray(ray_run, "payco")
    lender, bureau = _tasks_on_ray(ray_run, "lender"), _tasks_on_ray(ray_run, "bureau")
    # what ran there: PSI hashing and blinding at both (peer batches this small are re-blinded
    # inline); the label holder's encryption (obfuscators, packed slots) and decryption; the
    # feature holder's encrypted histograms and their compression
    assert "hash_and_blind_kernel" in set(lender) & set(bureau), (lender, bureau)
    assert {"_obfuscator_task", "_encrypt_slots_task", "_decrypt_kernel"} <= set(lender), lender
    # (the root's cells are _cell_products; deeper levels run _level_hist_* when large enough)
    assert any(k.startswith("_level_hist") or k == "_cell_products" for k in bureau) and "_shift_task" in bureau, bureau
    for f in ("model.json", "model-payco.json", "model-bureau.json"):
        assert _model_core(ray_run / f) == _model_core(local_run / f), f
    for f in ("train.csv", "test.csv"):
        a, b = pd.read_csv(ray_run / "scores" / f), pd.read_csv(local_run / "scores" / f)
        pd.testing.assert_frame_equal(a, b)
    m = json.loads((ray_run / "metrics.json").read_text())
    assert m["intersection"]["size"] == 5700 and m["test"]["auc"] > 0.7
    assert _same_rows(m["intersection"]) == _same_rows(json.loads((local_run / "metrics.json").read_text())["intersection"])


def _woe_job(tmp: Path, tables: dict[str, str], ports: list[int]) -> Path:
    """40,000 ids at each side, 32,000 of them shared, in different orders."""
    rng = np.random.default_rng(11)
    n = 48_000
    ids = rng.permutation(10**7)[:n] + 10**6
    x = rng.normal(size=(n, 2))
    y = (rng.random(n) < 1 / (1 + np.exp(-(x[:, 0] - 0.7 * x[:, 1] - 1)))).astype(int)
    own = rng.normal(size=n)
    lender_rows = np.arange(0, 40_000)
    bureau_rows = rng.permutation(np.arange(8_000, 48_000))
    pd.DataFrame({"id": ids[lender_rows], "y": y[lender_rows], "own": own[lender_rows]}).to_csv(tmp / "lender.csv", index=False)
    pd.DataFrame({"id": ids[bureau_rows], "p": x[bureau_rows, 0], "q": x[bureau_rows, 1]}).to_csv(tmp / "bureau.csv", index=False)
    return _spec(tmp, f"""
        [federation]
        name = "ray-psi"
        seed = 5
        [parties.lender]
        address = "127.0.0.1:{ports[0]}"
        data = "lender.csv"
        label = "y"
        {{lender}}
        [parties.bureau]
        address = "127.0.0.1:{ports[1]}"
        data = "bureau.csv"
        {{bureau}}
        [task]
        kind = "vertical.woe"
        scheme = "ou"
        reveal = "woe"
        """, tables)


def test_psi_and_woe_of_40k_ids_with_one_party_on_ray_match_the_local_run(cluster, tmp_path):
    ray_run, local_run = _ray_and_local_runs(cluster, tmp_path, _woe_job, ("lender", "bureau"), on_ray=("bureau",))
    bureau = _tasks_on_ray(ray_run, "bureau")
    assert {"hash_and_blind_kernel", "reblind_kernel"} <= set(bureau), bureau  # its PSI
    assert "_grouped_task" in bureau or "_bin_sums_task" in bureau, bureau     # its encrypted bin sums
    assert not _tasks_on_ray(ray_run, "lender") and not _tasks_on_ray(local_run, "bureau")
    m_ray = json.loads((ray_run / "metrics.json").read_text())
    m_local = json.loads((local_run / "metrics.json").read_text())
    assert m_ray["intersection"]["size"] == 32_000
    assert _same_rows(m_ray["intersection"]) == _same_rows(m_local["intersection"]) and m_ray["rows"] == m_local["rows"]
    assert m_ray["iv"] == m_local["iv"]
    for party in ("lender", "bureau"):
        a = json.loads((ray_run / "woe" / f"{party}.json").read_text())
        b = json.loads((local_run / "woe" / f"{party}.json").read_text())
        a.pop("digest", None), b.pop("digest", None)
        assert a == b, party
