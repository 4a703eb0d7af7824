"""Any diffusers text-to-image pipeline (Stable Diffusion 1.x/2.x, SDXL, SD3.x,
FLUX.1, PixArt, ...) as a TextToImage model of the contract, and as an
ImageToImage one where diffusers has the pipeline's image-to-image twin.

    from dalleflow.models.contract import Sampling, expand
    from dalleflow.models.diffusers_pipeline import DiffusersModel
    model = DiffusersModel.from_pretrained("/models/FLUX.1-schnell", dtype="bfloat16")   # or a hub id
    images = model.generate(*expand(["an astronaut riding a horse"], num_images=4, seed=0))
    variations = model.refine([images[0]] * 4, *expand(["an astronaut riding a horse"], 4, seed=9), skip_rate=0.5)

Loading: diffusers' AutoPipelineForText2Image reads the folder's model_index.json
and picks the pipeline class; AutoPipelineForImage2Image.from_pipe makes its
image-to-image twin around the same modules, so one copy of the weights serves
both roles.

Concurrency: a diffusers pipeline keeps per-call state on itself (the scheduler's
step index, the guidance scale, the interrupt flag; diffusers issues 7851 and
3672), so two requests on one pipeline corrupt each other. Every call here makes
its own pipeline object with its own scheduler around the shared modules (copying
no weights), and the tokenizers, Rust objects that refuse concurrent use
("Already borrowed"), are called under one lock.

Seeds and batches: row i is drawn from its own CPU torch.Generator seeded
seeds[i], and the pipeline always runs `images_per_call` rows at a time (the last
call padded), so an image is the same alone or in any batch, on any device.

What each family honours (`capabilities`):
- guidance_scale: classifier-free guidance (SD, SDXL, SD3, PixArt), FLUX.1-dev's
  distilled guidance embedding; FLUX.1-schnell has neither and ignores it.
- negative_prompt: where the pipeline's call has one. FLUX uses it only with true
  classifier-free guidance (`true_cfg_scale` > 1 in the options, which doubles the
  transformer's work); without that a negative prompt is refused, not ignored.
- progress and cancel: where the call takes `callback_on_step_end` (not PixArt);
  no previews (decoding the latents costs about a step).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image, DiffusionPipeline
from PIL import Image

from dalleflow.models.batching import padded_chunks
from dalleflow.models.contract import (
    NSFW_FLAG,
    Capabilities,
    Interrupted,
    Sampling,
    SamplingDefaults,
    SizeLimits,
    StepCallback,
    check_rows,
    plan_refine,
)
from dalleflow.models.devices import default_device, resolve_dtype

logger = logging.getLogger(__name__)
CPU_OFFLOAD = ("model", "sequential")


@dataclasses.dataclass(frozen=True)
class Lora:
    """A LoRA adapter fused into the weights at load (diffusers' load_lora_weights + fuse_lora)."""

    weights: str  # a folder or file diffusers' load_lora_weights reads (or a hub id)
    scale: float = 1.0
    weight_name: str | None = None  # the file inside the folder, where it holds several


class _SerialTokenizer:
    """A tokenizer whose methods run one at a time (see the module docstring)."""

    def __init__(self, tokenizer: Any, lock: threading.RLock):
        self._tokenizer = tokenizer
        self._lock = lock

    def __call__(self, *args, **kwargs):
        with self._lock:
            return self._tokenizer(*args, **kwargs)

    def __len__(self) -> int:
        return len(self._tokenizer)

    def __getattr__(self, name: str):
        value = getattr(self._tokenizer, name)
        if not callable(value):
            return value

        def serial(*args, **kwargs):
            with self._lock:
                return value(*args, **kwargs)

        return serial


def _call_parameters(pipeline_class: type) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(pipeline_class.__call__).parameters)


def family_defaults(pipeline_class: type) -> SamplingDefaults:
    """The defaults of the pipeline's own __call__ (50 / 7.5 for SD, 28 / 3.5 for FLUX...)."""
    parameters = _call_parameters(pipeline_class)
    return SamplingDefaults(
        num_inference_steps=parameters["num_inference_steps"].default,
        guidance_scale=float(parameters["guidance_scale"].default),
    )


class DiffusersModel:
    def __init__(
        self,
        pipeline: DiffusionPipeline,
        image_size: int | tuple[int, int] | None = None,
        images_per_call: int | None = None,
        defaults: SamplingDefaults | None = None,
        true_cfg_scale: float | None = None,
    ):
        """pipeline: a text-to-image pipeline, already on its device.
        image_size: the side (or (height, width)) of every image; default the size
        the model was trained at (512 for SD v1.5, 1024 for SDXL and FLUX), within
        the family's limits (`size_limits`).
        images_per_call: the rows of every pipeline call, padded (default 1 on a CPU, 8 on a GPU).
        true_cfg_scale: FLUX's true classifier-free guidance (> 1 to honour a negative prompt)."""
        self.pipeline = pipeline
        self.pipeline.set_progress_bar_config(disable=True)
        self.text_to_image = type(pipeline)
        self._call = _call_parameters(self.text_to_image)
        try:
            self.image_to_image = type(AutoPipelineForImage2Image.from_pipe(pipeline))
        except ValueError:  # diffusers has no image-to-image twin of this pipeline
            self.image_to_image = None
        self.defaults = defaults or family_defaults(self.text_to_image)
        if true_cfg_scale is not None and "true_cfg_scale" not in self._call:
            raise ValueError(f"true_cfg_scale: {self.text_to_image.__name__} has no true classifier-free guidance")
        self.true_cfg_scale = true_cfg_scale
        self.height, self.width = self._checked_size(image_size)
        if images_per_call is None:
            images_per_call = 1 if self.device.type == "cpu" else 8
        if images_per_call < 1:
            raise ValueError(f"images_per_call must be at least 1, got {images_per_call}")
        self.images_per_call = images_per_call
        lock = threading.RLock()
        self._serial_tokenizers = {
            name: _SerialTokenizer(module, lock)
            for name, module in pipeline.components.items()
            if name.startswith("tokenizer") and module is not None
        }

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        variant: str | None = None,
        scheduler: str | None = None,
        scheduler_options: dict | None = None,
        cpu_offload: str | None = None,
        vae_tiling: bool = False,
        vae_slicing: bool = False,
        loras: Sequence[Lora | dict] = (),
        defaults: dict | None = None,
        safety_checker: bool = True,
        **options: Any,
    ) -> DiffusersModel:
        """source: a diffusers folder or a hub id. variant: e.g. "fp16" for a folder of
        *.fp16.safetensors only. scheduler: a diffusers scheduler class compatible with
        the pipeline's (e.g. "DPMSolverMultistepScheduler"), built from the folder's
        scheduler config and scheduler_options. cpu_offload: "model" or "sequential"
        (a GPU's memory for speed; needs a GPU). vae_tiling / vae_slicing: decode in
        tiles / one image at a time. loras: adapters fused at load. defaults: the
        sampling defaults (num_inference_steps, guidance_scale) where the folder has no
        generation_config.json (FLUX.1-schnell: 4 steps, guidance 0). safety_checker: False
        drops a folder's safety checker (logged as a warning); kept, an image it flags is
        black and says so (NSFW_FLAG). Other options: see __init__."""
        device = device or default_device()
        if cpu_offload is not None:
            if cpu_offload not in CPU_OFFLOAD:
                raise ValueError(f"cpu_offload must be one of {CPU_OFFLOAD}, got {cpu_offload!r}")
            if torch.device(device).type == "cpu":
                raise ValueError("cpu_offload moves modules to a GPU as they run: it needs a GPU, and this replica has none")
        pipeline = AutoPipelineForText2Image.from_pretrained(
            str(source), dtype=resolve_dtype(dtype, device), variant=variant
        )
        if not safety_checker and getattr(pipeline, "safety_checker", None) is not None:
            logger.warning("%s: its safety checker is off (options.safety_checker: false)", source)
            pipeline.safety_checker = None
            pipeline.register_to_config(requires_safety_checker=False)
        if scheduler is not None:
            pipeline.scheduler = _scheduler_by_name(pipeline, scheduler, scheduler_options or {})
        for index, lora in enumerate(loras):
            _fuse_lora(pipeline, lora if isinstance(lora, Lora) else Lora(**lora), f"lora_{index}")
        if vae_tiling:
            pipeline.vae.enable_tiling()
        if vae_slicing:
            pipeline.vae.enable_slicing()
        if cpu_offload == "model":
            pipeline.enable_model_cpu_offload(device=device)
        elif cpu_offload == "sequential":
            pipeline.enable_sequential_cpu_offload(device=device)
        else:
            pipeline.to(device)
        folder = Path(source) if Path(source).is_dir() else None
        checkpoint = SamplingDefaults.of_checkpoint(folder, family_defaults(type(pipeline)))
        if defaults:
            unknown = set(defaults) - {"num_inference_steps", "guidance_scale"}
            if unknown:
                raise ValueError(f"defaults: unknown {sorted(unknown)}; num_inference_steps and guidance_scale are")
            checkpoint = dataclasses.replace(checkpoint, **defaults)
        return cls(pipeline, defaults=checkpoint, **options)

    @property
    def device(self) -> torch.device:
        return self.pipeline._execution_device

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            negative_prompt="negative_prompt" in self._call
            and ("true_cfg_scale" not in self._call or (self.true_cfg_scale or 1.0) > 1),
            progress="callback_on_step_end" in self._call,
            refine=self.image_to_image is not None,
            size=self.size_limits(),
        )

    def size_limits(self, own: tuple[int, int] | None = None) -> SizeLimits:
        """This family's sizes: every side a multiple of the VAE's factor times the
        transformer's patch (SD3; FLUX's 2x2 packing is in its image processor's factor),
        at most what the model's positional table holds (SD3's pos_embed_max_size), else 4096."""
        transformer = getattr(getattr(self.pipeline, "transformer", None), "config", {})
        patch = transformer.get("patch_size", 1) or 1
        multiple = self.pipeline.image_processor.config.vae_scale_factor * patch
        if getattr(self.pipeline, "unet", None) is not None:
            multiple = math.lcm(multiple, 8)  # SD's and SDXL's check_inputs ask for 8, whatever the VAE's factor
        table = transformer.get("pos_embed_max_size")
        largest = table * patch * self.pipeline.vae_scale_factor if table else 4096
        return SizeLimits(own=own or (self.height, self.width), multiple=multiple, largest=largest)

    def _checked_size(self, image_size: int | Sequence[int] | None) -> tuple[int, int]:
        denoiser = getattr(self.pipeline, "unet", None) or self.pipeline.transformer
        side = (getattr(self.pipeline, "default_sample_size", None) or denoiser.config.sample_size) * self.pipeline.vae_scale_factor
        if image_size is None:
            return side, side
        height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        refused = self.size_limits(own=(side, side)).refusal(height, width)
        if refused or not all(isinstance(value, int) for value in (height, width)):
            name, why = refused or ("size", f"{image_size!r} is not one or two integers")
            raise ValueError(f"image_size: {name} {why} ({self.text_to_image.__name__})")
        return height, width

    def _pipeline(self, task: type):
        """A fresh pipeline object of the task (see the module docstring) around the shared modules."""
        scheduler = type(self.pipeline.scheduler).from_config(self.pipeline.scheduler.config)
        pipeline = task.from_pipe(self.pipeline, scheduler=scheduler, **self._serial_tokenizers)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline

    def _sampling_arguments(self, sampling: Sampling, rows: int) -> dict:
        if sampling.negative_prompt and not self.capabilities.negative_prompt:
            raise ValueError(f"negative_prompt: {self._refusal()}")
        arguments = {"num_inference_steps": sampling.num_inference_steps, "guidance_scale": sampling.guidance_scale}
        if sampling.negative_prompt:
            arguments["negative_prompt"] = [sampling.negative_prompt] * rows
        if self.true_cfg_scale is not None:
            arguments["true_cfg_scale"] = self.true_cfg_scale
        return arguments

    def _refusal(self) -> str:
        name = self.text_to_image.__name__
        if "negative_prompt" in self._call:
            return f"{name} uses a negative prompt only with true classifier-free guidance (options.true_cfg_scale > 1)"
        return f"{name} has no negative prompt"

    def _step_hook(self, callback: StepCallback | None, chunk_index: int, chunk_count: int):
        if callback is None:
            return {}
        if not self.capabilities.progress:
            raise ValueError(f"callback: {self.text_to_image.__name__} takes no step callback")

        def on_step_end(pipeline, step, timestep, tensors):
            step_count = pipeline.num_timesteps
            if callback(chunk_index * step_count + step, chunk_count * step_count, None):
                pipeline._interrupt = True  # diffusers' own stop flag: the loop skips what is left
            return tensors

        return {"callback_on_step_end": on_step_end}

    def _in_chunks(self, task: type, rows: list[tuple], callback: StepCallback | None, run) -> list[Image.Image]:
        """run(pipeline, chunk, hook arguments) for each padded chunk of rows; the real images."""
        chunks = padded_chunks(rows, self.images_per_call)
        images: list[Image.Image] = []
        for index, (chunk, real) in enumerate(chunks):
            pipeline = self._pipeline(task)
            output = run(pipeline, chunk, self._step_hook(callback, index, len(chunks)))
            if getattr(pipeline, "interrupt", False):
                raise Interrupted("the step callback stopped the denoising loop")
            flags = getattr(output, NSFW_FLAG, None) or [False] * len(output.images)
            for image, flagged in zip(output.images[:real], flags):
                if flagged:
                    image.info[NSFW_FLAG] = True
                images.append(image)
        return images

    @staticmethod
    def _generators(seeds: Sequence[int]) -> list[torch.Generator]:
        return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]

    def generate(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        sampling: Sampling | None = None,
        callback: StepCallback | None = None,
    ) -> list[Image.Image]:
        """One image per (prompts[i], seeds[i]), at the sampling's size, else the model's."""
        check_rows(prompts, seeds)
        sampling = self.defaults.resolve(sampling)
        height, width = self.capabilities.size.size_of(sampling)

        def run(pipeline, chunk, hook):
            return pipeline(
                prompt=[prompt for prompt, _ in chunk],
                **self._sampling_arguments(sampling, len(chunk)),
                height=height,
                width=width,
                generator=self._generators([seed for _, seed in chunk]),
                **hook,
            )

        return self._in_chunks(AutoPipelineForText2Image, list(zip(prompts, seeds)), callback, run)

    def refine(
        self,
        images: Sequence[Image.Image],
        prompts: Sequence[str],
        seeds: Sequence[int],
        skip_rate: float = 0.5,
        sampling: Sampling | None = None,
        callback: StepCallback | None = None,
    ) -> list[Image.Image]:
        """One variation of images[i] per row at the model's size (or the sampling's): skip_rate is the
        share of the schedule skipped (1 keeps the image, 0 is generate's fresh
        sample); diffusers' image-to-image runs the rest (strength = 1 - skip_rate)."""
        if self.image_to_image is None:
            raise ValueError(f"refine: diffusers has no image-to-image pipeline for {self.text_to_image.__name__}")
        resolved, kept = plan_refine(self.defaults, images, prompts, seeds, skip_rate, sampling)
        steps = resolved.num_inference_steps
        if kept == steps:
            return self.generate(prompts, seeds, sampling, callback)
        height, width = self.capabilities.size.size_of(resolved)
        images = [self._at_size(image, height, width) for image in images]
        if kept == 0:
            return images
        strength = strength_running(kept, steps, self.image_to_image)

        def run(pipeline, chunk, hook):
            return pipeline(
                prompt=[prompt for _, prompt, _ in chunk],
                image=[image for image, _, _ in chunk],
                strength=strength,
                **self._sampling_arguments(resolved, len(chunk)),
                height=height,
                width=width,
                generator=self._generators([seed for _, _, seed in chunk]),
                **hook,
            )

        return self._in_chunks(AutoPipelineForImage2Image, list(zip(images, prompts, seeds)), callback, run)

    @staticmethod
    def _at_size(image: Image.Image, height: int, width: int) -> Image.Image:
        image = image.convert("RGB")
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BICUBIC)
        return image


def strength_running(kept: int, steps: int, image_to_image: type) -> float:
    """The img2img strength at which the pipeline runs exactly `kept` of `steps` steps.
    Pipelines round down either steps * strength (SD, SDXL) or steps * (1 - strength)
    (SD3, FLUX), and in floats kept / steps may land on the wrong side of either, so
    the pipeline's own get_timesteps is asked about kept / steps and its neighbours."""
    strength = kept / steps
    candidates = [strength]
    up = down = strength
    for _ in range(16):
        up, down = math.nextafter(up, math.inf), math.nextafter(down, -math.inf)
        candidates += [up, down]
    for candidate in candidates:
        if 0.0 <= candidate <= 1.0 and _steps_run(image_to_image, steps, candidate) == kept:
            return candidate
    raise ValueError(f"{image_to_image.__name__}: no strength runs {kept} of {steps} steps")


def _steps_run(image_to_image: type, steps: int, strength: float) -> int:
    """How many of `steps` the pipeline's own get_timesteps keeps at this strength,
    asked on a stand-in schedule (it reads only the scheduler's timesteps and order)."""
    schedule = SimpleNamespace(timesteps=torch.arange(steps, 0, -1), order=1, set_begin_index=lambda index: None)
    _, count = image_to_image.get_timesteps(SimpleNamespace(scheduler=schedule), steps, strength, "cpu")
    return count


def _scheduler_by_name(pipeline: DiffusionPipeline, name: str, options: dict):
    """The named diffusers scheduler from the pipeline's scheduler config, if it is one of its compatibles."""
    compatible = {scheduler.__name__: scheduler for scheduler in pipeline.scheduler.compatibles}
    compatible[type(pipeline.scheduler).__name__] = type(pipeline.scheduler)
    if name not in compatible:
        raise ValueError(f"scheduler: {name!r} does not fit {type(pipeline).__name__}; one of {sorted(compatible)}")
    return compatible[name].from_config(pipeline.scheduler.config, **options)


def _fuse_lora(pipeline: DiffusionPipeline, lora: Lora, adapter_name: str) -> None:
    """The adapter's weights added into the model's own, so serving runs at the model's
    speed and every request gets it; per-request adapters would split batches."""
    if not hasattr(pipeline, "load_lora_weights"):
        raise ValueError(f"loras: {type(pipeline).__name__} takes no LoRA adapters")
    extra = {"weight_name": lora.weight_name} if lora.weight_name else {}
    pipeline.load_lora_weights(lora.weights, adapter_name=adapter_name, **extra)
    pipeline.fuse_lora(adapter_names=[adapter_name], lora_scale=lora.scale)
    pipeline.unload_lora_weights()
