"""The stable-diffusion family on a tiny random checkpoint saved in the real
diffusers folder format (model_index.json, unet/, vae/, text_encoder/, and a
tokenizer/ of vocab.json + merges.txt as Stable Diffusion v1.5 ships it)."""

import threading

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline

from dalleflow.models.contract import Sampling, expand
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


def test_generate_matches_the_in_memory_diffusers_pipeline(model, tiny_checkpoint):
    in_memory, _ = tiny_checkpoint
    kwargs = dict(num_inference_steps=2, guidance_scale=2.0, negative_prompt=OTHER)
    expected = in_memory(
        [PROMPT, OTHER], num_images_per_prompt=2, generator=seeded(3, 4),
        height=IMAGE_SIZE, width=IMAGE_SIZE, negative_prompt=[OTHER, OTHER],
        num_inference_steps=2, guidance_scale=2.0,
    ).images
    got = model.generate(*expand([PROMPT, OTHER], 2, seed=3), Sampling(**kwargs))
    assert np.array_equal(pixels(got), pixels(expected))


def test_refine_matches_the_in_memory_img2img_pipeline(model, tiny_checkpoint):
    in_memory, _ = tiny_checkpoint
    source = model.generate([PROMPT], [11], Sampling(num_inference_steps=2))[0]
    expected = StableDiffusionImg2ImgPipeline(**in_memory.components)(
        PROMPT, image=source, strength=0.5, num_images_per_prompt=2, generator=seeded(4, 2),
        num_inference_steps=4, guidance_scale=3.0,
    ).images
    got = model.refine([source] * 2, *expand([PROMPT], 2, seed=4), skip_rate=0.5,
                       sampling=Sampling(num_inference_steps=4, guidance_scale=3.0))
    assert np.array_equal(pixels(got), pixels(expected))
    assert not np.array_equal(pixels(got)[0], pixels(got)[1])


@pytest.mark.parametrize(("skip_rate", "step_count"), [(0.0, 4), (0.25, 3), (0.5, 2), (0.75, 1)])
def test_refine_runs_the_share_of_the_schedule_not_skipped(model, skip_rate, step_count):
    source = model.generate([PROMPT], [0], Sampling(num_inference_steps=2))[0]
    steps = []
    model.refine([source], [PROMPT], [0], skip_rate=skip_rate, sampling=Sampling(num_inference_steps=4),
                 callback=lambda i, n, _: steps.append((i, n)))
    assert steps == [(i, step_count) for i in range(step_count)]


def test_refine_works_at_the_model_size_whatever_the_input_size(model):
    source = model.generate([PROMPT], [0], Sampling(num_inference_steps=2))[0].resize((48, 40))
    refined = model.refine([source], [PROMPT], [0], skip_rate=0.5, sampling=Sampling(num_inference_steps=2))
    assert refined[0].size == (IMAGE_SIZE, IMAGE_SIZE)


def test_concurrent_calls_give_the_images_of_sequential_calls(model):
    # Different step counts: with one shared scheduler, one call's set_timesteps
    # would rewrite the other's schedule mid-loop (diffusers issues 7851, 3672).
    source = model.generate([OTHER], [9], Sampling(num_inference_steps=2))[0]
    calls = [
        lambda: model.generate(*expand([PROMPT], 2, seed=1), Sampling(num_inference_steps=5)),
        lambda: model.generate([OTHER], [2], Sampling(num_inference_steps=3)),
        lambda: model.refine([source] * 2, *expand([PROMPT], 2, seed=3), skip_rate=0.25, sampling=Sampling(num_inference_steps=6)),
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
    assert np.array_equal(pixels(model.generate([PROMPT], [2], Sampling(num_inference_steps=2, guidance_scale=3.0))), pixels(expected))
