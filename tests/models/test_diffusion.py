import numpy as np
import pytest
import torch

from dalleflow.models.diffusion import Interrupted, ShapesDiffusion
from dalleflow.shapes import render_caption

PROMPT = "a red circle on the left on a white background"
OTHER = "a blue square above a green circle on a black background"


def pixels(images):
    return np.stack([np.asarray(im) for im in images])


def test_images_have_the_canvas_size(tiny_diffusion):
    images = tiny_diffusion.generate([PROMPT], num_images=2, seed=1, num_inference_steps=2)
    assert [im.size for im in images] == [(32, 32), (32, 32)]


def test_an_image_depends_only_on_its_prompt_and_seed(tiny_diffusion):
    alone = tiny_diffusion.generate([PROMPT], num_images=1, seed=7, num_inference_steps=3)
    # Image 2 of a request seeded 5 uses seed 7, here batched beside other prompts' images.
    batched = tiny_diffusion.generate([PROMPT, OTHER], num_images=3, seed=5, num_inference_steps=3)
    assert np.array_equal(pixels(alone)[0], pixels(batched)[2])
    assert not np.array_equal(pixels(batched)[0], pixels(batched)[1])


def test_save_and_load_give_the_same_images(tiny_diffusion, tmp_path):
    tiny_diffusion.save_pretrained(tmp_path / "model")
    loaded = ShapesDiffusion.from_pretrained(tmp_path / "model")
    kwargs = dict(num_images=2, seed=3, num_inference_steps=2, guidance_scale=2.0, negative_prompt=OTHER)
    assert np.array_equal(pixels(tiny_diffusion.generate([PROMPT], **kwargs)), pixels(loaded.generate([PROMPT], **kwargs)))


def test_the_callback_sees_every_step_and_can_stop_the_loop(tiny_diffusion):
    seen = []
    tiny_diffusion.generate([PROMPT], num_inference_steps=4, callback=lambda i, n, _: seen.append((i, n)))
    assert seen == [(0, 4), (1, 4), (2, 4), (3, 4)]
    stopped = []
    with pytest.raises(Interrupted):
        tiny_diffusion.generate([PROMPT], num_inference_steps=4, callback=lambda i, n, _: stopped.append(i) or i == 1)
    assert stopped == [0, 1]


def test_refine_skipping_the_whole_schedule_keeps_the_image(tiny_diffusion):
    source = render_caption(PROMPT, seed=1)
    kept = tiny_diffusion.refine(source, PROMPT, skip_rate=1.0, num_images=2, seed=0, num_inference_steps=4)
    assert all(np.array_equal(np.asarray(im), np.asarray(source)) for im in kept)


def test_refine_makes_seeded_variations(tiny_diffusion):
    source = render_caption(PROMPT, seed=1)
    first = tiny_diffusion.refine(source, PROMPT, skip_rate=0.5, num_images=2, seed=4, num_inference_steps=4)
    again = tiny_diffusion.refine(source, PROMPT, skip_rate=0.5, num_images=2, seed=4, num_inference_steps=4)
    assert np.array_equal(pixels(first), pixels(again))
    assert not np.array_equal(pixels(first)[0], pixels(first)[1])
    assert not np.array_equal(pixels(first)[0], np.asarray(source))


def test_a_variation_depends_only_on_its_seed_not_on_how_many_share_the_call(tiny_diffusion):
    # The refiner's sampler draws fresh noise at every step: each image from its own generator.
    source = render_caption(PROMPT, seed=1)
    alone = tiny_diffusion.refine(source, PROMPT, skip_rate=0.25, num_images=1, seed=9, num_inference_steps=4)
    among = tiny_diffusion.refine(source, PROMPT, skip_rate=0.25, num_images=3, seed=9, num_inference_steps=4)
    assert np.array_equal(pixels(alone)[0], pixels(among)[0])


@pytest.mark.parametrize("skip_rate", [-0.1, 1.5])
def test_refine_refuses_a_skip_rate_outside_0_1(tiny_diffusion, skip_rate):
    with pytest.raises(ValueError, match="skip_rate"):
        tiny_diffusion.refine(render_caption(PROMPT), PROMPT, skip_rate=skip_rate)


def test_the_callback_gets_a_preview_of_each_image_that_ends_near_it(tiny_diffusion):
    previews = []
    images = tiny_diffusion.generate([PROMPT], num_images=2, seed=3, num_inference_steps=4,
                                     callback=lambda i, n, preview: previews.append(preview))  # fmt: skip
    assert [[im.size for im in step] for step in previews] == [[(32, 32)] * 2] * 4
    # The last step's predicted clean image is (up to the solver's last update) the answer.
    assert np.abs(pixels(previews[-1]).astype(int) - pixels(images).astype(int)).mean() < 8


def test_a_model_in_reduced_precision_makes_the_same_images_to_its_precision(tiny_diffusion, tmp_path):
    # A GPU runs the networks in half precision by default; bfloat16 takes that path on a CPU.
    tiny_diffusion.save_pretrained(tmp_path / "model")
    full = ShapesDiffusion.from_pretrained(tmp_path / "model", device="cpu", dtype="float32")
    reduced = ShapesDiffusion.from_pretrained(tmp_path / "model", device="cpu", dtype="bfloat16")
    assert next(reduced.denoiser.parameters()).dtype == torch.bfloat16
    assert reduced.batch_rows == 4  # the CPU default
    kwargs = dict(num_images=2, seed=3, num_inference_steps=3)
    difference = pixels(reduced.generate([PROMPT], **kwargs)).astype(int) - pixels(full.generate([PROMPT], **kwargs))
    # Only the networks run in bfloat16 (the solver in float32): the images differ by its rounding alone.
    assert np.abs(difference).mean() < 4, np.abs(difference).mean()
    start = full.generate([PROMPT], num_images=1, seed=3, num_inference_steps=3)[0]
    assert [v.size for v in reduced.refine(start, PROMPT, num_images=2, seed=1, num_inference_steps=4)] == [(32, 32)] * 2
