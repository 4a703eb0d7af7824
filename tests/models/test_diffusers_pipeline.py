"""The diffusers family on tiny random checkpoints saved in the real diffusers folder
format, one per pipeline kind (Stable Diffusion 1.x, SDXL, SD3, FLUX.1): it gives
what diffusers' own pipeline gives, and takes the options users of these models set.
The contract itself is proven for every kind by tests/models/test_contract.py."""

import threading

import numpy as np
import pytest
import torch
from diffusers import AutoPipelineForImage2Image, DiffusionPipeline

from dalleflow.models.contract import Sampling, expand
from dalleflow.models.diffusers_pipeline import DiffusersModel
from dalleflow.models.factory import create_model
from tests.tiny_checkpoints import SD_IMAGE_SIZE as IMAGE_SIZE
from tests.tiny_checkpoints import save_tiny_pipeline, save_tiny_stable_diffusion

PROMPT = "a red circle on the left on a white background"
OTHER = "a blue square above a green circle on a black background"
KINDS = {  # the pipeline class each tiny folder loads as, and options it needs
    "sd": ("StableDiffusionPipeline", {}),
    "sdxl": ("StableDiffusionXLPipeline", {}),
    "sd3": ("StableDiffusion3Pipeline", {}),
    "flux": ("FluxPipeline", {"image_size": IMAGE_SIZE, "true_cfg_scale": 2.0}),
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def save_kind(kind: str, base):
    if kind == "sd":
        return save_tiny_stable_diffusion(base)[1]
    return save_tiny_pipeline(kind, base)


@pytest.fixture(scope="module", params=list(KINDS))
def tiny(request, tmp_path_factory):
    """(kind, its saved folder, diffusers' own pipeline loaded from it, our model of it)."""
    kind = request.param
    folder = save_kind(kind, tmp_path_factory.mktemp(f"tiny-{kind}"))
    options = KINDS[kind][1]
    model = create_model({"family": "diffusers", "weights": f"local-dir:{folder}", "options": options})
    reference = DiffusionPipeline.from_pretrained(folder)
    reference.set_progress_bar_config(disable=True)
    return kind, folder, reference, model


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return save_tiny_stable_diffusion(tmp_path_factory.mktemp("tiny-sd-options"))[1]


def pixels(images):
    return np.stack([np.asarray(image) for image in images])


def seeded(seed: int, count: int):
    return [torch.Generator().manual_seed(seed + i) for i in range(count)]


def reference_arguments(kind: str, negative: str, rows: int) -> dict:
    arguments = {"negative_prompt": [negative] * rows, "height": IMAGE_SIZE, "width": IMAGE_SIZE}
    if kind == "flux":
        arguments["true_cfg_scale"] = 2.0
    return arguments


def test_the_folder_loads_as_its_own_pipeline_class_on_the_cpu_in_float32(tiny):
    kind, _, _, model = tiny
    assert isinstance(model, DiffusersModel)
    assert model.text_to_image.__name__ == KINDS[kind][0]
    assert model.image_to_image.__name__ == KINDS[kind][0].replace("Pipeline", "Img2ImgPipeline")
    assert model.device.type == "cpu"
    assert all(module.dtype == torch.float32 for module in model.pipeline.components.values() if isinstance(module, torch.nn.Module))
    assert (model.height, model.width) == (IMAGE_SIZE, IMAGE_SIZE)


def one_row_at_a_time(pipeline, prompts, seeds, **arguments):
    """diffusers' own call, one row per call: the batch shape of the model on a CPU
    (images_per_call 1), since kernels round differently at other batch sizes."""
    rows = [dict(zip(("prompt", "image"), values)) for values in zip(prompts, arguments.pop("image", [None] * len(prompts)))]
    return [pipeline(**{key: [value] for key, value in row.items() if value is not None},
                     generator=seeded(seed, 1), **arguments).images[0] for row, seed in zip(rows, seeds)]  # fmt: skip


def test_generate_gives_what_diffusers_own_pipeline_gives(tiny):
    kind, _, reference, model = tiny
    assert model.images_per_call == 1
    expected = one_row_at_a_time(
        reference, [PROMPT, PROMPT, OTHER, OTHER], [3, 4, 5, 6], num_inference_steps=2, guidance_scale=2.0,
        **reference_arguments(kind, OTHER, 1),
    )
    got = model.generate(*expand([PROMPT, OTHER], 2, seed=3), Sampling(2, 2.0, OTHER))
    assert np.array_equal(pixels(got), pixels(expected))


def test_refine_gives_what_diffusers_own_image_to_image_pipeline_gives(tiny):
    kind, _, reference, model = tiny
    source = model.generate([PROMPT], [11], Sampling(num_inference_steps=2))[0]
    expected = one_row_at_a_time(
        AutoPipelineForImage2Image.from_pipe(reference), [PROMPT] * 2, [4, 5], image=[source] * 2, strength=0.5,
        num_inference_steps=4, guidance_scale=3.0, **reference_arguments(kind, OTHER, 1),
    )
    got = model.refine([source] * 2, *expand([PROMPT], 2, seed=4), skip_rate=0.5,
                       sampling=Sampling(num_inference_steps=4, guidance_scale=3.0, negative_prompt=OTHER))
    assert np.array_equal(pixels(got), pixels(expected))
    assert not np.array_equal(pixels(got)[0], pixels(got)[1])


@pytest.mark.parametrize(("skip_rate", "step_count"), [(0.25, 3), (0.5, 2), (0.75, 1)])
def test_refine_runs_the_share_of_the_schedule_not_skipped(tiny, skip_rate, step_count):
    _, _, _, model = tiny
    source = model.generate([PROMPT], [0], Sampling(num_inference_steps=2))[0]
    steps = []
    model.refine([source], [PROMPT], [0], skip_rate=skip_rate, sampling=Sampling(num_inference_steps=4),
                 callback=lambda i, n, _: steps.append((i, n)))
    assert steps == [(i, step_count) for i in range(step_count)]


def test_refine_works_at_the_model_size_whatever_the_input_size(tiny):
    _, _, _, model = tiny
    source = model.generate([PROMPT], [0], Sampling(num_inference_steps=2))[0].resize((48, 40))
    refined = model.refine([source], [PROMPT], [0], skip_rate=0.5, sampling=Sampling(num_inference_steps=2))
    assert refined[0].size == (IMAGE_SIZE, IMAGE_SIZE)


def test_concurrent_calls_give_the_images_of_sequential_calls(tiny):
    # Different step counts: with one shared scheduler, one call's set_timesteps
    # would rewrite the other's schedule mid-loop (diffusers issues 7851, 3672);
    # the tokenizers, shared, are called from three threads at once.
    _, _, _, model = tiny
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


# Limits and what a family does not honour.


@pytest.mark.parametrize("kind, size, limit", [
    ("sd", 36, "a multiple of 8 from 8 to 4096"),
    ("sd3", 34, "a multiple of 4 from 4 to 64"),
    ("sd3", 68, "a multiple of 4 from 4 to 64"),
    ("flux", (32, 6), "width 6 .* a multiple of 4"),
])  # fmt: skip
def test_an_image_size_outside_the_familys_limits_is_refused_naming_the_limit(tmp_path, kind, size, limit):
    folder = save_kind(kind, tmp_path)
    with pytest.raises(ValueError, match=f"image_size: .*{limit}"):
        DiffusersModel.from_pretrained(folder, image_size=size)


def test_an_image_size_within_the_limits_is_the_size_of_every_image(tmp_path):
    model = DiffusersModel.from_pretrained(save_kind("sd3", tmp_path), image_size=(16, 24))
    assert model.generate([PROMPT], [0], Sampling(num_inference_steps=1))[0].size == (24, 16)


def test_flux_without_true_guidance_refuses_a_negative_prompt_by_name(tmp_path):
    model = DiffusersModel.from_pretrained(save_kind("flux", tmp_path), image_size=IMAGE_SIZE)
    assert not model.capabilities.negative_prompt
    assert model.capabilities.refusal(Sampling(negative_prompt="blurry"))[0] == "negative_prompt"
    with pytest.raises(ValueError, match="negative_prompt: FluxPipeline uses a negative prompt only with true"):
        model.generate([PROMPT], [0], Sampling(num_inference_steps=1, negative_prompt="blurry"))
    assert model.generate([PROMPT], [0], Sampling(num_inference_steps=1))[0].size == (IMAGE_SIZE, IMAGE_SIZE)
    with pytest.raises(ValueError, match="true_cfg_scale: StableDiffusionXLPipeline has no"):
        DiffusersModel.from_pretrained(save_kind("sdxl", tmp_path / "xl"), true_cfg_scale=2.0)


# Options.


def test_an_fp16_variant_folder_loads_in_float32_on_the_cpu(tmp_path):
    # What the GPU serve config reads: a folder holding only the *.fp16.safetensors files.
    in_memory, folder = save_tiny_stable_diffusion(tmp_path, variant="fp16")
    assert sorted(p.name for p in (folder / "unet").glob("*.safetensors")) == ["diffusion_pytorch_model.fp16.safetensors"]
    model = create_model({"family": "stable-diffusion", "weights": f"local-dir:{folder}", "options": {"variant": "fp16"}})
    assert model.pipeline.unet.dtype == torch.float32
    expected = in_memory([PROMPT], generator=seeded(2, 1), height=IMAGE_SIZE, width=IMAGE_SIZE,
                         num_inference_steps=2, guidance_scale=3.0).images
    assert np.array_equal(pixels(model.generate([PROMPT], [2], Sampling(num_inference_steps=2, guidance_scale=3.0))), pixels(expected))


def test_a_scheduler_named_in_the_options_samples_and_an_unfit_one_is_refused(sd_folder):
    from diffusers import DPMSolverMultistepScheduler

    model = DiffusersModel.from_pretrained(sd_folder, scheduler="DPMSolverMultistepScheduler",
                                           scheduler_options={"use_karras_sigmas": True})
    assert isinstance(model.pipeline.scheduler, DPMSolverMultistepScheduler)
    assert model.pipeline.scheduler.config.use_karras_sigmas
    reference = DiffusionPipeline.from_pretrained(sd_folder)
    reference.scheduler = DPMSolverMultistepScheduler.from_config(reference.scheduler.config, use_karras_sigmas=True)
    expected = reference([PROMPT], generator=seeded(1, 1), num_inference_steps=3, guidance_scale=2.0).images
    assert np.array_equal(pixels(model.generate([PROMPT], [1], Sampling(3, 2.0))), pixels(expected))
    with pytest.raises(ValueError, match="scheduler: 'FlowMatchEulerDiscreteScheduler' does not fit StableDiffusionPipeline; one of"):
        DiffusersModel.from_pretrained(sd_folder, scheduler="FlowMatchEulerDiscreteScheduler")


def test_vae_tiling_and_slicing_are_set_on_the_shared_vae(sd_folder):
    model = DiffusersModel.from_pretrained(sd_folder, vae_tiling=True, vae_slicing=True)
    assert model.pipeline.vae.use_tiling and model.pipeline.vae.use_slicing
    assert model.generate([PROMPT], [0], Sampling(num_inference_steps=1))[0].size == (IMAGE_SIZE, IMAGE_SIZE)


def test_cpu_offload_is_refused_clearly_without_a_gpu(sd_folder):
    with pytest.raises(ValueError, match="cpu_offload .* needs a GPU"):
        DiffusersModel.from_pretrained(sd_folder, device="cpu", cpu_offload="model")
    with pytest.raises(ValueError, match="cpu_offload must be one of"):
        DiffusersModel.from_pretrained(sd_folder, cpu_offload="disk")


def test_defaults_in_the_options_are_used_where_the_folder_has_none(sd_folder):
    model = DiffusersModel.from_pretrained(sd_folder, defaults={"num_inference_steps": 4, "guidance_scale": 0.0})
    assert (model.defaults.num_inference_steps, model.defaults.guidance_scale) == (4, 0.0)
    with pytest.raises(ValueError, match="defaults: unknown"):
        DiffusersModel.from_pretrained(sd_folder, defaults={"steps": 4})


def save_tiny_lora(pipeline, folder):
    """A LoRA of rank 2 on the UNet's attention projections, random (not zero) so it changes the image."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(7)
    pipeline.unet.add_adapter(LoraConfig(r=2, lora_alpha=2, init_lora_weights=False,
                                         target_modules=["to_q", "to_k", "to_v", "to_out.0"]))  # fmt: skip
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(pipeline.unet))
    return folder / "pytorch_lora_weights.safetensors"


def test_a_lora_named_in_the_config_is_fused_as_diffusers_applies_it(tmp_path, sd_folder):
    lora_file = save_tiny_lora(DiffusionPipeline.from_pretrained(sd_folder), tmp_path / "lora")
    plain = DiffusersModel.from_pretrained(sd_folder)
    fused = create_model({"family": "diffusers", "weights": f"local-dir:{sd_folder}",
                          "options": {"loras": [{"weights": f"local-dir:{lora_file.parent}", "scale": 0.5}]}})  # fmt: skip
    sampling = Sampling(num_inference_steps=2, guidance_scale=2.0)
    reference = DiffusionPipeline.from_pretrained(sd_folder)
    reference.load_lora_weights(lora_file.parent, adapter_name="tiny")
    reference.set_adapters(["tiny"], adapter_weights=[0.5])
    expected = reference([PROMPT], generator=seeded(5, 1), num_inference_steps=2, guidance_scale=2.0).images
    got = fused.generate([PROMPT], [5], sampling)
    # Fused weights round differently from the adapter's separate path: close, not equal.
    assert np.abs(pixels(got).astype(int) - pixels(expected).astype(int)).max() <= 2
    assert not np.array_equal(pixels(got), pixels(plain.generate([PROMPT], [5], sampling)))


@pytest.mark.parametrize("pipeline", ["StableDiffusionImg2ImgPipeline", "StableDiffusionXLImg2ImgPipeline",
                                      "StableDiffusion3Img2ImgPipeline", "FluxImg2ImgPipeline"])
def test_the_strength_for_a_skip_rate_runs_exactly_the_steps_kept(pipeline):
    # SD and SDXL round steps * strength down, SD3 and FLUX steps * (1 - strength):
    # 15 of 22 steps, say, needs a different float strength in each.
    import diffusers

    from dalleflow.models.diffusers_pipeline import _steps_run, strength_running

    image_to_image = getattr(diffusers, pipeline)
    for steps in range(1, 101):
        for kept in range(0, steps + 1):
            assert _steps_run(image_to_image, steps, strength_running(kept, steps, image_to_image)) == kept


def test_an_image_the_safety_checker_flags_says_so_and_the_checker_can_be_turned_off(tmp_path, caplog):
    from dalleflow.models.contract import NSFW_FLAG

    _, folder = save_tiny_stable_diffusion(tmp_path, safety_checker=True)
    (flagged,) = DiffusersModel.from_pretrained(folder).generate([PROMPT], [0], Sampling(num_inference_steps=1))
    assert flagged.info.get(NSFW_FLAG) is True and not np.asarray(flagged).any()  # blacked out, and said
    with caplog.at_level("WARNING"):
        unchecked = DiffusersModel.from_pretrained(folder, safety_checker=False)
    assert "safety checker is off" in caplog.text
    (image,) = unchecked.generate([PROMPT], [0], Sampling(num_inference_steps=1))
    assert NSFW_FLAG not in image.info and np.asarray(image).any()
