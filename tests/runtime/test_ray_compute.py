"""The Ray test: a party's heavy kernels on a real two-node Ray cluster give the same results.

A real local cluster on loopback — a head (``ray start --head``) and a second node
(``ray start --address``), one CPU each, small object stores, ports from one free block — is
started once for this module and stopped at the end, and the test checks that no process it
started survives. Jobs then run with ``fedrisk simulate`` (one process per party, mTLS) twice,
once with some parties on ``compute = "ray"`` and once all local, and their models / WOE tables
must be identical:

* vertical SecureBoost, 3,000 customers, 3 trees: the label holder (encryption, decryption) and a
  feature holder (encrypted histograms) on Ray, the other feature holder local;
* vertical WOE over 100,000 ids per side (PSI hashing/blinding and encrypted bin sums of the
  feature holder on Ray).

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
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from fedrisk.runtime.demo import free_ports

pytestmark = [pytest.mark.ray, pytest.mark.e2e, pytest.mark.slow]

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
                assert r.returncode == 0, f"{' '.join(cmd[:3])} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
        except BaseException:
            self.stop()
            raise

    def processes(self) -> list[psutil.Process]:
        """Every live process carrying this cluster's marker (Ray's daemons, agents and workers)."""
        me = os.getpid()
        found = []
        for p in psutil.process_iter():
            try:
                if p.pid != me and p.environ().get("FEDRISK_RAY_TEST_MARKER") == self.marker \
                        and p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
            except (psutil.Error, OSError):
                continue
        return found

    def stop(self) -> None:
        """SIGTERM every process of this cluster, SIGKILL what is left after 5 s."""
        procs = self.processes()
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
        deadline = time.monotonic() + 10
        while self.processes() and time.monotonic() < deadline:  # workers re-parented during the stop
            for p in self.processes():
                try:
                    p.kill()
                except psutil.Error:
                    pass
            time.sleep(0.5)
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
