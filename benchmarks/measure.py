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


class PartyCpuSampler:
    """CPU seconds of every ``fedrisk party --as NAME`` process under this one, sampled over time.

    ``simulate`` starts one OS process per participant; this polls their ``/proc`` CPU counters
    (user + system, via :mod:`psutil`) every ``period`` seconds from a background thread, so a case
    can ask how much CPU each participant spent between two wall-clock instants (e.g. the first
    and the last training round, from the progress file's ``time`` stamps) without touching the
    participants' code. A participant's own worker processes (its kernel pool) count as its CPU:
    every process is attributed to the nearest ancestor started as ``party ... --as NAME``.
    Counters tick in 10 ms, so per-round figures are averages over many rounds.

    Use as a context manager around ``simulate``; then :meth:`cpu_between` or :meth:`total`.
    """

    def __init__(self, period: float = 0.05) -> None:
        import threading

        self.period = period
        #: pid -> [(wall time, CPU seconds)]
        self.samples: dict[int, list[tuple[float, float]]] = {}
        self._names: dict[int, str | None] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="party-cpu-sampler", daemon=True)

    def __enter__(self) -> "PartyCpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _name(self, proc) -> str | None:  # noqa: ANN001 - psutil.Process
        if proc.pid not in self._names:
            cmd = proc.cmdline()
            name = cmd[cmd.index("--as") + 1] if "party" in cmd and "--as" in cmd[:-1] else None
            if name is None or proc.parent() is not None and self._names.get(proc.ppid()):
                name = self._names.get(proc.ppid())  # a forked worker carries its party's command line
            self._names[proc.pid] = name
        return self._names[proc.pid]

    def _loop(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            for child in sorted(me.children(recursive=True), key=lambda c: c.pid):
                try:
                    if self._name(child) is None:
                        continue
                    t = child.cpu_times()
                    self.samples.setdefault(child.pid, []).append((time.time(), t.user + t.system))
                except psutil.Error:
                    continue
            self._stop.wait(self.period)

    def _pids(self, name: str) -> list[int]:
        return [pid for pid, n in self._names.items() if n == name and pid in self.samples]

    def cpu_between(self, name: str, t0: float, t1: float) -> float:
        """CPU seconds ``name`` (and its workers) spent between wall-clock times ``t0`` and ``t1``."""
        import numpy as np

        total = 0.0
        for pid in self._pids(name):
            ts, cs = np.array(self.samples[pid]).T
            total += float(np.interp(t1, ts, cs) - np.interp(t0, ts, cs))
        return total

    def total(self, name: str) -> float:
        """CPU seconds of ``name`` and its workers up to their last samples (their whole life once they exited)."""
        return sum(self.samples[pid][-1][1] for pid in self._pids(name))
