"""DalleBart (DALL·E mini / Mega): a BART-style encoder-decoder from text tokens to
256 VQGAN image tokens, as plain functions over a pytree of arrays.

Reads top to bottom: layer norm, attention, GLU, the encoder and decoder layers,
the whole teacher-forced model, then generation (one jitted program: the encoder,
cross-attention keys and values computed once, a lax.scan over the 256 image
positions with a static key/value cache, super-conditioning against the "" prompt,
temperature / top-k / top-p sampling), then loading and saving in the original
flax_model.msgpack layout.

Parameter names (ours <- dalle-mini's flax names, per layer):
  self_pre_ln <- LayerNorm_0 (bias only)      self_attn <- FlaxBartAttention_0
  self_post_ln <- LayerNorm_1 (scale, bias)   cross_pre_ln <- LayerNorm_2 (bias only)
  cross_attn <- FlaxBartAttention_1           cross_post_ln <- LayerNorm_3
  glu.{ln0, fc0, fc1, ln1, fc2} <- GLU_0.{LayerNorm_0, Dense_0, Dense_1, LayerNorm_1, Dense_2}
Kernels are stored [in, out] as flax does. The published files keep each stack of
layers "scanned" (one array with a leading layer axis); they are split into one
array per layer at load (issue 3 measured a decode step ~5x slower on this CPU with
the stacked arrays sliced inside the step; not re-measured here).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dalleflow.models.dalle import msgpack_io
from dalleflow.models.dalle.config import DalleBartConfig
from dalleflow.models.dalle.sampling import filter_logits, sample
from dalleflow.models.contract import Interrupted

# Called after each span of positions with (step_index, step_count, tokens so far
# [rows, image_length]); returning True stops generation.
TokenCallback = Callable[[int, int, np.ndarray], bool | None]

LN_EPS = 1e-5  # every layer norm in DalleBart

# ---------------------------------------------------------------- building blocks


def layer_norm(x: jax.Array, p: dict) -> jax.Array:
    """Layer norm whose scale may be absent (normformer's bias-only norms)."""
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + LN_EPS)
    if "scale" in p:
        y = y * p["scale"]
    return y + p["bias"]


def split_heads(x: jax.Array, heads: int) -> jax.Array:
    """[b, s, h*d] -> [b, h, s, d]: head-major, so that attention over a cache is a
    batched matmul with no transpose of the cache (at 8 rows a [b, s, h, d] cache
    made the attention cost more than the layer's weights)."""
    b, s, width = x.shape
    return x.reshape(b, s, heads, width // heads).transpose(0, 2, 1, 3)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """q [b, h, q, d], k/v [b, h, k, d], mask broadcastable to [b, h, q, k] -> [b, q, h*d]."""
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) / np.sqrt(q.shape[-1]).astype(q.dtype)
    scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    weights = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(v.dtype)
    out = jnp.einsum("bhqk,bhkd->bqhd", weights, v)
    return out.reshape(out.shape[:2] + (-1,))


def glu(x: jax.Array, p: dict) -> jax.Array:
    """"GLU Variants Improve Transformer", with normformer's two inner norms."""
    x = layer_norm(x, p["ln0"])
    x = jax.nn.gelu(x @ p["fc0"], approximate=False) * (x @ p["fc1"])
    return layer_norm(x, p["ln1"]) @ p["fc2"]


def encoder_layer(x: jax.Array, p: dict, mask: jax.Array, heads: int) -> jax.Array:
    h = layer_norm(x, p["self_pre_ln"])
    a = p["self_attn"]
    q, k, v = (split_heads(h @ a[name], heads) for name in ("q", "k", "v"))
    x = x + layer_norm(attend(q, k, v, mask) @ a["out"], p["self_post_ln"])
    return x + glu(x, p["glu"])


def cross_attention_kv(states: jax.Array, p: dict, heads: int) -> tuple[jax.Array, jax.Array]:
    """The decoder layer's cross-attention keys and values: fixed for a prompt."""
    a = p["cross_attn"]
    return split_heads(states @ a["k"], heads), split_heads(states @ a["v"], heads)


def decoder_layer(
    x: jax.Array,
    p: dict,
    self_kv: tuple[jax.Array, jax.Array],
    self_mask: jax.Array,
    cross_kv: tuple[jax.Array, jax.Array],
    cross_mask: jax.Array,
    heads: int,
) -> jax.Array:
    """x [b, q, d]; self_kv are the keys/values of every position attended to
    (the queries' own included), self_mask [b or 1, 1, q, k]."""
    h = layer_norm(x, p["self_pre_ln"])
    a = p["self_attn"]
    x = x + layer_norm(attend(split_heads(h @ a["q"], heads), *self_kv, self_mask) @ a["out"], p["self_post_ln"])
    h = layer_norm(x, p["cross_pre_ln"])
    c = p["cross_attn"]
    x = x + layer_norm(attend(split_heads(h @ c["q"], heads), *cross_kv, cross_mask) @ c["out"], p["cross_post_ln"])
    return x + glu(x, p["glu"])


def self_kv(x: jax.Array, p: dict, heads: int) -> tuple[jax.Array, jax.Array]:
    h = layer_norm(x, p["self_pre_ln"])
    a = p["self_attn"]
    return split_heads(h @ a["k"], heads), split_heads(h @ a["v"], heads)


# ---------------------------------------------------------------- the whole model


def encode(params: dict, config: DalleBartConfig, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """Text tokens [b, t] -> encoder states [b, t, d]."""
    p = params["encoder"]
    scale = np.sqrt(config.d_model) if config.scale_embedding else 1.0
    x = p["embed_tokens"][input_ids] * scale + p["embed_positions"][: input_ids.shape[1]]
    x = layer_norm(x, p["ln_embed"])
    mask = attention_mask.astype(bool)[:, None, None, :]
    for layer in p["layers"]:
        x = encoder_layer(x, layer, mask, config.encoder_attention_heads)
    return layer_norm(x, p["final_ln"])


def decode_logits(
    params: dict,
    config: DalleBartConfig,
    encoder_states: jax.Array,
    attention_mask: jax.Array,
    decoder_input_ids: jax.Array,
) -> jax.Array:
    """Teacher-forced decoder: input tokens [b, n] (start token first) -> logits
    [b, n, image_vocab_size + 1], position i predicting the token after input i."""
    p = params["decoder"]
    heads = config.decoder_attention_heads
    n = decoder_input_ids.shape[1]
    scale = np.sqrt(config.d_model) if config.scale_embedding else 1.0
    x = p["embed_tokens"][decoder_input_ids] * scale + p["embed_positions"][:n]
    x = layer_norm(x, p["ln_embed"])
    causal = jnp.tril(jnp.ones((n, n), bool))[None, None]
    cross_mask = attention_mask.astype(bool)[:, None, None, :]
    for layer in p["layers"]:
        x = decoder_layer(
            x, layer, self_kv(x, layer, heads), causal,
            cross_attention_kv(encoder_states, layer, heads), cross_mask, heads,
        )
    return layer_norm(x, p["final_ln"]) @ params["lm_head"]


def decoder_step(
    params: dict,
    config: DalleBartConfig,
    token: jax.Array,
    position: jax.Array,
    cache: list[tuple[jax.Array, jax.Array]],
    cross_kv: list[tuple[jax.Array, jax.Array]],
    cross_mask: jax.Array,
) -> tuple[jax.Array, list[tuple[jax.Array, jax.Array]]]:
    """One image position for every row: token [b] at `position` -> logits [b, vocab]
    and the cache [b, h, image_length, d] per layer with this position written."""
    p = params["decoder"]
    heads = config.decoder_attention_heads
    scale = np.sqrt(config.d_model) if config.scale_embedding else 1.0
    x = p["embed_tokens"][token][:, None] * scale + p["embed_positions"][position][None, None]
    x = layer_norm(x, p["ln_embed"])
    new_cache = []
    for layer, layer_cache, kv in zip(p["layers"], cache, cross_kv):
        x, layer_cache = decoder_layer_step(x, layer, position, layer_cache, kv, cross_mask, heads)
        new_cache.append(layer_cache)
    logits = layer_norm(x[:, 0], p["final_ln"]) @ params["lm_head"]
    return logits, new_cache


def decoder_layer_step(
    x: jax.Array,
    layer: dict,
    position: jax.Array,
    cache: tuple[jax.Array, jax.Array],
    cross_kv: tuple[jax.Array, jax.Array],
    cross_mask: jax.Array,
    heads: int,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """One decoder layer for one position: x [b, 1, d]; cache [b, h, image_length, d]
    keys and values, this position's written in before attending."""
    k_cache, v_cache = cache
    k, v = self_kv(x, layer, heads)
    k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype), position, axis=2)
    v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), position, axis=2)
    self_mask = (jnp.arange(k_cache.shape[2]) <= position)[None, None, None, :]
    x = decoder_layer(x, layer, (k_cache, v_cache), self_mask, cross_kv, cross_mask, heads)
    return x, (k_cache, v_cache)


@functools.partial(jax.jit, static_argnames=("config", "use_uncond"))
def start_sampling(
    params: dict,
    config: DalleBartConfig,
    cond_ids: jax.Array,
    cond_mask: jax.Array,
    uncond_kv: list[tuple[jax.Array, jax.Array]],
    uncond_mask: jax.Array,
    use_uncond: bool,
) -> tuple:
    """Rows [b] of prompt tokens (already repeated per image) -> the sampling state:
    (cross-attention keys/values and mask, computed once, and the carry of
    sample_span: the start token and an empty self-attention cache).

    With use_uncond, every row is decoded twice, once against its prompt and once
    against the unconditional prompt (whose cross-attention keys/values `uncond_kv`
    [1, h, t, d] the caller computed once), for super-conditioning."""
    heads = config.decoder_attention_heads
    rows = cond_ids.shape[0]
    states = encode(params, config, cond_ids, cond_mask)
    cross_kv = [cross_attention_kv(states, layer, heads) for layer in params["decoder"]["layers"]]
    cross_mask = cond_mask.astype(bool)[:, None, None, :]
    if use_uncond:
        cross_kv = [
            tuple(jnp.concatenate([c, jnp.broadcast_to(u, (rows,) + u.shape[1:])]) for c, u in zip(ckv, ukv))
            for ckv, ukv in zip(cross_kv, uncond_kv)
        ]
        uncond = jnp.broadcast_to(uncond_mask.astype(bool)[:, None, None, :], (rows,) + cross_mask.shape[1:])
        cross_mask = jnp.concatenate([cross_mask, uncond])
    width = 2 * rows if use_uncond else rows
    head_dim = config.d_model // heads
    dtype = params["lm_head"].dtype
    cache = [
        (jnp.zeros((width, heads, config.image_length, head_dim), dtype),) * 2
        for _ in params["decoder"]["layers"]
    ]
    start = jnp.full((rows,), config.start_token, jnp.int32)
    return (cross_kv, cross_mask), (start, cache)


@functools.partial(jax.jit, static_argnames=("config", "use_uncond"))
def sample_span(
    params: dict,
    config: DalleBartConfig,
    cross: tuple,
    carry: tuple,
    positions: jax.Array,
    keys: jax.Array,
    temperature: jax.Array,
    top_k: jax.Array,
    top_p: jax.Array,
    condition_scale: jax.Array,
    use_uncond: bool,
) -> tuple[tuple, jax.Array]:
    """The image tokens at `positions` (consecutive, continuing `carry`), one PRNG
    key per row -> (the carry for the next span, tokens [b, len(positions)]).

    Spans of any length make the same tokens: position p samples with
    fold_in(key, p) whichever span it is in. With use_uncond the logits combine as
    uncond + condition_scale * (cond - uncond)."""
    cross_kv, cross_mask = cross
    rows = keys.shape[0]

    def step(carry, position):
        token, cache = carry
        tokens = jnp.concatenate([token, token]) if use_uncond else token
        logits, cache = decoder_step(params, config, tokens, position, cache, cross_kv, cross_mask)
        logits = logits[:, : config.codebook_size].astype(jnp.float32)
        if use_uncond:
            cond, uncond = logits[:rows], logits[rows:]
            logits = uncond + condition_scale * (cond - uncond)
        logits = filter_logits(logits, temperature, top_k, top_p)
        step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, position)
        token = jax.vmap(sample)(step_keys, logits)
        return (token, cache), token

    carry, tokens = jax.lax.scan(step, carry, positions)
    return carry, tokens.T


def init_params(config: DalleBartConfig, key: jax.Array, std: float = 0.02) -> dict:
    """Fresh weights as dalle-mini initialises them (normal(std) matrices and
    embeddings, unit-scale zero-bias norms): the start for training a DalleBart."""
    keys = iter(jax.random.split(key, 1024))
    d = config.d_model

    def normal(*shape):
        return std * jax.random.normal(next(keys), shape, jnp.float32)

    def ln(width, scale):
        return {"scale": jnp.ones(width), "bias": jnp.zeros(width)} if scale else {"bias": jnp.zeros(width)}

    def layer(ffn, cross):
        bias_only = config.force_ln_scale
        p = {
            "self_pre_ln": ln(d, bias_only),
            "self_attn": {name: normal(d, d) for name in ("q", "k", "v", "out")},
            "self_post_ln": ln(d, True),
            "glu": {"ln0": ln(d, bias_only), "fc0": normal(d, ffn), "fc1": normal(d, ffn),
                    "ln1": ln(ffn, bias_only), "fc2": normal(ffn, d)},
        }
        if cross:
            p.update(cross_pre_ln=ln(d, bias_only), cross_post_ln=ln(d, True),
                     cross_attn={name: normal(d, d) for name in ("q", "k", "v", "out")})
        return p

    def side(vocab, positions, layers, ffn, cross):
        return {
            "embed_tokens": normal(vocab, d), "embed_positions": normal(positions, d),
            "ln_embed": ln(d, True), "final_ln": ln(d, config.force_ln_scale),
            "layers": [layer(ffn, cross) for _ in range(layers)],
        }

    return {
        "encoder": side(config.encoder_vocab_size, config.max_text_length, config.encoder_layers, config.encoder_ffn_dim, False),
        "decoder": side(config.image_vocab_size + 1, config.image_length, config.decoder_layers, config.decoder_ffn_dim, True),
        "lm_head": normal(d, config.image_vocab_size + 1),
    }


# ---------------------------------------------------------------- checkpoint layout

_LAYER_MODULES = {
    "LayerNorm_0": "self_pre_ln",
    "FlaxBartAttention_0": "self_attn",
    "LayerNorm_1": "self_post_ln",
    "LayerNorm_2": "cross_pre_ln",
    "FlaxBartAttention_1": "cross_attn",
    "LayerNorm_3": "cross_post_ln",
    "GLU_0": "glu",
}
_INNER_MODULES = {
    "q_proj": "q", "k_proj": "k", "v_proj": "v", "out_proj": "out",
    "LayerNorm_0": "ln0", "Dense_0": "fc0", "Dense_1": "fc1", "LayerNorm_1": "ln1", "Dense_2": "fc2",
}
_STACKS = {"encoder": "FlaxBartEncoderLayers", "decoder": "FlaxBartDecoderLayers"}
_SINGLE = {"encoder": "FlaxBartEncoderLayer_", "decoder": "FlaxBartDecoderLayer_"}


def _layer_from_flax(tree: dict) -> dict:
    def rename(node: dict, names: dict) -> dict:
        out = {}
        for key, value in node.items():
            if isinstance(value, dict) and set(value) == {"kernel"}:
                out[names.get(key, key)] = value["kernel"]
            elif isinstance(value, dict) and key in names and not {"scale", "bias"} >= set(value):
                out[names[key]] = rename(value, _INNER_MODULES)
            else:
                out[names.get(key, key)] = value
        return out

    return rename(tree, _LAYER_MODULES)


def _layer_to_flax(layer: dict) -> dict:
    back_outer = {v: k for k, v in _LAYER_MODULES.items()}
    back_inner = {v: k for k, v in _INNER_MODULES.items()}

    def rename(node: dict, names: dict) -> dict:
        out = {}
        for key, value in node.items():
            if isinstance(value, dict) and {"scale", "bias"} >= set(value):
                out[names[key]] = dict(value)
            elif isinstance(value, dict):
                out[names[key]] = rename(value, back_inner)
            else:
                out[names[key]] = {"kernel": value}
        return out

    return rename(layer, back_outer)


def _side_from_flax(tree: dict, side: str) -> dict:
    layers_tree = tree["layers"]
    if _STACKS[side] in layers_tree:
        stacked = layers_tree[_STACKS[side]]
        count = len(jax.tree_util.tree_leaves(stacked, is_leaf=_is_leaf)[0])
        layers = [jax.tree_util.tree_map(lambda a, i=i: a[i], stacked, is_leaf=_is_leaf) for i in range(count)]
    else:
        count = len(layers_tree)
        layers = [layers_tree[f"{_SINGLE[side]}{i}"] for i in range(count)]
    return {
        "embed_tokens": tree["embed_tokens"]["embedding"],
        "embed_positions": tree["embed_positions"]["embedding"],
        "ln_embed": dict(tree["layernorm_embedding"]),
        "final_ln": dict(tree["final_ln"]),
        "layers": [_layer_from_flax(layer) for layer in layers],
    }


def _side_to_flax(side_params: dict, side: str, scanned: bool) -> dict:
    layers = [_layer_to_flax(layer) for layer in side_params["layers"]]
    if scanned:
        layers_tree = {_STACKS[side]: jax.tree_util.tree_map(lambda *a: np.stack(a), *layers)}
    else:
        layers_tree = {f"{_SINGLE[side]}{i}": layer for i, layer in enumerate(layers)}
    return {
        "embed_tokens": {"embedding": side_params["embed_tokens"]},
        "embed_positions": {"embedding": side_params["embed_positions"]},
        "layernorm_embedding": dict(side_params["ln_embed"]),
        "layers": layers_tree,
        "final_ln": dict(side_params["final_ln"]),
    }


def params_from_flax(tree: dict) -> dict:
    """dalle-mini's parameter tree (scanned or not) -> this module's pytree."""
    tree = tree.get("params", tree)
    return {
        "encoder": _side_from_flax(tree["model"]["encoder"], "encoder"),
        "decoder": _side_from_flax(tree["model"]["decoder"], "decoder"),
        "lm_head": tree["lm_head"]["kernel"],
    }


def params_to_flax(params: dict, scanned: bool = True) -> dict:
    """This module's pytree -> dalle-mini's parameter tree, as flax_model.msgpack holds it."""
    params = jax.tree_util.tree_map(np.asarray, params)
    return {
        "lm_head": {"kernel": params["lm_head"]},
        "model": {
            "decoder": _side_to_flax(params["decoder"], "decoder", scanned),
            "encoder": _side_to_flax(params["encoder"], "encoder", scanned),
        },
    }


def _load_params(path: Path, dtype) -> dict:
    """Streams the file; each array is cast and placed on the device as it is read,
    and a scanned stack becomes one device array per layer right away, so the host
    never holds more than one of the file's arrays beyond what is already placed."""

    def convert(key_path, array):
        if dtype is not None and np.issubdtype(array.dtype, np.floating):
            array = array.astype(dtype, copy=False)
        if any(name in _STACKS.values() for name in key_path):
            return _Stacked([jax.device_put(a) for a in array])
        return jax.device_put(array)

    return params_from_flax(msgpack_io.load_tree(path, convert=convert))


class _Stacked(list):
    """One scanned array already split per layer: indexing picks a layer."""


def _is_leaf(node) -> bool:
    return isinstance(node, _Stacked)


# ---------------------------------------------------------------- public class


class DalleBart:
    """A loaded DalleBart. Tokens in, tokens out: see DallePipeline for text and pixels."""

    def __init__(self, config: DalleBartConfig, params: dict):
        self.config = config
        self.params = params
        self._uncond_kv = None  # cross-attention keys/values of the "" prompt, made once
        self._uncond_key = None

    @classmethod
    def from_pretrained(cls, folder: str | Path, dtype: str | None = None) -> DalleBart:
        """A folder with config.json and flax_model.msgpack (dalle-mini's layout);
        dtype e.g. "bfloat16" casts the weights as they are read."""
        folder = Path(folder)
        for name in ("config.json", "flax_model.msgpack"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"DalleBart checkpoint {folder}: no {name}")
        config = DalleBartConfig.from_json(folder / "config.json")
        params = _load_params(folder / "flax_model.msgpack", jnp.dtype(dtype) if dtype else None)
        return cls(config, params)

    def save_pretrained(self, folder: str | Path, scanned: bool = True) -> None:
        """config.json and flax_model.msgpack that dalle-mini and from_pretrained read."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        msgpack_io.save_tree(folder / "flax_model.msgpack", params_to_flax(self.params, scanned))

    def encode(self, input_ids, attention_mask) -> jax.Array:
        return _encode_jit(self.params, self.config, jnp.asarray(input_ids), jnp.asarray(attention_mask))

    def decode_logits(self, input_ids, attention_mask, image_tokens) -> jax.Array:
        """Teacher forcing: logits [b, image_length, image_vocab_size + 1] where
        logits[:, i] scores image_tokens[:, i] given the prompt and image_tokens[:, :i]."""
        image_tokens = jnp.asarray(image_tokens, jnp.int32)
        start = jnp.full((image_tokens.shape[0], 1), self.config.start_token, jnp.int32)
        decoder_input_ids = jnp.concatenate([start, image_tokens[:, :-1]], axis=1)
        return _logits_jit(
            self.params, self.config, jnp.asarray(input_ids), jnp.asarray(attention_mask), decoder_input_ids
        )

    def uncond_kv(self, uncond_ids, uncond_mask):
        """Cross-attention keys/values of the unconditional ("") prompt, cached."""
        key = (tuple(np.asarray(uncond_ids).ravel()), tuple(np.asarray(uncond_mask).ravel()))
        if self._uncond_key != key:
            self._uncond_kv = _uncond_kv_jit(self.params, self.config, jnp.asarray(uncond_ids), jnp.asarray(uncond_mask))
            self._uncond_key = key
        return self._uncond_kv

    def generate(
        self,
        input_ids,
        attention_mask,
        uncond_ids=None,
        uncond_mask=None,
        num_images: int = 1,
        seeds: list[int] | None = None,
        seed: int = 0,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        condition_scale: float = 10.0,
        batch_rows: int | None = 4,
        fixed_rows: bool = False,
        callback: TokenCallback | None = None,
        progress_spans: int = 8,
    ) -> np.ndarray:
        """Image tokens [prompts * num_images, image_length], prompt-major.

        Defaults: no top-k and no top-p cut (None; dalle-mini's top_k=None silently
        meant 50: pass top_k=50 for its behaviour), temperature 1, super-conditioning
        scale 10 as in dalle-mini's examples (1 turns it off and halves the work).
        Row i samples with PRNGKey(seeds[i]) (default seed + i), so an image does not
        depend on the other rows of its batch. Rows run in calls of a fixed size, the
        last one padded: the smallest power of two that holds them all, at most
        `batch_rows` (None: no limit, e.g. for a GPU's larger batches). So at most
        log2(batch_rows) + 1 programs compile (1, 2 and 4 rows at the default), a
        lone image does not pay for four, and an image's arithmetic depends on its
        call size only (float rounding; its tokens flip only if a draw lands within
        rounding of a boundary). fixed_rows: every call runs exactly batch_rows rows,
        so an image's tokens do not depend on its call size either (the serving path).

        callback(step_index, step_count, tokens): called after each of `progress_spans` spans
        of positions per row chunk, with every row's tokens so far (later positions
        0); a truthy answer stops generation (Interrupted). The tokens equal those of
        a call without callback."""
        input_ids = np.repeat(np.asarray(input_ids), num_images, axis=0)
        attention_mask = np.repeat(np.asarray(attention_mask), num_images, axis=0)
        rows = input_ids.shape[0]
        seeds = list(seeds) if seeds is not None else [seed + i for i in range(rows)]
        if len(seeds) != rows:
            raise ValueError(f"seeds: {len(seeds)} given for {rows} images")
        use_uncond = condition_scale != 1.0
        if use_uncond:
            if uncond_ids is None:
                raise ValueError("uncond_ids: needed when condition_scale != 1 (the tokens of the \"\" prompt)")
            uncond = self.uncond_kv(np.asarray(uncond_ids)[:1], np.asarray(uncond_mask)[:1])
            uncond_mask = jnp.asarray(np.asarray(uncond_mask)[:1])
        else:
            uncond, uncond_mask = None, None
        keys = np.stack([np.asarray(jax.random.PRNGKey(s)) for s in seeds])
        settings = (
            jnp.float32(temperature), jnp.int32(top_k or 0), jnp.float32(1.0 if top_p is None else top_p),
            jnp.float32(condition_scale),
        )
        step = 1 << (rows - 1).bit_length()
        if batch_rows:
            step = batch_rows if fixed_rows else min(step, batch_rows)
        length = self.config.image_length
        span = length if callback is None else max(1, length // progress_spans)
        spans = [np.arange(p, min(p + span, length), dtype=np.int32) for p in range(0, length, span)]
        chunks = [np.zeros((min(step, rows - start), length), np.int32) for start in range(0, rows, step)]
        # Rows run chunk by chunk; with a callback each chunk's positions run span by span.
        for chunk_index, start in enumerate(range(0, rows, step)):
            part = [a[start : start + step] for a in (input_ids, attention_mask, keys)]
            real = part[0].shape[0]
            part = [np.concatenate([a, np.repeat(a[-1:], step - real, axis=0)]) for a in part]
            cross, carry = start_sampling(
                self.params, self.config, *(jnp.asarray(a) for a in part[:2]), uncond, uncond_mask, use_uncond
            )
            for span_index, positions in enumerate(spans):
                carry, tokens = sample_span(
                    self.params, self.config, cross, carry, jnp.asarray(positions), jnp.asarray(part[2]),
                    *settings, use_uncond,
                )
                chunks[chunk_index][:, positions] = np.asarray(tokens)[:real]
                if callback is not None:
                    index, count = chunk_index * len(spans) + span_index, len(chunks) * len(spans)
                    if callback(index, count, np.concatenate(chunks)):
                        raise Interrupted(f"stopped after step {index + 1} of {count}")
        return np.concatenate(chunks)


@functools.partial(jax.jit, static_argnames=("config",))
def _encode_jit(params, config, input_ids, attention_mask):
    return encode(params, config, input_ids, attention_mask)


@functools.partial(jax.jit, static_argnames=("config",))
def _logits_jit(params, config, input_ids, attention_mask, decoder_input_ids):
    states = encode(params, config, input_ids, attention_mask)
    return decode_logits(params, config, states, attention_mask, decoder_input_ids)


@functools.partial(jax.jit, static_argnames=("config",))
def _uncond_kv_jit(params, config, uncond_ids, uncond_mask):
    states = encode(params, config, uncond_ids, uncond_mask)
    heads = config.decoder_attention_heads
    return [cross_attention_kv(states, layer, heads) for layer in params["decoder"]["layers"]]
