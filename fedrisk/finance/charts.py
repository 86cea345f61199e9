"""Tiny inline-SVG chart builder for the run report (no JavaScript, no external resources).

A :class:`Chart` is a pair of linear axes with nice ticks; series are added with :meth:`Chart.line`,
:meth:`Chart.bars`, :meth:`Chart.points` and :meth:`Chart.vline`, and :meth:`Chart.svg` returns one
self-contained ``<svg>`` element. Every string that reaches the markup is XML-escaped, because
labels (party names, feature names) come from data files.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from html import escape
from typing import Sequence

import numpy as np

__all__ = ["Chart", "PALETTE", "nice_ticks", "format_bytes", "epsilon_curve_chart"]

#: Colour roles used across the report so one meaning always has one colour.
PALETTE = {
    "model": "#1f4e79",
    "train": "#7f9cbf",
    "bad": "#c0392b",
    "good": "#2e8b57",
    "ref": "#9aa5b1",
    "accent": "#d68910",
    "grid": "#e5e8ec",
    "axis": "#4a5561",
}


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering ``[lo, hi]`` with about ``n`` intervals (1-2-5 steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step + 1e-9) * step
    ticks = []
    t = start
    while t <= hi + step * 1e-9:
        if t >= lo - step * 1e-9:
            ticks.append(round(t, 12))
        t += step
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:g}G"
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e4:
        return f"{v / 1e3:g}k"
    if a >= 100:
        return f"{v:.0f}"
    return f"{v:.4g}"


def format_bytes(n: float) -> str:
    """Human-readable byte count (B, kB, MB, GB; powers of 1000)."""
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.1f} {unit}"
    return f"{int(n)} B"


@dataclass
class Chart:
    """Linear x/y chart rendered to one inline ``<svg>``.

    Parameters
    ----------
    title : str
        Shown above the plot area.
    x_label, y_label : str
        Axis titles.
    x_range, y_range : tuple of float
        Data ranges mapped to the plot area (ticks are chosen inside them).
    width, height : int
        Size in CSS pixels (the SVG scales with its container via ``viewBox``).
    x_ticks : sequence of (value, label), optional
        Explicit x ticks (e.g. categories) instead of numeric ones.
    legend : {"tl", "tr", "bl", "br"}
        Legend corner (top/bottom, left/right): pick the corner the data leaves empty.
    """

    title: str
    x_label: str
    y_label: str
    x_range: tuple[float, float] = (0.0, 1.0)
    y_range: tuple[float, float] = (0.0, 1.0)
    width: int = 520
    height: int = 340
    x_ticks: Sequence[tuple[float, str]] | None = None
    legend: str = "tl"
    _body: list[str] = field(default_factory=list)
    _legend: list[tuple[str, str, str]] = field(default_factory=list)

    margin_left = 62
    margin_right = 16
    margin_top = 40
    margin_bottom = 52

    # -- coordinate mapping ---------------------------------------------------------------------
    def _sx(self, x: float) -> float:
        lo, hi = self.x_range
        w = self.width - self.margin_left - self.margin_right
        return self.margin_left + (x - lo) / ((hi - lo) or 1.0) * w

    def _sy(self, y: float) -> float:
        lo, hi = self.y_range
        h = self.height - self.margin_top - self.margin_bottom
        return self.margin_top + h - (y - lo) / ((hi - lo) or 1.0) * h

    # -- series ---------------------------------------------------------------------------------
    def line(self, xs: Sequence[float], ys: Sequence[float], *, color: str, label: str | None = None,
             dash: str | None = None, width: float = 2.0, max_points: int = 600) -> "Chart":
        """Polyline through ``(xs, ys)``; long series are thinned to ``max_points`` vertices."""
        x = np.asarray(xs, dtype=float)
        y = np.asarray(ys, dtype=float)
        keep = np.isfinite(x) & np.isfinite(y)
        x, y = x[keep], y[keep]
        if x.size == 0:
            return self
        if x.size > max_points:
            idx = np.unique(np.r_[np.linspace(0, x.size - 1, max_points).astype(int), x.size - 1])
            x, y = x[idx], y[idx]
        pts = " ".join(f"{self._sx(a):.1f},{self._sy(b):.1f}" for a, b in zip(x, y))
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        self._body.append(
            f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="{width}"'
            f' stroke-linejoin="round"{dash_attr}/>'
        )
        if label:
            self._legend.append((label, color, "line" if not dash else "dash"))
        return self

    def bars(self, xs: Sequence[float], heights: Sequence[float], *, bar_width: float, color: str,
             label: str | None = None, offset: float = 0.0, opacity: float = 0.85,
             values: Sequence[str] | None = None) -> "Chart":
        """Vertical bars centred at ``xs + offset`` with data-unit ``bar_width``."""
        base = self._sy(max(self.y_range[0], 0.0))
        for i, (x, h) in enumerate(zip(xs, heights)):
            if not math.isfinite(float(h)):
                continue
            x0 = self._sx(x + offset - bar_width / 2)
            x1 = self._sx(x + offset + bar_width / 2)
            top = self._sy(h)
            y0, y1 = min(top, base), max(top, base)
            self._body.append(
                f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{max(x1 - x0, 0.5):.1f}" height="{max(y1 - y0, 0.0):.1f}"'
                f' fill="{color}" fill-opacity="{opacity}"/>'
            )
            if values is not None:
                self._body.append(
                    f'<text x="{(x0 + x1) / 2:.1f}" y="{y0 - 4:.1f}" text-anchor="middle" class="val">'
                    f"{escape(values[i])}</text>"
                )
        if label:
            self._legend.append((label, color, "box"))
        return self

    def points(self, xs: Sequence[float], ys: Sequence[float], *, color: str, label: str | None = None,
               r: float = 3.5) -> "Chart":
        """Circles at ``(xs, ys)``."""
        for a, b in zip(xs, ys):
            if math.isfinite(float(a)) and math.isfinite(float(b)):
                self._body.append(f'<circle cx="{self._sx(a):.1f}" cy="{self._sy(b):.1f}" r="{r}" fill="{color}"/>')
        if label:
            self._legend.append((label, color, "dot"))
        return self

    def vline(self, x: float, *, color: str, label: str | None = None, y0: float | None = None,
              y1: float | None = None) -> "Chart":
        """Vertical marker at ``x`` (from ``y0`` to ``y1``, default the whole plot height)."""
        lo, hi = self.y_range
        ya = self._sy(lo if y0 is None else y0)
        yb = self._sy(hi if y1 is None else y1)
        xx = self._sx(x)
        self._body.append(f'<line x1="{xx:.1f}" y1="{ya:.1f}" x2="{xx:.1f}" y2="{yb:.1f}" stroke="{color}" stroke-width="1.5" stroke-dasharray="4 3"/>')
        if label:
            self._body.append(
                f'<text x="{xx + 5:.1f}" y="{(ya + yb) / 2:.1f}" class="note" fill="{color}">{escape(label)}</text>'
            )
        return self

    def note(self, x: float, y: float, text: str, *, color: str = "#333", anchor: str = "start") -> "Chart":
        """Text annotation at data coordinates."""
        self._body.append(
            f'<text x="{self._sx(x):.1f}" y="{self._sy(y):.1f}" class="note" fill="{color}" text-anchor="{anchor}">{escape(text)}</text>'
        )
        return self

    # -- rendering ------------------------------------------------------------------------------
    def _axes(self) -> list[str]:
        out = []
        left, right = self.margin_left, self.width - self.margin_right
        top, bottom = self.margin_top, self.height - self.margin_bottom
        for t in nice_ticks(*self.y_range):
            y = self._sy(t)
            out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="{PALETTE["grid"]}"/>')
            out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{_fmt(t)}</text>')
        xt = self.x_ticks if self.x_ticks is not None else [(t, _fmt(t)) for t in nice_ticks(*self.x_range)]
        for v, lab in xt:
            x = self._sx(v)
            if self.x_ticks is None:
                out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="{PALETTE["grid"]}"/>')
            out.append(f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle" class="tick">{escape(str(lab))}</text>')
        out.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="{PALETTE["axis"]}"/>')
        out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="{PALETTE["axis"]}"/>')
        out.append(
            f'<text x="{(left + right) / 2:.1f}" y="{self.height - 10}" text-anchor="middle" class="axis">{escape(self.x_label)}</text>'
        )
        cy = (top + bottom) / 2
        out.append(
            f'<text x="14" y="{cy:.1f}" transform="rotate(-90 14 {cy:.1f})" text-anchor="middle" class="axis">{escape(self.y_label)}</text>'
        )
        return out

    def _legend_svg(self) -> list[str]:
        out = []
        if not self._legend:
            return out
        h = 16 * len(self._legend) + 6
        w = 30 + 7 * max(len(lab) for lab, _, _ in self._legend)
        x = self.margin_left + 8 if self.legend[1] == "l" else self.width - self.margin_right - w - 3
        top = self.margin_top + 1 if self.legend[0] == "t" else self.height - self.margin_bottom - h - 4
        y = top + 11
        for label, color, style in self._legend:
            if style == "box":
                out.append(f'<rect x="{x}" y="{y - 8}" width="14" height="10" fill="{color}" fill-opacity="0.85"/>')
            elif style == "dot":
                out.append(f'<circle cx="{x + 7}" cy="{y - 3}" r="4" fill="{color}"/>')
            else:
                dash = ' stroke-dasharray="5 3"' if style == "dash" else ""
                out.append(f'<line x1="{x}" y1="{y - 3}" x2="{x + 16}" y2="{y - 3}" stroke="{color}" stroke-width="2.5"{dash}/>')
            out.append(f'<text x="{x + 22}" y="{y + 1}" class="legend">{escape(label)}</text>')
            y += 16
        out.insert(0, f'<rect x="{x - 5}" y="{top}" width="{w}" height="{h}" fill="#fff" fill-opacity="0.85" stroke="{PALETTE["grid"]}"/>')
        return out

    def svg(self) -> str:
        """The chart as one ``<svg>`` element string."""
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {self.width} {self.height}" '
            f'width="{self.width}" height="{self.height}" role="img" aria-label="{escape(self.title)}" class="chart">'
        )
        title = f'<text x="{self.margin_left}" y="22" class="title">{escape(self.title)}</text>'
        clip_id = f"c{zlib.crc32((self.title + self.y_label + ''.join(self._body)).encode()):08x}"
        clip = (
            f'<clipPath id="{clip_id}"><rect x="{self.margin_left}" y="{self.margin_top - 2}" '
            f'width="{self.width - self.margin_left - self.margin_right + 2}" '
            f'height="{self.height - self.margin_top - self.margin_bottom + 4}"/></clipPath>'
        )
        body = f'<g clip-path="url(#{clip_id})">' + "".join(self._body) + "</g>"
        return "".join([head, f"<title>{escape(self.title)}</title>", clip, title, *self._axes(), body, *self._legend_svg(), "</svg>"])


def epsilon_curve_chart(curves: dict[str, Sequence[dict]], title: str = "Test AUC vs privacy budget ε") -> str:
    """AUC against the differential-privacy budget, one line per trainer, ``ε = ∞`` (no noise) at the right.

    Parameters
    ----------
    curves : dict
        Trainer name -> points ``{"epsilon": float or "inf", "auc": float}`` (the benchmark's
        ``dp_curve`` entries). Epsilons are placed on a log-spaced categorical axis, the shared
        values of all curves in increasing order, so the cost of each halving of ε reads off directly.
    """
    def key(e: object) -> float:
        return math.inf if e in ("inf", None) or (isinstance(e, float) and math.isinf(e)) else float(e)

    eps = sorted({key(p["epsilon"]) for pts in curves.values() for p in pts})
    if not eps:
        return ""
    pos = {e: i for i, e in enumerate(eps)}
    aucs = [float(p["auc"]) for pts in curves.values() for p in pts if p.get("auc") is not None]
    lo = math.floor((min(aucs) - 0.01) * 50) / 50 if aucs else 0.5
    hi = math.ceil((max(aucs) + 0.01) * 50) / 50 if aucs else 1.0
    ticks = [(i, "∞ (no noise)" if math.isinf(e) else f"{e:g}") for e, i in pos.items()]
    c = Chart(title, "ε (δ = 1e-5)", "Test AUC", x_range=(-0.3, len(eps) - 0.7), y_range=(lo, hi), x_ticks=ticks,
              legend="br")
    colours = [PALETTE["model"], PALETTE["accent"], PALETTE["good"], PALETTE["bad"]]
    for k, (name, pts) in enumerate(curves.items()):
        xy = sorted((pos[key(p["epsilon"])], float(p["auc"])) for p in pts if p.get("auc") is not None)
        col = colours[k % len(colours)]
        c.line([x for x, _ in xy], [y for _, y in xy], color=col, label=str(name))
        c.points([x for x, _ in xy], [y for _, y in xy], color=col)
    return c.svg()
