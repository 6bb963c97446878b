"""Charts drawn with Pillow alone (line, bar, scatter): axes, ticks, labels and a legend.

No matplotlib: the core installs with torch, numpy and Pillow only. Everything is drawn
at twice the size and scaled down, which smooths lines and text without an extra library.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

SS = 2  # supersampling factor
WIDTH, HEIGHT = 640, 400  # output size of one chart
# the "tab10" palette: ten colours that stay distinct for most readers
PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]
GRID, AXIS, TEXT = (225, 225, 225), (60, 60, 60), (30, 30, 30)


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at `size` pixels (a fixed bitmap font without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def nice_ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> list[float]:
    """About `count` round tick values (steps of 1, 2, 2.5 or 5 x 10^k) for [lo, hi].

    The first tick is at or below lo (the axis starts there), the last one within a step
    below hi.

    `integer` keeps the steps whole (epochs, steps), never 2.5.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        lo, hi = lo - 0.5 - abs(lo) * 0.05, hi + 0.5 + abs(hi) * 0.05
    raw = (hi - lo) / max(1, count)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(
        m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw and not (integer and (m * mag) % 1)
    )
    if integer:
        step = max(1.0, step)
    first = math.floor(lo / step + 1e-9) * step
    ticks: list[float] = []
    v = first
    while v <= hi + step * 1e-6 or len(ticks) < 2:
        ticks.append(round(v, 12))
        v += step
    return ticks


def fmt(value: float, ticks: Sequence[float]) -> str:
    """A tick label with as many decimals as the tick step needs."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    if abs(value) >= 1e5 or (value != 0 and abs(value) < 1e-3):
        return f"{value:.2g}"
    decimals = max(0, min(4, -math.floor(math.log10(step) + 1e-9))) if step > 0 else 0
    if step > 0 and decimals == 0 and abs(step - round(step)) > 1e-9:
        decimals = 1
    return f"{value:.{decimals}f}"


class Axes:
    """A plotting area with data limits: maps data to pixels and draws frame, ticks, text."""

    def __init__(
        self,
        title: str,
        xlabel: str,
        ylabel: str,
        xlim: tuple[float, float],
        ylim: tuple[float, float],
        size: tuple[int, int] = (WIDTH, HEIGHT),
        xticks: list[float] | None = None,
        right_pad: int = 16,
    ) -> None:
        self.image = Image.new("RGB", (size[0] * SS, size[1] * SS), "white")
        self.draw = ImageDraw.Draw(self.image, "RGBA")
        self.xticks = xticks if xticks is not None else nice_ticks(*xlim)
        self.yticks = nice_ticks(*ylim)
        xt = self.xticks or [xlim[0]]
        self.x0, self.x1 = min(xlim[0], xt[0]), max(xlim[1], xt[-1])
        self.y0, self.y1 = min(ylim[0], self.yticks[0]), max(ylim[1], self.yticks[-1])
        if self.x1 <= self.x0:
            self.x0, self.x1 = self.x0 - 1, self.x1 + 1
        if self.y1 <= self.y0:
            self.y0, self.y1 = self.y0 - 1, self.y1 + 1
        label_w = max(self.text_width(fmt(t, self.yticks), 13) for t in self.yticks)
        self.left = (label_w + 34) * SS
        self.right = (size[0] - right_pad) * SS
        self.top = 42 * SS
        self.bottom = (size[1] - 48) * SS
        self._frame(title, xlabel, ylabel)

    # -- coordinates ----------------------------------------------------------------------
    def px(self, x: float) -> float:
        return self.left + (x - self.x0) / (self.x1 - self.x0) * (self.right - self.left)

    def py(self, y: float) -> float:
        return self.bottom - (y - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top)

    # -- text -----------------------------------------------------------------------------
    def text_width(self, text: str, size: int) -> int:
        return int(self.draw.textlength(text, font=font(size * SS)) / SS)

    def text(
        self,
        xy: tuple[float, float],
        text: str,
        size: int = 13,
        anchor: str = "la",
        fill: tuple[int, int, int] = TEXT,
    ) -> None:
        self.draw.text(xy, text, fill=fill, font=font(size * SS), anchor=anchor)

    def _frame(self, title: str, xlabel: str, ylabel: str) -> None:
        d = self.draw
        for t in self.yticks:
            y = self.py(t)
            d.line([(self.left, y), (self.right, y)], fill=GRID, width=SS)
            d.line([(self.left - 5 * SS, y), (self.left, y)], fill=AXIS, width=SS)
            self.text((self.left - 8 * SS, y), fmt(t, self.yticks), anchor="rm")
        for t in self.xticks:
            x = self.px(t)
            d.line([(x, self.bottom), (x, self.bottom + 5 * SS)], fill=AXIS, width=SS)
            self.text((x, self.bottom + 8 * SS), fmt(t, self.xticks), anchor="ma")
        d.rectangle([self.left, self.top, self.right, self.bottom], outline=AXIS, width=SS)
        self.text(((self.left + self.right) / 2, 12 * SS), title, size=16, anchor="ma")
        self.text(((self.left + self.right) / 2, self.bottom + 28 * SS), xlabel, anchor="ma")
        # the y label, rotated: drawn on its own strip, then pasted
        f = font(13 * SS)
        w = int(d.textlength(ylabel, font=f)) + 4 * SS
        strip = Image.new("RGBA", (w, 18 * SS), (255, 255, 255, 0))
        ImageDraw.Draw(strip).text((2 * SS, 0), ylabel, fill=TEXT, font=f)
        strip = strip.rotate(90, expand=True)
        cy = (self.top + self.bottom) / 2
        self.image.paste(strip, (4 * SS, int(cy - strip.height / 2)), strip)

    def legend(
        self, entries: Sequence[tuple[str, tuple[int, int, int]]], where: str = "upper right"
    ) -> None:
        """A boxed legend inside the plot, one coloured swatch per entry."""
        if not entries:
            return
        line_h, sw = 18 * SS, 14 * SS
        width = max(self.text_width(name, 12) for name, _ in entries) * SS + sw + 18 * SS
        height = line_h * len(entries) + 8 * SS
        if where == "outside":  # beside the plot, in the space right_pad left for it
            x, y = self.right + 10 * SS, self.top
        else:
            x = self.right - width - 8 * SS if "right" in where else self.left + 8 * SS
            y = self.top + 8 * SS if "upper" in where else self.bottom - height - 8 * SS
        self.draw.rectangle(
            [x, y, x + width, y + height],
            fill=(255, 255, 255, 225),
            outline=(180, 180, 180),
            width=SS,
        )
        for i, (name, colour) in enumerate(entries):
            cy = y + 4 * SS + i * line_h + line_h / 2
            self.draw.rectangle(
                [x + 6 * SS, cy - 5 * SS, x + 6 * SS + sw, cy + 5 * SS], fill=colour
            )
            self.text((x + 12 * SS + sw, cy), name, size=12, anchor="lm")

    def emptiest_corner(self, points: Sequence[tuple[float, float]]) -> str:
        """The legend position ('upper right', ...) that covers the fewest drawn points."""
        midx, midy = (self.left + self.right) / 2, (self.top + self.bottom) / 2
        counts = {}
        for where in ("upper right", "upper left", "lower right", "lower left"):
            right, upper = "right" in where, "upper" in where
            counts[where] = sum(1 for x, y in points if (x > midx) == right and (y < midy) == upper)
        return min(counts, key=lambda k: counts[k])  # first of the ties: upper right

    def finish(self) -> Image.Image:
        return self.image.resize(
            (self.image.width // SS, self.image.height // SS), Image.Resampling.LANCZOS
        )


def _limits(values: Sequence[float], pad: float = 0.05) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    lo, hi = min(finite), max(finite)
    span = hi - lo or max(abs(hi), 1.0)
    return lo - pad * span, hi + pad * span


def line_chart(
    series: dict[str, list[tuple[float, float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    size: tuple[int, int] = (WIDTH, HEIGHT),
) -> Image.Image:
    """One line per named series of (x, y) points, with markers, ticks and a legend.

    Non-finite points are left out (a gap rather than a spike to infinity).
    """
    clean = {
        name: [
            (float(x), float(y))
            for x, y in points
            if math.isfinite(float(x)) and math.isfinite(float(y))
        ]
        for name, points in series.items()
    }
    xs = [x for pts in clean.values() for x, _ in pts]
    ys = [y for pts in clean.values() for _, y in pts]
    xlim = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if xlim[0] == xlim[1]:  # one epoch so far: centre it rather than pin it to an edge
        xlim = (xlim[0] - 1, xlim[1] + 1)
    integer = bool(xs) and all(float(x).is_integer() for x in xs)
    ax = Axes(
        title,
        xlabel,
        ylabel,
        xlim,
        _limits(ys, 0.08),
        size,
        xticks=nice_ticks(*xlim, integer=integer) if xs else None,
    )
    entries: list[tuple[str, tuple[int, int, int]]] = []
    occupied: list[tuple[float, float]] = []
    for i, (name, pts) in enumerate(clean.items()):
        colour = PALETTE[i % len(PALETTE)]
        entries.append((name, colour))
        occupied += [(ax.px(x), ax.py(y)) for x, y in pts]
        coords = [(ax.px(x), ax.py(y)) for x, y in sorted(pts)]
        if len(coords) > 1:
            ax.draw.line(coords, fill=colour, width=3 * SS, joint="curve")
        if len(coords) <= 60:  # markers show where the measurements are
            r = 3.5 * SS
            for cx, cy in coords:
                ax.draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    ax.legend(entries, where=ax.emptiest_corner(occupied))
    return ax.finish()


def bar_chart(
    values: Sequence[float],
    title: str,
    xlabel: str,
    ylabel: str,
    labels: Sequence[str] | None = None,
    highlight: Sequence[bool] | None = None,
    legend: Sequence[tuple[str, tuple[int, int, int]]] = (),
    size: tuple[int, int] = (WIDTH, HEIGHT),
) -> Image.Image:
    """Vertical bars from zero; `highlight` picks bars drawn in the first palette colour."""
    n = len(values)
    labels = list(labels) if labels is not None else [str(i) for i in range(n)]
    top = max([v for v in values if math.isfinite(v)] + [0.0])
    every = max(1, math.ceil(n / 20))  # at most about 20 tick labels
    ax = Axes(
        title, xlabel, ylabel, (-0.5, n - 0.5), (0.0, top * 1.08 or 1.0), size, xticks=[]
    )  # bars label their own ticks
    width = (ax.right - ax.left) / max(n, 1)
    for i, v in enumerate(values):
        on = highlight is None or highlight[i]
        colour = PALETTE[0] if on else (170, 170, 170)
        cx = ax.px(i)
        if math.isfinite(v) and v > 0:
            ax.draw.rectangle(
                [cx - width * 0.4, ax.py(v), cx + width * 0.4, ax.bottom], fill=colour
            )
        if i % every == 0:
            ax.draw.line([(cx, ax.bottom), (cx, ax.bottom + 5 * SS)], fill=AXIS, width=SS)
            ax.text((cx, ax.bottom + 8 * SS), labels[i], size=12, anchor="ma")
    ax.legend(list(legend))
    return ax.finish()


def scatter_plot(
    points: Sequence[tuple[float, float]],
    groups: Sequence[int] | None,
    names: Sequence[str],
    title: str,
    xlabel: str,
    ylabel: str,
    size: tuple[int, int] = (WIDTH, 480),
) -> Image.Image:
    """Points coloured by group (an index into `names`); translucent so density shows.

    The legend sits outside the plot so that it hides no point.
    """
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    labelled = groups is not None and bool(names)
    pad = 16
    if labelled:
        pad = 40 + max(len(str(n)) for n in names) * 8
    ax = Axes(title, xlabel, ylabel, _limits(xs), _limits(ys), size, right_pad=min(pad, 220))
    r = 2.5 * SS
    for i, (x, y) in enumerate(points):
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        g = groups[i] if groups is not None else 0
        colour = PALETTE[g % len(PALETTE)]
        cx, cy = ax.px(x), ax.py(y)
        ax.draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(*colour, 150))
    if labelled:
        used = sorted(set(int(g) for g in groups))  # type: ignore[union-attr]
        ax.legend(
            [(names[g] if g < len(names) else str(g), PALETTE[g % len(PALETTE)]) for g in used],
            where="outside",
        )
    return ax.finish()


def side_by_side(panels: Sequence[Image.Image]) -> Image.Image:
    """Panels of equal height pasted left to right on white (one figure of several charts)."""
    out = Image.new("RGB", (sum(p.width for p in panels), panels[0].height), "white")
    left = 0
    for p in panels:
        out.paste(p, (left, 0))
        left += p.width
    return out
