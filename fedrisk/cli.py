"""The ``fedrisk`` command line: demo, simulate, party, certs, predict, serve, health, report.

Every command turns a :class:`~fedrisk.errors.FedriskError` into one red line and exit code 2
(an interrupted job: exit code 130); anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator, List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedrisk.errors import ConfigError, FedriskError, Interrupted

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Federated credit-risk modelling: train together, keep raw rows at home.")
console = Console(stderr=False)
err_console = Console(stderr=True)


def _fail(e: FedriskError) -> None:
    # escaped: error lines name spec tables such as [task] or [privacy], which rich would read as style tags
    err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
    raise typer.Exit(130 if isinstance(e, Interrupted) else 2)


def _version(value: bool) -> None:
    if value:
        from fedrisk import __version__

        console.print(f"fedrisk {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    """Federated credit-risk modelling: train together, keep raw rows at home."""


class _ProgressView:
    """Draws the driver's per-round progress events as a rich progress bar."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        stage = event.get("stage", "train")
        shown = {k: v for k, v in event.items() if k not in ("time", "stage", "step", "total")}
        text = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=event.get("total") or None, info="")
        self.progress.update(self.tasks[stage], completed=event.get("step", 0), total=event.get("total") or None, info=text)


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description:>8}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=console, transient=False)


class _LineProgress:
    """Progress as plain lines, for a stdout that is not a terminal (nohup, CI, systemd, ``| tee``).

    A rich bar draws nothing there until the job ends; an operator tailing the file would see no
    progress. One line per event, at most every ``every`` seconds per stage (and always the last step).
    """

    def __init__(self, every: float = 2.0) -> None:
        import time

        self.every, self.clock, self.t0 = every, time.monotonic, time.monotonic()
        self.last: dict[str, float] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        stage, step, total = event.get("stage", "train"), event.get("step", 0), event.get("total")
        now = self.clock()
        if step != total and now - self.last.get(stage, -1e9) < self.every:
            return
        self.last[stage] = now
        shown = {k: v for k, v in event.items() if k not in ("time", "stage", "step", "total")}
        text = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
        print(f"progress: {stage} {step}/{total or '?'} {text} ({now - self.t0:.0f} s)".rstrip(), flush=True)


@contextlib.contextmanager
def _progress_view() -> Iterator[Any]:
    """The per-round progress callback: a rich bar on a terminal, plain lines otherwise."""
    if not console.is_terminal:
        yield _LineProgress()
        return
    with _progress() as progress:
        yield _ProgressView(progress)


def _write_report(run_dir: Path) -> Path | None:
    try:
        from fedrisk.finance.report import write_report
    except ImportError:
        return None
    return write_report(run_dir)


def _metrics_table(title: str, rows: list[tuple[str, dict[str, Any]]], rows_col: str = "rows scored") -> Table:
    """One line per model; ``rows_col`` names what the last column counts (scored rows, or training rows)."""
    t = Table(title=title)
    for col in ("model", "AUC", "KS", "Gini", rows_col):
        t.add_column(col, justify="right" if col != "model" else "left")
    for name, m in rows:
        auc = m.get("auc")
        n = m.get("n_train") if rows_col.startswith("train") else m.get("n")
        wt = m.get("weighted") if isinstance(m.get("weighted"), dict) else None
        # a weighted block's n is a sum of weights: show the rows and what they stand for
        rows = f"{wt['rows']:,} (weighted {n:,.0f})" if wt and isinstance(n, float) else f"{n:,}" if isinstance(n, int) else ""
        t.add_row(name, f"{auc:.4f}" if auc is not None else "-", f"{m.get('ks', float('nan')):.4f}",
                  f"{m.get('gini', 2 * auc - 1 if auc else float('nan')):.4f}", rows)
    return t


def run_simulation(spec: Path, out: Path, resume: bool = False, force: bool = False) -> dict[str, Any]:
    from fedrisk.runtime.simulate import simulate as _simulate

    with _progress_view() as view:
        result = _simulate(spec, out, resume=resume, force=force, on_progress=view)
    return result


@app.command()
def simulate(spec: Path = typer.Argument(..., help="job spec (TOML)"),
             out: Path = typer.Option(..., "--out", help="run directory to write"),
             resume: bool = typer.Option(False, help="continue from the checkpoints in --out"),
             force: bool = typer.Option(False, "--force", help="replace the run already in --out (its fedrisk outputs are deleted)")) -> None:
    """Run every participant of JOB.toml as its own process on this machine, over mutual TLS."""
    try:
        result = run_simulation(spec, out, resume, force)
        report = _write_report(out)
    except FedriskError as e:
        _fail(e)
    rows = []
    for split in ("test", "train"):
        if split in result:
            rows.append((split, result[split]))
    if rows:
        console.print(_metrics_table(f"{result.get('task', '')} — {result.get('job', '')}", rows))
    for name, why in result.get("dropped", {}).items():
        # the job went on without a bank that died or was cut off (horizontal tasks, issue 14)
        console.print(f"[yellow]dropped:[/] {escape(str(name))}: {escape(str(why))} (see membership.json)")
    console.print(f"run directory: [bold]{out}[/] ({result['wall_s']:.1f} s)" + (f"; report: {report}" if report else ""))


@app.command()
def party(spec: Path = typer.Argument(..., help="job spec (TOML)"),
          name: str = typer.Option(..., "--as", help="which participant this process is"),
          out: Path = typer.Option(..., "--out", help="run directory to write"),
          certs: Optional[Path] = typer.Option(None, help="folder with ca.pem, NAME.pem, NAME-key.pem (default: security.certs)"),
          resume: bool = typer.Option(False, help="continue from checkpoints in --out"),
          quiet: bool = typer.Option(False, help="log to the run directory only")) -> None:
    """Run just one participant (one institution's host) of JOB.toml."""
    from fedrisk.runtime.party import run_party

    try:
        run_party(spec, name, out, certs=certs, resume=resume, console=not quiet)
    except KeyboardInterrupt:  # a signal that arrived outside the party's own handling
        _stop_now(Interrupted(f"participant {name!r} interrupted by SIGINT"))
    except Interrupted as e:
        _stop_now(e)
    except FedriskError as e:
        _fail(e)


def _stop_now(e: Interrupted) -> None:
    """Print the line and leave at once: no waiting for pool threads of a job that was stopped."""
    import logging
    import os
    import sys

    err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


@app.command()
def certs(parties: str = typer.Option(..., help="comma-separated party names, e.g. bank-a,bank-b"),
          out: Path = typer.Option(..., "--out", help="folder to write ca.pem and NAME.pem / NAME-key.pem"),
          coordinator: bool = typer.Option(True, help="also make a certificate for 'coordinator'"),
          days: int = typer.Option(30, help="validity in days")) -> None:
    """Make a development CA and one certificate + key per party (CN and SAN = the party name)."""
    from fedrisk.runtime.spec import COORDINATOR, _NAME
    from fedrisk.transport.certs import make_dev_pki

    names = [p.strip() for p in parties.split(",") if p.strip()]
    bad = [n for n in names if not _NAME.match(n)]
    try:
        if not names:
            raise ConfigError("--parties is empty; give names like bank-a,bank-b")
        if bad:
            raise ConfigError(f"party names {bad}: use lower-case letters, digits, '_' and '-'")
        if len(set(names)) != len(names):
            raise ConfigError(f"--parties lists a name twice: {names}")
        if coordinator and COORDINATOR not in names:
            names.append(COORDINATOR)
        try:
            make_dev_pki(names, out, days=days)
        except OSError as e:
            raise ConfigError(f"cannot write certificates to {out}: {e.strerror}") from None
    except FedriskError as e:
        _fail(e)
    console.print(f"wrote a dev CA and certificates for {', '.join(names)} to {out}")
    console.print(f"each host gets ca.pem, the certificates NAME.pem (public) and its own NAME-key.pem only; the CA key {out / 'private-ca' / 'ca-key.pem'} "
                  f"goes to no party host (see {out / 'README.txt'})", highlight=False)


@app.command()
def predict(model: Path = typer.Argument(..., help="model file of a run (model.json, scorecard.json) or the run directory"),
            data: Path = typer.Argument(..., help="CSV/Parquet rows to score"),
            out: Path = typer.Option(..., "--out", help="scores CSV to write (id, score)"),
            id_col: Optional[str] = typer.Option(None, "--id", help="id column of DATA (default: the one the model was trained with)"),
            session: Optional[str] = typer.Option(None, help="vertical models: inference session name agreed with the feature holders"),
            spawn: bool = typer.Option(True, help="vertical models: start the feature holders' inference processes "
                                                   "from the run's job spec (--no-spawn when they run on their own hosts)"),
            certs: Optional[Path] = typer.Option(None, help="vertical models: certificate folder (default: the run's)"),
            sep: Optional[str] = typer.Option(None, help="horizontal models: field separator of DATA (default ',')"),
            decimal: str = typer.Option(".", help="horizontal models: decimal mark of DATA"),
            na_values: Optional[List[str]] = typer.Option(
                None, "--na-values", help="horizontal models: a cell text of DATA meaning 'no value' (repeat for "
                "several; default: the na_values of the run's job.toml)"),
            weight: Optional[str] = typer.Option(
                None, "--weight", help="column of DATA with each row's sampling weight or exposure: the batch's score "
                "stability (PSI) against the training scores is weighted by it (read here, never sent)")) -> None:
    """Score new rows with a trained model, locally (horizontal models) or federatedly (vertical)."""
    from fedrisk.runtime.predict import batch_warnings, predict_file

    # warnings about the batch (a column blank in every row, at this party or a vertical feature holder) are
    # part of the result: printed with it, the same way for every kind of model
    with batch_warnings() as notes:
        try:
            n = predict_file(model, data, out, id_col=id_col, session=session, spawn=spawn, certs=certs, sep=sep,
                             decimal=decimal, na_values=na_values)
        except FedriskError as e:
            _print_warnings(notes)
            _fail(e)
    _print_warnings(notes)
    console.print(f"scored {n} rows -> {out}")
    # monitoring: the batch's scores against the development sample's, when the run directory holds them
    from fedrisk.runtime.batch_stability import batch_stability, stability_line

    try:
        w = _batch_weights(model, data, out, weight, id_col, sep, decimal, na_values) if n and weight else None
    except FedriskError as e:
        _fail(e)
    st = batch_stability(model, out, weights=w) if n else None
    if st is not None:
        line = escape(stability_line(st))
        console.print(line if st["band"] == "stable" else f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)


def _batch_weights(model: Path, data: Path, out: Path, column: str, id_col: Optional[str], sep: Optional[str],
                   decimal: str, na_values: Optional[List[str]]) -> Any:
    """``--weight COLUMN`` of DATA, one weight per row of the scores written (see ``batch_stability.batch_weights``)."""
    from fedrisk.runtime.batch_stability import batch_weights
    from fedrisk.runtime.predict import scoring_id_column

    return batch_weights(data, column, out, id_col=scoring_id_column(model, id_col), sep=sep, decimal=decimal,
                         na_values=na_values or ())


def _print_warnings(notes: list[str]) -> None:
    for note in notes:
        console.print(f"[yellow]warning:[/] {escape(note)}", highlight=False, soft_wrap=True)


@app.command()
def serve(spec: Path = typer.Argument(..., help="job spec (TOML) the model was trained with"),
          name: str = typer.Option(..., "--as", help="which feature holder this process is"),
          model: Path = typer.Option(..., help="this party's part of the model (model-NAME.json)"),
          session: Optional[str] = typer.Option(None, help="serve just this one inference session, then exit "
                                                           "(default: a long-running service for any number of sessions)"),
          certs: Optional[Path] = typer.Option(None, help="certificate folder (default: security.certs)"),
          data: Optional[Path] = typer.Option(None, help="rows to score (default: the party's data file in the spec)"),
          out: Optional[Path] = typer.Option(None, help="where to write logs and ledgers (default: MODEL's folder/serve)"),
          health: Optional[str] = typer.Option(None, help="HOST:PORT of a plain-HTTP /healthz endpoint (keep it on loopback)"),
          max_sessions: int = typer.Option(2, help="sessions served at the same time"),
          drain_timeout: float = typer.Option(60.0, help="on SIGTERM/SIGINT, seconds to let running sessions finish"),
          quiet: bool = typer.Option(False, help="log to OUT/serve.log only")) -> None:
    """A feature holder's side of federated scoring: a long-running service (or one --session)."""
    try:
        if session is not None:
            from fedrisk.runtime.inference import serve_feature_holder

            serve_feature_holder(spec, name, model, session, certs, out, data)
            console.print(f"{name}: inference session {session} done")
            return
        from fedrisk.runtime.scoring_service import run_service

        aborted = run_service(spec, name, model, certs=certs, out=out, data=data, health=health,
                              max_sessions=max_sessions, drain_timeout=drain_timeout, console=not quiet)
    except FedriskError as e:
        _fail(e)
    console.print(f"{name}: scoring service stopped" + (f" ({aborted} session(s) aborted at the deadline)" if aborted else ""))


@app.command()
def health(address: str = typer.Argument(..., help="HOST:PORT given to `fedrisk serve --health`"),
           wait: float = typer.Option(0.0, help="seconds to keep trying while the service starts"),
           as_json: bool = typer.Option(False, "--json", help="print the status as JSON")) -> None:
    """Exit 0 when the scoring service at ADDRESS is serving (the probe for Docker and systemd)."""
    import json

    from fedrisk.runtime.scoring_service import check_health

    try:
        st = check_health(address, wait=wait)
    except FedriskError as e:
        _fail(e)
    if as_json:
        print(json.dumps(st))
    else:
        console.print(f"{st.get('party')}: {st.get('status')}; sessions: {st.get('sessions_active')} running, "
                      f"{st.get('sessions_done')} done, {st.get('sessions_failed')} failed", highlight=False)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="run directory")) -> None:
    """Write RUN_DIR/report.html: one self-contained page a risk manager can read offline."""
    try:
        # the label holder's directory has metrics.json; a feature holder's has its own run record
        if not ((run_dir / "metrics.json").is_file() or any(run_dir.glob("run-*.json"))
                or any((run_dir / "ledger").glob("*.jsonl"))):
            raise ConfigError(f"{run_dir} has no metrics.json, run-<party>.json or ledger/; is it a fedrisk run directory?")
        path = _write_report(run_dir)
        if path is None:
            raise ConfigError("the report module is not available in this install")
    except FedriskError as e:
        _fail(e)
    console.print(f"report: {path}")


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), "--out", help="run directory"),
         seed: int = typer.Option(0, help="seed of the synthetic federation"),
         rounds: int = typer.Option(30, help="most training rounds (the exact Newton solver stops when converged)")) -> None:
    """Three synthetic banks train one default model over mutual TLS; compare with pooled and each bank alone."""
    from fedrisk.runtime.demo import run_demo

    try:
        with _progress_view() as view:
            summary = run_demo(out, seed=seed, rounds=rounds, on_progress=view)
        report = _write_report(out)
    except FedriskError as e:
        _fail(e)
    rows = [("federated (3 banks, mTLS)", summary["federated"]), ("pooled (centralised)", summary["centralized"])]
    rows += [(f"{b} alone", m) for b, m in summary["local_only"].items()]
    n_test = summary["federated"].get("n")
    console.print(_metrics_table(f"Scored on the held-out market-wide test set ({n_test:,} rows)" if n_test else
                                 "Scored on the held-out market-wide test set", rows, rows_col="training rows"))
    st = summary.get("stability")
    if st:
        console.print(f"stability (PSI of the federated score, {st['expected']} vs {st['actual']}): "
                      f"{st['psi']:.3f} ({st['band']})")
    fed, best_local = summary["federated"]["auc"], max(m["auc"] for m in summary["local_only"].values())
    console.print(f"federation vs best single bank: AUC {fed - best_local:+.4f}; "
                  f"vs pooled: {fed - summary['centralized']['auc']:+.4f}")
    console.print(f"run directory: [bold]{out}[/] ({summary['wall_s']:.1f} s)"
                  + (f"; report: {report}" if report else "") + f"; ledgers: {out / 'ledger'}")


ledger_app = typer.Typer(no_args_is_help=True, help="Check the message ledgers of a run.")
app.add_typer(ledger_app, name="ledger")


@ledger_app.command("verify")
def ledger_verify(run_dir: Path = typer.Argument(..., help="run directory (or a ledger folder or file)"),
                  other: Optional[list[Path]] = typer.Argument(None, help="the other sides' run directories or "
                                                                        "ledger files, to reconcile with")) -> None:
    """Check each ledger's hash chain, and that what each party sent is what the other received.

    In a simulated run all parties' ledgers are in RUN_DIR; across hosts, pass each partner's
    ledger files (ledger/NAME.jsonl, ledger-inbound/NAME.jsonl) or run directory as OTHER.
    """
    from rich.markup import escape

    from fedrisk.transport.ledger import verify_ledgers

    try:
        paths = [run_dir, *(other or [])]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise ConfigError(f"{', '.join(missing)} does not exist; give a run directory or ledger files")
        res = verify_ledgers(paths)
        for line in res.lines:
            style = {"ok": "green", "warning": "yellow", "error": "red"}[line.split(":", 1)[0]]
            console.print(f"[{style}]{escape(line)}[/]", highlight=False, soft_wrap=True)
        if res.errors:
            raise ConfigError(f"{res.errors} ledger check(s) failed; see the lines above")
    except FedriskError as e:
        _fail(e)


psi_app = typer.Typer(no_args_is_help=True, help="Unbalanced PSI: the key holder's OPRF key and encoded set.")
app.add_typer(psi_app, name="psi")


@psi_app.command("key")
def psi_key(spec: Path = typer.Argument(..., help="job spec (TOML) with \\[psi] protocol = 'unbalanced'"),
            name: str = typer.Option(..., "--party", help="the key holder (\\[psi] key_holder)"),
            rotate: bool = typer.Option(False, help="start a new key epoch (then run `fedrisk psi encode` again)")) -> None:
    """Create the key holder's OPRF key file (0600) in its psi_store, or rotate it to a new epoch."""
    from fedrisk.runtime.ub_offline import make_key

    try:
        k = make_key(spec, name, rotate=rotate)
        console.print(f"OPRF key epoch {k.epoch} (fingerprint {k.fingerprint}) created {k.created}; now run "
                      f"`fedrisk psi encode {spec} --party {name}`", highlight=False, soft_wrap=True)
    except FedriskError as e:
        _fail(e)


@psi_app.command("encode")
def psi_encode(spec: Path = typer.Argument(..., help="job spec (TOML) with \\[psi] protocol = 'unbalanced'"),
               name: str = typer.Option(..., "--party", help="the key holder (\\[psi] key_holder)"),
               rows: int = typer.Option(262144, help="ids per streamed chunk")) -> None:
    """Encode the key holder's id column under its current key (once per epoch and data change)."""
    from fedrisk.runtime.ub_offline import encode_party

    try:
        h = encode_party(spec, name, rows=rows)
        for note in h.get("notes", []):
            console.print(f"note: {note}", highlight=False, soft_wrap=True)
        console.print(f"encoded {h['count']:,} ids for key epoch {h['epoch']} ({h['count'] * h['width'] / 1e6:.1f} MB "
                      "to send once to the lender, at its next unbalanced job)", highlight=False, soft_wrap=True)
    except FedriskError as e:
        _fail(e)


def main() -> None:
    # everything a run writes (scores, models, ledgers, logs, keys) is private to this account:
    # files 0600, folders 0700, whatever the shell's umask
    os.umask(0o077)
    # every failure fedrisk can name is one `error:` line; gRPC's C core would print its own log line
    # (e.g. add_port.cc "Address already in use") before it. GRPC_VERBOSITY=ERROR or DEBUG shows them again
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    app()


if __name__ == "__main__":
    main()
