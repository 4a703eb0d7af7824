import base64
import io

import numpy as np

import pytest
from PIL import Image

from dalleflow.service.errors import InvalidInput, PayloadTooLarge
from dalleflow.service.images import checked_image_bytes, encode_png, open_png, png_metadata


def decode_image(data: str) -> Image.Image:
    return open_png(checked_image_bytes(data))


def b64(image: Image.Image, format: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return base64.b64encode(buffer.getvalue()).decode()


def test_png_jpeg_and_data_uris_decode():
    image = Image.new("RGB", (8, 8), (255, 0, 0))
    assert decode_image(b64(image)).getpixel((0, 0)) == (255, 0, 0)
    assert decode_image(b64(image, "JPEG")).size == (8, 8)
    assert decode_image("data:image/png;base64," + b64(image)).size == (8, 8)


def test_a_decompression_bomb_is_refused_from_its_header():
    # 1-bit PNG of 30000 x 30000 compresses to a few hundred KB but would be 2.7 GB as RGB.
    bomb = b64(Image.new("1", (30_000, 30_000)))
    with pytest.raises(PayloadTooLarge, match="over the limit"):
        decode_image(bomb)


@pytest.mark.parametrize("data", ["not base64!", base64.b64encode(b"plain text").decode(),
                                  b64(Image.new("RGB", (4, 4)), "GIF")])
def test_undecodable_images_name_the_field(data):
    with pytest.raises(InvalidInput, match="^image:"):
        decode_image(data)


def test_checked_bytes_are_the_bytes_sent():
    raw = base64.b64decode(b64(Image.new("RGB", (8, 8), "red"), "JPEG"))
    assert checked_image_bytes(base64.b64encode(raw).decode()) == raw
    with pytest.raises(InvalidInput, match="^image:"):
        checked_image_bytes(base64.b64encode(b"plain text").decode())


def test_a_png_carries_its_metadata_and_its_pixels():
    image = Image.new("RGB", (8, 4), (0, 128, 255))
    encoded = encode_png(image, {"prompt": "a blue sky", "seed": 3, "parameters": {"skip_rate": 0.5}})
    assert (encoded.width, encoded.height) == (8, 4)
    assert png_metadata(encoded.png) == {"prompt": "a blue sky", "seed": 3, "parameters": {"skip_rate": 0.5}}
    assert Image.open(io.BytesIO(encoded.png)).text["prompt"] == "a blue sky"  # viewers show these
    assert np.array_equal(np.asarray(open_png(encoded.png)), np.asarray(image))
    assert png_metadata(base64.b64decode(b64(image))) == {}
