"""min-dalle's PyTorch classes with this port's weights, and back: for the tests
and bench/dalle_step.py, which run both implementations on the same weights."""

import numpy as np
import torch


def import_min_dalle_models():
    """min_dalle.models, without the process-wide changes its package import makes
    (autograd off, every core for torch)."""
    grad, threads = torch.is_grad_enabled(), torch.get_num_threads()
    import min_dalle.models

    torch.set_grad_enabled(grad)
    torch.set_num_threads(threads)
    return min_dalle.models


def _t(array) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float32))


def _load_layer_norm(module: torch.nn.LayerNorm, p: dict) -> None:
    # normformer's bias-only norms are a scale of 1 in min-dalle
    module.weight.copy_(_t(p["scale"]) if "scale" in p else torch.ones_like(module.weight))
    module.bias.copy_(_t(p["bias"]))


def _load_attention(module, p: dict) -> None:
    for ours, theirs in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("out", "out_proj")):
        getattr(module, theirs).weight.copy_(_t(p[ours]).T)


def _load_glu(module, p: dict) -> None:
    _load_layer_norm(module.ln0, p["ln0"])
    _load_layer_norm(module.ln1, p["ln1"])
    for name in ("fc0", "fc1", "fc2"):
        getattr(module, name).weight.copy_(_t(p[name]).T)


def load_side(module, p: dict) -> None:
    module.embed_tokens.weight.copy_(_t(p["embed_tokens"]))
    module.embed_positions.weight.copy_(_t(p["embed_positions"]))
    _load_layer_norm(module.layernorm_embedding, p["ln_embed"])
    _load_layer_norm(module.final_ln, p["final_ln"])
    for layer, lp in zip(module.layers, p["layers"]):
        _load_layer_norm(layer.pre_self_attn_layer_norm, lp["self_pre_ln"])
        _load_attention(layer.self_attn, lp["self_attn"])
        _load_layer_norm(layer.self_attn_layer_norm, lp["self_post_ln"])
        if hasattr(layer, "encoder_attn"):
            _load_layer_norm(layer.pre_encoder_attn_layer_norm, lp["cross_pre_ln"])
            _load_attention(layer.encoder_attn, lp["cross_attn"])
            _load_layer_norm(layer.encoder_attn_layer_norm, lp["cross_post_ln"])
        _load_glu(layer.glu, lp["glu"])



def min_dalle_bart(models, dalle):
    """min-dalle's encoder and decoder holding a DalleBart's weights."""
    c = dalle.config
    encoder = models.DalleBartEncoder(
        layer_count=c.encoder_layers, embed_count=c.d_model, attention_head_count=c.encoder_attention_heads,
        text_vocab_count=c.encoder_vocab_size, text_token_count=c.max_text_length,
        glu_embed_count=c.encoder_ffn_dim, device="cpu",
    ).eval()
    decoder = models.DalleBartDecoder(
        image_vocab_count=c.image_vocab_size, embed_count=c.d_model, attention_head_count=c.decoder_attention_heads,
        glu_embed_count=c.decoder_ffn_dim, layer_count=c.decoder_layers, device="cpu",
    ).eval()
    with torch.no_grad():
        load_side(encoder, dalle.params["encoder"])
        load_side(decoder, dalle.params["decoder"])
        decoder.lm_head.weight.copy_(_t(dalle.params["lm_head"]).T)
    return encoder, decoder


def vqgan_params_from_min_dalle(detokenizer) -> dict:
    """min-dalle's torch state (NCHW kernels [out, in, kh, kw]) -> vqgan-jax's flax tree."""
    tree: dict = {}
    for name, tensor in detokenizer.state_dict().items():
        *path, leaf = name.replace("up.", "up_").replace("block.", "block_").replace("attn.", "attn_").split(".")
        value = tensor.numpy()
        if path == ["embedding"]:
            path, leaf = ["quantize", "embedding"], "embedding"
        elif leaf == "weight" and value.ndim == 4:
            leaf, value = "kernel", value.transpose(2, 3, 1, 0)
        elif leaf == "weight":
            leaf = "scale"
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree
