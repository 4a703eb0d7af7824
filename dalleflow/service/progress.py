"""The events of a model call, as a stage streams them: a Step per model step, then Done.

A Step carries a small preview (a PNG strip of the request's images so far) when
the request asked for progress; Done carries its images, each a PNG made once
(service/images.py) that is then stored, answered and streamed as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

# Each image of a preview strip is at most this many pixels on a side: enough to see
# the picture take shape, small enough to send after every step.
PREVIEW_TILE = 64


@dataclass(frozen=True)
class EncodedImage:
    png: bytes  # with its metadata in text chunks
    width: int
    height: int
    id: str | None = None  # the id it is stored under, when it carries one
    nsfw_content_detected: bool = False  # the model's safety checker replaced it


@dataclass(frozen=True)
class Step:
    step: int  # steps done, 1 to step_count
    step_count: int
    preview: bytes | None  # PNG: the request's images so far, side by side


@dataclass(frozen=True)
class Done:
    output: list[EncodedImage]


def preview_strip(images: list[Image.Image], tile: int = PREVIEW_TILE) -> Image.Image:
    """The images side by side, each scaled down to fit a tile x tile square."""
    scaled = []
    for image in images:
        image = image.convert("RGB")
        if max(image.size) > tile:
            image = image.copy()
            image.thumbnail((tile, tile), Image.Resampling.BILINEAR)
        scaled.append(image)
    strip = Image.new("RGB", (sum(image.width for image in scaled), max(image.height for image in scaled)))
    x = 0
    for image in scaled:
        strip.paste(image, (x, 0))
        x += image.width
    return strip


@dataclass(frozen=True)
class Failed:
    """The model call of a request's group raised: the request fails with this error."""

    error: BaseException
