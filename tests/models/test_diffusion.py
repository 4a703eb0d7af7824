"""What the shapes-diffusion family does beyond the contract (tests/models/test_contract.py
runs it through the contract itself): saving and loading, previews, precision."""

import numpy as np
import torch

from dalleflow.models.contract import Sampling, expand
from dalleflow.models.diffusion import ShapesDiffusion

PROMPT = "a red circle on the left on a white background"
OTHER = "a blue square above a green circle on a black background"


def pixels(images):
    return np.stack([np.asarray(im) for im in images])


def test_images_have_the_canvas_size(tiny_diffusion):
    images = tiny_diffusion.generate(*expand([PROMPT], 2, seed=1), Sampling(num_inference_steps=2))
    assert [im.size for im in images] == [(32, 32), (32, 32)]


def test_save_and_load_give_the_same_images_and_defaults(tiny_diffusion, tmp_path):
    tiny_diffusion.save_pretrained(tmp_path / "model")
    loaded = ShapesDiffusion.from_pretrained(tmp_path / "model")
    assert loaded.defaults == tiny_diffusion.defaults
    sampling = Sampling(num_inference_steps=2, guidance_scale=2.0, negative_prompt=OTHER)
    rows = expand([PROMPT], 2, seed=3)
    assert np.array_equal(pixels(tiny_diffusion.generate(*rows, sampling)), pixels(loaded.generate(*rows, sampling)))


def test_the_callback_gets_a_preview_of_each_image_that_ends_near_it(tiny_diffusion):
    previews = []
    images = tiny_diffusion.generate(*expand([PROMPT], 2, seed=3), Sampling(num_inference_steps=4),
                                     callback=lambda i, n, preview: previews.append(preview()))  # fmt: skip
    assert [[im.size for im in step] for step in previews] == [[(32, 32)] * 2] * 4
    # The last step's predicted clean image is (up to the solver's last update) the answer.
    assert np.abs(pixels(previews[-1]).astype(int) - pixels(images).astype(int)).mean() < 8


def test_a_model_in_reduced_precision_makes_the_same_images_to_its_precision(tiny_diffusion, tmp_path):
    # A GPU runs the networks in half precision by default; bfloat16 takes that path on a CPU.
    tiny_diffusion.save_pretrained(tmp_path / "model")
    full = ShapesDiffusion.from_pretrained(tmp_path / "model", device="cpu", dtype="float32")
    reduced = ShapesDiffusion.from_pretrained(tmp_path / "model", device="cpu", dtype="bfloat16")
    assert next(reduced.denoiser.parameters()).dtype == torch.bfloat16
    assert reduced.images_per_call == 2  # the CPU default: 4 network rows
    rows, sampling = expand([PROMPT], 2, seed=3), Sampling(num_inference_steps=3)
    difference = pixels(reduced.generate(*rows, sampling)).astype(int) - pixels(full.generate(*rows, sampling))
    # Only the networks run in bfloat16 (the solver in float32): the images differ by its rounding alone.
    assert np.abs(difference).mean() < 4, np.abs(difference).mean()
    start = full.generate([PROMPT], [3], sampling)[0]
    variations = reduced.refine([start] * 2, *expand([PROMPT], 2, seed=1), sampling=Sampling(num_inference_steps=4))
    assert [v.size for v in variations] == [(32, 32)] * 2
