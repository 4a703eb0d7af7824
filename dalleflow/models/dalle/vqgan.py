"""The VQGAN (taming-transformers' architecture, as dalle-mini's vqgan-jax
stores it): the decoder (image tokens -> codebook vectors -> pixels, NHWC) that
DALL·E mini/Mega need, and the encoder (pixels -> tokens) that training a
DalleBart on a new world needs.

Parameters keep the flax names of dalle-mini/vqgan_imagenet_f16_16384's
flax_model.msgpack (quantize.embedding, post_quant_conv, decoder.conv_in,
decoder.mid.{block_1, attn_1, block_2}, decoder.up_<level>.{block_<j>, attn_<j>,
upsample}, decoder.norm_out, decoder.conv_out), so loading is a rename-free read.
GroupNorm uses 32 groups and eps 1e-6 (torch's default is 1e-5: min-dalle differs
there). Which levels attend is fixed by the config's `resolution` (attention where
a level's side would be 16 at 256 px), not by the input size, so any token grid
(not only 16x16) decodes with the trained weights.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from dalleflow.models.dalle import msgpack_io
from dalleflow.models.dalle.config import VQGANConfig

GN_GROUPS = 32
GN_EPS = 1e-6


def group_norm(x: jax.Array, p: dict) -> jax.Array:
    b, h, w, c = x.shape
    g = x.reshape(b, h, w, GN_GROUPS, c // GN_GROUPS)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = jnp.square(g - mean).mean(axis=(1, 2, 4), keepdims=True)
    g = (g - mean) * jax.lax.rsqrt(var + GN_EPS)
    return g.reshape(b, h, w, c) * p["scale"] + p["bias"]


def conv(x: jax.Array, p: dict) -> jax.Array:
    """Stride-1 'same' convolution, kernel [kh, kw, in, out] as flax stores it."""
    kernel = p["kernel"]
    pad = kernel.shape[0] // 2
    y = jax.lax.conv_general_dilated(
        x, kernel.astype(x.dtype), (1, 1), ((pad, pad), (pad, pad)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y + p["bias"]


def resnet_block(x: jax.Array, p: dict) -> jax.Array:
    h = conv(jax.nn.swish(group_norm(x, p["norm1"])), p["conv1"])
    h = conv(jax.nn.swish(group_norm(h, p["norm2"])), p["conv2"])
    if "nin_shortcut" in p:
        x = conv(x, p["nin_shortcut"])
    return x + h


def attention_block(x: jax.Array, p: dict) -> jax.Array:
    b, h, w, c = x.shape
    n = group_norm(x, p["norm"])
    q, k, v = (conv(n, p[name]).reshape(b, h * w, c) for name in ("q", "k", "v"))
    weights = jax.nn.softmax(jnp.einsum("bqc,bkc->bqk", q, k) * (c**-0.5), axis=-1)
    out = jnp.einsum("bqk,bkc->bqc", weights, v).reshape(b, h, w, c)
    return x + conv(out, p["proj_out"])


def upsample_nearest(x: jax.Array) -> jax.Array:
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def downsample(x: jax.Array, p: dict) -> jax.Array:
    """Stride-2 3x3 convolution padded on the bottom and right only, as taming's."""
    y = jax.lax.conv_general_dilated(
        x, p["kernel"].astype(x.dtype), (2, 2), ((0, 1), (0, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y + p["bias"]


def encoder(params: dict, config: VQGANConfig, pixels: jax.Array) -> jax.Array:
    """Pixels [b, H, W, 3] in [-1, 1] -> latents [b, H/f, W/f, embed_dim] (after quant_conv)."""
    p = params["encoder"]
    x = conv(pixels, p["conv_in"])
    levels = len(config.ch_mult)
    for level in range(levels):
        down = p[f"down_{level}"]
        attends = config.resolution // 2**level in config.attn_resolutions
        for j in range(config.num_res_blocks):
            x = resnet_block(x, down[f"block_{j}"])
            if attends:
                x = attention_block(x, down[f"attn_{j}"])
        if level != levels - 1:
            x = downsample(x, down["downsample"]["conv"])
    x = resnet_block(x, p["mid"]["block_1"])
    x = attention_block(x, p["mid"]["attn_1"])
    x = resnet_block(x, p["mid"]["block_2"])
    x = conv(jax.nn.swish(group_norm(x, p["norm_out"])), p["conv_out"])
    return conv(x, params["quant_conv"])


def nearest_codes(latents: jax.Array, codebook: jax.Array) -> jax.Array:
    """Latents [..., d] -> index of the nearest codebook row (squared distance)."""
    distances = (
        jnp.sum(jnp.square(latents), axis=-1, keepdims=True)
        - 2.0 * latents @ codebook.T
        + jnp.sum(jnp.square(codebook), axis=-1)
    )
    return jnp.argmin(distances, axis=-1)


@functools.partial(jax.jit, static_argnames=("config",))
def encode_tokens(params: dict, config: VQGANConfig, pixels: jax.Array) -> jax.Array:
    """Pixels [b, H, W, 3] in [0, 1] -> image tokens [b, (H/f)*(W/f)], row-major."""
    latents = encoder(params, config, pixels * 2.0 - 1.0)
    codes = nearest_codes(latents, params["quantize"]["embedding"]["embedding"])
    return codes.reshape(codes.shape[0], -1)


def decoder(params: dict, config: VQGANConfig, z: jax.Array) -> jax.Array:
    """Latents [b, h, w, z_channels] -> pixels [b, 16h, 16w, 3], not clipped."""
    p = params["decoder"]
    x = conv(z, p["conv_in"])
    x = resnet_block(x, p["mid"]["block_1"])
    x = attention_block(x, p["mid"]["attn_1"])
    x = resnet_block(x, p["mid"]["block_2"])
    levels = len(config.ch_mult)
    for level in reversed(range(levels)):
        up = p[f"up_{level}"]
        attends = config.resolution // 2**level in config.attn_resolutions
        for j in range(config.num_res_blocks + 1):
            x = resnet_block(x, up[f"block_{j}"])
            if attends:
                x = attention_block(x, up[f"attn_{j}"])
        if level != 0:
            x = upsample_nearest(x)
            if config.resamp_with_conv:
                x = conv(x, up["upsample"]["conv"])
    x = jax.nn.swish(group_norm(x, p["norm_out"]))
    return conv(x, p["conv_out"])


@functools.partial(jax.jit, static_argnames=("config", "grid"))
def decode_tokens(params: dict, config: VQGANConfig, tokens: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """Image tokens [b, rows*cols] (row-major) -> pixels [b, 16 rows, 16 cols, 3] in [0, 1]."""
    z = params["quantize"]["embedding"]["embedding"][tokens]
    z = z.reshape((tokens.shape[0],) + grid + (z.shape[-1],))
    z = conv(z, params["post_quant_conv"])
    return jnp.clip(decoder(params, config, z), 0.0, 1.0)


def to_pil(pixels) -> list[Image.Image]:
    array = np.asarray(jnp.round(jnp.asarray(pixels) * 255.0)).astype(np.uint8)
    return [Image.fromarray(a) for a in array]


def init_params(config: VQGANConfig, key: jax.Array, with_encoder: bool = True) -> dict:
    """Fresh weights in the checkpoint's layout: the start for training a VQGAN
    (with_encoder=False: only the decoding half, codebook included)."""
    keys = iter(jax.random.split(key, 4096))

    def conv_p(k, cin, cout):
        w = jax.random.normal(next(keys), (k, k, cin, cout), jnp.float32) / np.sqrt(k * k * cin)
        return {"kernel": w, "bias": jnp.zeros(cout)}

    def norm_p(c):
        return {"scale": jnp.ones(c), "bias": jnp.zeros(c)}

    def res_p(cin, cout):
        p = {"norm1": norm_p(cin), "conv1": conv_p(3, cin, cout), "norm2": norm_p(cout), "conv2": conv_p(3, cout, cout)}
        if cin != cout:
            p["nin_shortcut"] = conv_p(1, cin, cout)
        return p

    def attn_p(c):
        return {"norm": norm_p(c), **{name: conv_p(1, c, c) for name in ("q", "k", "v", "proj_out")}}

    def mid_p(c):
        return {"block_1": res_p(c, c), "attn_1": attn_p(c), "block_2": res_p(c, c)}

    levels = len(config.ch_mult)
    attends = [config.resolution // 2**level in config.attn_resolutions for level in range(levels)]
    block_in = config.ch * config.ch_mult[-1]
    decoder = {"conv_in": conv_p(3, config.z_channels, block_in), "mid": mid_p(block_in)}
    for level in reversed(range(levels)):
        block_out = config.ch * config.ch_mult[level]
        up = {}
        for j in range(config.num_res_blocks + 1):
            up[f"block_{j}"] = res_p(block_in, block_out)
            block_in = block_out
            if attends[level]:
                up[f"attn_{j}"] = attn_p(block_in)
        if level != 0 and config.resamp_with_conv:
            up["upsample"] = {"conv": conv_p(3, block_in, block_in)}
        decoder[f"up_{level}"] = up
    decoder["norm_out"] = norm_p(block_in)
    decoder["conv_out"] = conv_p(3, block_in, config.out_ch)
    codebook = jax.random.uniform(next(keys), (config.n_embed, config.embed_dim), jnp.float32, -1.0, 1.0)
    params = {
        "quantize": {"embedding": {"embedding": codebook}},
        "post_quant_conv": conv_p(1, config.embed_dim, config.z_channels),
        "decoder": decoder,
    }
    if not with_encoder:
        return params
    block_in = config.ch
    encoder = {"conv_in": conv_p(3, config.out_ch, block_in)}
    for level in range(levels):
        block_out = config.ch * config.ch_mult[level]
        down = {}
        for j in range(config.num_res_blocks):
            down[f"block_{j}"] = res_p(block_in, block_out)
            block_in = block_out
            if attends[level]:
                down[f"attn_{j}"] = attn_p(block_in)
        if level != levels - 1:
            down["downsample"] = {"conv": conv_p(3, block_in, block_in)}
        encoder[f"down_{level}"] = down
    encoder.update(mid=mid_p(block_in), norm_out=norm_p(block_in), conv_out=conv_p(3, block_in, config.z_channels))
    return {**params, "encoder": encoder, "quant_conv": conv_p(1, config.z_channels, config.embed_dim)}


def init_decoder_params(config: VQGANConfig, key: jax.Array) -> dict:
    return init_params(config, key, with_encoder=False)


class VQGANDecoder:
    """The decoding half of a VQGAN checkpoint (the encoder's weights are not read)."""

    def __init__(self, config: VQGANConfig, params: dict):
        self.config = config
        self.params = params

    @classmethod
    def from_pretrained(cls, folder: str | Path, dtype: str | None = None) -> VQGANDecoder:
        folder = Path(folder)
        for name in ("config.json", "flax_model.msgpack"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"VQGAN checkpoint {folder}: no {name}")
        config = VQGANConfig.from_json(folder / "config.json")
        wanted = ("decoder", "quantize", "post_quant_conv")
        cast = jnp.dtype(dtype) if dtype else None

        def convert(path, array):
            return jax.device_put(array.astype(cast) if cast is not None else array)

        tree = msgpack_io.load_tree(
            folder / "flax_model.msgpack",
            want=lambda path: bool(set(path[:2]) & set(wanted)),
            convert=convert,
        )
        return cls(config, tree.get("params", tree))

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        msgpack_io.save_tree(folder / "flax_model.msgpack", jax.tree_util.tree_map(np.asarray, self.params))

    def decode(self, tokens, grid: tuple[int, int] | None = None) -> jax.Array:
        """tokens [b, n] -> pixels [b, H, W, 3] in [0, 1]; grid defaults to square."""
        tokens = jnp.asarray(tokens, jnp.int32)
        if grid is None:
            side = int(round(np.sqrt(tokens.shape[1])))
            if side * side != tokens.shape[1]:
                raise ValueError(f"tokens: {tokens.shape[1]} per image is not a square grid; pass grid=")
            grid = (side, side)
        return decode_tokens(self.params, self.config, tokens, tuple(grid))

    def decode_images(self, tokens, grid: tuple[int, int] | None = None) -> list[Image.Image]:
        return to_pil(self.decode(tokens, grid))
