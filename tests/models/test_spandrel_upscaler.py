"""The spandrel upscaler family on a tiny SwinIR-L (real-world SR x4) made by SwinIR's own
code and saved as its published files are (scripts/make_swinir_fixtures.py): spandrel
recognises it from the keys, and the upscale is the original network's."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from spandrel import ModelLoader

from dalleflow.models.factory import create_model
from dalleflow.models.upscaler.spandrel_models import SpandrelUpscaler

FIXTURES = Path(__file__).resolve().parent / "upscaler_fixtures"
SWINIR = FIXTURES / "swinir-l-tiny-x4"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def upscaler() -> SpandrelUpscaler:
    return create_model({"family": "spandrel", "weights": f"local-dir:{SWINIR}"})


@pytest.fixture(scope="module")
def original():
    """(the fixed input as an image, the original network's output for it as 8-bit pixels)."""
    saved = load_file(FIXTURES / "swinir-l-tiny-x4-io.safetensors")
    to_pixels = lambda tensor: (tensor[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # noqa: E731
    return Image.fromarray(to_pixels(saved["input"])), to_pixels(saved["output"])


def test_spandrel_reads_swinir_from_its_original_file(upscaler):
    assert upscaler.architecture == "SwinIR" and upscaler.scale == 4
    assert upscaler.device.type == "cpu" and upscaler.descriptor.dtype == torch.float32


def test_the_upscale_is_the_original_networks(upscaler, original):
    image, expected = original
    got = np.asarray(upscaler.upscale(image))
    assert got.shape == expected.shape == (96, 128, 3)
    # The input went through 8 bits on its way in: a level of rounding at most.
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_the_upscale_is_spandrels_own_call(upscaler, original):
    image, _ = original
    descriptor = ModelLoader().load_from_file(SWINIR / "swinir_l_tiny_x4.pth").eval()
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        own = (descriptor(pixels)[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(upscaler.upscale(image)), own)


def test_an_image_off_the_window_grid_is_padded_and_cropped_by_spandrel(upscaler):
    image = Image.new("RGB", (21, 13), "red")
    assert upscaler.upscale(image).size == (84, 52)


def test_a_folder_with_several_weight_files_needs_one_named(tmp_path):
    for name in ("a.pth", "b.safetensors"):
        shutil.copy(SWINIR / "swinir_l_tiny_x4.pth", tmp_path / name)
    with pytest.raises(ValueError, match=r"holds \['a.pth', 'b.safetensors'\]; name one in options.file"):
        create_model({"family": "spandrel", "weights": f"local-dir:{tmp_path}"})
    named = create_model({"family": "spandrel", "weights": f"local-dir:{tmp_path}", "options": {"file": "a.pth"}})
    assert named.scale == 4
    with pytest.raises(FileNotFoundError, match="file: no 'c.pth'"):
        create_model({"family": "spandrel", "weights": f"local-dir:{tmp_path}", "options": {"file": "c.pth"}})


def test_a_file_spandrel_does_not_know_is_refused_by_spandrel(tmp_path):
    torch.save({"params_ema": {"not.a.model": torch.zeros(3)}}, tmp_path / "unknown.pth")
    with pytest.raises(ValueError, match="unknown.pth: spandrel recognises no architecture in its keys; it knows .*SwinIR"):
        SpandrelUpscaler.from_pretrained(tmp_path)


def test_a_pickle_that_runs_code_is_not_unpickled(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this ran",))

    torch.save({"params_ema": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(Exception, match="print"):  # spandrel's restricted unpickler refuses builtins.print
        SpandrelUpscaler.from_pretrained(tmp_path)
