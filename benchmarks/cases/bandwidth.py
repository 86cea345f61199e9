"""Bytes each participant sends per example job: the table of docs/operations.md, section 7.

``python benchmarks/run.py bandwidth [--examples a.toml,b.toml] [--port-base 44300] [--work DIR]``

Each example of ``examples/`` is copied to a work folder with its loopback ports moved to
``--port-base`` + n (so it does not collide with other runs) and its ``../`` data paths made
absolute, run with ``fedrisk simulate``, and the ``bytes`` of every ledger line summed per
participant (``RUN/ledger/NAME.jsonl``: every message frame that participant sent). Examples that
need a prepared data file first (``woe_germancredit_horizontal.toml``) are run only when named and
their files exist. Wall seconds and the CPU seconds of ``simulate`` and its participants are
reported too; both depend on the machine and its load, the byte counts do not.
"""
from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ["vertical_lr_default_credit.toml", "scorecard_vertical_default_credit.toml",
            "vertical_secureboost_default_credit.toml", "horizontal_default_credit.toml",
            "horizontal_gbdt_default_credit.toml"]


def prepare(src: Path, dst: Path, port_base: int) -> Path:
    """Copy ``src`` to ``dst`` with fresh ports and absolute data paths."""
    port = [port_base]

    def next_port(m: re.Match) -> str:
        port[0] += 1
        return f'"{m.group(1)}:{port[0]}"'

    text = re.sub(r'"(127\.0\.0\.1):(\d+)"', next_port, src.read_text())
    text = re.sub(r'"(\.\./[^"]+)"', lambda m: '"' + str((src.parent / m.group(1)).resolve()) + '"', text)
    dst.write_text(text)
    return dst


def ledger_totals(run: Path) -> dict[str, dict[str, int]]:
    out = {}
    for f in sorted((run / "ledger").glob("*.jsonl")):
        entries = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        out[f.stem] = {"messages": len(entries), "bytes": sum(int(e["bytes"]) for e in entries)}
    return out


def run(args: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="bandwidth")
    ap.add_argument("--examples", default=",".join(EXAMPLES))
    ap.add_argument("--port-base", type=int, default=44300)
    ap.add_argument("--work", type=Path, default=None)
    a = ap.parse_args(args)
    work = a.work or Path(tempfile.mkdtemp(prefix="fedrisk-bandwidth-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    for i, name in enumerate(n.strip() for n in a.examples.split(",") if n.strip()):
        spec = prepare(ROOT / "examples" / name, work / name, a.port_base + 20 * i)
        out = work / f"run-{spec.stem}"
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "fedrisk", "simulate", str(spec), "--out", str(out), "--force"],
                           capture_output=True, text=True)
        wall = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        sent = ledger_totals(out) if r.returncode == 0 else {}
        results[name] = {"ok": r.returncode == 0, "error": r.stderr.strip().splitlines()[-1:] if r.returncode else [],
                         "sent": sent, "total_bytes": sum(v["bytes"] for v in sent.values()),
                         "wall_s": round(wall, 1),
                         "cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1)}
        print(f"{name}: {results[name]['total_bytes'] / 1e6:.1f} MB sent in all; "
              + ", ".join(f"{p} {v['bytes'] / 1e6:.2f} MB" for p, v in sent.items()), file=sys.stderr)
    return {"work": str(work), "examples": results}
