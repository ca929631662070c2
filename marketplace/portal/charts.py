"""Usage charts drawn on the server as SVG: no chart library, no script in the browser.

:func:`daily_bars` stacks each day's quantity by product. The chart is an image with a title
and a description for screen readers (``role="img"``); the page shows the same numbers as a
table beside it, which is what assistive technology should read. Colours come from a palette
whose every entry has at least 3:1 contrast against the white background (WCAG's bar for
graphics), and the legend names each colour.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal

# Tableau-10-like hues darkened until each has >= 3:1 contrast on white.
PALETTE = (
    "#1f5fa0",
    "#c45a00",
    "#2f7d32",
    "#b3261e",
    "#6a4c9c",
    "#7a4b3a",
    "#b0307f",
    "#5f6368",
    "#827717",
    "#00796b",
)


def _nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 × 10^n at or above ``value`` (an axis' top)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1) if value >= 1 else 1.0
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return float(step * magnitude)
    return float(10 * magnitude)  # pragma: no cover - the loop ends at 10


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:,.2f}"


def daily_bars(
    days: Sequence[date],
    series: Mapping[str, Mapping[date, Decimal | float]],
    *,
    title: str,
    description: str,
    width: int = 760,
    height: int = 260,
) -> str:
    """An SVG of stacked bars, one per day, one colour per product (``series`` key).

    Returns the markup of one ``<svg>`` element, every text escaped.
    """
    left, right, top, bottom = 56, 12, 14, 34
    legend_rows = (len(series) + 2) // 3
    legend_h = 20 * legend_rows
    plot_w = width - left - right
    plot_h = height - top - bottom
    total_h = height + legend_h + 8
    totals = [sum(float(s.get(d, 0)) for s in series.values()) for d in days]
    ceiling = _nice_ceiling(max(totals, default=0.0))
    if all(v == int(v) for v in totals):
        ceiling = max(ceiling, 4.0)  # whole counts get whole-numbered grid lines
    slot = plot_w / max(len(days), 1)
    bar_w = max(slot * 0.7, 1.0)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {width} {total_h}" width="100%" aria-labelledby="chart-title chart-desc">',
        f'<title id="chart-title">{html.escape(title)}</title>',
        f'<desc id="chart-desc">{html.escape(description)}</desc>',
    ]
    for i in range(5):  # horizontal grid lines with their values
        value = ceiling * i / 4
        y = top + plot_h - plot_h * i / 4
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">'
            f"{_fmt(value)}</text>"
        )
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted(series))}
    for i, day in enumerate(days):
        x = left + i * slot + (slot - bar_w) / 2
        y = float(top + plot_h)
        for name in sorted(series):
            value = float(series[name].get(day, 0))
            if value <= 0:
                continue
            h = plot_h * value / ceiling
            y -= h
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{colours[name]}"><title>{html.escape(name)} · {day.isoformat()}: '
                f"{_fmt(value)}</title></rect>"
            )
        # A date label every few days, so they never overlap.
        if i % max(1, len(days) // 10) == 0 or i == len(days) - 1:
            out.append(
                f'<text x="{left + i * slot + slot / 2:.1f}" y="{height - bottom + 16}" '
                f'text-anchor="middle" class="axis">{day.strftime("%m-%d")}</text>'
            )
    out.append(
        f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" '
        'class="baseline"/>'
    )
    for i, name in enumerate(sorted(series)):
        lx = left + (i % 3) * (plot_w / 3)
        ly = height + 4 + (i // 3) * 20
        out.append(
            f'<rect x="{lx:.1f}" y="{ly}" width="12" height="12" fill="{colours[name]}"/>'
            f'<text x="{lx + 18:.1f}" y="{ly + 11}" class="legend">{html.escape(name)}</text>'
        )
    out.append("</svg>")
    return "".join(out)
