"""Text-to-image and image-to-image with the shapes-world diffusion model.

    from dalleflow.models.contract import Sampling, expand
    from dalleflow.models.diffusion import ShapesDiffusion
    model = ShapesDiffusion.from_pretrained("dalleflow/weights/shapes-diffusion")
    images = model.generate(*expand(["a red circle on the left on a white background"], num_images=4, seed=0))
    variations = model.refine([images[0]] * 2, *expand(["a red circle on the left on a white background"], 2, seed=5))

Every image gets its own torch.Generator seeded with its row's seed, and the
networks always run 2 x `images_per_call` rows at a time (see run_in_fixed_rows),
so an image depends only on its own prompt and seed, never on what else shares
the batch: not in its noise, and not in the last bit of its pixels either.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler, UNet2DConditionModel
from PIL import Image

from dalleflow.models.batching import run_in_fixed_rows
from dalleflow.models.contract import (
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
from dalleflow.models.diffusion.pixel_space import CoordinateUNet, PixelSpace
from dalleflow.models.diffusion.text_encoder import TextEncoder

# When the weights folder has no generation_config.json.
FAMILY_DEFAULTS = SamplingDefaults(num_inference_steps=20, guidance_scale=3.0)


@dataclasses.dataclass
class PixelDiffusionConfig:
    image_size: int = 32  # canvas side in pixels
    unshuffle_factor: int = 2  # pixels folded into channels before the UNet


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    array = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(a) for a in array.permute(0, 2, 3, 1).cpu().numpy()]


def from_pil(image: Image.Image, size: int) -> torch.Tensor:
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    array = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float()
    return array / 127.5 - 1


class ShapesDiffusion:
    def __init__(
        self,
        unet: UNet2DConditionModel,
        text_encoder: TextEncoder,
        scheduler: DPMSolverMultistepScheduler,
        config: PixelDiffusionConfig,
        images_per_call: int | None = None,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        defaults: SamplingDefaults = FAMILY_DEFAULTS,
    ):
        """images_per_call: the one batch shape the networks run at, in images (a
        guided image is two rows: 2 x images_per_call rows a call, guided or not);
        default 2 on a CPU, where this model's per-row cost stops falling at 4 rows,
        and 16 on a GPU. Images are reproducible for a given value.
        device, dtype: where the networks run (default: the GPU Ray gave the replica,
        else the CPU) and in which precision (default: half on a GPU). The noise is
        drawn on the CPU and the solver runs in float32 wherever the networks run."""
        self.device = torch.device(device or default_device())
        self.dtype = resolve_dtype(dtype, self.device)
        if images_per_call is None:
            images_per_call = 2 if self.device.type == "cpu" else 16
        if images_per_call < 1:
            raise ValueError(f"images_per_call must be at least 1, got {images_per_call}")
        self.images_per_call = images_per_call
        self.defaults = defaults
        self.denoiser = CoordinateUNet(unet).eval().to(self.device, self.dtype)
        self.text_encoder = text_encoder.eval().to(self.device, self.dtype)
        self.tokenizer = text_encoder.tokenizer()
        self.scheduler_config = scheduler.config
        self.config = config
        self.space = PixelSpace(config.unshuffle_factor)

    @property
    def _rows(self) -> int:
        return 2 * self.images_per_call

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        images_per_call: int | None = None,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> ShapesDiffusion:
        folder = Path(folder)
        config = PixelDiffusionConfig(**json.loads((folder / "pixel_diffusion.json").read_text()))
        device = device or default_device()
        dtype = resolve_dtype(dtype, device)  # loaded in it, as diffusers asks, not cast after
        return cls(
            UNet2DConditionModel.from_pretrained(folder / "unet", dtype=dtype),
            TextEncoder.from_pretrained(folder / "text_encoder"),
            DPMSolverMultistepScheduler.from_pretrained(folder / "scheduler"),
            config,
            images_per_call,
            device,
            dtype,
            SamplingDefaults.of_checkpoint(folder, FAMILY_DEFAULTS),
        )

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.denoiser.unet.save_pretrained(folder / "unet")
        self.text_encoder.save_pretrained(folder / "text_encoder")
        DPMSolverMultistepScheduler.from_config(self.scheduler_config).save_pretrained(folder / "scheduler")
        (folder / "pixel_diffusion.json").write_text(json.dumps(dataclasses.asdict(self.config), indent=1))
        (folder / "generation_config.json").write_text(json.dumps(dataclasses.asdict(self.defaults), indent=1))

    def _new_scheduler(self, stochastic: bool = False) -> DPMSolverMultistepScheduler:
        # A scheduler holds a step index: one per call keeps concurrent calls apart.
        if stochastic:
            # img2img is SDEdit, which solves the reverse SDE: the ODE solver (dpmsolver++) carries
            # a noised image back to the very mode it came from, so its "variations" are near
            # copies (1.8% mean change at skip_rate 0.5); the SDE one draws fresh noise each step.
            return DPMSolverMultistepScheduler.from_config(self.scheduler_config, algorithm_type="sde-dpmsolver++")
        return DPMSolverMultistepScheduler.from_config(self.scheduler_config)

    def _encode_text(self, prompts: list[str]):
        ids, mask = (tensor.to(self.device) for tensor in self.tokenizer(prompts))
        states, pooled = run_in_fixed_rows(self.text_encoder, self._rows, ids, mask)
        return states, mask, pooled

    @staticmethod
    def _generators(seeds: Sequence[int]) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(s) for s in seeds]

    def _noise(self, generators: list[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
        # Drawn on the CPU: the same seed gives the same noise on every device.
        return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(self.device)

    def _predict(self, latents, timestep, states, mask, pooled) -> torch.Tensor:
        """The denoiser's prediction, in float32 whatever precision it runs in."""
        t = timestep.expand(latents.shape[0])
        rows = (latents.to(self.dtype), t, states, mask, pooled)
        return run_in_fixed_rows(self.denoiser, self._rows, *rows).float()

    @staticmethod
    def _predicted_clean(latents, prediction, timestep, scheduler) -> torch.Tensor:
        """The clean image the model sees at this step (x0 from the noise prediction): the
        preview a step callback gets, which sharpens as the loop goes on."""
        alpha_bar = scheduler.alphas_cumprod[int(timestep)].to(latents.dtype)
        if scheduler.config.prediction_type == "v_prediction":
            return alpha_bar.sqrt() * latents - (1 - alpha_bar).sqrt() * prediction
        return (latents - (1 - alpha_bar).sqrt() * prediction) / alpha_bar.sqrt()

    @torch.inference_mode()
    def _denoise(
        self,
        latents: torch.Tensor,
        prompts: list[str],
        sampling: Sampling,
        timesteps: torch.Tensor,
        scheduler: DPMSolverMultistepScheduler,
        callback: StepCallback | None,
        generators: list[torch.Generator] | None = None,
    ) -> list[Image.Image]:
        """generators: one per image, for the noise a stochastic scheduler adds each step
        (drawn per image, so an image never depends on its batch)."""
        guidance_scale = sampling.guidance_scale
        is_guided = guidance_scale != 1.0
        negatives = [sampling.negative_prompt] * len(prompts)
        states, mask, pooled = self._encode_text(prompts + negatives if is_guided else prompts)
        for step, timestep in enumerate(timesteps):
            model_input = torch.cat([latents, latents]) if is_guided else latents
            prediction = self._predict(model_input, timestep, states, mask, pooled)
            if is_guided:
                conditional, unconditional = prediction.chunk(2)
                prediction = unconditional + guidance_scale * (conditional - unconditional)
            current = latents
            step_noise = self._noise(generators, tuple(latents.shape[1:])) if generators else None
            latents = scheduler.step(prediction, timestep, latents, variance_noise=step_noise).prev_sample
            if callback is not None:

                def previews(current=current, prediction=prediction, timestep=timestep) -> list[Image.Image]:
                    clean = self._predicted_clean(current, prediction, timestep, scheduler)
                    return to_pil(self.space.decode(clean))

                if callback(step, len(timesteps), previews):
                    raise Interrupted(f"stopped after step {step + 1} of {len(timesteps)}")
        return to_pil(self.space.decode(latents))

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(size=SizeLimits(own=(self.config.image_size, self.config.image_size)),
                            vocabulary=self.tokenizer.known_words)

    def generate(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        sampling: Sampling | None = None,
        callback: StepCallback | None = None,
    ) -> list[Image.Image]:
        """One image per (prompts[i], seeds[i])."""
        check_rows(prompts, seeds)
        sampling = self.defaults.resolve(sampling)
        self.capabilities.size.size_of(sampling)
        size = self.config.image_size // self.config.unshuffle_factor
        channels = 3 * self.config.unshuffle_factor**2
        scheduler = self._new_scheduler()
        scheduler.set_timesteps(sampling.num_inference_steps, device=self.device)
        latents = self._noise(self._generators(seeds), (channels, size, size)) * scheduler.init_noise_sigma
        return self._denoise(latents, list(prompts), sampling, scheduler.timesteps, scheduler, callback)

    def refine(
        self,
        images: Sequence[Image.Image],
        prompts: Sequence[str],
        seeds: Sequence[int],
        skip_rate: float = 0.5,
        sampling: Sampling | None = None,
        callback: StepCallback | None = None,
    ) -> list[Image.Image]:
        """One variation of images[i] per row: skip_rate is the share of the schedule
        skipped (1 keeps the image, 0 is generate's fresh sample), the rest solved
        stochastically, so variations differ from the input and from each other."""
        resolved, kept = plan_refine(self.defaults, images, prompts, seeds, skip_rate, sampling)
        self.capabilities.size.size_of(resolved)
        steps = resolved.num_inference_steps
        if kept == steps:
            return self.generate(prompts, seeds, sampling, callback)
        clean = self.space.encode(torch.stack([from_pil(image, self.config.image_size) for image in images]).to(self.device))
        if kept == 0:
            return to_pil(self.space.decode(clean))
        scheduler = self._new_scheduler(stochastic=True)
        scheduler.set_timesteps(steps, device=self.device)
        timesteps = scheduler.timesteps[steps - kept :]
        generators = self._generators(seeds)
        noise = self._noise(generators, tuple(clean.shape[1:]))
        latents = scheduler.add_noise(clean, noise, timesteps[:1].expand(len(seeds)))
        scheduler.set_begin_index(steps - kept)
        return self._denoise(latents, list(prompts), resolved, timesteps, scheduler, callback, generators)
