"""DALL·E as a TextToImage model of the contract (dalleflow/models/contract.py).

The contract's sampling fields are diffusers' names; here they mean:
- guidance_scale -> super-conditioning's condition_scale (dalle-mini's
  classifier-free guidance on the logits: uncond + scale * (cond - uncond));
- negative_prompt -> the prompt subtracted in place of "" (what a negative
  prompt means in diffusers' guidance too);
- num_inference_steps -> unused: an autoregressive model always makes its
  image_length tokens.
temperature, top_k and top_p are the deployment's options (serve config), not
the request's: they are properties of the model that a user of the HTTP API
should not need to know. A checkpoint folder may carry its own defaults for them
and for guidance_scale in generation_config.json (as transformers' checkpoints
do); options override temperature, top_k and top_p.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from dalleflow.models.contract import (
    GENERATION_CONFIG,
    Capabilities,
    Sampling,
    SamplingDefaults,
    SizeLimits,
    StepCallback,
    check_rows,
)
from dalleflow.models.dalle.pipeline import DallePipeline

SAMPLING_OPTIONS = ("temperature", "top_k", "top_p")
# dalle-mini's own examples sample at super-conditioning 10.
FAMILY_DEFAULTS = SamplingDefaults(num_inference_steps=None, guidance_scale=10.0)
DEFAULT_IMAGES_PER_CALL = 4


class DalleGenerator:
    def __init__(self, pipeline: DallePipeline, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, defaults: SamplingDefaults = FAMILY_DEFAULTS,
                 images_per_call: int = DEFAULT_IMAGES_PER_CALL):
        """images_per_call: the rows of every sampling call (DalleBart.generate with
        fixed_rows), padded: XLA's kernels round by batch size, so a fixed shape keeps
        an image's tokens independent of its batch. On this CPU 4 rows sample at
        61 ms per image, 16 at 34 ms and a lone one at 156 ms: 4 costs a request of
        the default 4 images nothing; a GPU wants 16 or more."""
        if images_per_call < 1:
            raise ValueError(f"images_per_call must be at least 1, got {images_per_call}")
        self.pipeline = pipeline
        self.sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
        self.defaults = defaults
        self.images_per_call = images_per_call

    @classmethod
    def from_pretrained(
        cls, dalle_folder: str | Path, vqgan_folder: str | Path, dtype: str | None = None,
        hashtag_word_list: str | Path | None = None, images_per_call: int = DEFAULT_IMAGES_PER_CALL,
        **sampling: float | int | None,
    ) -> DalleGenerator:
        """sampling: temperature, top_k, top_p; unset ones come from the folder's
        generation_config.json, else DalleBart's defaults."""
        unknown = set(sampling) - set(SAMPLING_OPTIONS)
        if unknown:
            raise TypeError(f"unknown sampling options {sorted(unknown)}: {', '.join(SAMPLING_OPTIONS)}")
        saved = Path(dalle_folder) / GENERATION_CONFIG
        saved_values = json.loads(saved.read_text()) if saved.is_file() else {}
        chosen = {key: sampling[key] if key in sampling else saved_values[key]
                  for key in SAMPLING_OPTIONS if key in sampling or key in saved_values}
        pipeline = DallePipeline.from_pretrained(dalle_folder, vqgan_folder, dtype, hashtag_word_list)
        defaults = SamplingDefaults.of_checkpoint(dalle_folder, FAMILY_DEFAULTS)
        return cls(pipeline, **chosen, defaults=defaults, images_per_call=images_per_call)

    @property
    def capabilities(self) -> Capabilities:
        """Its images are the VQGAN's decode of a square token grid: that size only."""
        side = math.isqrt(self.pipeline.model.config.image_length) * 2 ** (len(self.pipeline.vqgan.config.ch_mult) - 1)
        return Capabilities(refine=False, size=SizeLimits(own=(side, side)), vocabulary=self.pipeline.tokenizer.known_words)

    def generate(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        sampling: Sampling | None = None,
        callback: StepCallback | None = None,
    ) -> list[Image.Image]:
        """One image per (prompts[i], seeds[i]). callback: after each eighth of the
        tokens of each call of images_per_call rows; previews decode the tokens so far."""
        check_rows(prompts, seeds)
        sampling = self.defaults.resolve(sampling)
        self.capabilities.size.size_of(sampling)
        return self.pipeline.generate(
            list(prompts), 1, seeds=list(seeds), condition_scale=sampling.guidance_scale,
            negative_prompt=sampling.negative_prompt, callback=callback, batch_rows=self.images_per_call,
            fixed_rows=True, **self.sampling,
        )
