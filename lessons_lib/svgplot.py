"""A tiny SVG line chart, cheap enough to redraw while training (the live panel's curves).

matplotlib draws the lessons' static figures; this draws the panel's, as an SVG string that an
``ipywidgets.HTML`` shows and replaces in place (no ``clear_output``, no flicker).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


@dataclass
class Series:
    """One line: ``x``/``y`` values, a legend ``label``, a colour and an optional dash pattern."""

    x: Sequence[float]
    y: Sequence[float]
    label: str
    color: str = PALETTE[0]
    dash: str | None = None  # e.g. "4 3" for a dashed line


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.3g}" if v != int(v) or abs(v) >= 1e4 else str(int(v))


def line_chart(
    series: Sequence[Series],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    width: int = 460,
    height: int = 240,
    ylim: tuple[float, float] | None = None,
) -> str:
    """Return an ``<svg>`` string with the ``series`` drawn as polylines, axes, ticks and a legend."""
    ml, mr, mt, mb = 52, 96, 24, 38  # the legend sits in the right margin
    pw, ph = width - ml - mr, height - mt - mb
    finite = [(x, y) for s in series for x, y in zip(s.x, s.y) if math.isfinite(y)]
    if finite:
        xs, ys = zip(*finite)
        x0, x1 = min(xs), max(max(xs), min(xs) + 1)
        y0, y1 = ylim if ylim else (min(ys), max(ys))
    else:
        x0, x1, y0, y1 = 0.0, 1.0, *(ylim or (0.0, 1.0))
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = 0.04 * (y1 - y0) if not ylim else 0.0
    y0, y1 = y0 - pad, y1 + pad

    def px(x: float) -> float:
        return ml + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return mt + (1 - (min(max(y, y0), y1) - y0) / (y1 - y0)) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="white" stroke="#888"/>']
    for t in _nice_ticks(y0, y1):
        y = py(t)
        out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                   f'<text x="{ml - 4}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    for t in _nice_ticks(x0, x1):
        x = px(t)
        out.append(f'<text x="{x:.1f}" y="{mt + ph + 14}" text-anchor="middle">{_fmt(t)}</text>')
    out.append(f'<text x="{ml + pw / 2}" y="{height - 6}" text-anchor="middle">{html.escape(xlabel)}</text>')
    out.append(f'<text x="12" y="{mt + ph / 2}" text-anchor="middle" transform="rotate(-90 12 {mt + ph / 2})">'
               f'{html.escape(ylabel)}</text>')
    out.append(f'<text x="{ml}" y="15" font-weight="bold">{html.escape(title)}</text>')
    for i, s in enumerate(series):
        pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(s.x, s.y) if math.isfinite(y))
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        if pts:
            out.append(f'<polyline class="series" data-label="{html.escape(s.label)}" points="{pts}" fill="none" '
                       f'stroke="{s.color}" stroke-width="1.8"{dash}/>')
        ly = mt + 8 + 14 * i
        lx = ml + pw + 6
        out.append(f'<line x1="{lx}" x2="{lx + 16}" y1="{ly - 4}" y2="{ly - 4}" stroke="{s.color}" '
                   f'stroke-width="2"{dash}/><text x="{lx + 20}" y="{ly}">{html.escape(s.label[:12])}</text>')
    out.append("</svg>")
    return "".join(out)
