"""Scale benchmark: ``python benchmarks/run.py scale [--only secureboost|psi|holders] --out FILE.json``.

Each part lives in its own module (``benchmarks/cases/_scale_<part>.py`` exposing
``run(args) -> dict``) and reports under its name; ``--only`` picks parts (default: every part
present). Parts take their own options (e.g. ``--sizes 24000,120000,285000`` for SecureBoost).
The chart (SVG) is written next to ``--out`` as ``<out>.<part>.svg`` unless ``--chart`` says where.
Timings on a shared machine are inflated; compare the ratios (measured in the same run) and
CPU-seconds rather than absolute wall times.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

PARTS = ("secureboost", "psi", "holders")


def run(args: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="benchmarks/run.py scale")
    ap.add_argument("--only", default=None, help=f"comma-separated parts among {', '.join(PARTS)}")
    ap.add_argument("--chart", type=Path, default=None)
    a, rest = ap.parse_known_args(args)
    out_arg = next((sys.argv[i + 1] for i, v in enumerate(sys.argv[:-1]) if v == "--out"), None)
    wanted = a.only.split(",") if a.only else list(PARTS)
    result: dict = {"case": "scale", "ratios": {}}
    for part in wanted:
        if part not in PARTS:
            raise SystemExit(f"error: --only {part!r}: the scale benchmark has parts {', '.join(PARTS)}")
        try:
            mod = importlib.import_module(f"benchmarks.cases._scale_{part}")
        except ModuleNotFoundError:
            if a.only:
                raise SystemExit(f"error: the scale benchmark's {part!r} part is not in this checkout")
            result[part] = {"skipped": "part not in this checkout"}
            continue
        chart = a.chart or (Path(out_arg).with_suffix(f".{part}.svg") if out_arg else None)
        part_args = list(rest) + (["--chart", str(chart)] if chart else [])
        result[part] = mod.run(part_args)
        result["ratios"].update({f"{part}.{k}": v for k, v in result[part].get("ratios", {}).items()})
    return result
