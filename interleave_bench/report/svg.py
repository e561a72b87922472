"""Per-category bar charts as inline SVG: the page stays one file with no chart library and
draws the same with JavaScript off. Every label is escaped; category names are untrusted."""

from __future__ import annotations

import re
from collections.abc import Mapping
from html import escape
from typing import Any

from ..types import Result

_SCALE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:-|–|to|\.\.)\s*(-?\d+(?:\.\d+)?)")


def fmt_num(x: Any, digits: int = 3) -> str:
    """A short number: at most ``digits`` decimals, trailing zeros dropped; '–' for none."""
    if x is None or isinstance(x, bool) or not isinstance(x, (int, float)):
        return "–"
    s = f"{float(x):.{digits}f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def axis_range(scale: str, values: list[float]) -> tuple[float, float]:
    """The scale's declared range ("0-10", "1 to 5") when it covers the data, else 0..max."""
    m = _SCALE.match(scale or "")
    lo = min([0.0, *values])
    hi = max([1.0, *values]) if values else 1.0
    if m:
        a, b = float(m.group(1)), float(m.group(2))
        if a < b and all(a <= v <= b for v in values):
            return a, b
    return lo, hi if hi > lo else lo + 1.0


def _entries(by_category: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, float, int, Any]]:
    out = []
    for name, e in by_category.items():
        m = e.get("mean") if isinstance(e, Mapping) else None
        if isinstance(m, (int, float)) and not isinstance(m, bool):
            ci = e.get("ci")
            ok_ci = (
                isinstance(ci, list)
                and len(ci) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in ci)
            )
            out.append((str(name), float(m), int(e.get("n") or 0), ci if ok_ci else None))
    return out


def bar_chart(
    bars: list[tuple[str, float, Any, str, str]],
    *,
    scale: str,
    title: str,
    width: int,
    label_w: int,
    value_w: int,
    bar_h: int,
    gap: int,
    max_label: int,
) -> str:
    """Horizontal bars with interval whiskers. ``bars`` are (label, value, [lo, hi] or None,
    text shown beside the bar, CSS class); every label and text is escaped."""
    if not bars:
        return ""
    values = [v for _, v, _, _, _ in bars] + [float(x) for *_, ci, _, _ in bars if ci for x in ci]
    lo, hi = axis_range(scale, values)
    top = 22
    plot_w = width - label_w - value_w
    height = top + len(bars) * (bar_h + gap) + 4

    def x(v: float) -> float:
        return label_w + max(0.0, min(1.0, (v - lo) / (hi - lo))) * plot_w

    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title, quote=True)}"><title>{escape(title)}</title>'
    ]
    for i in range(5):
        gx = x(lo + (hi - lo) * i / 4)
        parts.append(
            f'<line x1="{gx:.1f}" y1="{top - 4}" x2="{gx:.1f}" y2="{height - 2}" class="grid"/>'
            f'<text x="{gx:.1f}" y="{top - 8}" text-anchor="middle" class="tick">'
            f"{escape(fmt_num(lo + (hi - lo) * i / 4, 2))}</text>"
        )
    for i, (name, m, ci, shown, cls) in enumerate(bars):
        y = top + i * (bar_h + gap)
        short = name if len(name) <= max_label else name[: max_label - 1] + "…"
        parts.append(
            f"<g><title>{escape(name)}: {escape(shown)}</title>"
            f'<text x="{label_w - 6}" y="{y + bar_h - 5}" text-anchor="end" class="lbl">'
            f"{escape(short)}</text>"
            f'<rect x="{label_w}" y="{y}" width="{max(1.0, x(m) - x(lo)):.1f}" '
            f'height="{bar_h}" class="{escape(cls, quote=True)}"/>'
        )
        if ci:
            a, b, cy = x(float(ci[0])), x(float(ci[1])), y + bar_h / 2
            parts.append(
                f'<path d="M{a:.1f} {cy - 5:.1f}v10M{a:.1f} {cy:.1f}H{b:.1f}'
                f'M{b:.1f} {cy - 5:.1f}v10" class="ci"/>'
            )
        parts.append(
            f'<text x="{label_w + plot_w + 6}" y="{y + bar_h - 5}" class="val">'
            f"{escape(shown)}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def category_chart(result: Result, width: int = 640) -> str:
    """Horizontal bars, one per category, with the n and the bootstrap interval as a whisker."""
    bars = [
        (name, m, ci, f"{fmt_num(m)} (n={n})", "bar")
        for name, m, n, ci in _entries(result.by_category)
    ]
    return bar_chart(
        bars,
        scale=result.scale,
        title=f"{result.scorer}: mean per category",
        width=width,
        label_w=190,
        value_w=110,
        bar_h=18,
        gap=6,
        max_label=28,
    )
