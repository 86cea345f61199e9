"""The crypto worker pool works from a plain script without an ``if __name__ == "__main__"`` guard
(the README's Python snippet is one): spawned workers must not re-run the user's script."""
from __future__ import annotations

import os
import subprocess
import sys


def test_unguarded_script_can_use_the_process_pool(tmp_path, repo):
    script = tmp_path / "unguarded.py"
    script.write_text("from fedrisk.crypto.workers import process_pool\n"
                      "print('result', process_pool().submit(pow, 2, 10).result())\n"
                      "print('ran top level')\n")
    env = {**os.environ, "FEDRISK_WORKERS": "2",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.count("result 1024") == 1 and p.stdout.count("ran top level") == 1  # not re-run in a worker
