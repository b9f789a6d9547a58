"""Bar charts as inline SVG text (pure; no script, no external reference).

``bar_chart`` draws one bar group per day: grouped bars (one per series) or one
stacked bar; a legend, y-axis grid lines with values, and day labels.  All text is
XML-escaped.
"""

from __future__ import annotations

from html import escape

__all__ = ["PALETTE", "bar_chart", "nice_max"]

PALETTE = ("#2f6db5", "#3a9d5d", "#e0a526", "#c8453b", "#7d55b8", "#2aa3a8", "#8a6d3b", "#d96fa8",
           "#6c7a89", "#4f4f4f")


def nice_max(value: float) -> int:
    """The smallest whole 1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 x 10^n that is >= value (at least 1)."""
    if value <= 1:
        return 1
    base = 1
    while True:
        for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8):
            top = m * base
            if top >= value and top == int(top):
                return int(top)
        base *= 10


def bar_chart(title: str, days: list[str], series: dict[str, list[int]], *, stacked: bool = False,
              width: int = 720, height: int = 240) -> str:
    """An SVG chart of ``series`` (name -> one value per day in ``days``)."""
    left, right, top, bottom = 48, 12, 44, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    names = list(series)
    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'),
           f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text x="{left}" y="16" class="t">{escape(title)}</text>']
    x = left
    for i, name in enumerate(names):   # the legend
        colour = PALETTE[i % len(PALETTE)]
        out.append(f'<rect x="{x}" y="24" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{x + 14}" y="33" class="l">{escape(name)}</text>')
        x += 24 + 7 * len(name)
    if not days or not names:
        out.append(f'<text x="{left}" y="{top + plot_h // 2}" class="l">no data</text></svg>')
        return "".join(out)
    totals = [sum(series[n][d] for n in names) if stacked else max(series[n][d] for n in names)
              for d in range(len(days))]
    top_value = nice_max(max(totals))
    parts = next(n for n in (5, 4, 3, 2, 1) if top_value % n == 0)
    for k in range(parts + 1):   # grid lines and their values
        value = top_value * k / parts
        y = top + plot_h - plot_h * k / parts
        label = f"{value:g}"
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#dddddd"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="a">{label}</text>')
    slot = plot_w / len(days)
    bar_area = min(slot * 0.8, 48.0 if stacked else 24.0 * len(names))
    every = max(1, round(len(days) / 10))
    for d, day in enumerate(days):
        x0 = left + slot * d + (slot - bar_area) / 2
        if stacked:
            y = top + plot_h
            for i, name in enumerate(names):
                h = plot_h * series[name][d] / top_value
                if h > 0:
                    y -= h
                    out.append(f'<rect x="{x0:.1f}" y="{y:.1f}" width="{bar_area:.1f}" height="{h:.1f}" '
                               f'fill="{PALETTE[i % len(PALETTE)]}"><title>{escape(day)} {escape(name)}: '
                               f'{series[name][d]}</title></rect>')
        else:
            w = bar_area / len(names)
            for i, name in enumerate(names):
                h = plot_h * series[name][d] / top_value
                if h > 0:
                    out.append(f'<rect x="{x0 + w * i:.1f}" y="{top + plot_h - h:.1f}" width="{w:.1f}" '
                               f'height="{h:.1f}" fill="{PALETTE[i % len(PALETTE)]}"><title>{escape(day)} '
                               f'{escape(name)}: {series[name][d]}</title></rect>')
        if d % every == 0:
            out.append(f'<text x="{left + slot * d + slot / 2:.1f}" y="{top + plot_h + 16}" '
                       f'text-anchor="middle" class="a">{escape(day[5:])}</text>')
    out.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
               'stroke="#888888"/></svg>')
    return "".join(out)
