"""Spectra and waveforms as line plots: SVG written here, PNG drawn with Pillow (no HTTP here).

One layout serves both: the title (the attribute's or PV's name) on top, a y axis on the left
labelled ``value [units]`` (``value`` without units), an x axis labelled ``index`` (element
0 to N-1), "nice" ticks (1, 2 or 5 times a power of ten) with their labels, and the values as
one line. Booleans are plotted as 0 and 1. NaN and infinities are gaps in the line; a point
with no finite neighbour is drawn as a dot. The y range is the finite values' minimum..maximum
widened to whole ticks (a flat line gets +-1, or +-10 % of its value when that is larger).
More values than twice the plot's width in pixels are reduced to the minimum and maximum of
each pixel column (the envelope the full line would draw).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FORMATS = ("svg", "png")
DEFAULT_WIDTH, DEFAULT_HEIGHT = 640, 360
MIN_WIDTH, MAX_WIDTH = 160, 4000
MIN_HEIGHT, MAX_HEIGHT = 120, 3000
_LEFT, _RIGHT, _TOP, _BOTTOM = 72, 24, 36, 48
_LINE = "#1f77b4"
_AXIS = "#000000"
_GRID = "#dddddd"


class NotPlottable(ValueError):
    """The value is not a one-dimensional array of numbers or booleans."""


@dataclass(frozen=True)
class Tick:
    position: float  # pixels
    label: str


@dataclass(frozen=True)
class Layout:
    width: int
    height: int
    title: str
    x_label: str
    y_label: str
    left: float
    right: float
    top: float
    bottom: float
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    segments: list[list[tuple[float, float]]]  # pixel coordinates; a gap between segments


def as_numbers(value: Any) -> np.ndarray:
    """The values to plot as float64, or ``NotPlottable``."""
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, (list, tuple, np.ndarray)):
        raise NotPlottable("only a spectrum (an array) can be plotted, not a "
                           f"{'image' if isinstance(value, dict) else 'scalar'}")
    try:
        array = np.asarray(value)
    except ValueError:
        raise NotPlottable("the value is not a one-dimensional array") from None
    if array.ndim != 1:
        raise NotPlottable("the value is not a one-dimensional array")
    if array.size == 0:
        return np.zeros(0)
    if array.dtype.kind not in "biuf":
        raise NotPlottable(f"an array of {array.dtype.name} values is not numeric")
    return array.astype(np.float64)


def nice_step(span: float, count: int) -> float:
    raw = span / max(count, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 5.0, 10.0):
        if raw <= factor * magnitude * (1 + 1e-9):
            return factor * magnitude
    return 10.0 * magnitude


def tick_label(value: float, step: float) -> str:
    if abs(value) < step * 1e-9:
        value = 0.0
    if step >= 1e6 or step < 1e-4 or abs(value) >= 1e9:
        return f"{value:.4g}"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{value:.{decimals}f}"


def _ticks(low: float, high: float, count: int,
           least: float = 0.0) -> tuple[float, float, float]:
    """Axis range widened to whole steps (at least ``least``), and the step."""
    step = max(nice_step(high - low, count), least)
    return math.floor(low / step + 1e-9) * step, math.ceil(high / step - 1e-9) * step, step


def _reduce(values: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, values) to draw: all of them, or per column its minimum and maximum."""
    n = values.size
    if n <= 2 * columns:
        return np.arange(n, dtype=np.float64), values
    clean = np.where(np.isfinite(values), values, np.nan)
    edges = np.linspace(0, n, columns + 1).astype(np.int64)[:-1]
    with np.errstate(invalid="ignore"):
        lows = np.fmin.reduceat(clean, edges)
        highs = np.fmax.reduceat(clean, edges)
    ends = np.append(edges[1:], n) - 1
    xs = np.empty(2 * columns)
    ys = np.empty(2 * columns)
    xs[0::2], xs[1::2] = edges, ends
    ys[0::2], ys[1::2] = lows, highs
    return xs, ys


def layout(values: Any, title: str, units: str = "", width: int = DEFAULT_WIDTH,
           height: int = DEFAULT_HEIGHT) -> Layout:
    numbers = as_numbers(values)
    left, right = float(_LEFT), float(width - _RIGHT)
    top, bottom = float(_TOP), float(height - _BOTTOM)
    n = numbers.size
    x_low, x_high, x_step = _ticks(0.0, float(max(n - 1, 1)), max(2, int((right - left) // 80)),
                                   least=1.0)
    finite = numbers[np.isfinite(numbers)]
    if finite.size:
        y_min, y_max = float(finite.min()), float(finite.max())
    else:
        y_min, y_max = 0.0, 1.0
    if y_max - y_min <= max(abs(y_min), abs(y_max)) * 1e-12:
        pad = max(1.0, abs(y_min) * 0.1)
        y_min, y_max = y_min - pad, y_max + pad
    y_low, y_high, y_step = _ticks(y_min, y_max, max(2, int((bottom - top) // 50)))

    def px(x: float) -> float:
        return left + (x - x_low) / (x_high - x_low) * (right - left)

    def py(y: float) -> float:
        return bottom - (y - y_low) / (y_high - y_low) * (bottom - top)

    x_ticks = [Tick(px(v), tick_label(v, x_step)) for v in _range(x_low, x_high, x_step)]
    y_ticks = [Tick(py(v), tick_label(v, y_step)) for v in _range(y_low, y_high, y_step)]
    xs, ys = _reduce(numbers, int(right - left))
    segments: list[list[tuple[float, float]]] = []
    current: list[tuple[float, float]] = []
    for x, y in zip(xs.tolist(), ys.tolist(), strict=True):
        if math.isfinite(y):
            current.append((round(px(x), 2), round(py(y), 2)))
        elif current:
            segments.append(current)
            current = []
    if current:
        segments.append(current)
    y_label = f"value [{units}]" if units else "value"
    return Layout(width, height, title, "index", y_label, left, right, top, bottom,
                  x_ticks, y_ticks, segments)


def _range(low: float, high: float, step: float) -> list[float]:
    count = int(round((high - low) / step))
    return [low + i * step for i in range(count + 1)]


# -- SVG -------------------------------------------------------------------------------------------


def svg(values: Any, title: str, units: str = "", width: int = DEFAULT_WIDTH,
        height: int = DEFAULT_HEIGHT) -> bytes:
    """The plot as an SVG document (UTF-8)."""
    lay = layout(values, title, units, width, height)
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<title>{escape(title)}</title>',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text class="title" x="{width / 2}" y="{_TOP - 14}" text-anchor="middle" '
        f'font-size="14">{escape(title)}</text>',
        '<g class="grid" stroke="' + _GRID + '" stroke-width="1">',
    ]
    out += [f'<line x1="{lay.left}" y1="{t.position:.2f}" x2="{lay.right}" '
            f'y2="{t.position:.2f}"/>' for t in lay.y_ticks]
    out.append("</g>")
    out.append(f'<g class="axes" stroke="{_AXIS}" stroke-width="1">'
               f'<line class="x-axis" x1="{lay.left}" y1="{lay.bottom}" x2="{lay.right}" '
               f'y2="{lay.bottom}"/>'
               f'<line class="y-axis" x1="{lay.left}" y1="{lay.top}" x2="{lay.left}" '
               f'y2="{lay.bottom}"/></g>')
    out.append('<g class="x-ticks" text-anchor="middle">')
    for t in lay.x_ticks:
        out.append(f'<line x1="{t.position:.2f}" y1="{lay.bottom}" x2="{t.position:.2f}" '
                   f'y2="{lay.bottom + 5}" stroke="{_AXIS}"/>'
                   f'<text x="{t.position:.2f}" y="{lay.bottom + 18}">{escape(t.label)}</text>')
    out.append("</g>")
    out.append('<g class="y-ticks" text-anchor="end">')
    for t in lay.y_ticks:
        out.append(f'<line x1="{lay.left - 5}" y1="{t.position:.2f}" x2="{lay.left}" '
                   f'y2="{t.position:.2f}" stroke="{_AXIS}"/>'
                   f'<text x="{lay.left - 8}" y="{t.position + 4:.2f}">{escape(t.label)}</text>')
    out.append("</g>")
    middle_x, middle_y = (lay.left + lay.right) / 2, (lay.top + lay.bottom) / 2
    out.append(f'<text class="x-label" x="{middle_x}" y="{height - 10}" '
               f'text-anchor="middle">{escape(lay.x_label)}</text>')
    out.append(f'<text class="y-label" x="14" y="{middle_y}" text-anchor="middle" '
               f'transform="rotate(-90 14 {middle_y})">{escape(lay.y_label)}</text>')
    out.append(f'<g class="trace" fill="none" stroke="{_LINE}" stroke-width="1.5">')
    for segment in lay.segments:
        if len(segment) == 1:
            x, y = segment[0]
            out.append(f'<circle cx="{x}" cy="{y}" r="2" fill="{_LINE}"/>')
        else:
            points = " ".join(f"{x},{y}" for x, y in segment)
            out.append(f"<polyline points={quoteattr(points)}/>")
    out.append("</g></svg>")
    return "\n".join(out).encode("utf-8")


# -- PNG -------------------------------------------------------------------------------------------


def png(values: Any, title: str, units: str = "", width: int = DEFAULT_WIDTH,
        height: int = DEFAULT_HEIGHT) -> bytes:
    """The same plot drawn with Pillow (the y label written across, above the y axis)."""
    lay = layout(values, title, units, width, height)
    picture = Image.new("RGB", (width, height), "#ffffff")
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    for t in lay.y_ticks:
        draw.line([(lay.left, t.position), (lay.right, t.position)], fill=_GRID)
    draw.line([(lay.left, lay.bottom), (lay.right, lay.bottom)], fill=_AXIS)
    draw.line([(lay.left, lay.top), (lay.left, lay.bottom)], fill=_AXIS)
    for t in lay.x_ticks:
        draw.line([(t.position, lay.bottom), (t.position, lay.bottom + 5)], fill=_AXIS)
        draw.text((t.position, lay.bottom + 8), t.label, fill=_AXIS, font=font, anchor="mt")
    for t in lay.y_ticks:
        draw.line([(lay.left - 5, t.position), (lay.left, t.position)], fill=_AXIS)
        draw.text((lay.left - 8, t.position), t.label, fill=_AXIS, font=font, anchor="rm")
    draw.text((width / 2, 8), lay.title, fill=_AXIS, font=font, anchor="mt")
    draw.text((8, lay.top - 16), lay.y_label, fill=_AXIS, font=font, anchor="lt")
    draw.text(((lay.left + lay.right) / 2, height - 8), lay.x_label, fill=_AXIS, font=font,
              anchor="mb")
    for segment in lay.segments:
        if len(segment) == 1:
            x, y = segment[0]
            draw.ellipse([(x - 2, y - 2), (x + 2, y + 2)], fill=_LINE)
        else:
            draw.line(segment, fill=_LINE, width=2)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
