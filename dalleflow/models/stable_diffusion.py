"""Stable Diffusion (diffusers) as a generator and as the refiner.

    from dalleflow.models.stable_diffusion import StableDiffusion
    model = StableDiffusion.from_pretrained("/models/stable-diffusion-v1-5")   # or a hub id
    images = model.generate(["an astronaut riding a horse"], num_images=4, seed=0)
    variations = model.refine(images[0], "an astronaut riding a horse", skip_rate=0.5, num_images=4)

The weights are a diffusers `save_pretrained` folder (model_index.json, unet/,
vae/, text_encoder/, tokenizer/, scheduler/, optionally safety_checker/).
Text-to-image and image-to-image share one set of weights.

Concurrency: a diffusers pipeline keeps per-call state on itself (the
scheduler's step index, the guidance scale, the interrupt flag; diffusers
issues 7851 and 3672), so two requests on one pipeline corrupt each other.
Every call here builds its own pipeline object with its own scheduler around
the shared modules, which copies no weights.

Seeds: image i of a call seeded s is drawn from its own CPU torch.Generator
seeded s + i, so it is the same image alone or in any batch, on any device.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from PIL import Image

from dalleflow.models.devices import default_device, resolve_dtype
from dalleflow.models.batching import image_seed
from dalleflow.models.steps import Interrupted, StepCallback


class StableDiffusion:
    def __init__(self, pipeline: StableDiffusionPipeline, image_size: int | None = None):
        self.components = pipeline.components
        self.scheduler_config = pipeline.scheduler.config
        # The side the UNet was trained at (512 for v1.5): generate makes it,
        # refine works at it.
        self.image_size = image_size or pipeline.unet.config.sample_size * pipeline.vae_scale_factor
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
    ) -> StableDiffusion:
        """source: a diffusers folder or a hub id; variant: e.g. "fp16" for a
        folder that holds only the *.fp16.safetensors files."""
        device = device or default_device()
        pipeline = StableDiffusionPipeline.from_pretrained(
            str(source), dtype=resolve_dtype(dtype, device), variant=variant
        )
        return cls(pipeline.to(device), image_size=image_size)

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

    def _encode(self, pipeline, prompts: list[str], num_images: int, guidance_scale: float, negative_prompt: str | None):
        is_guided = guidance_scale > 1 and pipeline.unet.config.time_cond_proj_dim is None
        negatives = [negative_prompt] * len(prompts) if negative_prompt else None
        with self._text_lock:
            prompt_embeds, negative_embeds = pipeline.encode_prompt(
                prompts, self.device, num_images, is_guided, negative_prompt=negatives
            )
        return {"prompt_embeds": prompt_embeds, "negative_prompt_embeds": negative_embeds}

    @staticmethod
    def _generators(seed: int, count: int) -> list[torch.Generator]:
        return [torch.Generator("cpu").manual_seed(image_seed(seed, i)) for i in range(count)]

    @staticmethod
    def _step_hook(callback: StepCallback | None):
        if callback is None:
            return None

        def on_step_end(pipeline, step, timestep, tensors):
            if callback(step, pipeline.num_timesteps, None):
                pipeline._interrupt = True  # diffusers' own stop flag: the loop skips what is left
            return tensors

        return on_step_end

    @staticmethod
    def _finished(pipeline, output) -> list[Image.Image]:
        if pipeline.interrupt:
            raise Interrupted("the step callback stopped the denoising loop")
        return output.images

    def generate(
        self,
        prompts: list[str],
        num_images: int = 1,
        seed: int = 0,
        num_inference_steps: int = 20,
        guidance_scale: float = 3.0,
        negative_prompt: str | None = None,
        callback: StepCallback | None = None,
    ) -> list[Image.Image]:
        """num_images per prompt, prompt-major; image i uses seed + i."""
        pipeline = self._pipeline(StableDiffusionPipeline)
        embeds = self._encode(pipeline, prompts, num_images, guidance_scale, negative_prompt)
        output = pipeline(
            **embeds,
            height=self.image_size,
            width=self.image_size,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=self._generators(seed, len(prompts) * num_images),
            callback_on_step_end=self._step_hook(callback),
        )
        return self._finished(pipeline, output)

    def refine(
        self,
        image: Image.Image,
        prompt: str,
        skip_rate: float = 0.5,
        num_images: int = 1,
        seed: int = 0,
        num_inference_steps: int = 20,
        guidance_scale: float = 3.0,
        negative_prompt: str | None = None,
        callback: StepCallback | None = None,
    ) -> list[Image.Image]:
        """Variations of an image at the model's own size: skip_rate is the
        share of the schedule skipped (diffusers' strength = 1 - skip_rate), so
        int(num_inference_steps * (1 - skip_rate)) steps run."""
        if not 0.0 <= skip_rate <= 1.0:
            raise ValueError(f"skip_rate must be within [0, 1], got {skip_rate}")
        image = image.convert("RGB")
        if image.size != (self.image_size, self.image_size):
            image = image.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        strength = 1.0 - skip_rate
        if int(num_inference_steps * strength) == 0:
            # diffusers cannot run an empty schedule; skipping all of it keeps the image.
            return [image.copy() for _ in range(num_images)]
        pipeline = self._pipeline(StableDiffusionImg2ImgPipeline)
        embeds = self._encode(pipeline, [prompt], num_images, guidance_scale, negative_prompt)
        output = pipeline(
            **embeds,
            image=image,
            strength=strength,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=self._generators(seed, num_images),
            callback_on_step_end=self._step_hook(callback),
        )
        return self._finished(pipeline, output)
