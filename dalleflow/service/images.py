"""Turning request images into PIL images safely, and PIL images into answers.

An image the service answers with is encoded to PNG once, by `encode_png`, where
it is made (the model's replica), with its metadata in text chunks: those bytes
are stored, answered and streamed as they are.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import uuid
import warnings

from dalleflow_client.schemas import MAX_IMAGE_PIXELS
from PIL import Image, PngImagePlugin

from dalleflow.service.errors import InvalidInput, PayloadTooLarge
from dalleflow.service.progress import EncodedImage

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")


def checked_image_bytes(data: str, field: str = "image") -> bytes:
    """A base64 image (optionally a data: URI) -> its bytes, once they decode as an image
    within the size limit (bombs refused from the header, before any pixel is decoded):
    what a model stage is sent (it decodes them itself)."""
    raw = _raw_bytes(data, field)
    _checked_image(raw, field)
    return raw


def _raw_bytes(data: str, field: str) -> bytes:
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as error:
        raise InvalidInput(f"{field}: not valid base64 ({error})", field=field) from error


def _checked_image(raw: bytes, field: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw), formats=ACCEPTED_FORMATS)
            # The header alone gives the size: check it before any pixel is decoded.
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise PayloadTooLarge(
                    f"{field}: {width}x{height} is over the limit of {MAX_IMAGE_PIXELS} pixels", field=field
                )
            image.load()
    except PayloadTooLarge:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        # Pillow's own guard fires at open for sizes far past ours.
        raise PayloadTooLarge(f"{field}: over the limit of {MAX_IMAGE_PIXELS} pixels ({error})", field=field) from error
    except (OSError, SyntaxError, ValueError) as error:
        raise InvalidInput(f"{field}: not a decodable PNG, JPEG or WebP image ({error})", field=field) from error
    return image


def encode_png(image: Image.Image, metadata: dict | None = None) -> EncodedImage:
    """The one PNG encode of an image. metadata goes into a "dalleflow" text chunk as
    JSON, and its prompt, seed and generator into chunks of their own, which
    image viewers show."""
    info = PngImagePlugin.PngInfo()
    if metadata is not None:
        info.add_text("dalleflow", json.dumps(metadata))
        for key in ("prompt", "seed", "generator"):
            if metadata.get(key) is not None:
                info.add_text(key, str(metadata[key]))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    metadata = metadata or {}
    return EncodedImage(buffer.getvalue(), image.width, image.height, metadata.get("id"),
                        bool(metadata.get("nsfw_content_detected")))


def png_metadata(png: bytes) -> dict:
    """The "dalleflow" text chunk of a PNG this service made ({} for any other image)."""
    with Image.open(io.BytesIO(png)) as image:
        text = getattr(image, "text", {}).get("dalleflow")
    return json.loads(text) if text else {}


def open_png(png: bytes) -> Image.Image:
    """An image this service stored or a model made, decoded (already checked when it came in)."""
    image = Image.open(io.BytesIO(png))
    image.load()
    return image.convert("RGB")


def new_image_id() -> str:
    """An id for an image to be made: the store's form (32 hex characters)."""
    return uuid.uuid4().hex


def base64_of(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")
