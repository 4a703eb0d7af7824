"""The swin2sr family on a tiny random x4 checkpoint saved as transformers
saves the real ones (config.json, model.safetensors, preprocessor_config.json)."""

import numpy as np
import pytest
import torch
from PIL import Image

from dalleflow.models.factory import create_model
from dalleflow.models.upscaler.swin2sr import Swin2SRUpscaler
from tests.tiny_checkpoints import save_tiny_swin2sr


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """(the upscaler in memory, its saved folder)."""
    folder = tmp_path_factory.mktemp("tiny-swin2sr")
    return Swin2SRUpscaler(*save_tiny_swin2sr(folder)), folder


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint) -> Swin2SRUpscaler:
    _, folder = tiny_checkpoint
    return create_model({"family": "swin2sr", "weights": f"local-dir:{folder}"})


def test_the_factory_loads_the_folder_on_the_cpu_in_float32(loaded):
    assert isinstance(loaded, Swin2SRUpscaler)
    assert loaded.device.type == "cpu" and loaded.model.dtype == torch.float32
    assert loaded.scale == 4


@pytest.mark.parametrize(("width", "height"), [(32, 32), (30, 21)])
def test_upscale_is_x4_and_matches_the_model_in_memory(tiny_checkpoint, loaded, width, height):
    in_memory, _ = tiny_checkpoint
    image = noise_image(width, height)
    big = loaded.upscale(image)
    assert big.size == (4 * width, 4 * height) and big.mode == "RGB"
    assert np.array_equal(np.asarray(big), np.asarray(in_memory.upscale(image)))


def test_the_output_is_the_models_reconstruction_cropped_to_the_input(tiny_checkpoint):
    in_memory, _ = tiny_checkpoint
    image = noise_image(32, 32, seed=1)
    with torch.inference_mode():
        pixels = in_memory.processor(image, return_tensors="pt").pixel_values
        reconstruction = in_memory.model(pixel_values=pixels).reconstruction[0, :, :128, :128]
    expected = (reconstruction.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(in_memory.upscale(image)), expected)
