"""Charts on matplotlib: lines (log axes where a figure has them), bars and scatters.

Each function returns a `matplotlib.figure.Figure` drawn on the Agg canvas: no pyplot,
no global state, no display, safe in any thread. `png_bytes` renders one to PNG;
callers write it atomically through io.fileio. matplotlib is imported when a chart is
first drawn, so commands that draw nothing do not pay for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100
WIDTH, HEIGHT = 640, 400  # pixels of one chart
# matplotlib's "tab10": ten colours that stay distinct for most readers
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
GREY = (170, 170, 170)
Series = Mapping[str, Sequence[tuple[float, float]]]


def colour(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    """An RGB tuple of 0-255 as matplotlib's 0-1 floats."""
    return (rgb[0] / 255, rgb[1] / 255, rgb[2] / 255)


def new_figure(panels: int = 1, size: tuple[int, int] = (WIDTH, HEIGHT)) -> Figure:
    """An empty figure of `panels` axes side by side, each `size` pixels, on Agg."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panels * size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    fig.subplots(1, panels, squeeze=False)
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure as a PNG at its own size."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()


def _finite(
    points: Sequence[tuple[float, float]], logx: bool, logy: bool
) -> list[tuple[float, float]]:
    """Points that can be drawn: finite, and positive on a log axis."""
    return [
        (float(x), float(y))
        for x, y in points
        if math.isfinite(x) and math.isfinite(y) and (not logx or x > 0) and (not logy or y > 0)
    ]


def draw_lines(
    ax: Axes,
    series: Series,
    title: str,
    xlabel: str,
    ylabel: str,
    *,
    logx: bool = False,
    logy: bool = False,
    dashed: Sequence[str] = (),
    colours: dict[str, tuple[int, int, int]] | None = None,
) -> None:
    """One line per series (markers where there are few points) on `ax`; non-finite
    points are left out. Series named in `dashed` are dashed."""
    from matplotlib.ticker import MaxNLocator

    xs: list[float] = []
    for i, (name, points) in enumerate(series.items()):
        pts = sorted(_finite(points, logx, logy))
        if not pts:
            continue
        xs += [x for x, _ in pts]
        rgb = (colours or {}).get(name, PALETTE[i % len(PALETTE)])
        ax.plot(
            [x for x, _ in pts],
            [y for _, y in pts],
            color=colour(rgb),
            linewidth=2,
            linestyle="--" if name in dashed else "-",
            marker="o" if len(pts) <= 60 else None,
            markersize=4,
            label=name,
        )
    if logx:
        ax.set_xscale("log")
    elif xs and all(x.is_integer() for x in xs):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, steps
    if logy:
        ax.set_yscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, color="0.9")
    if series:
        ax.legend(loc="best", frameon=False)


def line_chart(
    series: Series,
    title: str,
    xlabel: str,
    ylabel: str,
    size: tuple[int, int] = (WIDTH, HEIGHT),
    *,
    logx: bool = False,
    logy: bool = False,
) -> Figure:
    """One panel of lines: {name: [(x, y), ...]}."""
    fig = new_figure(1, size)
    draw_lines(fig.axes[0], series, title, xlabel, ylabel, logx=logx, logy=logy)
    return fig


def bar_chart(
    values: Sequence[float],
    title: str,
    xlabel: str,
    ylabel: str,
    labels: Sequence[str] | None = None,
    highlight: Sequence[bool] | None = None,
    size: tuple[int, int] = (WIDTH, HEIGHT),
) -> Figure:
    """Vertical bars from zero; bars where `highlight` is False are grey."""
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(1, size)
    ax = fig.axes[0]
    n = len(values)
    heights = [v if math.isfinite(v) else 0.0 for v in values]
    colours = [colour(PALETTE[0] if highlight is None or highlight[i] else GREY) for i in range(n)]
    ax.bar(range(n), heights, color=colours, width=0.8)
    if labels is not None:
        ax.set_xticks(range(n), list(labels))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=20))
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel, xlim=(-0.6, n - 0.4))
    ax.grid(True, axis="y", color="0.9")
    return fig


def scatter_plot(
    points: Sequence[tuple[float, float]],
    groups: Sequence[int] | None,
    names: Sequence[str],
    title: str,
    xlabel: str,
    ylabel: str,
    size: tuple[int, int] = (WIDTH, 480),
) -> Figure:
    """Points coloured by group (an index into `names`), translucent so density shows; the
    legend sits outside the axes so that it hides no point."""
    fig = new_figure(1, size)
    ax = fig.axes[0]
    keep = [i for i, (x, y) in enumerate(points) if math.isfinite(x) and math.isfinite(y)]
    group_of = [int(groups[i]) if groups is not None else 0 for i in keep]
    for g in sorted(set(group_of)):
        mine = [points[i] for i, gi in zip(keep, group_of, strict=True) if gi == g]
        label = (names[g] if g < len(names) else str(g)) if groups is not None else None
        ax.scatter(
            [p[0] for p in mine],
            [p[1] for p in mine],
            s=10,
            alpha=0.6,
            color=colour(PALETTE[g % len(PALETTE)]),
            label=label,
            linewidths=0,
        )
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, color="0.9")
    if groups is not None and names:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, markerscale=2)
    return fig
