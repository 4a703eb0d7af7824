"""Text-to-image and image-to-image with the shapes-world diffusion model.

    from dalleflow.models.diffusion import ShapesDiffusion
    model = ShapesDiffusion.from_pretrained("dalleflow/weights/shapes-diffusion")
    images = model.generate(["a red circle on the left on a white background"], num_images=4, seed=0)

Every image gets its own torch.Generator seeded with seed + its index, and the
networks always run `batch_rows` rows at a time (see run_in_fixed_rows), so an
image depends only on its own prompt and seed, never on what else shares the
batch: not in its noise, and not in the last bit of its pixels either.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler, UNet2DConditionModel
from PIL import Image

from dalleflow.models.batching import image_seed, run_in_fixed_rows
from dalleflow.models.devices import default_device, resolve_dtype
from dalleflow.models.diffusion.pixel_space import CoordinateUNet, PixelSpace
from dalleflow.models.diffusion.text_encoder import TextEncoder

from dalleflow.models.steps import Interrupted, StepCallback  # noqa: F401 (the diffusion previews: predicted clean images)


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
        batch_rows: int | None = None,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
    ):
        """batch_rows: the one batch shape the networks run at (guidance makes two
        rows per image); default 4 on a CPU, where this model's per-row cost stops
        falling there, and 32 on a GPU, a whole batch of 16 guided images in one
        call. Images are reproducible for a given value.
        device, dtype: where the networks run (default: the GPU Ray gave the replica,
        else the CPU) and in which precision (default: half on a GPU). The noise is
        drawn on the CPU and the solver runs in float32 wherever the networks run."""
        self.device = torch.device(device or default_device())
        self.dtype = resolve_dtype(dtype, self.device)
        if batch_rows is None:
            batch_rows = 4 if self.device.type == "cpu" else 32
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
        self.batch_rows = batch_rows
        self.denoiser = CoordinateUNet(unet).eval().to(self.device, self.dtype)
        self.text_encoder = text_encoder.eval().to(self.device, self.dtype)
        self.tokenizer = text_encoder.tokenizer()
        self.scheduler_config = scheduler.config
        self.config = config
        self.space = PixelSpace(config.unshuffle_factor)

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        batch_rows: int | None = None,
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
            batch_rows,
            device,
            dtype,
        )

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.denoiser.unet.save_pretrained(folder / "unet")
        self.text_encoder.save_pretrained(folder / "text_encoder")
        DPMSolverMultistepScheduler.from_config(self.scheduler_config).save_pretrained(folder / "scheduler")
        (folder / "pixel_diffusion.json").write_text(json.dumps(dataclasses.asdict(self.config), indent=1))

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
        states, pooled = run_in_fixed_rows(self.text_encoder, self.batch_rows, ids, mask)
        return states, mask, pooled

    @staticmethod
    def _generators(seeds: list[int]) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(s) for s in seeds]

    def _noise(self, generators: list[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
        # Drawn on the CPU: the same seed gives the same noise on every device.
        return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(self.device)

    def _predict(self, latents, timestep, states, mask, pooled) -> torch.Tensor:
        """The denoiser's prediction, in float32 whatever precision it runs in."""
        t = timestep.expand(latents.shape[0])
        rows = (latents.to(self.dtype), t, states, mask, pooled)
        return run_in_fixed_rows(self.denoiser, self.batch_rows, *rows).float()

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
        negative_prompts: list[str],
        timesteps: torch.Tensor,
        scheduler: DPMSolverMultistepScheduler,
        guidance_scale: float,
        callback: StepCallback | None,
        generators: list[torch.Generator] | None = None,
    ) -> list[Image.Image]:
        """generators: one per image, for the noise a stochastic scheduler adds each step
        (drawn per image, so an image never depends on its batch)."""
        is_guided = guidance_scale != 1.0
        text_prompts = prompts + negative_prompts if is_guided else prompts
        states, mask, pooled = self._encode_text(text_prompts)
        for step, timestep in enumerate(timesteps):
            model_input = torch.cat([latents, latents]) if is_guided else latents
            prediction = self._predict(model_input, timestep, states, mask, pooled)
            if is_guided:
                conditional, unconditional = prediction.chunk(2)
                prediction = unconditional + guidance_scale * (conditional - unconditional)
            if callback is not None:
                preview = to_pil(self.space.decode(self._predicted_clean(latents, prediction, timestep, scheduler)))
            step_noise = self._noise(generators, tuple(latents.shape[1:])) if generators else None
            latents = scheduler.step(prediction, timestep, latents, variance_noise=step_noise).prev_sample
            if callback is not None:
                if callback(step, len(timesteps), preview):
                    raise Interrupted(f"stopped after step {step + 1} of {len(timesteps)}")
        return to_pil(self.space.decode(latents))

    def generate(
        self,
        prompts: list[str],
        num_images: int = 1,
        seed: int = 0,
        num_inference_steps: int = 20,
        guidance_scale: float = 3.0,
        negative_prompt: str | None = None,
        callback: StepCallback | None = None,
        seeds: list[int] | None = None,
    ) -> list[Image.Image]:
        """num_images per prompt, prompt-major; image i of the batch uses seeds[i]
        (default image_seed(seed, i))."""
        expanded = [p for p in prompts for _ in range(num_images)]
        seeds = seeds or [image_seed(seed, i) for i in range(len(expanded))]
        size = self.config.image_size // self.config.unshuffle_factor
        channels = 3 * self.config.unshuffle_factor**2
        scheduler = self._new_scheduler()
        scheduler.set_timesteps(num_inference_steps, device=self.device)
        latents = self._noise(self._generators(seeds), (channels, size, size)) * scheduler.init_noise_sigma
        negatives = [negative_prompt or ""] * len(expanded)
        return self._denoise(latents, expanded, negatives, scheduler.timesteps, scheduler, guidance_scale, callback)

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
        """Variations of an image: skip_rate is the share of the schedule skipped
        (dalle-flow's meaning; diffusers' strength = 1 - skip_rate), the rest solved
        stochastically, so variations differ from the input and from each other."""
        if not 0.0 <= skip_rate <= 1.0:
            raise ValueError(f"skip_rate must be within [0, 1], got {skip_rate}")
        scheduler = self._new_scheduler(stochastic=True)
        scheduler.set_timesteps(num_inference_steps, device=self.device)
        skipped = min(int(round(skip_rate * num_inference_steps)), num_inference_steps)
        timesteps = scheduler.timesteps[skipped:]
        generators = self._generators([image_seed(seed, i) for i in range(num_images)])
        clean = self.space.encode(from_pil(image, self.config.image_size).unsqueeze(0).to(self.device))
        clean = clean.expand(num_images, -1, -1, -1)
        if len(timesteps) == 0:
            return to_pil(self.space.decode(clean))
        noise = self._noise(generators, tuple(clean.shape[1:]))
        latents = scheduler.add_noise(clean, noise, timesteps[:1].expand(num_images))
        scheduler.set_begin_index(skipped)
        negatives = [negative_prompt or ""] * num_images
        return self._denoise(
            latents, [prompt] * num_images, negatives, timesteps, scheduler, guidance_scale, callback, generators
        )
