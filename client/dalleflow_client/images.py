"""Pure image helpers: base64 PNG coding, grids ("sprites") and PNGs with metadata.

They know nothing of the server, so they work on any PIL images.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin


def encode_png(image: Image.Image) -> str:
    """The image as a base64 PNG, as the API carries it."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_image(data: bytes) -> Image.Image:
    """A loaded PIL image from PNG or JPEG bytes."""
    image = Image.open(io.BytesIO(data))
    image.load()  # read now, so a broken image fails here and not at first use
    return image


def decode_base64_image(text: str) -> Image.Image:
    return decode_image(base64.b64decode(text, validate=True))


# The embedded models draw 32 px images, specks in a grid on a screen: cells are scaled up
# to at least this side, by a whole factor with nearest neighbour, so each pixel stays a
# sharp square and no detail is made up.
MIN_CELL_SIZE = 128
# Between cells: images on one background would otherwise run into each other.
GUTTER = 4


def make_grid(
    images: Sequence[Image.Image], columns: int | None = None, show_indices: bool = True,
    min_cell_size: int = MIN_CELL_SIZE,
) -> Image.Image:  # fmt: skip
    """One RGB image with the images in rows, left to right, apart by a black gutter; with
    show_indices, each index is written in a band above its image, so no label covers a pixel.

    Cells take the size of the largest image, so generators of different resolutions share one
    grid; when that is under `min_cell_size` on its longer side, every image is scaled up by the
    same whole factor (0 keeps them as they are). `columns` defaults to a square-ish layout.
    """
    if not images:
        raise ValueError("no images to put in a grid")
    if columns is None:
        columns = math.ceil(math.sqrt(len(images)))
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    rows = math.ceil(len(images) / columns)
    largest_width = max(image.width for image in images)
    largest_height = max(image.height for image in images)
    scale = max(1, math.ceil(min_cell_size / max(largest_width, largest_height)))
    cell_width, cell_height = largest_width * scale, largest_height * scale
    # Scaled with the cell so the index stays readable on 128 px and on 1024 px cells alike.
    font = ImageFont.load_default(size=max(14, cell_height // 10))
    band = _LABEL_PADDING * 2 + font.getbbox("0123456789")[3] if show_indices else 0
    step_x, step_y = cell_width + GUTTER, band + cell_height + GUTTER
    grid = Image.new("RGB", (columns * step_x - GUTTER, rows * step_y - GUTTER))  # black
    draw = ImageDraw.Draw(grid)
    for index, image in enumerate(images):
        left, top = (index % columns) * step_x, (index // columns) * step_y
        if show_indices:
            draw.text((left + _LABEL_PADDING, top + _LABEL_PADDING), str(index), fill="white", font=font)
        scaled = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
        grid.paste(scaled, (left, top + band))
    return grid


_LABEL_PADDING = 3


def save_png(image: Image.Image, path: str | PathLike, metadata: Mapping[str, object] | None = None) -> Path:
    """Write a PNG with each metadata item as a text chunk; returns the path. Parent folders are made."""
    info = PngImagePlugin.PngInfo()
    for key, value in (metadata or {}).items():
        info.add_text(key, str(value))  # becomes iTXt when the value is not Latin-1
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", pnginfo=info)
    return path


def read_png_metadata(path_or_bytes: str | PathLike | bytes) -> dict[str, object]:
    """The text chunks of a PNG (a file or its bytes), with the server's own "dalleflow"
    chunk read as the JSON it is: prompt, seed, generator, parameters, id, source_id..."""
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    with Image.open(source) as image:
        text: dict[str, object] = dict(getattr(image, "text", {}))
    server = text.pop("dalleflow", None)
    return {**text, **json.loads(server)} if isinstance(server, str) else text
