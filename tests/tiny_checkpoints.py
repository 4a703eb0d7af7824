"""Tiny, seeded, randomly initialised checkpoints of the real-checkpoint families,
built by the libraries' own classes and saved in the real on-disk formats, so the
loaders read them exactly as they read the real ones.

- Stable Diffusion: a diffusers `save_pretrained` folder (model_index.json, unet/,
  vae/, text_encoder/, scheduler/) with a tokenizer/ of vocab.json + merges.txt as
  Stable Diffusion v1.5 ships it.
- SDXL, SD3 and FLUX.1: diffusers folders of each family's own pipeline class, at
  the sizes diffusers' own fast tests use (CLIP tokenizers as above, a T5 tokenizer.json
  of single characters), each saved by save_tiny_pipeline.
- GLID-3 XL: GLID3_FIXTURES holds bert.pt, diffusion.pt, finetune.pt and kl-f8-tiny.pt in
  its published formats, made by scripts/make_glid3_fixtures.py and make_kl_f8_fixture.py
  with the original code; save_tiny_glid3 adds a bert-base-uncased-style tokenizer folder.
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
GLID3_FIXTURES = Path(__file__).resolve().parent / "models" / "glid3_fixtures"


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


def tiny_safety_checker_that_flags_everything():
    """diffusers' StableDiffusionSafetyChecker at a tiny size, its concept thresholds below any
    score: every image is flagged (and blacked out), as a real checker does for some."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1,
                       "image_size": 32, "patch_size": 8},
        projection_dim=8,
    )  # fmt: skip
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-10.0)
        checker.special_care_embeds_weights.fill_(-10.0)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return checker, processor


def save_tiny_stable_diffusion(base: Path, variant: str | None = None, safety_checker: bool = False):
    """(the pipeline in memory, its saved folder base/checkpoint). variant="fp16"
    saves half-precision *.fp16.safetensors, as the hub's fp16-only folders hold;
    the pipeline in memory then keeps those rounded weights, in float32."""
    pipeline = build_tiny_stable_diffusion(base / "vocab")
    if safety_checker:
        checker, processor = tiny_safety_checker_that_flags_everything()
        pipeline.register_modules(safety_checker=checker, feature_extractor=processor)
        pipeline.register_to_config(requires_safety_checker=True)
    folder = base / "checkpoint"
    if variant == "fp16":
        pipeline.to(dtype=torch.float16)
    pipeline.save_pretrained(folder, variant=variant)
    pipeline.to(dtype=torch.float32)
    # Ship the tokenizer as the hub's v1.5 folder does, not as transformers 5 saves it.
    shutil.rmtree(folder / "tokenizer")
    shutil.copytree(base / "vocab", folder / "tokenizer")
    return pipeline, folder


def _tiny_clip_config(vocab_size: int, projection_dim: int = 32):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=projection_dim,
    )


def _tiny_t5(folder: Path):
    """(a T5 encoder of width 32, its tokenizer of single characters saved in folder)."""
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [(char, -1.0) for char in "\u2581" + string.ascii_lowercase + string.digits + ",.'-"]
    T5TokenizerFast(vocab=pieces, extra_ids=0).save_pretrained(folder)
    encoder = T5EncoderModel(T5Config(
        vocab_size=len(pieces), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    ))
    return encoder, T5TokenizerFast.from_pretrained(folder)


def _tiny_flow_vae(latent_channels: int):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(4, 8), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=latent_channels, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
        shift_factor=0.0609, scaling_factor=1.5035,
    )


def build_tiny_sdxl(tokenizer_folder: Path):
    """SDXL's two CLIP text encoders (the second with a projection: the pooled embedding)
    and its UNet with the text-and-time additional embedding."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    vocab_size = write_sd_tokenizer(tokenizer_folder)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=SD_IMAGE_SIZE // 2, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=64, norm_num_groups=1,
    )
    vae = AutoencoderKL(
        block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=2,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    )
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_folder)
    pipeline = StableDiffusionXLPipeline(
        unet=unet, vae=vae, text_encoder=CLIPTextModel(_tiny_clip_config(vocab_size)), tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(_tiny_clip_config(vocab_size)), tokenizer_2=tokenizer,
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                         timestep_spacing="leading", steps_offset=1),
    )  # fmt: skip
    return pipeline


def build_tiny_sd3(tokenizer_folder: Path):
    """SD3's MMDiT over two CLIP encoders (pooled) and a T5 encoder, with flow matching."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    vocab_size = write_sd_tokenizer(tokenizer_folder / "clip")
    t5, t5_tokenizer = _tiny_t5(tokenizer_folder / "t5")
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=SD_IMAGE_SIZE // 2, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8,
        num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64,
        out_channels=4, pos_embed_max_size=16,
    )
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_folder / "clip")
    return StableDiffusion3Pipeline(
        transformer=transformer, vae=_tiny_flow_vae(4), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        text_encoder=CLIPTextModelWithProjection(_tiny_clip_config(vocab_size)), tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(_tiny_clip_config(vocab_size)), tokenizer_2=tokenizer,
        text_encoder_3=t5, tokenizer_3=t5_tokenizer,
    )  # fmt: skip


def build_tiny_flux(tokenizer_folder: Path):
    """FLUX.1's transformer over a CLIP (pooled) and a T5 encoder, with FLUX.1-dev's
    guidance embedding."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, CLIPTokenizer

    vocab_size = write_sd_tokenizer(tokenizer_folder / "clip")
    t5, t5_tokenizer = _tiny_t5(tokenizer_folder / "t5")
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
        guidance_embeds=True,
    )
    return FluxPipeline(
        transformer=transformer, vae=_tiny_flow_vae(1), scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0),
        text_encoder=CLIPTextModel(_tiny_clip_config(vocab_size)), tokenizer=CLIPTokenizer.from_pretrained(tokenizer_folder / "clip"),
        text_encoder_2=t5, tokenizer_2=t5_tokenizer,
    )  # fmt: skip


TINY_PIPELINES = {"sdxl": build_tiny_sdxl, "sd3": build_tiny_sd3, "flux": build_tiny_flux}


def save_tiny_pipeline(kind: str, base: Path, variant: str | None = None) -> Path:
    """A tiny random pipeline of the kind (sdxl, sd3, flux) saved as a diffusers folder,
    base/checkpoint; its tokenizers are files as the hub's folders ship them.
    variant="fp16": half-precision *.fp16.safetensors only, as SDXL's fp16 folders hold."""
    pipeline = TINY_PIPELINES[kind](base / "vocab")
    folder = base / "checkpoint"
    if variant == "fp16":
        pipeline.to(dtype=torch.float16)
    pipeline.save_pretrained(folder, variant=variant)
    return folder


def write_bert_tokenizer(folder: Path, vocab_size: int = 120) -> Path:
    """A WordPiece vocab.txt as bert-base-uncased ships it (its special tokens first, then
    words and single characters), within the tiny BERT's vocabulary."""
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += "a the on of to left right above below red green blue yellow white black gray circle square triangle background".split()
    words += list(string.ascii_lowercase + string.digits) + ["##" + char for char in string.ascii_lowercase]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(words[:vocab_size]) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    return folder


def save_tiny_glid3(base: Path) -> tuple[Path, Path]:
    """(a folder of GLID-3 XL's files as published, tiny; a bert-base-uncased-style tokenizer folder)."""
    folder = base / "glid-3-xl"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("bert.pt", "diffusion.pt", "finetune.pt"):
        shutil.copy(GLID3_FIXTURES / name, folder / name)
    shutil.copy(GLID3_FIXTURES / "kl-f8-tiny.pt", folder / "kl-f8.pt")
    return folder, write_bert_tokenizer(base / "bert-base-uncased")


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
