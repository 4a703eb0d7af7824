"""DALL·E behind the generator interface the flow calls (as the diffusion models):
generate(prompts, num_images, seed | seeds, guidance_scale, negative_prompt, ...).

The flow's sampling fields are diffusers' names; here they mean:
- guidance_scale -> super-conditioning's condition_scale (dalle-mini's
  classifier-free guidance on the logits: uncond + scale * (cond - uncond));
- negative_prompt -> the prompt subtracted in place of "" (what a negative
  prompt means in diffusers' guidance too);
- num_inference_steps -> unused: an autoregressive model always makes its
  image_length tokens.
temperature, top_k and top_p are the deployment's options (serve config), not
the request's: they are properties of the model that a user of the HTTP API
should not need to know. A checkpoint folder may carry its own defaults for them
in generation_config.json (as transformers' checkpoints do); options override it.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from dalleflow.models.dalle.pipeline import DallePipeline
from dalleflow.models.steps import StepCallback


GENERATION_CONFIG = "generation_config.json"
SAMPLING_OPTIONS = ("temperature", "top_k", "top_p", "condition_scale")
DEFAULT_CONDITION_SCALE = 3.0
DEFAULT_BATCH_ROWS = 16


class DalleGenerator:
    def __init__(self, pipeline: DallePipeline, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, condition_scale: float = DEFAULT_CONDITION_SCALE,
                 batch_rows: int | None = DEFAULT_BATCH_ROWS):
        """condition_scale: the super-conditioning scale of a request that gives no
        guidance_scale. batch_rows: the most images one sampling call holds (DalleBart.generate);
        a batch of requests larger than that runs in several calls. On this CPU
        16 rows sample at 34 ms per image against 156 ms for a lone one and 61 ms
        at 4 rows: the per-token work of a small model is mostly fixed cost."""
        self.pipeline = pipeline
        self.sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
        self.condition_scale = condition_scale
        self.batch_rows = batch_rows

    @classmethod
    def from_pretrained(
        cls, dalle_folder: str | Path, vqgan_folder: str | Path, dtype: str | None = None,
        hashtag_word_list: str | Path | None = None, batch_rows: int | None = DEFAULT_BATCH_ROWS,
        **sampling: float | int | None,
    ) -> DalleGenerator:
        """sampling: temperature, top_k, top_p, condition_scale; unset ones come from
        the folder's generation_config.json, else the defaults above."""
        unknown = set(sampling) - set(SAMPLING_OPTIONS)
        if unknown:
            raise TypeError(f"unknown sampling options {sorted(unknown)}: {', '.join(SAMPLING_OPTIONS)}")
        saved = Path(dalle_folder) / GENERATION_CONFIG
        defaults = json.loads(saved.read_text()) if saved.is_file() else {}
        chosen = {key: sampling[key] if key in sampling else defaults[key]
                  for key in SAMPLING_OPTIONS if key in sampling or key in defaults}
        pipeline = DallePipeline.from_pretrained(dalle_folder, vqgan_folder, dtype, hashtag_word_list)
        return cls(pipeline, **chosen, batch_rows=batch_rows)

    def generate(
        self,
        prompts: list[str],
        num_images: int = 1,
        seed: int = 0,
        seeds: list[int] | None = None,
        guidance_scale: float | None = None,
        negative_prompt: str | None = None,
        num_inference_steps: int | None = None,
        callback: StepCallback | None = None,
    ) -> list[Image.Image]:
        """num_images per prompt, prompt-major; image i samples with seeds[i] (default
        seed + i). guidance_scale None: the generator's condition_scale.
        callback: progress after each eighth of the tokens, with previews."""
        scale = self.condition_scale if guidance_scale is None else guidance_scale
        return self.pipeline.generate(
            prompts, num_images, seed=seed, seeds=seeds, condition_scale=scale,
            negative_prompt=negative_prompt, callback=callback, batch_rows=self.batch_rows, **self.sampling,
        )
