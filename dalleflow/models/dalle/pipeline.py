"""Prompts -> images: tokenizer, DalleBart, VQGAN decoder, one call."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from PIL import Image

from dalleflow.models.dalle.bart import DalleBart
from dalleflow.models.dalle.text import DalleBartTokenizer
from dalleflow.models.dalle.vqgan import VQGANDecoder
from dalleflow.models.contract import StepCallback


class DallePipeline:
    def __init__(self, tokenizer: DalleBartTokenizer, model: DalleBart, vqgan: VQGANDecoder):
        codes = vqgan.config.n_embed
        if codes > model.config.image_vocab_size:
            raise ValueError(
                f"VQGAN n_embed={codes} is larger than DalleBart image_vocab_size={model.config.image_vocab_size}"
            )
        # sample only codes the VQGAN has (16384 for the published pair)
        model.config = dataclasses.replace(model.config, codebook_size=codes)
        self.tokenizer = tokenizer
        self.model = model
        self.vqgan = vqgan
        self._uncond = tokenizer.uncond()

    @classmethod
    def from_pretrained(
        cls,
        dalle_folder: str | Path,
        vqgan_folder: str | Path,
        dtype: str | None = None,
        hashtag_word_list: str | Path | None = None,
    ) -> DallePipeline:
        """dalle_folder: config.json, flax_model.msgpack, tokenizer.json (dalle-mini's
        published layout); vqgan_folder: config.json, flax_model.msgpack."""
        return cls(
            DalleBartTokenizer.from_pretrained(dalle_folder, hashtag_word_list),
            DalleBart.from_pretrained(dalle_folder, dtype),
            VQGANDecoder.from_pretrained(vqgan_folder, dtype),
        )

    def generate_tokens(self, prompts: list[str], num_images: int = 1, negative_prompt: str | None = None, **options):
        """negative_prompt: super-conditioning subtracts it instead of "" (None or "": the unconditional prompt)."""
        ids, mask = self.tokenizer(prompts)
        uncond = self.tokenizer([negative_prompt]) if negative_prompt else self._uncond
        return self.model.generate(ids, mask, *uncond, num_images=num_images, **options)

    def generate(
        self,
        prompts: list[str],
        num_images: int = 1,
        seed: int = 0,
        seeds: list[int] | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        condition_scale: float = 10.0,
        negative_prompt: str | None = None,
        callback: StepCallback | None = None,
        batch_rows: int | None = 4,
        fixed_rows: bool = False,
    ) -> list[Image.Image]:
        """num_images per prompt, prompt-major; image i samples with seeds[i]
        (default seed + i). See DalleBart.generate for the sampling defaults.
        callback gets, after each span of tokens, previews: the token grids so far
        decoded (the image fills in top to bottom, as it is sampled), when it asks."""
        on_tokens = None
        if callback is not None:
            def on_tokens(step: int, step_count: int, tokens) -> bool | None:
                return callback(step, step_count, lambda: self.decode_images(tokens))

        tokens = self.generate_tokens(
            prompts, num_images, seed=seed, seeds=seeds, temperature=temperature,
            top_k=top_k, top_p=top_p, condition_scale=condition_scale, negative_prompt=negative_prompt,
            callback=on_tokens, batch_rows=batch_rows, fixed_rows=fixed_rows,
        )
        return self.decode_images(tokens)

    def decode_images(self, tokens) -> list[Image.Image]:
        """One image per VQGAN call: XLA picks its convolution kernels by batch size, so
        the same tokens decoded beside others came out up to 7e-7 apart, enough to
        flip a rounded pixel. At one row per call an image's PNG is the same whatever
        else its request or batch held, and one program serves every batch size (the
        previews too: a decode at each batch's own size compiled anew, mid-loop, for
        each new size). A decode costs about the same per row at any batch size here."""
        return [image for row in range(len(tokens)) for image in self.vqgan.decode_images(tokens[row : row + 1])]
