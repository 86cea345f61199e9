"""Results as objects: ``fr.load(DIR)`` reads model files back, ``fr.run("job.toml")`` runs a job spec.

``fr.load`` understands every model file the CLI writes (``model.json`` of ``horizontal.lr``,
``vertical.lr`` and ``vertical.secureboost`` runs, with the feature holders' ``model-<party>.json``
next to it; ``scorecard.json``; ``scorecard-<party>.json``) and returns the fitted estimator.
``fr.run`` is ``fedrisk simulate`` from Python — each participant its own process over mTLS —
returning a :class:`Run` with the metrics, the model, the ledger and the report.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pandas as pd

from fedrisk.errors import ConfigError

__all__ = ["load", "run", "Run", "Report"]

#: model file format -> (estimator class path, federation kind)
_FORMATS = {
    "fedrisk.lr": ("fedrisk.estimators.linear:LogisticRegression", "horizontal"),
    "fedrisk.vertical.lr": ("fedrisk.estimators.linear:LogisticRegression", "vertical"),
    "fedrisk.vertical.secureboost": ("fedrisk.estimators.boosting:SecureBoost", "vertical"),
    "fedrisk.gbdt": ("fedrisk.estimators.boosting:SecureBoost", "horizontal"),
    "fedrisk.scorecard": ("fedrisk.estimators.scorecard:Scorecard", "horizontal"),
    "fedrisk.vertical.scorecard": ("fedrisk.estimators.scorecard:Scorecard", "vertical"),
}


def _read(path: Path) -> dict[str, Any]:
    from fedrisk.model_files import load_model

    return load_model(path)


def _main_file(folder: Path) -> Path:
    from fedrisk.runtime.predict import run_model_file

    if folder.is_file():
        return folder
    found = run_model_file(folder) if folder.is_dir() else None
    if found is not None:
        return found
    raise ConfigError(f"{folder} holds no fedrisk model file (model.json, scorecard.json or scorecard-<party>.json)")


def load(path: str | Path):
    """The fitted estimator of a model saved by ``.save(DIR)`` or written by a CLI run.

    Parameters
    ----------
    path : str or Path
        A run directory (or a saved model folder), or its main model file. A split model's
        parts are read from the files its main file names (``parties``), in the same folder.

    Returns
    -------
    LogisticRegression, SecureBoost or Scorecard
        Ready for ``predict_proba`` (a DataFrame for horizontal models, a vertical Federation of
        the same party names for split models). Hyper-parameters recorded in the file are set.
    """
    import importlib

    main = _main_file(Path(path))
    doc = _read(main)
    fmt = str(doc.get("format", ""))
    if fmt.endswith(".part"):
        raise ConfigError(f"{main} is a feature holder's part; load the label holder's file (it names the others)")
    if fmt not in _FORMATS:
        raise ConfigError(f"{main}: model format {fmt!r} is not one fr.load knows; known: {sorted(_FORMATS)}")
    target, _ = _FORMATS[fmt]
    mod, cls_name = target.split(":")
    cls = getattr(importlib.import_module(mod), cls_name)
    files = {main.name: doc}
    for party, rel in (doc.get("parties") or {}).items():
        if rel not in files:
            p = main.parent / rel
            if not p.is_file():
                raise ConfigError(f"{main} names party {party!r}'s part {rel}, which is not in {main.parent}")
            files[rel] = _read(p)
    est = cls()
    declared = est.get_params(deep=False)
    saved = doc.get("params") or {}
    est.set_params(**{k: v for k, v in saved.items() if k in declared})
    from fedrisk.data.na_values import run_na_values

    est.na_values_ = run_na_values(main.parent)  # the run's cells meaning "no value", for scoring as training read
    return est._learn(files)


class Report:
    """A run's HTML report (the one ``fedrisk report`` writes); renders inline in Jupyter."""

    def __init__(self, html_text: str) -> None:
        self.html = html_text

    def _repr_html_(self) -> str:
        # an iframe keeps the report's own styles and scripts from leaking into the notebook
        return (f'<iframe srcdoc="{html.escape(self.html, quote=True)}" style="width:100%;height:640px;'
                f'border:1px solid #ddd"></iframe>')

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.html, encoding="utf-8")
        return path


class Run:
    """A finished job: ``metrics`` (dict), ``model`` (fitted estimator), ``ledger`` (DataFrame), ``report()``."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        m = self.run_dir / "metrics.json"
        self.metrics: dict[str, Any] = json.loads(m.read_text(encoding="utf-8")) if m.is_file() else {}

    @property
    def model(self):
        """The fitted estimator of this run's model files (``fr.load(run_dir)``)."""
        return load(self.run_dir)

    @property
    def ledger(self) -> pd.DataFrame:
        """Every message every participant sent (their ``ledger/*.jsonl``)."""
        from fedrisk.estimators.engine import ledger_frame
        from fedrisk.transport.ledger import read_ledger

        entries = [e for p in sorted((self.run_dir / "ledger").glob("*.jsonl")) for e in read_ledger(p)]
        return ledger_frame(entries)

    def report(self, title: str | None = None) -> Report:
        from fedrisk.finance.report import load_run, render_report

        return Report(render_report(load_run(self.run_dir), title=title))

    def _repr_html_(self) -> str:
        test = self.metrics.get("test") or self.metrics.get("train") or {}
        shown = ", ".join(f"{k} {test[k]:.4f}" for k in ("auc", "ks", "gini") if isinstance(test.get(k), float))
        return (f"<b>fedrisk run</b> {html.escape(str(self.metrics.get('task', '')))} in "
                f"<code>{html.escape(str(self.run_dir))}</code>{': ' + shown if shown else ''}")

    def __repr__(self) -> str:
        return f"Run({str(self.run_dir)!r}, task={self.metrics.get('task')!r})"


def run(spec: str | Path, out: str | Path | None = None, *, progress: bool = False, free_ports: bool = False) -> Run:
    """Run a job spec like ``fedrisk simulate``: every participant its own process, over mTLS.

    Parameters
    ----------
    spec : str or Path
        The job spec (TOML).
    out : str or Path, optional
        Run directory; default ``runs/<federation name>`` under the current directory.
    progress : bool
        Draw a progress bar (rich) from the driver's progress file.
    free_ports : bool
        Run a copy of the spec (written to ``out/job.toml``) on free loopback ports instead of the
        spec's addresses — for running the examples on a machine others use too.
    """
    from fedrisk.runtime.simulate import simulate
    from fedrisk.runtime.spec import load_spec

    job = load_spec(spec)
    out = Path(out) if out is not None else Path("runs") / job.job_id
    if free_ports:
        from fedrisk.estimators.federation import rewrite_spec

        spec = rewrite_spec(Path(spec), out, free_ports=True)
    bar = None
    on_progress = None
    if progress:
        from rich.progress import Progress

        bar = Progress()
        bar.start()
        task = bar.add_task(job.task["kind"], total=None)

        def on_progress(rec: dict[str, Any]) -> None:
            bar.update(task, completed=rec.get("step", 0), total=rec.get("total"))
    try:
        simulate(spec, out, on_progress=on_progress)
    finally:
        if bar is not None:
            bar.stop()
    return Run(out)
