"""Stable Diffusion (diffusers) as a TextToImage and an ImageToImage model of the contract.

    from dalleflow.models.contract import Sampling, expand
    from dalleflow.models.stable_diffusion import StableDiffusion
    model = StableDiffusion.from_pretrained("/models/stable-diffusion-v1-5")   # or a hub id
    images = model.generate(*expand(["an astronaut riding a horse"], num_images=4, seed=0))
    variations = model.refine([images[0]] * 4, *expand(["an astronaut riding a horse"], 4, seed=9), skip_rate=0.5)

The weights are a diffusers `save_pretrained` folder (model_index.json, unet/,
vae/, text_encoder/, tokenizer/, scheduler/, optionally safety_checker/ and a
generation_config.json of our own with num_inference_steps and guidance_scale).
Text-to-image and image-to-image share one set of weights.

Concurrency: a diffusers pipeline keeps per-call state on itself (the
scheduler's step index, the guidance scale, the interrupt flag; diffusers
issues 7851 and 3672), so two requests on one pipeline corrupt each other.
Every call here builds its own pipeline object with its own scheduler around
the shared modules, which copies no weights.

Seeds and batches: row i is drawn from its own CPU torch.Generator seeded
seeds[i], and the pipeline always runs `images_per_call` rows at a time (the
last call padded), so an image is the same alone or in any batch, on any device.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from PIL import Image

from dalleflow.models.batching import padded_chunks
from dalleflow.models.contract import (
    Interrupted,
    Sampling,
    SamplingDefaults,
    StepCallback,
    check_rows,
    plan_refine,
)
from dalleflow.models.devices import default_device, resolve_dtype

# diffusers' own defaults for StableDiffusionPipeline.__call__.
FAMILY_DEFAULTS = SamplingDefaults(num_inference_steps=50, guidance_scale=7.5)


class StableDiffusion:
    def __init__(
        self,
        pipeline: StableDiffusionPipeline,
        image_size: int | None = None,
        images_per_call: int | None = None,
        defaults: SamplingDefaults = FAMILY_DEFAULTS,
    ):
        """images_per_call: the rows of every pipeline call, padded (default 1 on a
        CPU, 8 on a GPU: 16 UNet rows with guidance)."""
        self.components = pipeline.components
        self.scheduler_config = pipeline.scheduler.config
        # The side the UNet was trained at (512 for v1.5): generate makes it,
        # refine works at it.
        self.image_size = image_size or pipeline.unet.config.sample_size * pipeline.vae_scale_factor
        if images_per_call is None:
            images_per_call = 1 if self.device.type == "cpu" else 8
        if images_per_call < 1:
            raise ValueError(f"images_per_call must be at least 1, got {images_per_call}")
        self.images_per_call = images_per_call
        self.defaults = defaults
        # The tokenizer is a Rust object that refuses concurrent use ("Already
        # borrowed"); the text encoder is cheap next to the UNet, so one lock.
        self._text_lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        variant: str | None = None,
        image_size: int | None = None,
        images_per_call: int | None = None,
    ) -> StableDiffusion:
        """source: a diffusers folder or a hub id; variant: e.g. "fp16" for a
        folder that holds only the *.fp16.safetensors files."""
        device = device or default_device()
        pipeline = StableDiffusionPipeline.from_pretrained(
            str(source), dtype=resolve_dtype(dtype, device), variant=variant
        )
        folder = Path(source) if Path(source).is_dir() else None
        defaults = SamplingDefaults.of_checkpoint(folder, FAMILY_DEFAULTS)
        return cls(pipeline.to(device), image_size=image_size, images_per_call=images_per_call, defaults=defaults)

    @property
    def device(self) -> torch.device:
        return self.components["unet"].device

    def _pipeline(self, pipeline_class):
        # A fresh pipeline object and scheduler per call, around the shared modules
        # (see the module docstring): the state diffusers keeps on them stays per call.
        scheduler = type(self.components["scheduler"]).from_config(self.scheduler_config)
        pipeline = pipeline_class(
            **{**self.components, "scheduler": scheduler},
            # Only a checkpoint without a safety checker runs without one.
            requires_safety_checker=self.components["safety_checker"] is not None,
        )
        pipeline.set_progress_bar_config(disable=True)
        return pipeline

    def _encode(self, pipeline, prompts: list[str], sampling: Sampling):
        is_guided = sampling.guidance_scale > 1 and pipeline.unet.config.time_cond_proj_dim is None
        negatives = [sampling.negative_prompt] * len(prompts) if sampling.negative_prompt else None
        with self._text_lock:
            prompt_embeds, negative_embeds = pipeline.encode_prompt(
                prompts, self.device, 1, is_guided, negative_prompt=negatives
            )
        return {"prompt_embeds": prompt_embeds, "negative_prompt_embeds": negative_embeds}

    @staticmethod
    def _step_hook(callback: StepCallback | None, chunk_index: int, chunk_count: int):
        if callback is None:
            return None

        def on_step_end(pipeline, step, timestep, tensors):
            # No previews: decoding latents with the VAE each step costs a step's worth.
            step_count = pipeline.num_timesteps
            if callback(chunk_index * step_count + step, chunk_count * step_count, None):
                pipeline._interrupt = True  # diffusers' own stop flag: the loop skips what is left
            return tensors

        return on_step_end

    def _in_chunks(self, pipeline_class, rows: list[tuple], callback: StepCallback | None, run) -> list[Image.Image]:
        """run(pipeline, chunk, hook) for each padded chunk of rows; the real images."""
        chunks = padded_chunks(rows, self.images_per_call)
        images: list[Image.Image] = []
        for index, (chunk, real) in enumerate(chunks):
            pipeline = self._pipeline(pipeline_class)
            output = run(pipeline, chunk, self._step_hook(callback, index, len(chunks)))
            if pipeline.interrupt:
                raise Interrupted("the step callback stopped the denoising loop")
            images += output.images[:real]
        return images

    def _generators(self, seeds: Sequence[int]) -> list[torch.Generator]:
        return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]

    def generate(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        sampling: Sampling | None = None,
        callback: StepCallback | None = None,
    ) -> list[Image.Image]:
        """One image per (prompts[i], seeds[i]), at the model's own size."""
        check_rows(prompts, seeds)
        sampling = self.defaults.resolve(sampling)

        def run(pipeline, chunk, hook):
            return pipeline(
                **self._encode(pipeline, [prompt for prompt, _ in chunk], sampling),
                height=self.image_size,
                width=self.image_size,
                num_inference_steps=sampling.num_inference_steps,
                guidance_scale=sampling.guidance_scale,
                generator=self._generators([seed for _, seed in chunk]),
                callback_on_step_end=hook,
            )

        return self._in_chunks(StableDiffusionPipeline, list(zip(prompts, seeds)), callback, run)

    def refine(
        self,
        images: Sequence[Image.Image],
        prompts: Sequence[str],
        seeds: Sequence[int],
        skip_rate: float = 0.5,
        sampling: Sampling | None = None,
        callback: StepCallback | None = None,
    ) -> list[Image.Image]:
        """One variation of images[i] per row at the model's own size: skip_rate is
        the share of the schedule skipped (1 keeps the image, 0 is generate's fresh
        sample); diffusers' img2img runs the rest (strength = 1 - skip_rate)."""
        resolved, kept = plan_refine(self.defaults, images, prompts, seeds, skip_rate, sampling)
        steps = resolved.num_inference_steps
        if kept == steps:
            return self.generate(prompts, seeds, sampling, callback)
        images = [self._at_model_size(image) for image in images]
        if kept == 0:
            return images
        # diffusers runs int(steps * strength) steps: the half step keeps float rounding off the floor.
        strength = min(1.0, (kept + 0.5) / steps)

        def run(pipeline, chunk, hook):
            return pipeline(
                **self._encode(pipeline, [prompt for _, prompt, _ in chunk], resolved),
                image=[image for image, _, _ in chunk],
                strength=strength,
                num_inference_steps=steps,
                guidance_scale=resolved.guidance_scale,
                generator=self._generators([seed for _, _, seed in chunk]),
                callback_on_step_end=hook,
            )

        return self._in_chunks(StableDiffusionImg2ImgPipeline, list(zip(images, prompts, seeds)), callback, run)

    def _at_model_size(self, image: Image.Image) -> Image.Image:
        image = image.convert("RGB")
        if image.size != (self.image_size, self.image_size):
            image = image.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        return image
