"""A throw-away network of Linux network namespaces for cross-host tests (issue 14, "Real hosts").

Every "host" is a network namespace with its own loopback and one veth interface; the other ends
of the veths sit on a bridge inside a separate *switch* namespace, so the root namespace gains
nothing but the namespace names while the lab exists. Addresses come from the documentation range
192.0.2.0/24 only (RFC 5737): nothing outside the namespaces is ever addressed, and no route out
exists. :meth:`NetLab.close` kills every process the lab started and deletes every namespace
(which removes the veths and the bridge with them).

Needs root (``ip netns add``); :func:`lab_or_skip` turns "not permitted" into a pytest skip with
the reason.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SUBNET = "192.0.2"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


def lab_or_skip() -> "NetLab":
    """A new empty lab, or a pytest skip naming why namespaces cannot be made here."""
    if shutil.which("ip") is None:
        pytest.skip("cross-host test needs iproute2's `ip` command (not installed)")
    if os.geteuid() != 0:
        pytest.skip("cross-host test needs root to create network namespaces (`ip netns add`); run as root")
    probe = f"frprobe{os.getpid()}{secrets.token_hex(2)}"
    r = _ip("netns", "add", probe, check=False)
    if r.returncode != 0:
        pytest.skip(f"`ip netns add` is not permitted here: {r.stderr.strip() or r.returncode}")
    _ip("netns", "del", probe, check=False)
    lab = NetLab()
    try:
        lab.start()
    except subprocess.CalledProcessError as e:
        lab.close()
        pytest.skip(f"cannot build a veth bridge between namespaces here: {' '.join(e.cmd)}: {e.stderr.strip()}")
    return lab


class NetLab:
    """Namespaces ``<prefix>-<host>`` joined by a bridge in ``<prefix>-sw``; unique per test run."""

    def __init__(self) -> None:
        self.prefix = f"fr{os.getpid() % 100000}{secrets.token_hex(2)}"
        self.switch = f"{self.prefix}-sw"
        self.hosts: dict[str, str] = {}  # host -> namespace
        self.ips: dict[str, list[str]] = {}
        self.procs: list[subprocess.Popen] = []
        self._n = 0

    def start(self) -> None:
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")

    def add_host(self, host: str, *addresses: str) -> str:
        """Namespace for ``host`` with ``addresses`` (last octets or full 192.0.2.x) on its veth."""
        ns = f"{self.prefix}-{host}"
        self._n += 1
        port = f"p{self._n}"
        _ip("netns", "add", ns)
        self.hosts[host] = ns
        _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", self.switch)
        _ip("-n", self.switch, "link", "set", port, "master", "br0")
        _ip("-n", self.switch, "link", "set", port, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        ips = [a if a.count(".") == 3 else f"{SUBNET}.{a}" for a in addresses]
        for a in ips:
            assert a.startswith(SUBNET + "."), "the lab uses the documentation range only"
            _ip("-n", ns, "addr", "add", f"{a}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        self.ips[host] = ips
        return ns

    def popen(self, host: str, argv: list[str], log: Path, **kw) -> subprocess.Popen:
        """Start ``argv`` inside ``host``'s namespace (own process group), output to ``log``."""
        with open(log, "w", encoding="utf-8") as fh:
            p = subprocess.Popen(["ip", "netns", "exec", self.hosts[host], *argv], stdout=fh, stderr=subprocess.STDOUT,
                                 start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def run(self, host: str, argv: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.hosts[host], *argv], capture_output=True, text=True,
                              timeout=timeout, **kw)

    def pids_inside(self) -> list[int]:
        """Processes still running in any of the lab's namespaces."""
        pids: list[int] = []
        for ns in [self.switch, *self.hosts.values()]:
            r = _ip("netns", "pids", ns, check=False)
            pids += [int(x) for x in r.stdout.split()]
        return pids

    def wait_empty(self, timeout: float = 10.0) -> list[int]:
        """Wait until no process runs in the lab (worker processes exit just after their parent); return the rest."""
        deadline = time.monotonic() + timeout
        while (left := self.pids_inside()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left

    def close(self) -> None:
        """Stop what the lab started (TERM, then KILL after 5 s) and delete its namespaces."""
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)
        for pid in self.pids_inside():  # anything that escaped its process group
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for ns in [*self.hosts.values(), self.switch]:
            _ip("netns", "del", ns, check=False)
        self.hosts.clear()

    def namespaces_left(self) -> list[str]:
        r = _ip("netns", "list", check=False)
        return [line.split()[0] for line in r.stdout.splitlines() if line.startswith(self.prefix)]


RELAY = r'''
"""TCP relay (a TLS-passthrough "NAT" box): listen on LISTEN, forward each connection to TARGET."""
import selectors, socket, sys, threading
lhost, lport, thost, tport, count_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
total = [0]
lock = threading.Lock()

def pump(a, b):
    sel = selectors.DefaultSelector()
    sel.register(a, selectors.EVENT_READ, b)
    sel.register(b, selectors.EVENT_READ, a)
    try:
        while True:
            for key, _ in sel.select():
                data = key.fileobj.recv(65536)
                if not data:
                    return
                key.data.sendall(data)
                with lock:
                    total[0] += len(data)
                    open(count_file, "w").write(str(total[0]))
    except OSError:
        pass
    finally:
        a.close(); b.close()

srv = socket.create_server((lhost, lport))
print("relay ready", flush=True)
while True:
    c, _ = srv.accept()
    try:
        u = socket.create_connection((thost, tport), timeout=5)
    except OSError:
        c.close(); continue
    threading.Thread(target=pump, args=(c, u), daemon=True).start()
'''


def start_relay(lab: NetLab, host: str, listen: tuple[str, int], target: tuple[str, int], work: Path) -> Path:
    """Run :data:`RELAY` in ``host``'s namespace; return the file where it counts relayed bytes."""
    script = work / "relay.py"
    script.write_text(RELAY)
    count = work / "relay.bytes"
    p = lab.popen(host, [sys.executable, str(script), listen[0], str(listen[1]), target[0], str(target[1]), str(count)],
                  work / "relay.log")
    deadline = time.monotonic() + 20
    while "relay ready" not in (work / "relay.log").read_text():
        if p.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"relay did not start: {(work / 'relay.log').read_text()}")
        time.sleep(0.05)
    return count
