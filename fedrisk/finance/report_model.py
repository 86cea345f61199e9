"""What a run's model files add to the report: documentation header, points table, binning, trees.

:mod:`fedrisk.finance.report` draws the figures every task shares (ROC, KS, lift, stability,
ledger); this module reads the task's own outputs from the run directory and renders the sections
only that task has:

* model documentation header (every task): task, job, run id, seed, fedrisk version, the parties
  and their row counts, intersection size (vertical), bad rate, the ``[task]`` hyper-parameters,
  timings and bytes per party;
* scorecards: the points table, per-feature bad-rate/WOE bar charts with bin counts, the
  reason-code summary and score bands — in points, not probabilities;
* WOE/IV tasks: per-feature binning tables and WOE charts;
* trees: feature importance (gain and split count) per party.

Whose view
----------
A run directory belongs to one party (``metrics.json``'s ``written_by``, or the one party whose
ledger / run record is there — a feature holder's own directory). Only that party's files are
read: its part of the scorecard, its ``woe/<party>.json``, its model part. A local simulation
writes every party's files into one directory; the report still shows only the viewer's, so the
label holder's page never shows a partner's bins, and a partner's page never shows the labels'
figures it did not receive.
"""
from __future__ import annotations

import json
import math
import tomllib
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from fedrisk.finance.charts import PALETTE, Chart, format_bytes

__all__ = ["load_model_view", "viewer_of", "header_section", "points_table", "feature_charts", "score_bands",
           "points_distribution", "reason_summary", "binning_section", "importance_section", "to_points"]


def _read_json(path: Path, notes: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        notes.append(f"{path.name}: could not be read ({e.__class__.__name__}).")
        return None
    return d if isinstance(d, dict) else None


def viewer_of(run_dir: Path, metrics: dict[str, Any]) -> str | None:
    """The party whose run directory this is (see the module docstring)."""
    if isinstance(metrics.get("written_by"), str):
        return metrics["written_by"]
    names = {p.stem.removeprefix("run-") for p in run_dir.glob("run-*.json")}
    names |= {p.stem for p in (run_dir / "ledger").glob("*.jsonl")}
    return next(iter(names)) if len(names) == 1 else None


def _binning_from_woe_doc(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per feature ``{"kind", "iv", "rows": [{label, n, bads?, bad_rate?, woe}]}`` from a ``woe/<party>.json``."""
    out: dict[str, dict[str, Any]] = {}
    for f, d in (doc.get("features") or {}).items():
        if not isinstance(d, dict):
            continue
        if isinstance(d.get("table"), list):  # a party that knows the labels: goods and bads per bin
            rows = [{"label": r.get("label"), "n": r.get("n"), "bads": r.get("bads"), "bad_rate": r.get("bad_rate"),
                     "woe": r.get("woe")} for r in d["table"]]
        elif isinstance(d.get("labels"), list):  # a feature holder: its counts and the WOE it was sent
            woe = d.get("woe") or [None] * len(d["labels"])
            n = d.get("n") or [None] * len(d["labels"])
            rows = [{"label": lab, "n": c, "woe": w} for lab, c, w in zip(d["labels"], n, woe)]
        else:
            continue
        out[f] = {"kind": d.get("kind"), "iv": d.get("iv"), "rows": rows}
    return out


def load_model_view(run_dir: Path, metrics: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """Read the viewer's model files: ``viewer``, ``job`` (the spec), ``record`` (its run record),
    ``card`` (points table rows + scaling), ``binning``, ``importance``, ``reasons`` (test reasons).
    """
    run_dir = Path(run_dir)
    viewer = viewer_of(run_dir, metrics)
    view: dict[str, Any] = {"viewer": viewer, "job": {}, "record": None, "card": None, "binning": {},
                            "importance": {}, "reasons": None}
    job = run_dir / "job.toml"
    if job.is_file():
        try:
            view["job"] = tomllib.loads(job.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as e:
            notes.append(f"job.toml: could not be read ({e.__class__.__name__}).")
    if viewer:
        view["record"] = _read_json(run_dir / f"run-{viewer}.json", notes)
    # scorecards: the whole card (horizontal) or the viewer's part (vertical)
    card = _read_json(run_dir / "scorecard.json", notes)
    if card is None and viewer:
        card = _read_json(run_dir / f"scorecard-{viewer}.json", notes)
    if card is not None and isinstance(card.get("table"), list):
        bad_counts = {f: (b.get("goods"), b.get("bads")) for f, b in (card.get("bins") or {}).items()
                      if isinstance(b, dict) and "goods" in b}
        view["card"] = {"party": card.get("party"), "base_points": card.get("base_points"),
                        "base_score": card.get("base_score"), "base_odds": card.get("base_odds"), "pdo": card.get("pdo"),
                        "round_points": bool(card.get("round_points", True)),
                        "features": list(card.get("features") or []), "table": card["table"], "counts": bad_counts,
                        "partial": str(card.get("format", "")).startswith("fedrisk.vertical")}
    woe = _read_json(run_dir / "woe" / f"{viewer}.json", notes) if viewer else None
    if woe is None and metrics.get("task", "").startswith("horizontal"):
        # horizontal WOE: the global bins and counts are the same in every bank's file (not its local IV)
        any_doc = next(iter(sorted((run_dir / "woe").glob("*.json"))), None) if (run_dir / "woe").is_dir() else None
        woe = _read_json(any_doc, notes) if any_doc else None
    if woe is not None:
        view["binning"] = _binning_from_woe_doc(woe)
    # trees: each party's importance under its own names (the label holder's metrics, a holder's part)
    imp = metrics.get("importance")
    if isinstance(imp, dict) and imp and viewer:
        view["importance"][viewer] = imp
    for name in ("model.json", f"model-{viewer}.json"):
        m = _read_json(run_dir / name, notes) if viewer else None
        if m and m.get("party") == viewer and isinstance(m.get("importance"), dict):
            imp = m["importance"]
            if imp and all(isinstance(v, dict) for v in imp.values()) and viewer in imp:  # label holder: {party: {...}}
                for p, v in imp.items():
                    view["importance"][p] = v
            elif imp:
                view["importance"][viewer] = imp
    rpath = run_dir / "scores" / "test_reasons.csv"
    if rpath.is_file():
        try:
            import pandas as pd

            view["reasons"] = pd.read_csv(rpath)
        except Exception as e:  # a broken file must not stop the report
            notes.append(f"test_reasons.csv: could not be read ({e.__class__.__name__}).")
    return view


# -- helpers --------------------------------------------------------------------------------
def _num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return f"{v:.{digits}f}" if math.isfinite(v) else "—"
    return escape(str(v))


def _count(v: Any) -> str:
    """A count: rows as ``1,234``; a sum of weights (a weighted run's) as ``1,234.5``."""
    if isinstance(v, (float, np.floating)) and math.isfinite(v):
        return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.1f}"
    return _num(v)


def _pct(v: Any) -> str:
    return f"{100 * float(v):.1f}%" if isinstance(v, (int, float)) and math.isfinite(v) else "—"


def _table(headers: list[str], rows: list[list[str]], cls: str = "num") -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _short(label: Any, n: int = 18) -> str:
    s = str(label)
    return s if len(s) <= n else s[: n - 1] + "…"


def to_points(prob: np.ndarray, base_score: float, base_odds: float, pdo: float, whole: bool = False) -> np.ndarray:
    """Scorecard points a default probability stands for (inverse of the probability scaling).

    ``whole``: the card's points are whole numbers (``round_points``), so the totals are rounded back to
    them. The scores file holds each probability to 8 significant digits, and a total on a band edge
    (480) comes back a hair below it (479.9999999), which put the applicant one score band too low.
    """
    p = np.clip(np.asarray(prob, dtype=float), 1e-15, 1 - 1e-15)
    factor = pdo / math.log(2)
    offset = base_score - factor * math.log(base_odds)
    pts = offset + factor * np.log((1 - p) / p)
    return np.round(pts) if whole else pts


# -- documentation header -------------------------------------------------------------------
def _own_training_rows(view: dict[str, Any]) -> int | None:
    """A party's training rows from its own binning counts (every row falls in one bin of a feature)."""
    card = view.get("card") or {}
    for f in card.get("features") or []:
        ns = [r.get("n") for r in card.get("table", []) if r.get("feature") == f]
        if ns and all(isinstance(x, (int, float)) for x in ns):
            return int(sum(ns))
    for d in (view.get("binning") or {}).values():
        ns = [r.get("n") for r in d.get("rows", [])]
        if ns and all(isinstance(x, (int, float)) for x in ns):
            return int(sum(ns))
    return None


def _full_params(task: dict[str, Any]) -> dict[str, Any]:
    """The ``[task]`` table with every default filled in by the task's own ``Params`` (as training used it)."""
    given = {k: v for k, v in task.items() if k != "kind"}
    try:
        from fedrisk.runtime.tasks import get_task

        params = getattr(get_task(str(task.get("kind"))), "Params", None)
        return params.model_validate(given).model_dump(mode="json") if params is not None else given
    except Exception:  # an older or unknown task kind: show what the spec says
        return given


def header_section(m: dict[str, Any], view: dict[str, Any], ledgers: dict[str, list[dict[str, Any]]]) -> str:
    """Model documentation: what was trained, by whom, on how many rows, with which settings."""
    from fedrisk import __version__

    job = view.get("job") or {}
    rec = view.get("record") or {}
    task = job.get("task") or rec.get("params") or {}
    parties = job.get("parties") or {}
    seed = (job.get("federation") or {}).get("seed", rec.get("seed"))
    inter = m.get("intersection") if isinstance(m.get("intersection"), dict) else {}
    viewer = view.get("viewer")
    lh = m.get("label_holder")
    rows_doc = m.get("rows") if isinstance(m.get("rows"), dict) else {}
    kv = [
        ("Task", escape(str(m.get("task") or rec.get("task") or task.get("kind") or "—"))),
        ("Job", escape(str(m.get("job") or rec.get("job") or (job.get("federation") or {}).get("name") or "—"))),
        ("Run id", escape(str(m.get("run_id") or rec.get("run_id") or "—"))),
        ("Report of", escape(str(viewer or "—")) + (" (label holder)" if viewer and viewer == lh else "")),
        ("Seed", _num(seed)),
        ("fedrisk version", escape(str(m.get("fedrisk_version") or rec.get("fedrisk_version") or __version__))),
        ("Trained", escape(str(m.get("time") or rec.get("time") or "—"))),
    ]
    if inter:
        kv.append(("Intersection (PSI)", f"{_num(inter.get('size'))} ids"))
    if rows_doc:
        kv.append(("Rows used", ", ".join(f"{escape(k)} {_num(v)}" for k, v in rows_doc.items())))
    elif isinstance(m.get("rows"), int):
        kv.append(("Rows used", _num(m["rows"])))
    stab = m.get("stability") if isinstance(m.get("stability"), dict) else {}
    for split in ("train", "test"):
        s = m.get(split)
        # whose rows: a horizontal run's train block is the evaluation holder's own ("bank1 train")
        name = str(stab.get(f"{'expected' if split == 'train' else 'actual'}_label") or split)
        if isinstance(s, dict) and s.get("n"):
            kv.append((f"Bad rate ({name})", f"{_pct(s.get('positives', 0) / s['n'])} of {_num(s['n'])}"))
    secs = m.get("seconds", rec.get("seconds"))
    if isinstance(secs, (int, float)):
        kv.append(("Training time", f"{secs:.1f} s (wall, at {escape(str(viewer or '?'))})"))
    timing = m.get("timing")
    if isinstance(timing, dict) and timing:
        kv.append(("Phases", ", ".join(f"{escape(k)} {float(v):.2f} s" for k, v in timing.items()
                                       if isinstance(v, (int, float)))))
    info = _table(["Item", "Value"], [[escape(k), v] for k, v in kv], "kv")
    # parties: role and row count where this party knows it
    peer = inter.get("peer_sizes") if isinstance(inter.get("peer_sizes"), dict) else {}
    names = list(parties) or list(m.get("parties") or m.get("banks") or rec.get("participants") or [])
    sent = {p: sum(int(e.get("bytes", 0)) for e in es) for p, es in ledgers.items()}
    prow = []
    for p in names:
        cfg = parties.get(p) if isinstance(parties.get(p), dict) else {}
        role = "label holder" if p == lh else ("feature holder" if lh else ("bank" if cfg.get("label") else
                                                                           "this party" if p == viewer else "partner"))
        if p == lh or (not lh and p == viewer):
            n = inter.get("own_rows", m.get("train_rows_at_holder"))
            if n is None and p == viewer and _own_training_rows(view) is not None:
                n = f"{_own_training_rows(view):,} training rows"
        else:
            n = peer.get(p)
        prow.append([escape(p), role, _num(n) if n is not None else "not known to this party",
                     format_bytes(sent[p]) if p in sent else "—"])
    if (job.get("coordinator") is not None or "coordinator" in sent) and "coordinator" not in names:
        prow.append(["coordinator", "aggregator (no data)", "—", format_bytes(sent["coordinator"]) if "coordinator" in sent else "—"])
    ptab = _table(["Party", "Role", "Rows", "Bytes sent"], prow) if prow else ""
    hp = _full_params(task)
    hp_tab = _table(["Hyper-parameter", "Value", "Set by"],
                    [[escape(k), escape(json.dumps(v) if not isinstance(v, str) else v), "spec" if k in task else "default"]
                     for k, v in sorted(hp.items())], "kv") if hp else \
        '<p class="na">The job spec is not in this run directory; hyper-parameters not shown.</p>'
    return (f'<div class="figs"><div class="cell"><h3>Model</h3>{info}</div>'
            f'<div class="cell"><h3>Parties</h3>{ptab}<h3>[task] settings</h3>{hp_tab}</div></div>')


# -- scorecards ------------------------------------------------------------------------------
def _card_features(view: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Points-table rows per feature with counts and bad rates where the viewer knows them."""
    card = view["card"]
    by_f: dict[str, list[dict[str, Any]]] = {}
    for r in card["table"]:
        by_f.setdefault(str(r.get("feature")), []).append(dict(r))
    for f, rows in by_f.items():
        rows.sort(key=lambda r: r.get("bin", 0))
        goods, bads = card["counts"].get(f, (None, None))
        woe_rows = (view["binning"].get(f) or {}).get("rows") or []
        for i, r in enumerate(rows):
            if goods is not None and i < len(goods):
                n = float(goods[i]) + float(bads[i])
                r["n"], r["bads"] = int(n), int(bads[i])
            elif i < len(woe_rows) and woe_rows[i].get("bads") is not None:
                r["n"], r["bads"] = woe_rows[i].get("n"), woe_rows[i].get("bads")
            if r.get("n") and r.get("bads") is not None:
                r["bad_rate"] = r["bads"] / r["n"]
    return by_f


def points_table(view: dict[str, Any]) -> str:
    """The points table (feature, bin/condition, count, bad rate, WOE, points) of the viewer's part."""
    card = view["card"]
    by_f = _card_features(view)
    rows = [["<strong>base points</strong>", "every applicant", "", "", "", f"<strong>{_num(card.get('base_points'), 0)}</strong>"]] \
        if card.get("base_points") is not None else []
    for f, rs in by_f.items():
        for k, r in enumerate(rs):
            if r.get("label") == "missing" and not r.get("n") and r.get("points", 0) == 0:
                continue
            rows.append([escape(f) if k == 0 else "", escape(str(r.get("label"))), _num(r.get("n")),
                         _pct(r.get("bad_rate")), _num(r.get("woe"), 4), _num(r.get("points"), 0)])
    scale = (f"Scaling: {_num(card.get('base_score'), 0)} points at good:bad odds {_num(card.get('base_odds'), 0)}:1, "
             f"{_num(card.get('pdo'), 0)} points to double the odds.")
    who = ""
    if card.get("partial"):
        who = (f" This is <strong>{escape(str(card.get('party') or view.get('viewer')))}</strong>'s part of the points "
               "table; each partner keeps its own rows and sends only its partial points per applicant.")
    return f"<p>{scale}{who}</p>" + _table(["Feature", "Bin / condition", "Accounts", "Bad rate", "WOE", "Points"], rows)


def feature_charts(view: dict[str, Any], max_features: int = 12) -> list[str]:
    """One bar chart per scorecard feature: bad rate per bin (WOE when bad counts are unknown), counts on top."""
    by_f = _card_features(view)
    charts = []
    for f, rs in list(by_f.items())[:max_features]:
        rs = [r for r in rs if not (r.get("label") == "missing" and not r.get("n"))]
        charts.append(_bin_chart(f, rs, points=True))
    return charts


def _bin_chart(f: str, rs: list[dict[str, Any]], points: bool = False) -> str:
    k = len(rs)
    use_rate = all(r.get("bad_rate") is not None for r in rs)
    vals = [float(r["bad_rate"]) if use_rate else float(r.get("woe") or 0.0) for r in rs]
    lo = 0.0 if use_rate else min(vals + [0.0]) * 1.25
    hi = max(vals + [1e-9]) * 1.3 if use_rate else max(vals + [0.0]) * 1.25 or 0.1
    if lo == hi:
        hi = lo + 1.0
    sub = "bad rate" if use_rate else "WOE"
    c = Chart(f"{f}: {sub} per bin" + (" (points in labels)" if points else ""), "Bin", "Bad rate" if use_rate else "WOE",
              x_range=(0.4, k + 0.6), y_range=(lo, hi), x_ticks=[(i + 1, _short(r.get("label"), 11)) for i, r in enumerate(rs)],
              width=max(420, 78 * k))
    labels = []
    for r in rs:
        t = f"n={int(r['n']):,}" if r.get("n") is not None else ""
        if points and r.get("points") is not None:
            t += f" · {float(r['points']):+g} pts"
        labels.append(t)
    c.bars(range(1, k + 1), vals, bar_width=0.7, color=PALETTE["bad"] if use_rate else PALETTE["model"], values=labels)
    return c.svg()


def points_distribution(points: np.ndarray, y: np.ndarray, split: str, weight: np.ndarray | None = None) -> str:
    """Histogram of scorecard points by class (goods / bads), each class normalised to 100%
    (``weight``: a weighted run's row weights, each row counting ``w`` times)."""
    points, y = np.asarray(points, dtype=float), np.asarray(y)
    w = np.ones(len(points)) if weight is None else np.asarray(weight, dtype=float)
    if weight is not None:  # a row of weight 0 is not in the sample
        points, y, w = points[w > 0], y[w > 0], w[w > 0]
    lo, hi = float(np.min(points)), float(np.max(points))
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, 26)
    width = edges[1] - edges[0]
    mids = (edges[:-1] + edges[1:]) / 2
    g, b = y == 0, y == 1
    hg = np.histogram(points[g], edges, weights=w[g])[0] / max(float(w[g].sum()), 1e-300)
    hb = np.histogram(points[b], edges, weights=w[b])[0] / max(float(w[b].sum()), 1e-300)
    c = Chart(f"Points by class ({split})", "Score (points; higher = safer)", "Share of class",
              x_range=(lo - width / 2, hi + width / 2), y_range=(0, float(max(hg.max(), hb.max())) * 1.15 or 1), legend="tr")
    c.bars(mids, hg, bar_width=width * 0.95, color=PALETTE["good"], opacity=0.5, label="goods")
    c.bars(mids, hb, bar_width=width * 0.95, color=PALETTE["bad"], opacity=0.5, label="bads")
    return c.svg()


def score_bands(points: np.ndarray, y: np.ndarray, pdo: float, split: str, max_bands: int = 12,
                weight: np.ndarray | None = None) -> tuple[str, str]:
    """Score bands ``pdo`` points wide (odds double from one band to the next): share and bad rate.

    ``weight`` (a weighted run's row weights, as in ``metrics.json``): every row counts ``w``
    times, in the range drawn (weighted 2nd and 98th percentiles), the shares, the bad rates and
    the counts, which are then sums of weights.

    More than ``max_bands`` bands between the 2nd and 98th percentiles and the width doubles (then the odds
    quadruple per band); the table says the width drawn. A band holds the points from its lower bound up to,
    not including, its upper bound, and the labels say so: ``480–499`` for whole points, ``[480, 500)``
    otherwise. The outer bands are open-ended. An empty band has no bad rate.
    """
    from fedrisk.finance.metrics import quantile

    pts = np.asarray(points, dtype=float)
    y = np.asarray(y, dtype=float)
    w = np.ones(len(pts)) if weight is None else np.asarray(weight, dtype=float)
    total = float(w.sum())
    width = float(pdo) if pdo and pdo > 0 else 20.0
    lo_q, hi_q = quantile(pts, [0.02, 0.98], sample_weight=weight)
    start = math.floor(lo_q / width) * width
    edges = list(np.arange(start, hi_q + width, width))
    while len(edges) - 1 > max_bands:
        width *= 2
        edges = list(np.arange(start, hi_q + width, width))
    cuts = np.array(edges[1:-1])
    band = np.searchsorted(cuts, pts, side="right")
    whole = bool(np.all(pts == np.round(pts))) and bool(np.all(cuts == np.round(cuts)))
    rows, share, rate, ticks = [], [], [], []
    for b in range(len(cuts) + 1):
        mask = band == b
        n = float(w[mask].sum()) if weight is not None else int(mask.sum())
        lo = "" if b == 0 else f"{cuts[b - 1]:g}"
        hi = "" if b == len(cuts) else f"{cuts[b]:g}"
        if b == 0:
            label = f"< {hi}"
        elif b == len(cuts):
            label = f"≥ {lo}"
        else:
            label = f"{lo}–{cuts[b] - 1:g}" if whole else f"[{lo}, {hi})"
        bads = float((w[mask] * y[mask]).sum())
        br = bads / n if n else float("nan")
        share.append(n / total)
        rate.append(br)
        ticks.append(label)
        rows.append([escape(label), _count(n), _pct(n / total), _count(bads if weight is not None else int(bads)), _pct(br)])
    k = len(share)
    top = max([s for s in share] + [r for r in rate if math.isfinite(r)] + [0.05]) * 1.2
    c = Chart(f"Score bands ({split}): population share and bad rate", "Score band (points)", "Share / bad rate",
              x_range=(0.4, k + 0.6), y_range=(0, min(1.05, top)), x_ticks=[(i + 1, t) for i, t in enumerate(ticks)],
              width=max(560, 70 * k), legend="tr")
    c.bars(range(1, k + 1), share, bar_width=0.65, color=PALETTE["train"], label="population share",
           values=[f"{100 * s:.0f}%" for s in share])
    xs = [i + 1 for i, r in enumerate(rate) if math.isfinite(r)]
    ys = [r for r in rate if math.isfinite(r)]
    c.line(xs, ys, color=PALETTE["bad"], label="bad rate")
    c.points(xs, ys, color=PALETTE["bad"])
    ratio = width / float(pdo) if pdo and pdo > 0 else None
    odds = ("the odds double from one band to the next" if ratio == 1 else
            f"{ratio:g} × PDO, to keep at most {max_bands} bands: the odds change {2 ** ratio:g}-fold from one band to "
            "the next" if ratio else "")
    who = (f"{len(pts):,} {escape(split)} applicants" if weight is None else
           f"{int((w > 0).sum()):,} {escape(split)} applicants of positive weight, standing for {_count(total)} accounts "
           "(counts are sums of weights)")
    note = (f"<p>{who} in bands of {width:g} points ({odds}); a band includes its "
            "lower bound and excludes its upper bound; the lowest and highest bands are open-ended.</p>")
    return c.svg(), note + _table(["Band (points)", "Accounts", "Share", "Bads", "Bad rate"], rows)


def _tick(reason: str) -> str:
    """Axis label of a reason: an aggregated partner reads ``payco (partner)``."""
    if reason.startswith("partner features (") and reason.endswith(")"):
        return reason[len("partner features ("):-1] + " (partner)"
    return reason


def reason_summary(reasons, n_show: int = 10) -> tuple[str, str]:
    """How often each reason is the top reason (and in the top k) on the test applicants."""
    import pandas as pd

    cols = sorted([c for c in reasons.columns if c.startswith("reason_")], key=lambda c: int(c.split("_")[1]))
    if not cols:
        return "", ""

    def base(v: Any) -> str | None:
        return None if pd.isna(v) else str(v).split(" = ")[0]

    first = reasons[cols[0]].map(base).value_counts()
    anyk = pd.concat([reasons[c].map(base) for c in cols]).value_counts()
    lost_col = next((c for c in ("lost_1", "points_lost_1", "contribution_1") if c in reasons.columns), None)
    unit = "log-odds added" if lost_col == "contribution_1" else "points lost"
    names = list(anyk.index[:n_show])
    if not names:
        return "", '<p class="na">No applicant lost points on any feature.</p>'
    share1 = [float(first.get(f, 0)) / len(reasons) for f in names]
    sharek = [float(anyk.get(f, 0)) / len(reasons) for f in names]
    k = len(names)
    c = Chart("Reason codes on the test applicants", "Reason (feature, or one aggregated partner)", "Share of applicants",
              x_range=(0.4, k + 0.6), y_range=(0, max(sharek + [0.05]) * 1.25), x_ticks=[(i + 1, _short(_tick(f), 13)) for i, f in enumerate(names)],
              width=max(560, 90 * k), legend="tr")
    c.bars(range(1, k + 1), share1, bar_width=0.36, offset=-0.19, color=PALETTE["bad"], label="top reason",
           values=[f"{100 * s:.0f}%" for s in share1])
    c.bars(range(1, k + 1), sharek, bar_width=0.36, offset=0.19, color=PALETTE["train"], label=f"in top {len(cols)}")
    rows = []
    for f in names:
        mean_lost = "—"
        if lost_col is not None:
            m1 = reasons[cols[0]].map(base) == f
            if m1.any():
                # points are whole-ish numbers; log-odds contributions are mostly below 0.1
                mean_lost = f"{float(reasons.loc[m1, lost_col].mean()):.{3 if lost_col == 'contribution_1' else 1}f}"
        rows.append([escape(f), _num(int(first.get(f, 0))), _num(int(anyk.get(f, 0))), mean_lost])
    none = int(reasons[cols[0]].isna().sum())
    note = f"<p>{none:,} applicant(s) have no reason (nothing pushes them towards default).</p>" if none else ""
    return c.svg(), note + _table(["Reason", "Top reason (applicants)", f"In top {len(cols)}", f"Mean {unit} as top reason"], rows)


# -- WOE / IV --------------------------------------------------------------------------------
def binning_section(view: dict[str, Any], max_charts: int = 16) -> str:
    """Per-feature binning tables (optbinning-style) and WOE charts for the viewer's features."""
    binning = view.get("binning") or {}
    if not binning:
        return ""
    feats = sorted(binning, key=lambda f: -float(binning[f].get("iv") or 0))
    out = []
    for i, f in enumerate(feats):
        d = binning[f]
        rows = [r for r in d["rows"] if not (r.get("label") == "missing" and not r.get("n"))]
        total = sum(float(r.get("n") or 0) for r in rows) or 1.0
        has_bads = all(r.get("bads") is not None for r in rows)
        trs = [[escape(str(r.get("label"))), _num(r.get("n")), _pct(float(r.get("n") or 0) / total)]
               + ([_num(r.get("bads")), _pct(r.get("bad_rate"))] if has_bads else []) + [_num(r.get("woe"), 4)]
               for r in rows]
        head = ["Bin", "Accounts", "Share"] + (["Bads", "Bad rate"] if has_bads else []) + ["WOE"]
        tbl = (f"<h3>{escape(f)} — IV {_num(d.get('iv'), 4)} ({escape(str(d.get('kind') or ''))})</h3>"
               + _table(head, trs))
        chart = ""
        if i < max_charts:
            woe_rows = [dict(r, bad_rate=None) for r in rows]  # the WOE chart: same scale meaning for every party
            chart = _bin_chart(f, woe_rows)
        out.append(f'<div class="figs"><div class="cell">{tbl}</div>' + (f"<figure>{chart}</figure>" if chart else "") + "</div>")
    return "".join(out)


# -- trees -----------------------------------------------------------------------------------
def importance_section(view: dict[str, Any]) -> str:
    """Feature importance per party (total gain and split count), each under the names this viewer knows."""
    imp = view.get("importance") or {}
    if not imp:
        return ""
    out = []
    viewer = view.get("viewer")
    # one scale for all parties: shares of the model's total gain, so a partner's 75% is not drawn like 19%
    total = sum(float(v.get("gain", 0)) for feats in imp.values() if isinstance(feats, dict)
                for v in feats.values() if isinstance(v, dict)) or 1.0
    top = max([float(v.get("gain", 0)) / total for feats in imp.values() if isinstance(feats, dict)
               for v in feats.values() if isinstance(v, dict)] + [0.01])
    for party, feats in imp.items():
        if not isinstance(feats, dict) or not feats:
            continue
        items = sorted(((str(f), v) for f, v in feats.items() if isinstance(v, dict)), key=lambda t: -float(t[1].get("gain", 0)))
        names = [f for f, _ in items][:15]
        gains = [float(v.get("gain", 0)) / total for _, v in items][:15]
        anon = party != viewer
        c = Chart(f"{party}: share of the model's total gain" + (" (partner's features anonymised)" if anon else ""),
                  "Feature", "Share of total gain", x_range=(0.4, len(names) + 0.6), y_range=(0, top * 1.25),
                  x_ticks=[(i + 1, _short(n, 9)) for i, n in enumerate(names)], width=max(480, 60 * len(names)))
        c.bars(range(1, len(names) + 1), gains, bar_width=0.7, color=PALETTE["model"] if not anon else PALETTE["train"],
               values=[f"{100 * g:.0f}%" for g in gains])
        tbl = _table(["Feature", "Total gain", "Splits", "Share of total gain"],
                     [[escape(f), _num(float(v.get("gain", 0)), 1), _num(int(v.get("splits", 0))),
                       _pct(float(v.get("gain", 0)) / total)] for f, v in items])
        out.append(f"<h3>{escape(party)}</h3>" + f'<div class="figs"><figure>{c.svg()}</figure><div class="cell">{tbl}</div></div>')
    return "".join(out)
