"""The stable-diffusion family on a tiny random checkpoint saved in the real
diffusers folder format (model_index.json, unet/, vae/, text_encoder/, and a
tokenizer/ of vocab.json + merges.txt as Stable Diffusion v1.5 ships it)."""

import threading

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline

from dalleflow.models.diffusion import Interrupted
from dalleflow.models.factory import create_model
from dalleflow.models.stable_diffusion import StableDiffusion
from tests.tiny_checkpoints import SD_IMAGE_SIZE as IMAGE_SIZE
from tests.tiny_checkpoints import save_tiny_stable_diffusion

PROMPT = "a red circle on the left on a white background"
OTHER = "a blue square above a green circle on a black background"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """(the pipeline in memory, its saved folder)."""
    return save_tiny_stable_diffusion(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="module")
def model(tiny_checkpoint) -> StableDiffusion:
    _, folder = tiny_checkpoint
    return create_model({"family": "stable-diffusion", "weights": f"local-dir:{folder}"})


def pixels(images):
    return np.stack([np.asarray(image) for image in images])


def seeded(seed: int, count: int):
    return [torch.Generator().manual_seed(seed + i) for i in range(count)]


def test_the_factory_loads_the_folder_on_the_cpu_in_float32(model):
    assert isinstance(model, StableDiffusion)
    assert model.device.type == "cpu" and model.components["unet"].dtype == torch.float32
    assert model.image_size == IMAGE_SIZE


def test_images_come_prompt_major_at_the_model_size(model):
    images = model.generate([PROMPT, OTHER], num_images=2, seed=1, num_inference_steps=2)
    assert [image.size for image in images] == [(IMAGE_SIZE, IMAGE_SIZE)] * 4
    assert not np.array_equal(pixels(images)[0], pixels(images)[2])


def test_an_image_depends_only_on_its_prompt_and_seed(model):
    alone = model.generate([PROMPT], num_images=1, seed=7, num_inference_steps=2)
    # Image 2 of a request seeded 5 is seeded 7, here batched beside another prompt's images.
    batched = model.generate([PROMPT, OTHER], num_images=3, seed=5, num_inference_steps=2)
    assert np.array_equal(pixels(alone)[0], pixels(batched)[2])


def test_generate_matches_the_in_memory_diffusers_pipeline(model, tiny_checkpoint):
    in_memory, _ = tiny_checkpoint
    kwargs = dict(num_inference_steps=2, guidance_scale=2.0, negative_prompt=OTHER)
    expected = in_memory(
        [PROMPT, OTHER], num_images_per_prompt=2, generator=seeded(3, 4),
        height=IMAGE_SIZE, width=IMAGE_SIZE, negative_prompt=[OTHER, OTHER],
        num_inference_steps=2, guidance_scale=2.0,
    ).images
    got = model.generate([PROMPT, OTHER], num_images=2, seed=3, **kwargs)
    assert np.array_equal(pixels(got), pixels(expected))


def test_refine_matches_the_in_memory_img2img_pipeline(model, tiny_checkpoint):
    in_memory, _ = tiny_checkpoint
    source = model.generate([PROMPT], seed=11, num_inference_steps=2)[0]
    expected = StableDiffusionImg2ImgPipeline(**in_memory.components)(
        PROMPT, image=source, strength=0.5, num_images_per_prompt=2, generator=seeded(4, 2),
        num_inference_steps=4, guidance_scale=3.0,
    ).images
    got = model.refine(source, PROMPT, skip_rate=0.5, num_images=2, seed=4, num_inference_steps=4)
    assert np.array_equal(pixels(got), pixels(expected))
    assert not np.array_equal(pixels(got)[0], pixels(got)[1])


@pytest.mark.parametrize(("skip_rate", "step_count"), [(0.0, 4), (0.25, 3), (0.5, 2), (0.75, 1)])
def test_refine_runs_the_share_of_the_schedule_not_skipped(model, skip_rate, step_count):
    source = model.generate([PROMPT], seed=0, num_inference_steps=2)[0]
    steps = []
    model.refine(source, PROMPT, skip_rate=skip_rate, num_inference_steps=4, callback=lambda i, n, _: steps.append((i, n)))
    assert steps == [(i, step_count) for i in range(step_count)]


def test_refine_skipping_the_whole_schedule_keeps_the_image(model):
    source = model.generate([PROMPT], seed=0, num_inference_steps=2)[0]
    kept = model.refine(source, PROMPT, skip_rate=1.0, num_images=2, num_inference_steps=4)
    assert all(np.array_equal(np.asarray(image), np.asarray(source)) for image in kept)


def test_refine_works_at_the_model_size_whatever_the_input_size(model):
    source = model.generate([PROMPT], seed=0, num_inference_steps=2)[0].resize((48, 40))
    assert model.refine(source, PROMPT, skip_rate=0.5, num_inference_steps=2)[0].size == (IMAGE_SIZE, IMAGE_SIZE)


@pytest.mark.parametrize("skip_rate", [-0.1, 1.5])
def test_refine_refuses_a_skip_rate_outside_0_1(model, skip_rate):
    source = model.generate([PROMPT], seed=0, num_inference_steps=1)[0]
    with pytest.raises(ValueError, match="skip_rate"):
        model.refine(source, PROMPT, skip_rate=skip_rate)


def test_the_callback_sees_every_step_and_can_stop_the_loop(model):
    seen = []
    model.generate([PROMPT], num_inference_steps=3, callback=lambda i, n, _: seen.append((i, n)))
    assert seen == [(0, 3), (1, 3), (2, 3)]
    stopped = []
    with pytest.raises(Interrupted):
        model.generate([PROMPT], num_inference_steps=4, callback=lambda i, n, _: stopped.append(i) or i == 1)
    assert stopped == [0, 1]


def test_concurrent_calls_give_the_images_of_sequential_calls(model):
    # Different step counts: with one shared scheduler, one call's set_timesteps
    # would rewrite the other's schedule mid-loop (diffusers issues 7851, 3672).
    source = model.generate([OTHER], seed=9, num_inference_steps=2)[0]
    calls = [
        lambda: model.generate([PROMPT], num_images=2, seed=1, num_inference_steps=5),
        lambda: model.generate([OTHER], num_images=1, seed=2, num_inference_steps=3),
        lambda: model.refine(source, PROMPT, skip_rate=0.25, num_images=2, seed=3, num_inference_steps=6),
    ]
    sequential = [pixels(call()) for call in calls]
    start = threading.Barrier(len(calls))
    concurrent: list = [None] * len(calls)
    errors = []

    def run(index):
        start.wait()
        try:
            concurrent[index] = pixels(calls[index]())
        except Exception as error:  # reported below, with the thread's own error
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert all(np.array_equal(a, b) for a, b in zip(sequential, concurrent))


def test_an_fp16_variant_folder_loads_in_float32_on_the_cpu(tmp_path):
    # What the GPU serve config reads: a folder holding only the *.fp16.safetensors files.
    in_memory, folder = save_tiny_stable_diffusion(tmp_path, variant="fp16")
    assert sorted(p.name for p in (folder / "unet").glob("*.safetensors")) == ["diffusion_pytorch_model.fp16.safetensors"]
    model = create_model({"family": "stable-diffusion", "weights": f"local-dir:{folder}", "options": {"variant": "fp16"}})
    assert model.components["unet"].dtype == torch.float32
    expected = in_memory([PROMPT], generator=seeded(2, 1), height=IMAGE_SIZE, width=IMAGE_SIZE,
                         num_inference_steps=2, guidance_scale=3.0).images
    assert np.array_equal(pixels(model.generate([PROMPT], seed=2, num_inference_steps=2)), pixels(expected))
