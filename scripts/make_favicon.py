"""Remake dalleflow/web/static/favicon.ico, the page's and the docs' icon: the README's
prompt, "a red circle to the left of a blue square on a white background", drawn by the
shapes world's own renderer at each icon size (hard edges at every size, no resampling).

    .venv/bin/python scripts/make_favicon.py dalleflow/web/static/favicon.ico
"""

from __future__ import annotations

import sys

from PIL import Image

from dalleflow.shapes.render import render_scene
from dalleflow.shapes.scene import Scene, ShapeObject

SIZES = (16, 32, 48)


def draw(side: int) -> Image.Image:
    # Laid out by hand rather than by the seeded sampler: an icon wants the shapes large,
    # larger than the world's own limits allow.
    unit = side / 16
    scene = Scene(
        "white",
        (
            ShapeObject("red", "circle", 4.5 * unit, 8 * unit, 8 * unit),
            ShapeObject("blue", "square", 12 * unit, 8 * unit, 7 * unit),
        ),
        relation="to the left of",
        canvas_size=side,
    )
    return Image.fromarray(render_scene(scene))


def main(out: str) -> None:
    largest, *others = [draw(side) for side in reversed(SIZES)]
    largest.save(out, format="ICO", sizes=[(side, side) for side in SIZES], append_images=others)


if __name__ == "__main__":
    main(sys.argv[1])
