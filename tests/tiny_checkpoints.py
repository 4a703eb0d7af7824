"""Tiny, seeded, randomly initialised checkpoints of the real-checkpoint families,
built by the libraries' own classes and saved in the real on-disk formats, so the
loaders read them exactly as they read the real ones.

- Stable Diffusion: a diffusers `save_pretrained` folder (model_index.json, unet/,
  vae/, text_encoder/, scheduler/) with a tokenizer/ of vocab.json + merges.txt as
  Stable Diffusion v1.5 ships it.
- Swin2SR: a transformers folder (config.json, model.safetensors,
  preprocessor_config.json), as caidas/swin2SR-* ship it.
- DALL·E mini / Mega and its VQGAN: DALLE_FIXTURES holds dalle-tiny/ and vqgan-tiny/,
  dalle-mini's own layout (config.json, flax_model.msgpack, tokenizer.json), made by
  scripts/make_dalle_fixtures.py with dalle-mini's classes.
"""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path

import torch

SD_IMAGE_SIZE = 32  # UNet sample_size 16 x the VAE's factor 2
DALLE_FIXTURES = Path(__file__).resolve().parent / "models" / "dalle" / "fixtures"


def write_sd_tokenizer(folder: Path) -> int:
    """A byte-level BPE vocabulary of single characters, no merges: the files
    (and the 77-token limit) of SD v1.5's tokenizer/, at a tiny size. Returns
    the vocabulary size."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in string.ascii_lowercase + string.digits + ",.'-":
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "CLIPTokenizer", "model_max_length": 77})
    )
    return len(vocab)


def build_tiny_stable_diffusion(tokenizer_folder: Path):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab_size = write_sd_tokenizer(tokenizer_folder)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=SD_IMAGE_SIZE // 2, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=2,
    )
    vae = AutoencoderKL(
        block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=2,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=2,
        max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )
    pipeline = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(tokenizer_folder), scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def save_tiny_stable_diffusion(base: Path, variant: str | None = None):
    """(the pipeline in memory, its saved folder base/checkpoint). variant="fp16"
    saves half-precision *.fp16.safetensors, as the hub's fp16-only folders hold;
    the pipeline in memory then keeps those rounded weights, in float32."""
    pipeline = build_tiny_stable_diffusion(base / "vocab")
    folder = base / "checkpoint"
    if variant == "fp16":
        pipeline.to(dtype=torch.float16)
    pipeline.save_pretrained(folder, variant=variant)
    pipeline.to(dtype=torch.float32)
    # Ship the tokenizer as the hub's v1.5 folder does, not as transformers 5 saves it.
    shutil.rmtree(folder / "tokenizer")
    shutil.copytree(base / "vocab", folder / "tokenizer")
    return pipeline, folder


def build_tiny_swin2sr():
    """(model, processor): an x4 Swin2SR of one stage, one block."""
    from transformers import Swin2SRConfig, Swin2SRForImageSuperResolution, Swin2SRImageProcessor

    torch.manual_seed(0)
    config = Swin2SRConfig(
        image_size=32, embed_dim=8, depths=[1], num_heads=[2], window_size=4, mlp_ratio=1.0,
        upscale=4, upsampler="pixelshuffle",
    )
    return Swin2SRForImageSuperResolution(config).eval(), Swin2SRImageProcessor(size_divisor=4)


def save_tiny_swin2sr(folder: Path):
    """(model, processor) saved in folder."""
    model, processor = build_tiny_swin2sr()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor
