"""The shared per-phase timer: phases add up, send is timed as network and recv as idle."""
from __future__ import annotations

import threading
import time

import numpy as np

from fedrisk.algorithms.phase_timer import PhaseTimer
from fedrisk.transport.channel import InMemoryNetwork


def test_a_phase_entered_twice_adds_up_and_survives_an_exception() -> None:
    ph = PhaseTimer()
    with ph("binning"):
        time.sleep(0.01)
    try:
        with ph("binning"):
            time.sleep(0.01)
            raise ValueError("boom")
    except ValueError:
        pass
    assert set(ph.t) == {"binning"}
    assert ph.t["binning"] >= 0.02


def test_send_counts_as_network_and_recv_as_idle() -> None:
    net = InMemoryNetwork(["a", "b"], recv_timeout=10.0)
    pa, pb = PhaseTimer(), PhaseTimer()

    def late_sender() -> None:
        time.sleep(0.05)
        pa.send(net["a"], "b", "t.x", np.arange(3), kind="control")

    th = threading.Thread(target=late_sender)
    th.start()
    got = pb.recv(net["b"], "a", "t.x")
    th.join()
    np.testing.assert_array_equal(got, np.arange(3))
    assert set(pa.t) == {"network"} and set(pb.t) == {"idle"}
    assert pb.t["idle"] >= 0.04  # blocked until the partner sent
