"""GLID-3 XL's published state dicts as diffusers modules.

GLID-3 XL (github Jack000/glid-3-xl; dalle-flow ran jina-ai/glid-3-xl) is CompVis' latent
diffusion text-to-image model back-ported to OpenAI's guided-diffusion code. Its files:

- diffusion.pt / finetune.pt: the UNet, guided-diffusion's UNetModel with latent diffusion's
  SpatialTransformer blocks, in the key layout of latent diffusion's openaimodel (the layout
  of Stable Diffusion v1's UNet), plus, in finetune.pt and inpaint.pt, `clip_proj`: a linear
  map of a CLIP ViT-L/14 text embedding added to the time embedding. It becomes diffusers'
  UNet2DConditionModel (converted by diffusers' own LDM converter), `clip_proj` its
  `class_embed_type="simple_projection"` class embedding.
- bert.pt: "LDM BERT", an x-transformers encoder (TransformerWrapper + Encoder), which is
  diffusers' LDMBertModel with its keys renamed as diffusers' own LDM converter renames them.

Everything is read with torch.load(weights_only=True): no code in a file runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig, LDMBertModel

LDM_UNET_PREFIX = "model.diffusion_model."
# guided-diffusion's UNetModel takes num_heads; GLID-3 XL trained with 8 (it is not in the weights).
GLID3_HEADS = 8


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A published .pt state dict, as float32 tensors; pickled code is refused, not run."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as error:  # torch names the global it refused
        raise ValueError(f"{Path(path).name}: not a plain state dict ({error}); GLID-3 XL's bert.pt, "
                         "diffusion.pt and finetune.pt are") from None  # fmt: skip
    return {key: value.float() for key, value in state.items()}


def unet_config(state: dict[str, torch.Tensor], num_heads: int = GLID3_HEADS) -> dict:
    """A UNet2DConditionModel config read from the keys and shapes of GLID-3 XL's UNet."""
    in_channels = state["input_blocks.0.0.weight"].shape[1]
    if in_channels != 4:
        raise ValueError(
            f"the UNet takes {in_channels} input channels: GLID-3 XL's inpaint.pt (8: image and mask) "
            "and super-resolution models are not served; use diffusion.pt or finetune.pt"
        )
    model_channels = state["input_blocks.0.0.weight"].shape[0]
    # input_blocks: 0 is conv_in, then per level num_res_blocks ResBlocks, then a Downsample (not after the last).
    blocks = sorted({int(key.split(".")[1]) for key in state if key.startswith("input_blocks.")})
    downsamples = [i for i in blocks if f"input_blocks.{i}.0.op.weight" in state]
    levels = len(downsamples) + 1
    num_res_blocks = downsamples[0] - 1 if downsamples else len(blocks) - 1
    channels, attends = [], []
    for level in range(levels):
        first = 1 + level * (num_res_blocks + 1)
        channels.append(state[f"input_blocks.{first}.0.out_layers.3.weight"].shape[0])
        attends.append(f"input_blocks.{first}.1.proj_in.weight" in state)
    context_dim = next(value.shape[1] for key, value in state.items() if key.endswith("attn2.to_k.weight"))
    config = {
        "sample_size": 32, "in_channels": 4, "out_channels": state["out.2.weight"].shape[0],
        "block_out_channels": tuple(channels), "layers_per_block": num_res_blocks,
        "down_block_types": tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attends),
        "up_block_types": tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)),
        "cross_attention_dim": context_dim, "attention_head_dim": num_heads,
        "flip_sin_to_cos": True, "freq_shift": 0,
    }  # fmt: skip
    if model_channels != channels[0]:
        raise ValueError(f"unexpected UNet layout: conv_in makes {model_channels} channels, the first level {channels[0]}")
    if "clip_proj.weight" in state:
        config |= {"class_embed_type": "simple_projection",
                   "projection_class_embeddings_input_dim": state["clip_proj.weight"].shape[1]}  # fmt: skip
    return config


def convert_unet(state: dict[str, torch.Tensor], num_heads: int = GLID3_HEADS) -> UNet2DConditionModel:
    config = unet_config(state, num_heads)
    converted = convert_ldm_unet_checkpoint({LDM_UNET_PREFIX + key: value for key, value in state.items()}, config)
    if "clip_proj.weight" in state:
        converted["class_embedding.weight"] = state["clip_proj.weight"]
        converted["class_embedding.bias"] = state["clip_proj.bias"]
    unet = UNet2DConditionModel(**config)
    unet.load_state_dict(converted, strict=True)
    return unet.eval()


_BERT_LAYER = re.compile(r"transformer\.attn_layers\.layers\.(\d+)\.(\d)\.(.+)")


def convert_bert(state: dict[str, torch.Tensor], num_heads: int = 8, head_dim: int = 64) -> LDMBertModel:
    """x-transformers' layers alternate attention (2i) and feed-forward (2i + 1), each
    (norm, module); LDMBertModel's layer i holds both (diffusers' convert_ldm_bert_checkpoint)."""
    width = state["transformer.token_emb.weight"].shape[1]
    depth = len({int(m.group(1)) for key in state if (m := _BERT_LAYER.match(key))}) // 2
    config = LDMBertConfig(
        vocab_size=state["transformer.token_emb.weight"].shape[0], d_model=width, encoder_layers=depth,
        max_position_embeddings=state["transformer.pos_emb.emb.weight"].shape[0], encoder_attention_heads=num_heads,
        head_dim=head_dim, encoder_ffn_dim=state["transformer.attn_layers.layers.1.1.net.0.0.weight"].shape[0],
    )  # fmt: skip
    names = {"0.weight": "self_attn_layer_norm.weight", "0.bias": "self_attn_layer_norm.bias",
             "1.to_q.weight": "self_attn.q_proj.weight", "1.to_k.weight": "self_attn.k_proj.weight",
             "1.to_v.weight": "self_attn.v_proj.weight", "1.to_out.weight": "self_attn.out_proj.weight",
             "1.to_out.bias": "self_attn.out_proj.bias"}  # fmt: skip
    feed_forward = {"0.weight": "final_layer_norm.weight", "0.bias": "final_layer_norm.bias",
                    "1.net.0.0.weight": "fc1.weight", "1.net.0.0.bias": "fc1.bias",
                    "1.net.2.weight": "fc2.weight", "1.net.2.bias": "fc2.bias"}  # fmt: skip
    converted = {
        "model.embed_tokens.weight": state["transformer.token_emb.weight"],
        "model.embed_positions.weight": state["transformer.pos_emb.emb.weight"],
        "model.layer_norm.weight": state["transformer.norm.weight"],
        "model.layer_norm.bias": state["transformer.norm.bias"],
        "to_logits.weight": state["transformer.to_logits.weight"],
        "to_logits.bias": state["transformer.to_logits.bias"],
    }
    for key, value in state.items():
        match = _BERT_LAYER.match(key)
        if match:
            index, part, rest = int(match.group(1)), match.group(2), match.group(3)
            table = names if index % 2 == 0 else feed_forward
            converted[f"model.layers.{index // 2}.{table[f'{part}.{rest}']}"] = value
    bert = LDMBertModel(config)
    bert.load_state_dict(converted, strict=True)
    return bert.eval()
