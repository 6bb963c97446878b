"""Write a small labelled image folder for the folder demo: circles, squares and triangles.

    python scripts/make_shapes.py OUT_DIR [--n 3000] [--size 64] [--seed 0] [--factors]

Images go to OUT_DIR/<shape>/NNNNN.png, so `vaekit train --data OUT_DIR` labels them by
subfolder. Colours, position, size and rotation are random but fixed by the seed.

With `--factors`, a dSprites-like set with known generative factors instead: each image is
drawn from five factors sampled uniformly (seeded) from fixed grids, and nothing else, on
a black background: shape (square, ellipse, heart, triangle), scale (6 steps), x and y
(16 steps each) and colour (5 hues). OUT_DIR/factors.csv records each image's factors as
grid indices (dSprites' `latents_classes`), one row per image keyed by its path relative
to OUT_DIR; the grids' values are FACTOR_GRIDS below. `vaekit.evaluation.disentanglement`
reads it to score a model's MIG and DCI.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")

# --factors: each factor's grid of values (a factor's recorded value is its index here)
FACTOR_SHAPES = ("square", "ellipse", "heart", "triangle")
FACTOR_GRIDS: dict[str, tuple] = {
    "shape": FACTOR_SHAPES,
    "scale": tuple(float(v) for v in np.linspace(0.5, 1.0, 6)),  # of the largest shape
    "x": tuple(float(v) for v in np.linspace(0.0, 1.0, 16)),  # centre, across the free range
    "y": tuple(float(v) for v in np.linspace(0.0, 1.0, 16)),
    "colour": ((255, 255, 255), (255, 64, 64), (64, 255, 64), (64, 128, 255), (255, 224, 32)),
}
FACTOR_NAMES = tuple(FACTOR_GRIDS)


def make_shapes(
    out_dir: str | Path, n: int = 3000, size: int = 64, seed: int = 0
) -> dict[str, int]:
    """Write `n` PNGs (shapes taken in turn) into out_dir/<shape>/; return the count per shape."""
    out = Path(out_dir)
    for shape in SHAPES:
        (out / shape).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width = max(5, len(str(n - 1)))
    counts = dict.fromkeys(SHAPES, 0)
    scale = 2  # draw at twice the size and downsample: smooth edges at little cost
    for i in range(n):
        shape = SHAPES[i % len(SHAPES)]
        fg = rng.integers(0, 256, 3)
        bg = (fg + rng.integers(96, 161, 3)) % 256  # every channel differs by >= 96: visible
        r = rng.uniform(0.15, 0.4) * size * scale
        cx, cy = rng.uniform(r, size * scale - r, 2)
        angle = rng.uniform(0, 2 * math.pi)
        im = Image.new("RGB", (size * scale, size * scale), tuple(int(c) for c in bg))
        draw = ImageDraw.Draw(im)
        colour = tuple(int(c) for c in fg)
        if shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        else:
            k = 4 if shape == "square" else 3
            pts = [
                (
                    cx + r * math.cos(angle + 2 * math.pi * j / k),
                    cy + r * math.sin(angle + 2 * math.pi * j / k),
                )
                for j in range(k)
            ]
            draw.polygon(pts, fill=colour)
        im.reduce(scale).save(out / shape / f"{i:0{width}d}.png", compress_level=1)
        counts[shape] += 1
    return counts


def _outline(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """The polygon of `shape` (not the ellipse) of half-size `r` centred on (cx, cy)."""
    if shape == "heart":  # the classic parametric heart, about 34 x 31 units wide
        t = np.linspace(0, 2 * math.pi, 96, endpoint=False)
        hx = 16 * np.sin(t) ** 3
        hy = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
        return [(cx + r * a / 17, cy - r * (b + 2.5) / 15.5) for a, b in zip(hx, hy, strict=True)]
    k = 4 if shape == "square" else 3
    start = math.pi / 4 if k == 4 else -math.pi / 2  # axis-aligned square, triangle point up
    return [
        (
            cx + r * math.cos(start + 2 * math.pi * j / k),
            cy + r * math.sin(start + 2 * math.pi * j / k),
        )
        for j in range(k)
    ]


def factor_image(factors: dict[str, int], size: int = 64) -> Image.Image:
    """The RGB image of one set of factor indices: a function of the factors alone."""
    scale = 2  # draw at twice the size and downsample, as make_shapes does
    side = size * scale
    r = FACTOR_GRIDS["scale"][factors["scale"]] * 0.25 * side
    free = side - 2 * 0.25 * side  # the centre stays where the largest shape fits
    cx = 0.25 * side + FACTOR_GRIDS["x"][factors["x"]] * free
    cy = 0.25 * side + FACTOR_GRIDS["y"][factors["y"]] * free
    colour = FACTOR_GRIDS["colour"][factors["colour"]]
    shape = FACTOR_SHAPES[factors["shape"]]
    im = Image.new("RGB", (side, side), (0, 0, 0))
    draw = ImageDraw.Draw(im)
    if shape == "ellipse":
        draw.ellipse((cx - r, cy - 0.55 * r, cx + r, cy + 0.55 * r), fill=colour)
    else:
        draw.polygon(_outline(shape, cx, cy, r), fill=colour)
    return im.reduce(scale)


def make_factor_shapes(
    out_dir: str | Path, n: int = 3000, size: int = 64, seed: int = 0
) -> np.ndarray:
    """Write `n` PNGs of seeded random factors into out_dir/<shape>/ and their factor indices
    into out_dir/factors.csv; return the indices, (n, 5) int64 in FACTOR_NAMES' order."""
    out = Path(out_dir)
    for shape in FACTOR_SHAPES:
        (out / shape).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sizes = [len(FACTOR_GRIDS[name]) for name in FACTOR_NAMES]
    factors = np.stack([rng.integers(0, k, n) for k in sizes], axis=1)  # (n, 5)
    width = max(5, len(str(n - 1)))
    rows = [",".join(("file",) + FACTOR_NAMES)]
    for i, row in enumerate(factors):
        values = dict(zip(FACTOR_NAMES, (int(v) for v in row), strict=True))
        name = f"{FACTOR_SHAPES[values['shape']]}/{i:0{width}d}.png"
        factor_image(values, size).save(out / name, compress_level=1)
        rows.append(",".join([name] + [str(int(v)) for v in row]))
    (out / "factors.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return factors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder to write <shape>/NNNNN.png into")
    parser.add_argument("--n", type=int, default=3000, help="number of images (default 3000)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--factors",
        action="store_true",
        help="a dSprites-like set: shape, scale, x, y, colour recorded in OUT_DIR/factors.csv",
    )
    args = parser.parse_args(argv)
    if args.n < 1 or args.size < 8:
        parser.error("--n must be >= 1 and --size >= 8")
    if args.factors:
        make_factor_shapes(args.out_dir, args.n, args.size, args.seed)
        print(f"wrote {args.n} images and their factors to {args.out_dir}/factors.csv")
        return
    counts = make_shapes(args.out_dir, args.n, args.size, args.seed)
    summary = ", ".join(f"{k}: {v}" for k, v in counts.items())
    print(f"wrote {args.n} images to {args.out_dir} ({summary})")


if __name__ == "__main__":
    main()
