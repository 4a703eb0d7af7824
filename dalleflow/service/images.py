"""Turning request images into PIL images safely, and PIL images into answers."""

from __future__ import annotations

import base64
import binascii
import io
import warnings

from dalleflow_client.schemas import MAX_IMAGE_PIXELS
from PIL import Image

from dalleflow.service.errors import InvalidInput, PayloadTooLarge

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")


def decode_image(data: str, field: str = "image") -> Image.Image:
    """A base64 image (optionally a data: URI) -> RGB PIL image, refusing bombs before decoding."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as error:
        raise InvalidInput(f"{field}: not valid base64 ({error})", field=field) from error
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
    return image.convert("RGB")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def encode_png(image: Image.Image) -> str:
    return base64.b64encode(png_bytes(image)).decode("ascii")
