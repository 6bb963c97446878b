"""Write a small labelled image folder for the folder demo: circles, squares and triangles.

    python scripts/make_shapes.py OUT_DIR [--n 3000] [--size 64] [--seed 0]

Images go to OUT_DIR/<shape>/NNNNN.png, so `vaekit train --data OUT_DIR` labels them by
subfolder. Colours, position, size and rotation are random but fixed by the seed.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder to write <shape>/NNNNN.png into")
    parser.add_argument("--n", type=int, default=3000, help="number of images (default 3000)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    if args.n < 1 or args.size < 8:
        parser.error("--n must be >= 1 and --size >= 8")
    counts = make_shapes(args.out_dir, args.n, args.size, args.seed)
    summary = ", ".join(f"{k}: {v}" for k, v in counts.items())
    print(f"wrote {args.n} images to {args.out_dir} ({summary})")


if __name__ == "__main__":
    main()
