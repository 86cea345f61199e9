"""Wall time, CPU time (this process and its children) and peak RSS for benchmark cases."""
from __future__ import annotations

import os
import resource
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

SHARED_DATA = Path(os.environ.get("FEDRISK_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _cpu() -> float:
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def peak_rss_mb() -> float:
    """Peak resident set of this process or its largest finished child, in MiB."""
    s = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    c = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(s, c) / 1024.0


@contextmanager
def measured() -> Iterator[dict]:
    """``with measured() as m: ...`` then ``m["wall_s"]``, ``m["cpu_s"]`` are filled in."""
    out: dict = {}
    w0, c0 = time.perf_counter(), _cpu()
    try:
        yield out
    finally:
        out["wall_s"] = round(time.perf_counter() - w0, 4)
        out["cpu_s"] = round(_cpu() - c0, 4)
        out["peak_rss_mb"] = round(peak_rss_mb(), 1)


def require_shared_data(*names: str) -> Path:
    missing = [n for n in names if not (SHARED_DATA / n).exists()]
    if missing:
        raise SystemExit(f"benchmark data missing: {', '.join(missing)} not found under {SHARED_DATA} "
                         "(set FEDRISK_SHARED_DATA to the folder holding ../shared/data)")
    return SHARED_DATA


def simulate_measured(spec: Path | str, keep: Callable[[Path], dict] | None = None) -> dict:
    """Run ``fedrisk simulate`` on ``spec`` in a temporary run directory, measured.

    Returns ``{"metrics", "wall_s", "cpu_s", "peak_rss_mb", "ledger": [entries...], "run_files": {...}}``
    where ``run_files`` holds the text of the logs and progress files the cases read; ``keep(out)``
    reads more of the run directory (model files ...) before it goes, and its keys are added.
    """
    import json
    import tempfile

    from fedrisk.runtime.simulate import simulate

    with tempfile.TemporaryDirectory(prefix="fedrisk-bench-") as tmp:
        out = Path(tmp) / "run"
        with measured() as m:
            metrics = simulate(spec, out)
        ledger = [json.loads(line) for f in sorted((out / "ledger").glob("*.jsonl"))
                  for line in f.read_text().splitlines() if line.strip()]
        run_files = {str(p.relative_to(out)): p.read_text() for d in ("logs", "progress") if (out / d).is_dir()
                     for p in (out / d).iterdir() if p.suffix in (".log", ".jsonl")}
        kept = keep(out) if keep is not None else {}
    return {"metrics": metrics, **m, "ledger": ledger, "run_files": run_files, **kept}


def bytes_by_party(ledger: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in ledger:
        out[e["from"]] = out.get(e["from"], 0) + e["bytes"]
    return dict(sorted(out.items()))
