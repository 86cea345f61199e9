"""A party's reported peak memory is its own, not the size of whatever started it."""
from __future__ import annotations

import json
import subprocess
import sys

from fedrisk.runtime.rss import peak_rss_mb, reset_peak, rss_mb

_CHILD = """
import json, resource
from fedrisk.runtime.rss import peak_rss_mb, reset_peak
first = peak_rss_mb()
block = bytearray(120 * 2**20)  # touched: 120 MiB resident
block[::4096] = b"x" * len(block[::4096])
grown = peak_rss_mb()
del block
reset = reset_peak()
print(json.dumps({"first": first, "grown": grown, "after_reset": peak_rss_mb(), "reset": reset,
                  "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def test_a_child_of_a_large_process_reports_its_own_peak():
    ballast = bytearray(400 * 2**20)  # this process is now at least 400 MiB resident
    ballast[::4096] = b"x" * len(ballast[::4096])
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=120, check=True)
    del ballast
    got = json.loads(out.stdout)
    # the old measure carries the spawning process's size across exec: the test can fail
    assert got["ru_maxrss_mb"] > 400, got
    assert got["first"] < 200, got
    assert got["grown"] >= got["first"] + 110, got
    assert got["reset"] and got["after_reset"] < got["grown"] - 100, got


def test_now_and_peak_in_this_process():
    now, peak = rss_mb(), peak_rss_mb()
    assert now is not None and 0 < now <= peak
    assert reset_peak()
    assert peak_rss_mb() <= peak
