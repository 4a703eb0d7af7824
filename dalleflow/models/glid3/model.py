"""GLID-3 XL, dalle-flow's second generator and its refiner, as a TextToImage and an
ImageToImage model of the contract, on diffusers parts (see convert.py).

    from dalleflow.models.glid3 import Glid3
    model = Glid3.from_pretrained("/models/glid-3-xl", tokenizer="/models/bert-base-uncased",
                                  clip=ClipRanker.from_pretrained("local-dir:/models/clip-vit-l-14"))
    images = model.generate(*expand(["a teddy bear on a skateboard"], 4, seed=0))

Sampling is GLID-3 XL's (dalle_flow_glid3/sample.py): 32x32x4 latents per 256 px image,
latent diffusion's beta schedule of 1000 steps, eps predicted with the BERT context (and, for
finetune.pt, the CLIP ViT-L/14 text embedding through clip_proj), classifier-free
guidance against the negative prompt ("" by default), PLMS (diffusers' PNDM without its
Runge-Kutta warmup, latent diffusion's PLMS) or DDIM (eta 0), and the kl-f8 autoencoder
at scale 0.18215. Refine is its init-image path: the image encoded, noised to the first
kept step, denoised for the rest (skip_rate = the share of steps skipped, dalle-flow's
`skip_timesteps = int(steps * skip_rate)`).

Seeds and batches: each row's noise (and its init image's latent sample) comes from its
own CPU generator, and the UNet always runs images_per_call images (2 x rows with
guidance), so an image is the same alone or in any batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, PNDMScheduler, UNet2DConditionModel
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
from dalleflow.models.glid3.convert import convert_bert, convert_unet, load_state_dict

# dalle-flow's GLID-3 XL executor: 100 steps; GLID-3 XL's guidance 5.
FAMILY_DEFAULTS = SamplingDefaults(num_inference_steps=100, guidance_scale=5.0)
LATENT_SCALE = 0.18215
SCHEDULERS = ("plms", "ddim")


def scheduler_of(name: str):
    """GLID-3 XL's schedule: its "linear" betas, which its gaussian_diffusion.py replaced by
    latent diffusion's (linear in sqrt(beta) from 0.00085 to 0.012 over 1000 steps: diffusers'
    scaled_linear), its evenly strided respacing ("leading"), the final step to alpha 1."""
    common = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                  set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")  # fmt: skip
    if name == "ddim":
        return DDIMScheduler(**common, clip_sample=False)
    if name == "plms":
        return PNDMScheduler(**common, skip_prk_steps=True)
    raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {name!r}")


class Glid3:
    def __init__(
        self,
        unet: UNet2DConditionModel,
        bert: torch.nn.Module,
        tokenizer: Any,
        vae: AutoencoderKL,
        clip: Any = None,
        scheduler: str = "plms",
        image_size: int = 256,
        images_per_call: int | None = None,
        defaults: SamplingDefaults = FAMILY_DEFAULTS,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
    ):
        """clip: an object with `model.encode_text` and `tokenizer` (a ClipRanker), needed by a
        UNet with clip_proj (finetune.pt). images_per_call: images per UNet call (default
        1 on a CPU, 8 on a GPU)."""
        self.device = torch.device(device or default_device())
        self.dtype = resolve_dtype(dtype, self.device)
        self.unet = unet.to(self.device, self.dtype).eval()
        self.bert = bert.to(self.device, self.dtype).eval()
        self.vae = vae.to(self.device, self.dtype).eval()
        self.tokenizer = tokenizer
        self.takes_clip = unet.config.class_embed_type == "simple_projection"
        if self.takes_clip and clip is None:
            raise ValueError("clip: this UNet (finetune.pt) adds a CLIP ViT-L/14 text embedding through clip_proj; "
                             "name the open_clip model in options.clip")  # fmt: skip
        self.clip = clip if self.takes_clip else None
        scheduler_of(scheduler)
        self.scheduler_name = scheduler
        self.image_size = image_size
        self.images_per_call = images_per_call or (1 if self.device.type == "cpu" else 8)
        self.defaults = defaults
        self.capabilities.size.size_of(Sampling(height=image_size, width=image_size))  # refuses a size it cannot make

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        tokenizer: str | Path,
        unet: str | None = None,
        bert: str = "bert.pt",
        vae: str | Path = "kl-f8.pt",
        clip: Any = None,
        **options: Any,
    ) -> Glid3:
        """folder: GLID-3 XL's files as published. unet: finetune.pt or diffusion.pt (default:
        finetune.pt where the folder has it). vae: kl-f8.pt in the folder, or any folder or
        file of the kl-f8 autoencoder (see vae.py), such as Stable Diffusion v1's vae/.
        tokenizer: a bert-base-uncased folder. Other options: see __init__."""
        from transformers import BertTokenizerFast

        from dalleflow.models.glid3.vae import load_kl_f8

        folder = Path(folder)
        unet_file = folder / (unet or ("finetune.pt" if (folder / "finetune.pt").is_file() else "diffusion.pt"))
        vae_source = Path(vae) if Path(vae).is_absolute() else folder / vae
        return cls(
            convert_unet(load_state_dict(unet_file)), convert_bert(load_state_dict(folder / bert)),
            BertTokenizerFast.from_pretrained(str(tokenizer)), load_kl_f8(vae_source), clip=clip,
            defaults=SamplingDefaults.of_checkpoint(folder, FAMILY_DEFAULTS), **options,
        )  # fmt: skip

    @property
    def capabilities(self) -> Capabilities:
        # The UNet halves the 8x-downsampled latent at each level but the last.
        levels = len(self.unet.config.block_out_channels)
        multiple = 8 * 2 ** (levels - 1)
        return Capabilities(size=SizeLimits(own=(self.image_size, self.image_size), multiple=multiple, largest=1024))

    # Text.

    @torch.inference_mode()
    def conditions(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(BERT context [n, 77, width], CLIP text embedding [n, dim] or None) of each prompt."""
        tokens = self.tokenizer(list(prompts), truncation=True, max_length=77, padding="max_length",
                                return_tensors="pt").input_ids.to(self.device)  # fmt: skip
        context = self.bert(tokens)[0]
        embedding = None
        if self.takes_clip:
            text = self.clip.tokenizer(list(prompts)).to(self.clip.device)
            embedding = self.clip.model.encode_text(text).to(self.device, self.dtype)
        return context, embedding

    # Sampling.

    def _timesteps(self, steps: int, kept: int | None = None):
        """(a fresh scheduler, the timesteps to run): all of them, or the last `kept`. PLMS
        evaluates its first step twice (diffusers' PNDM repeats the second timestep), so a
        tail of its schedule repeats its own second timestep the same way."""
        scheduler = scheduler_of(self.scheduler_name)
        scheduler.set_timesteps(steps, device=self.device)
        timesteps = scheduler.timesteps
        if kept is not None:
            tail = torch.unique_consecutive(timesteps)[steps - kept :]
            timesteps = tail if self.scheduler_name == "ddim" or len(tail) < 2 else torch.cat([tail[:2], tail[1:]])
        return scheduler, timesteps

    @staticmethod
    def _generators(seeds: Sequence[int]) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(seed) for seed in seeds]

    @staticmethod
    def _noise(generators: Sequence[torch.Generator], height: int, width: int) -> torch.Tensor:
        return torch.stack([torch.randn((4, height // 8, width // 8), generator=generator) for generator in generators])

    @torch.inference_mode()
    def denoise(
        self,
        latents: torch.Tensor,
        conditions: tuple[torch.Tensor, torch.Tensor | None],
        unconditions: tuple[torch.Tensor, torch.Tensor | None],
        scheduler,
        timesteps: torch.Tensor,
        guidance_scale: float,
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        """latents run through `timesteps` with classifier-free guidance as GLID-3 XL's model_fn
        guides: uncond + scale * (cond - uncond) on the first 3 of the 4 latent channels, the
        4th the conditional prediction as it is (inherited from GLIDE, where channels 3: were
        the variance; GLID-3 XL's images come from this), one UNet call for both halves."""
        context, embedding = conditions
        uncontext, unembedding = unconditions

        def guided_eps(x, t, context, uncontext, *embeddings):
            both = torch.cat([x, x]).to(self.dtype)
            labels = {"class_labels": torch.cat(embeddings)} if embeddings else {}
            eps = self.unet(both, t, encoder_hidden_states=torch.cat([context, uncontext]), **labels).sample.float()
            cond, uncond = eps.chunk(2)
            guided = uncond[:, :3] + guidance_scale * (cond[:, :3] - uncond[:, :3])
            return torch.cat([guided, cond[:, 3:]], dim=1)

        latents = latents.to(self.device, torch.float32)
        embeddings = (embedding, unembedding) if self.takes_clip else ()
        for index, t in enumerate(timesteps):
            eps = run_in_fixed_rows(lambda *rows: guided_eps(rows[0], t, *rows[1:]), self.images_per_call,
                                    latents, context, uncontext, *embeddings)  # fmt: skip
            output = scheduler.step(eps, t, latents)
            latents = output.prev_sample
            if callback is not None:
                estimate = getattr(output, "pred_original_sample", None)
                previews = (lambda estimate=estimate: self.decode(estimate)) if estimate is not None else None
                if callback(index, len(timesteps), previews):
                    raise Interrupted(f"stopped after step {index + 1} of {len(timesteps)}")
        return latents

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        """One image per latent, decoded one at a time (a fixed shape: see batching.py)."""
        images = []
        for row in latents:
            pixels = self.vae.decode((row[None] / LATENT_SCALE).to(self.dtype)).sample[0].float()
            array = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            images.append(Image.fromarray(np.ascontiguousarray(array)))
        return images

    @torch.inference_mode()
    def encode(self, images: Sequence[Image.Image], generators: Sequence[torch.Generator]) -> torch.Tensor:
        """Each image's latent, sampled (as GLID-3 XL does) with its row's own generator."""
        latents = []
        for image, generator in zip(images, generators):
            pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
            posterior = self.vae.encode(pixels[None].to(self.device, self.dtype)).latent_dist
            noise = torch.randn(posterior.mean.shape, generator=generator)
            sample = posterior.mean + posterior.std * noise.to(posterior.mean)
            latents.append(sample[0].float() * LATENT_SCALE)
        return torch.stack(latents)

    def _unconditions(self, sampling: Sampling, rows: int):
        context, embedding = self.conditions([sampling.negative_prompt or ""])
        return context.expand(rows, -1, -1), None if embedding is None else embedding.expand(rows, -1)

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
        height, width = self.capabilities.size.size_of(sampling)
        scheduler, timesteps = self._timesteps(sampling.num_inference_steps)
        latents = self._noise(self._generators(seeds), height, width) * scheduler.init_noise_sigma
        latents = self.denoise(latents, self.conditions(prompts), self._unconditions(sampling, len(prompts)),
                               scheduler, timesteps, sampling.guidance_scale, callback)  # fmt: skip
        return self.decode(latents)

    def refine(
        self,
        images: Sequence[Image.Image],
        prompts: Sequence[str],
        seeds: Sequence[int],
        skip_rate: float = 0.5,
        sampling: Sampling | None = None,
        callback: StepCallback | None = None,
    ) -> list[Image.Image]:
        """One variation of images[i] per row (see the module docstring)."""
        resolved, kept = plan_refine(self.defaults, images, prompts, seeds, skip_rate, sampling)
        steps = resolved.num_inference_steps
        if kept == steps:
            return self.generate(prompts, seeds, sampling, callback)
        height, width = self.capabilities.size.size_of(resolved)
        images = [image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
                  if image.size != (width, height) else image.convert("RGB") for image in images]  # fmt: skip
        if kept == 0:
            return images
        scheduler, timesteps = self._timesteps(steps, kept)
        generators = self._generators(seeds)
        noise = self._noise(generators, height, width)  # first from each row's generator, as generate draws it
        latents = scheduler.add_noise(self.encode(images, generators), noise, timesteps[:1])
        latents = self.denoise(latents, self.conditions(prompts), self._unconditions(resolved, len(prompts)),
                               scheduler, timesteps, resolved.guidance_scale, callback)  # fmt: skip
        return self.decode(latents)
