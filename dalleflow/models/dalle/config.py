"""The two configs, read from the checkpoints' own config.json files.

Only the DalleBart variant that was published (DALL·E mini and Mega: normformer
layer norms, GLU feed-forward, no biases, learned absolute positions) is
implemented; a config asking for another variant is refused by name rather than
run with the wrong math.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

# The VQGAN f16 codebook that every published DalleBart predicts into; lm_head rows
# past it (the start token, and Mega's 31 unused rows) are never sampled.
CODEBOOK_SIZE = 16384


@dataclasses.dataclass(frozen=True)
class DalleBartConfig:
    encoder_vocab_size: int = 50264  # BART text tokens
    image_vocab_size: int = 16384  # lm_head and decoder embedding have this + 1 rows
    image_length: int = 256  # image tokens: a 16x16 VQGAN grid
    max_text_length: int = 64  # text tokens, padded to this
    encoder_layers: int = 12
    decoder_layers: int = 12
    encoder_ffn_dim: int = 4096  # GLU hidden width
    decoder_ffn_dim: int = 4096
    encoder_attention_heads: int = 16
    decoder_attention_heads: int = 16
    d_model: int = 1024
    activation_function: str = "gelu"  # exact (erf) GELU, as transformers' Flax ACT2FN
    scale_embedding: bool = False  # multiply token embeddings by sqrt(d_model)
    force_ln_scale: bool = False  # the "bias only" layer norms also have a scale
    normalize_text: bool = False  # run dalle-mini's text normaliser before tokenizing
    decoder_start_token_id: int | None = None  # None: image_vocab_size (Mega sets 16384 explicitly)
    codebook_size: int = CODEBOOK_SIZE  # logits are cut to the real VQGAN codes

    # Variants the published checkpoints never used: refused when set otherwise.
    _REQUIRED = {
        "use_bias": False,
        "ln_type": "layernorm",
        "ln_positions": "normformer",
        "use_glu": True,
        "use_head_scale": False,
        "use_cosine_attention": False,
        "use_swin_position_embeddings": False,
        "use_deepnet_scaling": False,
        "use_subln_init": False,
        "use_alibi": False,
        "use_absolute_position_embeddings": True,
        "use_final_ln_encoder": True,
        "use_final_ln_decoder": True,
        "tie_word_embeddings": False,
        "sinkhorn_iters": 1,
    }

    @property
    def start_token(self) -> int:
        return self.image_vocab_size if self.decoder_start_token_id is None else self.decoder_start_token_id

    @classmethod
    def from_dict(cls, raw: dict) -> DalleBartConfig:
        for key, value in cls._REQUIRED.items():
            if key in raw and raw[key] != value:
                raise ValueError(f"config.json: {key}={raw[key]!r} is not supported (only {value!r})")
        if raw.get("activation_function", "gelu") != "gelu":
            raise ValueError(f"config.json: activation_function={raw['activation_function']!r} is not supported")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})

    @classmethod
    def from_json(cls, path: str | Path) -> DalleBartConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict:
        """config.json as dalle-mini writes it (the fields it needs to rebuild the model)."""
        raw = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        raw.pop("codebook_size")
        if raw["decoder_start_token_id"] is None:
            raw.pop("decoder_start_token_id")
        return {"model_type": "dallebart", **raw, **self._REQUIRED, "use_scan": True}


@dataclasses.dataclass(frozen=True)
class VQGANConfig:
    ch: int = 128  # channels of the highest-resolution level
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # channel multiplier per level
    num_res_blocks: int = 2  # the decoder has num_res_blocks + 1 per level
    attn_resolutions: tuple[int, ...] = (16,)  # levels (by side in pixels of `resolution`) with attention
    resolution: int = 256  # the image side the config was trained for
    z_channels: int = 256
    embed_dim: int = 256  # codebook vector width
    n_embed: int = 16384  # codebook size
    out_ch: int = 3
    resamp_with_conv: bool = True

    @classmethod
    def from_dict(cls, raw: dict) -> VQGANConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in raw.items() if k in names}
        for key in ("ch_mult", "attn_resolutions"):
            if key in values:
                values[key] = tuple(values[key])
        if raw.get("give_pre_end"):
            raise ValueError("config.json: give_pre_end=True is not supported")
        return cls(**values)

    @classmethod
    def from_json(cls, path: str | Path) -> VQGANConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict:
        raw = dataclasses.asdict(self)
        raw.update(ch_mult=list(self.ch_mult), attn_resolutions=list(self.attn_resolutions))
        return {"model_type": "vqgan", **raw}
