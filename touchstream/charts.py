"""Small SVG charts for the report: horizontal bars, stacked bars, a line and a heat map.

Pure: data in, an SVG ``<figure>`` out, no JavaScript and no library. Every drawn datum
is an element of class ``mark`` (the report's check counts them after the browser laid
them out). Text is escaped; numbers are formatted for a person.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
    "#1f77b4",
    "#8c564b",
)
WIDTH = 760


def fmt(v: float) -> str:
    if abs(v) >= 1_000_000:
        return f"{v / 1_000_000:.1f}M"
    if abs(v) >= 10_000:
        return f"{v / 1000:.0f}k"
    if float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:,.1f}"


def _figure(chart_id: str, title: str, body: str, height: int, note: str = "") -> str:
    caption = escape(title) + (f' <span class="note">{escape(note)}</span>' if note else "")
    return (
        f'<figure class="chart" id="chart-{escape(chart_id)}" data-chart="{escape(chart_id)}">'
        f"<figcaption>{caption}</figcaption>"
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(title)}">'
        f"{body}</svg></figure>"
    )


def _empty(chart_id: str, title: str) -> str:
    return _figure(chart_id, title, '<text x="10" y="30" class="empty">no data yet</text>', 50)


def hbars(
    chart_id: str, title: str, items: Sequence[tuple[str, float]], unit: str = "", note: str = ""
) -> str:
    """One horizontal bar per (label, value)."""
    if not items:
        return _empty(chart_id, title)
    row, left, right = 26, 190, 90
    top = max((v for _, v in items), default=0) or 1
    span = WIDTH - left - right
    parts = []
    for i, (label, value) in enumerate(items):
        y = 10 + i * row
        w = max(span * max(value, 0) / top, 1)
        parts.append(
            f'<text x="{left - 8}" y="{y + 15}" text-anchor="end">{escape(label)}</text>'
            f'<rect class="mark" x="{left}" y="{y}" width="{w:.1f}" height="{row - 8}" '
            f'fill="{PALETTE[i % len(PALETTE)]}"><title>{escape(label)}: {fmt(value)}{unit}'
            f"</title></rect>"
            f'<text x="{left + w + 6:.1f}" y="{y + 15}">{fmt(value)}{escape(unit)}</text>'
        )
    return _figure(chart_id, title, "".join(parts), 20 + row * len(items), note)


def _x_labels(labels: Sequence[str], x0: float, step: float, y: float) -> str:
    every = max(1, len(labels) // 12)
    return "".join(
        f'<text x="{x0 + i * step + step / 2:.1f}" y="{y}" text-anchor="middle" '
        f'class="tick">{escape(lab)}</text>'
        for i, lab in enumerate(labels)
        if i % every == 0
    )


def _legend(names: Sequence[str], y: float) -> str:
    out, x = [], 60.0
    for i, name in enumerate(names):
        out.append(
            f'<rect x="{x}" y="{y}" width="10" height="10" '
            f'fill="{PALETTE[i % len(PALETTE)]}"/>'
            f'<text x="{x + 14}" y="{y + 9}" class="tick">{escape(name)}</text>'
        )
        x += 24 + 7 * len(name)
        if x > WIDTH - 120:
            x, y = 60.0, y + 16
    return "".join(out)


def stacked(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    note: str = "",
) -> str:
    """Stacked vertical bars: one bar per label, one colour per series."""
    if not labels or not series:
        return _empty(chart_id, title)
    plot_h, x0 = 220, 60
    totals = [sum(max(s[i], 0) for s in series.values()) for i in range(len(labels))]
    top = max(totals) or 1
    step = (WIDTH - x0 - 20) / len(labels)
    parts = [
        f'<line x1="{x0}" y1="{plot_h + 10}" x2="{WIDTH - 20}" y2="{plot_h + 10}" class="axis"/>',
        f'<text x="{x0 - 6}" y="18" text-anchor="end" class="tick">{fmt(top)}</text>',
    ]
    for i in range(len(labels)):
        y = plot_h + 10.0
        for k, (name, values) in enumerate(series.items()):
            v = max(values[i], 0)
            if not v:
                continue
            h = plot_h * v / top
            y -= h
            parts.append(
                f'<rect class="mark" x="{x0 + i * step + 1:.1f}" y="{y:.1f}" '
                f'width="{max(step - 2, 1):.1f}" height="{h:.1f}" '
                f'fill="{PALETTE[k % len(PALETTE)]}"><title>{escape(labels[i])} '
                f"{escape(name)}: {fmt(v)}</title></rect>"
            )
    parts.append(_x_labels(labels, x0, step, plot_h + 26))
    parts.append(_legend(list(series), plot_h + 38))
    rows = 1 + (sum(24 + 7 * len(n) for n in series) // (WIDTH - 180))
    return _figure(chart_id, title, "".join(parts), plot_h + 50 + 16 * rows, note)


def line(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    low: float,
    high: float,
    note: str = "",
) -> str:
    """A line over the labels, on a fixed scale from ``low`` to ``high``."""
    if not labels:
        return _empty(chart_id, title)
    plot_h, x0 = 200, 60
    step = (WIDTH - x0 - 20) / len(labels)

    def y(v: float) -> float:
        return 10 + plot_h * (high - v) / (high - low)

    points = [(x0 + i * step + step / 2, y(v)) for i, v in enumerate(values)]
    parts = [
        f'<line x1="{x0}" y1="{y(0):.1f}" x2="{WIDTH - 20}" y2="{y(0):.1f}" class="axis"/>',
        *(
            f'<text x="{x0 - 6}" y="{y(v) + 4:.1f}" text-anchor="end" class="tick">{fmt(v)}</text>'
            for v in (low, 0, high)
        ),
    ]
    if len(points) > 1:
        d = " ".join(
            f"{'M' if i == 0 else 'L'}{px:.1f},{py:.1f}" for i, (px, py) in enumerate(points)
        )
        parts.append(
            f'<path class="mark" d="{d}" fill="none" stroke="{PALETTE[0]}" stroke-width="2"/>'
        )
    for (px, py), lab, v in zip(points, labels, values, strict=True):
        parts.append(
            f'<circle class="mark" cx="{px:.1f}" cy="{py:.1f}" r="4" '
            f'fill="{PALETTE[0]}"><title>{escape(lab)}: {fmt(v)}</title></circle>'
        )
    parts.append(_x_labels(labels, x0, step, plot_h + 28))
    return _figure(chart_id, title, "".join(parts), plot_h + 40, note)


def heatmap(
    chart_id: str,
    title: str,
    rows: Sequence[str],
    cols: Sequence[str],
    values: Mapping[tuple[str, str], float],
    note: str = "",
) -> str:
    """A grid of cells (row, col) shaded by value in 0..100 (a percentage)."""
    if not rows or not cols:
        return _empty(chart_id, title)
    x0, y0 = 90, 24
    cell_w = min(44.0, (WIDTH - x0 - 10) / len(cols))
    cell_h = 18
    parts = [
        f'<text x="{x0 + j * cell_w + cell_w / 2:.1f}" y="16" text-anchor="middle" '
        f'class="tick">{escape(c)}</text>'
        for j, c in enumerate(cols)
    ]
    for i, r in enumerate(rows):
        y = y0 + i * cell_h
        parts.append(
            f'<text x="{x0 - 6}" y="{y + 13}" text-anchor="end" class="tick">{escape(r)}</text>'
        )
        for j, c in enumerate(cols):
            v = values.get((r, c))
            if v is None:
                continue
            shade = 0.08 + 0.92 * min(max(v, 0), 100) / 100
            parts.append(
                f'<rect class="mark" x="{x0 + j * cell_w:.1f}" y="{y}" width="{cell_w - 1:.1f}" '
                f'height="{cell_h - 1}" fill="{PALETTE[0]}" fill-opacity="{shade:.2f}">'
                f"<title>{escape(r)} +{escape(c)}: {fmt(v)}%</title></rect>"
            )
            if cell_w >= 30:
                parts.append(
                    f'<text x="{x0 + j * cell_w + cell_w / 2:.1f}" y="{y + 13}" '
                    f'text-anchor="middle" class="cell">{v:.0f}</text>'
                )
    return _figure(chart_id, title, "".join(parts), y0 + cell_h * len(rows) + 10, note)
