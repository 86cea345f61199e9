"""The CLI prints an error line as written: rich markup must not eat the spec table names it cites.

`fedrisk` prints errors through rich; unescaped, ``[task]``, ``[psi]`` or ``[parties.lender]`` in a
message were taken for markup tags and vanished ("error: job.toml:  needs kind = ..."), so the one line
that names the fix lost the name of the table to fix."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def test_spec_table_names_survive_in_the_error_line(tmp_path):
    (tmp_path / "a.csv").write_text("id,y,x\n1,0,1\n")
    (tmp_path / "job.toml").write_text(textwrap.dedent("""
        [federation]
        name = "x"
        [parties.a]
        address = "127.0.0.1:1"
        data = "a.csv"
        label = "y"
        [parties.b]
        address = "127.0.0.1:2"
        data = "a.csv"
        [task]
        l2 = 1
        """))
    r = subprocess.run([sys.executable, "-m", "fedrisk", "simulate", "job.toml", "--out", "run"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    line = " ".join(r.stderr.split())
    assert "error: job.toml: [task] needs kind = '...'" in line, r.stderr
