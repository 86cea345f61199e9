#!/usr/bin/env python
"""Benchmark runner: ``python benchmarks/run.py CASE --out FILE.json``.

Each case lives in ``benchmarks/cases/<case with _ for ->.py`` and exposes
``run(args: list[str]) -> dict``; the runner writes the dict as JSON and prints it with the
ratios the case reports under ``"ratios"``/``"speedup"``/``"ratio"``. Cases compare against a
reference measured in the same run (centralised XGBoost/scikit-learn, plain vs secure, ``phe``).
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def cases() -> list[str]:
    return sorted(p.stem.replace("_", "-") for p in (HERE / "cases").glob("*.py") if not p.stem.startswith("_"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case", choices=cases())
    ap.add_argument("--out", type=Path, default=None, help="where to write the JSON result")
    args, rest = ap.parse_known_args()
    mod = importlib.import_module(f"benchmarks.cases.{args.case.replace('-', '_')}")
    result = mod.run(rest)
    text = json.dumps(result, indent=2, default=float)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    for key in ("ratios", "speedup", "ratio"):
        if key in result:
            print(f"{key}: " + ", ".join(f"{k}={v:.2f}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in result[key].items()))


if __name__ == "__main__":
    main()
