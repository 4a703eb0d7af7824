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


def make_grid(images: Sequence[Image.Image], columns: int | None = None, show_indices: bool = True) -> Image.Image:
    """One RGB image with the images in rows, left to right, each index drawn in its top-left corner.

    Cells take the size of the largest image, so generators of different resolutions share one grid.
    `columns` defaults to a square-ish layout.
    """
    if not images:
        raise ValueError("no images to put in a grid")
    if columns is None:
        columns = math.ceil(math.sqrt(len(images)))
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    rows = math.ceil(len(images) / columns)
    cell_width = max(image.width for image in images)
    cell_height = max(image.height for image in images)
    grid = Image.new("RGB", (columns * cell_width, rows * cell_height))
    draw = ImageDraw.Draw(grid)
    # Scaled with the cell so the index stays readable on 32 px and on 1024 px images alike.
    font = ImageFont.load_default(size=max(10, cell_height // 10))
    for index, image in enumerate(images):
        left, top = (index % columns) * cell_width, (index // columns) * cell_height
        grid.paste(image.convert("RGB"), (left, top))
        if show_indices:
            _draw_label(draw, (left, top), str(index), font)
    return grid


def _draw_label(draw: ImageDraw.ImageDraw, corner: tuple[int, int], text: str, font) -> None:
    # White on a black box: legible on any image.
    padding = 2
    origin = (corner[0] + padding, corner[1] + padding)
    _, _, right, bottom = draw.textbbox(origin, text, font=font)
    draw.rectangle((corner[0], corner[1], right + padding, bottom + padding), fill="black")
    draw.text(origin, text, fill="white", font=font)


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
