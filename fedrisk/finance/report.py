"""One self-contained HTML report for a run directory, written for a risk manager.

Inputs (all optional; whatever is missing is shown as "not available")::

    run_dir/metrics.json          {"task", "job", "test": evaluate-dict, "train": evaluate-dict,
                                   "rounds": [{"round", "loss", "test_auc"?, ...}],
                                   "stability": psi-dict, "comparison"?: {...}, "iv"?: {...}}
    run_dir/scores/test.csv       id,y,score   (score = predicted default probability)
    run_dir/scores/train.csv      id,y,score
    run_dir/ledger/<party>.jsonl  {"time","from","to","tag","kind","bytes"} per outbound message

Output: ``run_dir/report.html`` — inline CSS and inline SVG only (no script, no remote
resource), so it opens offline and can be archived or e-mailed as a single file.

Notes
-----
The report shows only what the run directory already holds: aggregate metrics, the label
holder's own scores and each party's ledger. It sends nothing and reads no party's raw data.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from fedrisk.errors import DataError
from fedrisk.finance.woe import iv_strength
from fedrisk.finance import metrics as fm
from fedrisk.finance.charts import PALETTE, Chart, format_bytes
from fedrisk.finance import report_model as rm
from fedrisk.transport.ledger import read_ledger, summarise

__all__ = ["write_report", "render_report", "load_run"]

NA = '<p class="na">Not available in this run.</p>'


# -- loading -----------------------------------------------------------------------------------
def _load_scores(path: Path, notes: list[str]) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    try:
        import pandas as pd

        df = pd.read_csv(path)
    except Exception as exc:  # a broken file must not stop the report
        notes.append(f"{path.name}: could not be read ({exc.__class__.__name__}: {exc}).")
        return None
    missing = {"y", "score"} - set(df.columns)
    if missing:
        notes.append(f"{path.name}: missing column(s) {sorted(missing)}; expected id,y,score.")
        return None
    df = df.dropna(subset=["y", "score"])
    if "weight" in df.columns:  # [evaluation] weight: curves and tables weighted like metrics.json
        df = df[pd.to_numeric(df["weight"], errors="coerce") > 0]
    y = df["y"].to_numpy(dtype=float)
    s = df["score"].to_numpy(dtype=float)
    if y.size == 0 or len(np.unique(y)) < 2:
        notes.append(f"{path.name}: needs both goods and bads to draw curves.")
        return None
    out = {"y": y, "score": s}
    if "weight" in df.columns:
        out["w"] = df["weight"].to_numpy(dtype=float)
    return out


def _load_ledgers(ledger_dir: Path, notes: list[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    if not ledger_dir.is_dir():
        return out
    for f in sorted(ledger_dir.glob("*.jsonl")):
        try:
            entries = read_ledger(f)
        except (ValueError, OSError):
            entries, skipped = [], 0
            for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    skipped += line.strip() != ""
            notes.append(f"ledger/{f.name}: {skipped} unreadable line(s) skipped.")
        good = [e for e in entries if isinstance(e, dict) and {"to", "kind", "bytes"} <= e.keys()]
        for e in good:
            e.setdefault("from", f.stem)
        out[f.stem] = good
    return out


def load_run(run_dir: Path) -> dict[str, Any]:
    """Read everything the report uses from ``run_dir``, tolerating missing or broken files.

    Parameters
    ----------
    run_dir : Path
        The run directory.

    Returns
    -------
    dict
        ``metrics`` (dict), ``scores`` ({"test"|"train": {"y", "score"}}), ``ledgers``
        ({party: [entries]}) and ``notes`` (list of human-readable problems found).
    """
    run_dir = Path(run_dir)
    notes: list[str] = []
    metrics: dict[str, Any] = {}
    mpath = run_dir / "metrics.json"
    if mpath.exists():
        try:
            metrics = json.loads(mpath.read_text(encoding="utf-8"))
            if not isinstance(metrics, dict):
                notes.append("metrics.json is not a JSON object; ignored.")
                metrics = {}
        except ValueError as exc:
            notes.append(f"metrics.json could not be parsed ({exc}); ignored.")
    else:
        notes.append("metrics.json not found.")
    scores = {}
    for split in ("test", "train"):
        s = _load_scores(run_dir / "scores" / f"{split}.csv", notes)
        if s is not None:
            scores[split] = s
    # fill what the runtime did not compute but the scores allow
    for split, s in scores.items():
        if not isinstance(metrics.get(split), dict) and np.all((s["score"] >= 0) & (s["score"] <= 1)):
            try:
                metrics[split] = fm.evaluate(s["y"], s["score"], sample_weight=s.get("w"))
            except DataError as exc:
                notes.append(f"{split} metrics: {exc}")
    if not isinstance(metrics.get("stability"), dict) and {"train", "test"} <= scores.keys():
        metrics["stability"] = fm.population_stability_index(scores["train"]["score"], scores["test"]["score"],
                                                             expected_weight=scores["train"].get("w"),
                                                             actual_weight=scores["test"].get("w"))
    # the headline AUC's reliability on few defaults, beside it
    head = next((s for s in ("test", "train") if isinstance(metrics.get(s), dict)), None)
    if head and metrics[head].get("small_sample"):
        notes.append(f"{head} rows: {metrics[head]['small_sample']}.")
    if metrics.get("iv_noise_note"):  # selected features whose IV noise reaches too (beside the IV table's figures)
        notes.append(f"IV: {metrics['iv_noise_note']}.")
    ledgers = _load_ledgers(run_dir / "ledger", notes)
    view = rm.load_model_view(run_dir, metrics, notes)
    if view["viewer"] and len(ledgers) > 1:
        # a local simulation writes every party's ledger here; each party's report shows its own
        # outbound messages and what others sent to it, not the partners' traffic among themselves
        me = view["viewer"]
        ledgers = {p: [e for e in es if p == me or e.get("to") == me] for p, es in ledgers.items()}
        ledgers = {p: es for p, es in ledgers.items() if es}
    return {"metrics": metrics, "scores": scores, "ledgers": ledgers, "notes": notes, "view": view}


# -- small formatting helpers ------------------------------------------------------------------
_num = rm._num  # one number format for the page and the model view


_count = rm._count


def _weighting(m: dict[str, Any]) -> str:
    """The banner of a weighted run: which column weighted which figures, and what stayed unweighted."""
    blocks = {k: m[k] for k in ("test", "train") if isinstance(m.get(k), dict)}
    weighted = {k: b["weighted"] for k, b in blocks.items() if isinstance(b.get("weighted"), dict)}
    if not weighted:
        return ""
    items = []
    for split, wt in weighted.items():
        where = f" of {wt['party']}'s file" if wt.get("party") else ""
        items.append(f"{split.capitalize()} figures are weighted by column {wt.get('column', '?')!r}{where}: {wt.get('rows', 0):,} rows "
                     f"of positive weight stand for {_count(blocks[split].get('n'))} accounts (counts in the tables are "
                     f"sums of weights; the AUC's standard error uses the effective {_count(wt.get('effective_bads'))} "
                     f"defaults and {_count(wt.get('effective_goods'))} non-defaults)")
    items += [b["unweighted"] for b in blocks.values() if isinstance(b.get("unweighted"), str)]
    items.append("The comparison table, the per-round test AUC and the PSI use the same weights (a PSI side without "
                 "weights counts rows), and so do the score bands; reason codes count rows")
    return ('<div class="notes"><strong>Weighted evaluation</strong><ul>'
            + "".join(f"<li>{escape(t)}.</li>" for t in items) + "</ul></div>")


def _pct(v: Any, digits: int = 1) -> str:
    return f"{100 * float(v):.{digits}f}%" if isinstance(v, (int, float)) and math.isfinite(v) else "—"


def _table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _section(sid: str, title: str, intro: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{escape(title)}</h2><p class="intro">{intro}</p>{body}</section>'


def _figs(*svgs: str, wide: bool = False) -> str:
    cells = "".join(f"<figure>{s}</figure>" if s.startswith("<svg") else f'<div class="cell">{s}</div>' for s in svgs if s)
    return f'<div class="figs{" wide" if wide else ""}">{cells}</div>'


# -- sections ----------------------------------------------------------------------------------
def _cards(m: dict[str, Any], ledgers: dict[str, list[dict[str, Any]]]) -> str:
    test = m.get("test") if isinstance(m.get("test"), dict) else {}
    stab = m.get("stability") if isinstance(m.get("stability"), dict) else {}
    total_bytes = sum(e.get("bytes", 0) for es in ledgers.values() for e in es)
    cards = [
        ("Test AUC", _num(test.get("auc")), f"SE {test['auc_se']:.3f} (Hanley–McNeil)"
         if isinstance(test.get("auc_se"), (int, float)) else "discrimination"),
        ("Test KS", _num(test.get("ks")), "max bad/good separation"),
        ("Test Gini", _num(test.get("gini")), "2·AUC − 1"),
        ("Brier", _num(test.get("brier"), 4), "probability accuracy"),
        ("Test sample", _count(test.get("n")) if test.get("n") is not None else "—",
         f"bad rate {_pct(test.get('positives', 0) / test['n'])}" if test.get("n") else ""),
        ("PSI " + "→".join(_stability_labels(stab)), _num(stab.get("psi")), stab.get("band", "")),
        ("Data exchanged", format_bytes(total_bytes) if ledgers else "—",
         f"{sum(len(v) for v in ledgers.values()):,} messages" if ledgers else ""),
    ]
    priv = m.get("privacy")
    if isinstance(priv, dict) and isinstance(priv.get("epsilon"), (int, float)):
        cards.insert(0, ("Privacy ε", _num(priv["epsilon"], 2), f"differential privacy, δ = {priv.get('delta', '?'):g}"
                         if isinstance(priv.get("delta"), (int, float)) else "differential privacy"))
    out = []
    for label, value, sub in cards:
        band = f" band-{escape(sub)}" if sub in ("stable", "watch", "shift") else ""
        out.append(
            f'<div class="card{band}"><div class="k">{escape(label)}</div><div class="v">{value}</div>'
            f'<div class="s">{escape(str(sub))}</div></div>'
        )
    return '<div class="cards">' + "".join(out) + "</div>"


def _comparison(m: dict[str, Any]) -> str:
    comp = m.get("comparison")
    if not isinstance(comp, dict) or not comp:
        return NA
    rows: list[tuple[str, dict[str, Any]]] = []
    for key, label in (("federated", "Federated"), ("centralized", "Centralised (pooled data, ceiling)")):
        if isinstance(comp.get(key), dict):
            rows.append((label, comp[key]))
    local = comp.get("local_only")
    if isinstance(local, dict):
        if local and all(isinstance(v, dict) for v in local.values()) and not {"auc", "ks"} & local.keys():
            rows += [(f"Local only — {p}", v) for p, v in local.items()]
        else:
            rows.append(("Local only", local))
    if not rows:
        return NA
    ceiling = comp.get("centralized", {}).get("auc") if isinstance(comp.get("centralized"), dict) else None
    trs = []
    for label, v in rows:
        gap = (f"{float(v['auc']) - float(ceiling):+.3f}" if isinstance(v.get("auc"), (int, float)) and isinstance(ceiling, (int, float)) else "—")
        trs.append([escape(label), _num(v.get("auc")), _num(v.get("ks")),
                    _num(v.get("gini", 2 * v["auc"] - 1 if isinstance(v.get("auc"), (int, float)) else None)), gap])
    tbl = _table(["Model", "AUC", "KS", "Gini", "AUC vs centralised"], trs, "num")
    aucs = [(label, float(v["auc"])) for label, v in rows if isinstance(v.get("auc"), (int, float))]
    if aucs:
        lo = max(0.0, min(a for _, a in aucs) - 0.1)
        c = Chart("AUC by model", "", "AUC", x_range=(-0.6, len(aucs) - 0.4), y_range=(lo, 1.0),
                  x_ticks=[(i, lab.split(" (")[0].replace("Local only — ", "local: ")) for i, (lab, _) in enumerate(aucs)],
                  width=max(520, 110 * len(aucs)))
        colors = [PALETTE["model"] if lab == "Federated" else PALETTE["ref"] if lab.startswith("Centr") else PALETTE["train"] for lab, _ in aucs]
        for i, ((_, a), col) in enumerate(zip(aucs, colors)):
            c.bars([i], [a], bar_width=0.6, color=col, values=[f"{a:.3f}"])
        return _figs(tbl, c.svg())
    return tbl


def _roc_ks(scores: dict[str, dict[str, np.ndarray]], card: dict[str, Any] | None = None,
            names: dict[str, str] | None = None) -> tuple[str, str]:
    """ROC and KS charts. The KS cut-off is a default probability (the scores files' column); on a scorecard's
    page, where "score" means points, the note also gives the points it stands for (probability at or above
    the cut-off = points at or below). ``names``: what each split's rows are (the stability labels: a horizontal
    run's "train" scores are the evaluation holder's own training rows only)."""
    if "test" not in scores and "train" not in scores:
        return "", ""
    roc = Chart("ROC curve", "False positive rate (goods flagged)", "True positive rate (bads caught)", legend="br")
    roc.line([0, 1], [0, 1], color=PALETTE["ref"], dash="4 4", width=1.2, label="random")
    for split, color in (("train", PALETTE["train"]), ("test", PALETTE["model"])):
        if split in scores and 0 < scores[split]["y"].sum() < scores[split]["y"].size:  # (no curve on one class)
            c = fm.ks_curve(scores[split]["y"], scores[split]["score"], scores[split].get("w"))
            a = fm.auc(scores[split]["y"], scores[split]["score"], scores[split].get("w"))
            roc.line(c["cum_good_rate"], c["cum_bad_rate"], color=color, label=f"{(names or {}).get(split, split)} (AUC {a:.3f})")
    split = "test" if "test" in scores else "train"
    y, s = scores[split]["y"], scores[split]["score"]
    w = scores[split].get("w")
    c = fm.ks_curve(y, s, w)
    w = np.ones_like(y) if w is None else w
    nb, ng = w[y == 1].sum(), w[y == 0].sum()
    pop = (c["cum_bad_rate"] * nb + c["cum_good_rate"] * ng) / (nb + ng)
    ksc = Chart(f"KS curve ({split})", "Share of population, riskiest first", "Cumulative share", legend="br")
    ksc.line(pop, c["cum_bad_rate"], color=PALETTE["bad"], label="bads")
    ksc.line(pop, c["cum_good_rate"], color=PALETTE["good"], label="goods")
    i = int(np.argmax(c["cum_bad_rate"] - c["cum_good_rate"]))
    ksc.vline(pop[i], color=PALETTE["model"], y0=c["cum_good_rate"][i], y1=c["cum_bad_rate"][i])
    lines = [f"KS {c['ks']:.3f}", f"at default probability ≥ {c['ks_score']:.3g}"]
    if card and card.get("base_score") is not None and card.get("pdo"):
        whole = bool(card.get("round_points", True))
        pts = rm.to_points(np.array([c["ks_score"]]), float(card["base_score"]), float(card["base_odds"]),
                           float(card["pdo"]), whole=whole)[0]
        lines.append(f"(score ≤ {pts:.{0 if whole else 1}f} points)")
    mid = (c["cum_bad_rate"][i] + c["cum_good_rate"][i]) / 2
    for k, text in enumerate(lines):  # one short line each: the chart is ~500 px wide
        ksc.note(min(pop[i] + 0.02, 0.5), mid + 0.03 - 0.065 * k, text, color=PALETTE["model"])
    return roc.svg(), ksc.svg()


def _distribution(scores: dict[str, dict[str, np.ndarray]]) -> str:
    split = "test" if "test" in scores else "train" if "train" in scores else None
    if split is None:
        return ""
    y, s = scores[split]["y"], scores[split]["score"]
    lo, hi = float(s.min()), float(s.max())
    if hi <= lo:
        hi = lo + 1e-9
    edges = np.linspace(lo, hi, 26)
    width = edges[1] - edges[0]
    mids = (edges[:-1] + edges[1:]) / 2
    w = scores[split].get("w")
    w = np.ones_like(s) if w is None else w
    hg = np.histogram(s[y == 0], edges, weights=w[y == 0])[0] / max(w[y == 0].sum(), 1e-300)
    hb = np.histogram(s[y == 1], edges, weights=w[y == 1])[0] / max(w[y == 1].sum(), 1e-300)
    top = float(max(hg.max(), hb.max())) * 1.15
    c = Chart(f"Score distribution by class ({split})", "Predicted default probability", "Share of class",
              x_range=(lo - width / 2, hi + width / 2), y_range=(0, top), legend="tr")
    c.bars(mids, hg, bar_width=width * 0.95, color=PALETTE["good"], opacity=0.5, label="goods")
    c.bars(mids, hb, bar_width=width * 0.95, color=PALETTE["bad"], opacity=0.5, label="bads")
    return c.svg()


def _class_stats(scores: dict[str, dict[str, np.ndarray]]) -> str:
    split = "test" if "test" in scores else "train"
    y, s = scores[split]["y"], scores[split]["score"]
    w = scores[split].get("w")
    rows = []
    for label, mask in (("Goods", y == 0), ("Bads", y == 1), ("All", np.ones_like(y, dtype=bool))):
        v = s[mask]
        if w is None:
            q = np.quantile(v, [0.1, 0.5, 0.9])
            rows.append([label, f"{int(mask.sum()):,}", _pct(v.mean()), _pct(q[0]), _pct(q[1]), _pct(q[2])])
        else:  # weighted: the accounts are sums of weights, the quantiles those of the rows repeated w times
            q = fm.quantile(v, [0.1, 0.5, 0.9], sample_weight=w[mask])
            rows.append([label, _count(float(w[mask].sum())), _pct(np.average(v, weights=w[mask])), _pct(q[0]),
                         _pct(q[1]), _pct(q[2])])
    return f"<h3>Predicted default probability ({split})</h3>" + _table(["Class", "Accounts", "Mean", "P10", "Median", "P90"], rows, "num")


def _lift(m: dict[str, Any]) -> tuple[str, str, str]:
    test = m.get("test") if isinstance(m.get("test"), dict) else {}
    rows = test.get("lift")
    if not isinstance(rows, list) or not rows:
        return "", "", ""
    k = len(rows)
    lifts = [float(r.get("lift", 0)) for r in rows]
    lc = Chart("Lift by score decile (test)", "Decile (1 = riskiest)", "Lift (bad rate ÷ average)",
               x_range=(0.4, k + 0.6), y_range=(0, max(lifts + [1.0]) * 1.18), x_ticks=[(i + 1, str(i + 1)) for i in range(k)], legend="tr")
    lc.bars(range(1, k + 1), lifts, bar_width=0.7, color=PALETTE["model"], values=[f"{v:.2f}" for v in lifts])
    lc.line([0.4, k + 0.6], [1, 1], color=PALETTE["accent"], dash="5 3", width=1.2, label="average (lift 1)")
    gains = [0.0] + [float(r.get("cum_gain", 0)) for r in rows]
    # groups differ in size when tied scores are kept together: each point sits at its cumulative population share
    sizes = [float(r.get("n") or 0) for r in rows]
    xs = np.r_[0.0, np.cumsum(sizes) / sum(sizes)] if all(sizes) else np.linspace(0, 1, k + 1)
    gc = Chart("Cumulative gains (test)", "Share of population, riskiest first", "Share of all bads captured", legend="br")
    bad_rate = test.get("positives", 0) / test["n"] if test.get("n") else None
    if bad_rate:
        px = np.linspace(0, 1, 201)
        gc.line(px, np.minimum(px / bad_rate, 1.0), color=PALETTE["ref"], width=1.2, label="perfect model")
    gc.line([0, 1], [0, 1], color=PALETTE["ref"], dash="4 4", width=1.2, label="random")
    gc.line(xs, gains, color=PALETTE["model"], label="model")
    gc.points(xs, gains, color=PALETTE["model"])
    tbl = _table(
        ["Decile", "Accounts (weighted)" if "rows" in rows[0] else "Accounts", "Bads", "Bad rate", "Lift",
         "Cum. bads captured", "Default probability range"],
        [[str(r.get("decile")), _count(r.get("n")), _count(r.get("bads")), _pct(r.get("bad_rate")), _num(r.get("lift"), 2),
          _pct(r.get("cum_gain")), f"{_num(r.get('min_score'), 3)} – {_num(r.get('max_score'), 3)}"] for r in rows],
        "num",
    )
    return lc.svg(), gc.svg(), tbl


def _calibration(m: dict[str, Any]) -> tuple[str, str]:
    test = m.get("test") if isinstance(m.get("test"), dict) else {}
    rows = test.get("calibration")
    if not isinstance(rows, list) or not rows:
        return "", ""
    pred = [float(r.get("mean_predicted", np.nan)) for r in rows]
    obs = [float(r.get("observed_rate", np.nan)) for r in rows]
    top = min(1.0, max(max(pred), max(obs)) * 1.15) or 1.0
    c = Chart("Calibration (test)", "Mean predicted default probability", "Observed default rate",
              x_range=(0, top), y_range=(0, top))
    c.line([0, top], [0, top], color=PALETTE["ref"], dash="4 4", width=1.2, label="perfect calibration")
    c.line(pred, obs, color=PALETTE["model"], label="model (equal-count bins)")
    c.points(pred, obs, color=PALETTE["model"])
    tbl = _table(
        ["Bin", "Accounts (weighted)" if "rows" in rows[0] else "Accounts", "Bads", "Mean predicted", "Observed",
         "Difference"],
        [[str(r.get("bin")), _count(r.get("n")), _count(r.get("bads")), _pct(r.get("mean_predicted")),
          _pct(r.get("observed_rate")), _pct(float(r.get("observed_rate", 0)) - float(r.get("mean_predicted", 0)))] for r in rows],
        "num",
    )
    return c.svg(), tbl


def _training(m: dict[str, Any]) -> str:
    rounds = m.get("rounds")
    if not isinstance(rounds, list) or not rounds:
        return ""
    rounds = [r for r in rounds if isinstance(r, dict)]
    xs = [float(r.get("round", i)) for i, r in enumerate(rounds)]
    keys = sorted({k for r in rounds for k, v in r.items() if k != "round" and isinstance(v, (int, float)) and not isinstance(v, bool)})
    loss_keys = [k for k in keys if "loss" in k]
    perf_keys = [k for k in keys if k not in loss_keys and any(t in k for t in ("auc", "ks", "gini"))]
    colors = [PALETTE["model"], PALETTE["accent"], PALETTE["train"], PALETTE["good"], PALETTE["bad"]]
    out = []
    xr = (min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1)
    for title, ylab, ks_ in (("Training loss per round", "Loss", loss_keys), ("Model quality per round", "Metric", perf_keys)):
        vals = [float(r[k]) for r in rounds for k in ks_ if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
        if not vals:
            continue
        lo, hi = min(vals), max(vals)
        pad = (hi - lo) * 0.1 or abs(hi) * 0.1 or 0.1
        c = Chart(title, "Round", ylab, x_range=xr, y_range=(lo - pad, hi + pad), legend="tr" if ks_ is loss_keys else "br")
        for k, col in zip(ks_, colors):
            pts = [(x, float(r[k])) for x, r in zip(xs, rounds) if isinstance(r.get(k), (int, float))]
            c.line([p[0] for p in pts], [p[1] for p in pts], color=col, label=k.replace("_", " "))
            if len(pts) <= 60:
                c.points([p[0] for p in pts], [p[1] for p in pts], color=col, r=2.5)
        out.append(c.svg())
    return _figs(*out) if out else ""


def _stability(m: dict[str, Any]) -> str:
    st = m.get("stability")
    if not isinstance(st, dict) or not isinstance(st.get("bins"), list):
        return NA
    bins = st["bins"]
    k = len(bins)
    e = [float(b.get("expected_pct", 0)) for b in bins]
    a = [float(b.get("actual_pct", 0)) for b in bins]
    exp_l, act_l = _stability_labels(st)
    c = Chart(f"Score distribution: {exp_l} (expected) vs {act_l} (actual)", "Score bin (expected quantiles)", "Share of sample",
              x_range=(0.4, k + 0.6), y_range=(0, max(e + a + [0.01]) * 1.4), x_ticks=[(i + 1, str(i + 1)) for i in range(k)],
              width=max(520, 52 * k))
    c.bars([i + 1 for i in range(k)], e, bar_width=0.36, offset=-0.19, color=PALETTE["train"], label=exp_l)
    c.bars([i + 1 for i in range(k)], a, bar_width=0.36, offset=0.19, color=PALETTE["model"], label=act_l)
    band = escape(str(st.get("band", "")))
    head = (f'<p class="psi band-{band}"><strong>PSI {_num(st.get("psi"), 4)}</strong> — {band}. '
            f"Compares the model's scores on <strong>{escape(st.get('expected') or exp_l + ' rows')}</strong> (expected"
            f"{'' if st.get('expected') else ', ' + _num(st.get('n_expected'))}) with "
            f"<strong>{escape(st.get('actual') or act_l + ' rows')}</strong> (actual"
            f"{'' if st.get('actual') else ', ' + _num(st.get('n_actual'))}). "
            "Reading: &lt; 0.10 stable, 0.10–0.25 watch, &gt; 0.25 population shift. "
            "Empty bins are smoothed to 0.01% before the logarithm.</p>")
    empty = st.get("empty_bins") if isinstance(st.get("empty_bins"), dict) else {}
    floored = [f"{int(k)} bin{'' if int(k) == 1 else 's'} empty in the {lab} sample"
               for k, lab in ((empty.get("expected", 0), exp_l), (empty.get("actual", 0), act_l)) if k]
    if floored:
        head += (f'<p class="na">{escape(" and ".join(floored))}: each counts as 0.01%, so the PSI (and a bin\'s '
                 "contribution) depends on that floor; read it as a population shift, not as a precise value.</p>")
    for note in ("small_sample", "caveat"):
        if st.get(note):
            head += f'<p class="na">{escape(str(st[note]))}</p>'

    def _edge(v: Any) -> str:
        return "−∞" if v == -math.inf else "+∞" if v == math.inf else _num(v, 4)

    tbl = _table(
        ["Bin", "Score range", exp_l, act_l, "Contribution"],
        [[str(i + 1), f"({_edge(b.get('lower'))}, {_edge(b.get('upper'))}{')' if b.get('upper') == math.inf else ']'}", _pct(b.get("expected_pct")),
          _pct(b.get("actual_pct")), _num(b.get("psi"), 4)] for i, b in enumerate(bins)],
        "num",
    )
    return head + _figs(c.svg(), tbl)


def _stability_labels(st: dict[str, Any]) -> tuple[str, str]:
    """Short names of the two samples a PSI compares (``expected_label`` / ``actual_label`` when written)."""
    return str(st.get("expected_label") or "train"), str(st.get("actual_label") or "test")


def _iv(m: dict[str, Any]) -> str:
    iv = m.get("iv")
    if not isinstance(iv, dict) or not iv:
        return NA
    out = []
    # one scale for every party: an IV of 0.27 must look a third of 0.85, whoever holds the feature
    top = max([float(r.get("iv", 0) or 0) for rows in iv.values() if isinstance(rows, list)
               for r in rows if isinstance(r, dict)] + [1e-12])
    scale = (0.0, max(0.5, top * 1.15))
    for party, rows in iv.items():
        if not isinstance(rows, list):
            continue
        rows = sorted((r for r in rows if isinstance(r, dict)), key=lambda r: -float(r.get("iv", 0) or 0))
        extra = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in ("feature", "iv")]
        if rows:
            shown = rows[:20]
            c = Chart(f"{party}: information value (common scale)", "Feature", "IV", x_range=(0.4, len(shown) + 0.6),
                      y_range=scale, x_ticks=[(i + 1, rm._short(r.get("feature", ""), 8)) for i, r in enumerate(shown)],
                      width=max(520, 56 * len(shown)))
            c.bars(range(1, len(shown) + 1), [float(r.get("iv", 0) or 0) for r in shown], bar_width=0.7,
                   color=PALETTE["model"], values=[f"{float(r.get('iv', 0) or 0):.2f}" for r in shown])
            for lvl, lab in ((0.02, "weak"), (0.1, "medium"), (0.3, "strong")):
                c.line([0.4, len(shown) + 0.6], [lvl, lvl], color=PALETTE["ref"], dash="3 3", width=1)
            out.append(f"<figure>{c.svg()}</figure>")
        trs = []
        for r in rows:
            v = float(r.get("iv", 0) or 0)
            bar = f'<span class="bar"><span style="width:{100 * v / scale[1]:.1f}%"></span></span>'
            trs.append([escape(str(r.get("feature", ""))), f"{v:.4f}", bar + escape(iv_strength(v))]
                       + [_num(r.get(k)) for k in extra])
        out.append(f"<h3>{escape(str(party))}</h3>" + _table(["Feature", "IV", "Strength"] + [k.replace("_", " ") for k in extra], trs, "num iv"))
    nulls = {r.get("iv_null") for rows in iv.values() if isinstance(rows, list) for r in rows if isinstance(r, dict)}
    if nulls & {"permutation", "chi2"}:  # what the IV noise figures mean (fedrisk.finance.iv_noise)
        out.append('<p class="na">iv p value: the chance that a pure-noise column reaches this IV; iv noise 95: the IV '
                   'noise exceeds 5% of the time. iv null "permutation": the labels permuted and the whole binning re-run '
                   '(calibrated for bins fitted to these labels); "chi2": chi-square for the final bins as if fixed in '
                   'advance (optimistic for fitted bins, most for 2-3 bins).</p>')
    return "".join(out) or NA


def _ledger(ledgers: dict[str, list[dict[str, Any]]]) -> str:
    if not ledgers:
        return NA
    flows: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    sent: dict[str, int] = defaultdict(int)
    recv: dict[str, int] = defaultdict(int)
    parties: set[str] = set()
    per_party = []
    for party, entries in ledgers.items():
        summ = summarise(entries)
        kinds = sorted({e["kind"] for e in entries})
        per_party.append([escape(party), _num(summ["messages"]), format_bytes(summ["bytes"]), escape(", ".join(kinds)) or "—"])
        for e in entries:
            frm, to, kind, b = str(e.get("from", party)), str(e["to"]), str(e["kind"]), int(e["bytes"])
            flows[(frm, to, kind)][0] += 1
            flows[(frm, to, kind)][1] += b
            sent[frm] += b
            recv[to] += b
            parties |= {frm, to}
    total = sum(v[1] for v in flows.values()) or 1
    flow_rows = []
    for (frm, to, kind), (n, b) in sorted(flows.items(), key=lambda kv: (kv[0][0], -kv[1][1])):
        cls = ' class="warn"' if kind == "plaintext-by-design" else ""
        flow_rows.append([escape(frm), escape(to), f"<span{cls}>{escape(kind)}</span>", f"{n:,}", format_bytes(b), f"{b:,}", _pct(b / total)])
    names = sorted(parties)
    c = Chart("Bytes sent and received per party", "", "Bytes", x_range=(0.4, len(names) + 0.6),
              y_range=(0, max([*sent.values(), *recv.values(), 1]) * 1.18), x_ticks=[(i + 1, n) for i, n in enumerate(names)],
              width=max(520, 120 * len(names)))
    xs = [i + 1 for i in range(len(names))]
    c.bars(xs, [sent.get(n, 0) for n in names], bar_width=0.36, offset=-0.19, color=PALETTE["model"], label="sent",
           values=[format_bytes(sent.get(n, 0)) for n in names])
    c.bars(xs, [recv.get(n, 0) for n in names], bar_width=0.36, offset=0.19, color=PALETTE["accent"], label="received",
           values=[format_bytes(recv.get(n, 0)) for n in names])
    return (
        _figs(c.svg(), "<h3>Per party (from its own ledger file)</h3>"
              + _table(["Party", "Messages sent", "Bytes sent", "Message kinds"], per_party, "num"))
        + "<h3>Flows by direction and message kind</h3>"
        + _table(["From", "To", "Kind", "Messages", "Size", "Bytes", "Share"], flow_rows, "num ledger")
    )


# -- page --------------------------------------------------------------------------------------
_CSS = """
:root{--ink:#1d2733;--muted:#5b6875;--line:#dfe3e8;--bg:#f5f7fa;--navy:#1f4e79}
*{box-sizing:border-box}
body{margin:0;font:14px/1.5 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--ink);background:var(--bg)}
header{background:var(--navy);color:#fff;padding:22px 40px 18px}
header h1{margin:0;font-size:22px;font-weight:600;letter-spacing:.2px}
header .meta{margin-top:4px;color:#c9d6e3;font-size:13px}
nav{background:#fff;border-bottom:1px solid var(--line);padding:8px 40px;font-size:13px}
nav a{color:var(--navy);text-decoration:none;margin-right:18px}
main{max-width:1180px;margin:0 auto;padding:18px 40px 40px}
section{background:#fff;border:1px solid var(--line);border-radius:6px;padding:18px 22px;margin:18px 0}
h2{margin:0 0 4px;font-size:17px;color:var(--navy)}
h3{font-size:14px;margin:18px 0 6px;color:var(--ink)}
p.intro{margin:0 0 12px;color:var(--muted);font-size:13px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(140px,1fr));gap:12px;margin-top:18px}
.card{background:#fff;border:1px solid var(--line);border-top:3px solid var(--navy);border-radius:6px;padding:10px 14px}
.card .k{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.4px}
.card .v{font-size:24px;font-weight:600;margin:2px 0}
.card .s{font-size:12px;color:var(--muted)}
.card.band-stable{border-top-color:#2e8b57}.card.band-watch{border-top-color:#d68910}.card.band-shift{border-top-color:#c0392b}
.figs{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:14px;margin:6px 0 10px}
.figs.wide{grid-template-columns:minmax(0,1fr)}
.cell{min-width:0;overflow-x:auto}
.cell h3:first-child{margin-top:4px}
figure{margin:0;border:1px solid var(--line);border-radius:4px;padding:4px;background:#fff}
svg.chart{display:block;width:100%;height:auto}
svg text{font-family:inherit}
svg .title{font-size:14px;font-weight:600;fill:#1d2733}
svg .tick{font-size:11px;fill:#5b6875}
svg .axis{font-size:12px;fill:#3a4550}
svg .legend{font-size:11.5px;fill:#1d2733}
svg .note{font-size:12px;font-weight:600}
svg .val{font-size:10.5px;fill:#3a4550}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px;min-width:50%}
th{background:#eef2f6;text-align:left;font-weight:600;padding:6px 10px;border-bottom:1px solid var(--line)}
td{padding:5px 10px;border-bottom:1px solid #eef0f3}
table.num td:not(:first-child){font-variant-numeric:tabular-nums}
tbody tr:nth-child(even){background:#fafbfc}
.bar{display:inline-block;width:90px;height:9px;background:#eef2f6;margin-right:8px;vertical-align:middle;border-radius:2px}
.bar span{display:block;height:100%;background:var(--navy);border-radius:2px}
.na{color:var(--muted);font-style:italic}
.notes{background:#fff8e6;border:1px solid #f0d48a;border-radius:6px;padding:8px 16px;margin-top:16px;font-size:13px}
.warn{color:#b03a2e;font-weight:600}
p.psi{padding:8px 12px;border-left:4px solid #9aa5b1;background:#f7f9fb}
p.psi.band-stable{border-left-color:#2e8b57}p.psi.band-watch{border-left-color:#d68910}p.psi.band-shift{border-left-color:#c0392b}
footer{color:var(--muted);font-size:12px;text-align:center;padding:0 0 30px}
@media print{body{background:#fff}section{break-inside:avoid;border:none}nav{display:none}}
"""


def _task_sections(m: dict[str, Any], scores: dict[str, dict[str, np.ndarray]], ledgers: dict[str, list[dict[str, Any]]],
                   view: dict[str, Any], task: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The sections this task produced, in reading order, and their navigation links.

    A WOE job has no scores, so it gets no ROC or lift placeholders; a scorecard's score figures
    are drawn in points; a feature holder's own report shows its binning, model part and ledger.
    """
    out: list[tuple[str, str, str, str]] = []  # (id, nav label, title + intro, body)
    is_woe = task.endswith(".woe")
    card = view.get("card")
    model_task = not is_woe and (bool(scores) or "test" in m or "train" in m or not view.get("viewer"))
    out.append(("documentation", "Documentation", "Model documentation",
                _section("documentation", "Model documentation",
                         "What was trained, by whom, on how many rows and with which settings (from the run directory).",
                         rm.header_section(m, view, ledgers))))
    split = "test" if "test" in scores else "train" if "train" in scores else None
    pts = None
    if card and split and card.get("base_score") is not None and card.get("pdo"):
        pts = rm.to_points(scores[split]["score"], float(card["base_score"]), float(card["base_odds"]), float(card["pdo"]),
                           whole=bool(card.get("round_points", True)))
    if card:
        charts = rm.feature_charts(view)
        body = rm.points_table(view) + (_figs(*charts) if charts else "")
        out.append(("scorecard", "Points table", "", _section(
            "scorecard", "Scorecard: points table",
            ("Each applicant starts with the base points and adds the points of their bin on every feature. "
             if card.get("base_points") is not None else
             "This party's rows of the points table: an applicant gets the points of their bin on each of these features. ")
            + "Charts: bad rate per bin where this party knows the labels, else WOE; each bar labelled with the bin's "
              "training accounts and points.", body)))
        if pts is not None:
            wts = scores[split].get("w")
            bands_svg, bands_tbl = rm.score_bands(pts, scores[split]["y"], float(card["pdo"]), split, weight=wts)
            out.append(("bands", "Score bands", "", _section(
                "bands", "Score bands",
                f"Applicants grouped by score ({split} rows) in bands of equal width in points (a multiple of the "
                f"{_num(card.get('pdo'), 0)}-point PDO, stated under the chart). A good scorecard has bad rates falling "
                "steadily as points rise.",
                _figs(bands_svg, rm.points_distribution(pts, scores[split]["y"], split, weight=wts)) + bands_tbl)))
        reasons = view.get("reasons")
        if reasons is not None and len(reasons):
            r_svg, r_tbl = rm.reason_summary(reasons)
            out.append(("reasons", "Reasons", "", _section(
                "reasons", "Reason codes",
                "Top reasons per test applicant: the features where the applicant's bin scores furthest below the best "
                "bin. A partner's features count as one aggregated reason unless it opted in to name them.",
                _figs(r_svg, r_tbl) if r_svg else r_tbl)))
    if model_task:
        st = m.get("stability") if isinstance(m.get("stability"), dict) else {}
        roc, ksc = _roc_ks(scores, card, dict(zip(("train", "test"), _stability_labels(st))))
        lift_svg, gains_svg, lift_tbl = _lift(m)
        cal_svg, cal_tbl = _calibration(m)
        train = _training(m)
        dist = _distribution(scores) if pts is None else ""
        out += [
            ("comparison", "Comparison", "", _section(
                "comparison", "Federated vs centralised vs local-only",
                "Same test set for every model. Centralised pooled data is the ceiling a federation can reach; "
                "local-only models are what each institution achieves alone (for vertical jobs: the label holder's "
                "own features).", _comparison(m))),
            ("discrimination", "ROC / KS", "", _section(
                "discrimination", "Discrimination: ROC and KS",
                "How well the score separates defaulters (bads) from non-defaulters (goods). "
                f"KS ({'test' if 'test' in scores else 'training'} rows, as the KS chart's title says) is the largest "
                "gap between the shares of all bads and of all goods scoring at or above a cut-off, over every cut-off; "
                "accounts with the same score are never split by a cut-off. Its cut-off is shown on the chart.",
                _figs(roc, ksc) if roc else NA)),
        ]
        if pts is None:
            out.append(("distribution", "Distribution", "", _section(
                "distribution", "Score distribution by class",
                "Histogram of the predicted default probability, each class normalised to 100%. "
                "Less overlap means better separation.", _figs(dist, _class_stats(scores)) if dist else NA)))
        out += [
            ("lift", "Lift", "", _section("lift", "Lift and gains", "Test accounts ranked by score, riskiest first, and cut "
                                          "into groups of equal size (deciles), except that accounts with the same score are "
                                          "never split: a tie goes whole into the group where it starts, so groups can differ "
                                          "in size (and be fewer) when many accounts share a score. Score range: lowest and "
                                          "highest score in the group.",
                                          (_figs(lift_svg, gains_svg) + lift_tbl) if lift_svg else NA)),
            ("calibration", "Calibration", "", _section(
                "calibration", "Calibration",
                "Does a predicted 10% default probability default 10% of the time? Points on the diagonal are well calibrated.",
                _figs(cal_svg, cal_tbl) if cal_svg else NA)),
            *([("training", "Training", "", _section("training", "Training per round", "Federated optimisation progress.", train))]
              if train else []),  # (a one-shot fit, e.g. a vertical scorecard's, has no rounds to show)
            ("stability", "Stability", "", _section(
                "stability", "Population stability",
                "Population stability index of the model's score between two samples, named below.", _stability(m))),
        ]
    if not card and view.get("reasons") is not None and len(view["reasons"]):
        r_svg, r_tbl = rm.reason_summary(view["reasons"])
        out.append(("reasons", "Reasons", "", _section(
            "reasons", "Reason codes",
            ("Top reasons per test applicant: the columns pushing the default log-odds up most against the training's "
             "average applicant (coef x (x - mean) / scale, a linear model's exact Shapley value; a text column's "
             "dummies summed). In a vertical model the partners' columns count as one reason: the sum of their "
             "partial scores, which is all the label holder receives." if task.endswith(".lr") else
             "Top reasons per test applicant: the features with the largest TreeSHAP contributions to the default "
             "log-odds (exact Shapley values over the trees, adding up to the score). In a vertical model a partner's "
             "features count as one reason: what they add once the label holder's own features are known."),
            _figs(r_svg, r_tbl) if r_svg else r_tbl)))
    imp = rm.importance_section(view)
    if imp:
        out.append(("importance", "Importance", "", _section(
            "importance", "Feature importance",
            "Total split gain and split count per feature, per party. Each party sees its own feature names; "
            "a partner's features appear only anonymised (the label holder knows which partner split, not on what).", imp)))
    if is_woe or "iv" in m or not view.get("viewer"):
        out.append(("iv", "IV", "", _section("iv", "Information value by party",
                                             "Predictive strength of each candidate feature, computed per party on common "
                                             "bins; every bar on the same scale.", _iv(m))))
    if view.get("binning") and not card:
        out.append(("binning", "Binning", "", _section(
            "binning", "Binning tables and WOE",
            "Per feature: bins, accounts, bad rate where this party knows the labels, and weight of evidence "
            "(WOE = ln(share of goods / share of bads)).", rm.binning_section(view))))
    out.append(("ledger", "Ledger", "", _section(
        "ledger", "Communication ledger",
        "Every message each party sent, from its own outbound ledger: the record a compliance team "
        "reviews. Kinds: ciphertext, masked, aggregate, public-parameter, model, metric, plaintext-by-design.",
        _ledger(ledgers))))
    return [o[3] for o in out], [(o[0], o[1]) for o in out]


def render_report(run: dict[str, Any], title: str | None = None) -> str:
    """Render the HTML page from :func:`load_run` output.

    Parameters
    ----------
    run : dict
        As returned by :func:`load_run`.
    title : str, optional
        Page heading; defaults to the job and task names.

    Returns
    -------
    str
        A complete HTML document (inline CSS and SVG only).
    """
    m, scores, ledgers = run["metrics"], run["scores"], run["ledgers"]
    view = run.get("view") or {"viewer": None, "job": {}, "record": None, "card": None, "binning": {},
                               "importance": {}, "reasons": None}
    job = str(m.get("job", "")) or str((view.get("record") or {}).get("job", "")) or "unnamed job"
    task = str(m.get("task", "")) or str((view.get("record") or {}).get("task", "")) or "unknown task"
    heading = title or "Credit risk model report"
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections, navs = _task_sections(m, scores, ledgers, view, task)
    nav = "".join(f'<a href="#{sid}">{lab}</a>' for sid, lab in navs)
    notes = ""
    if run.get("notes"):
        notes = '<div class="notes"><strong>Data notes</strong><ul>' + "".join(f"<li>{escape(n)}</li>" for n in run["notes"]) + "</ul></div>"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{escape(heading)} — {escape(job)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{escape(heading)}</h1><div class=\"meta\">Job <strong>{escape(job)}</strong> · task {escape(task)} · "
        f"generated {generated}</div></header><nav>{nav}</nav><main>"
        f"{_cards(m, ledgers) if 'test' in m or 'train' in m or not view.get('viewer') else ''}{_weighting(m)}{notes}"
        f"{''.join(sections)}</main>"
        "<footer>fedrisk · figures computed from the run directory; no raw data leaves any party to build this report.</footer>"
        "</body></html>\n"
    )


def write_report(run_dir: Path, title: str | None = None) -> Path:
    """Write ``run_dir/report.html`` and return its path.

    Parameters
    ----------
    run_dir : Path
        Run directory holding ``metrics.json``, ``scores/`` and ``ledger/`` (any may be absent).
    title : str, optional
        Page heading.

    Returns
    -------
    Path
        The written report.

    Raises
    ------
    DataError
        ``run_dir`` does not exist.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run directory {run_dir} does not exist; pass the directory a job wrote")
    out = run_dir / "report.html"
    out.write_text(render_report(load_run(run_dir), title), encoding="utf-8")
    return out
