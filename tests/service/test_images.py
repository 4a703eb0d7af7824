import base64
import io

import pytest
from PIL import Image

from dalleflow.service.errors import InvalidInput, PayloadTooLarge
from dalleflow.service.images import decode_image, encode_png


def b64(image: Image.Image, format: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return base64.b64encode(buffer.getvalue()).decode()


def test_png_jpeg_and_data_uris_decode():
    image = Image.new("RGB", (8, 8), (255, 0, 0))
    assert decode_image(encode_png(image)).getpixel((0, 0)) == (255, 0, 0)
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
