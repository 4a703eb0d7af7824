"""Train the shapes-world VQGAN: the image tokenizer of the embedded DALL·E.

    dalleflow train vqgan --out runs/vqgan --max-steps 3000 --export dalleflow/weights/shapes-vqgan

taming-transformers' encoder and decoder (dalleflow/models/dalle/vqgan.py), small,
over 32x32 images: three levels, so one token per 4x4 pixels, an 8x8 grid of 64
tokens. A shape 10-14 px wide spans 3-4 tokens, so circle, square and triangle
differ in their tokens, not only in the decoder's guesses. Losses: L1 + L2 on
pixels, the VQ codebook loss and a 0.25 commitment loss, straight-through
gradients. A flat-colour world needs no perceptual or adversarial loss: the
oracle, not a perceptual metric, is the bar, and it is measured on the
reconstructions. Codes unused for `--restart-every` steps restart at encoder
outputs of the current batch, which keeps the whole codebook in use.

Trained on the train split only (the held-out colour-shape pairs never appear),
so how well held-out scenes reconstruct is itself a measurement. The export is
the checkpoint format of dalle-mini's VQGAN (config.json + flax_model.msgpack),
encoder included, read by VQGANDecoder.from_pretrained like the ImageNet one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dalleflow.models.dalle import msgpack_io
from dalleflow.models.dalle.config import VQGANConfig
from dalleflow.models.dalle.vqgan import GN_GROUPS, VQGANDecoder, decode_tokens, encode_tokens, encoder, decoder, init_params, nearest_codes
from dalleflow.shapes import SceneSampler, render_scene
from dalleflow.train import jax_checkpoint
from dalleflow.train.clock import TrainingClock, stop_on_signal

SHAPES_VQGAN = VQGANConfig(
    ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(), resolution=32,
    z_channels=64, embed_dim=32, n_embed=512,
)
COMMITMENT = 0.25


class ImageBatches:
    """Endless seeded batches of train-split images, float [b, 32, 32, 3] in [0, 1]."""

    def __init__(self, seed: int, batch_size: int, split: str = "train"):
        self.sampler = SceneSampler(split, seed=seed)
        self.batch_size = batch_size

    def next_scenes(self):
        return [self.sampler.sample() for _ in range(self.batch_size)]

    def next(self) -> np.ndarray:
        return np.stack([render_scene(s) for s in self.next_scenes()]).astype(np.float32) / 255.0


def loss_fn(params: dict, config: VQGANConfig, pixels: jax.Array, tokens_frozen: bool = False):
    latents = encoder(params, config, pixels * 2.0 - 1.0)
    if tokens_frozen:  # no gradient reaches the encoder: skip computing it
        latents = jax.lax.stop_gradient(latents)
    codebook = params["quantize"]["embedding"]["embedding"]
    codes = nearest_codes(jax.lax.stop_gradient(latents), jax.lax.stop_gradient(codebook))
    quantized = codebook[codes]
    codebook_loss = jnp.mean(jnp.square(jax.lax.stop_gradient(latents) - quantized))
    commitment = jnp.mean(jnp.square(latents - jax.lax.stop_gradient(quantized)))
    straight_through = latents + jax.lax.stop_gradient(quantized - latents)
    z = jax.lax.conv_general_dilated(
        straight_through, params["post_quant_conv"]["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    ) + params["post_quant_conv"]["bias"]
    reconstruction = decoder(params, config, z)
    pixel_loss = jnp.mean(jnp.abs(reconstruction - pixels)) + jnp.mean(jnp.square(reconstruction - pixels))
    loss = pixel_loss + codebook_loss + COMMITMENT * commitment
    return loss, {"pixel": pixel_loss, "codebook": codebook_loss, "codes": codes, "latents": latents}


def make_step(config: VQGANConfig, optimizer: optax.GradientTransformation, tokens_frozen: bool = False):
    @jax.jit
    def step(params, opt_state, pixels):
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, config, pixels, tokens_frozen)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, aux

    return step


def restart_dead_codes(params: dict, usage: np.ndarray, latents: np.ndarray, rng: np.random.Generator) -> tuple[dict, int]:
    """Codes no image used since the last restart move to random encoder outputs of this batch."""
    dead = np.flatnonzero(usage == 0)
    if dead.size == 0:
        return params, 0
    pool = latents.reshape(-1, latents.shape[-1])
    picks = pool[rng.choice(len(pool), size=dead.size, replace=dead.size > len(pool))]
    codebook = np.array(params["quantize"]["embedding"]["embedding"])
    codebook[dead] = picks + rng.normal(0, 1e-3, picks.shape)
    params = {**params, "quantize": {"embedding": {"embedding": jnp.asarray(codebook)}}}
    return params, int(dead.size)


def evaluate(params: dict, config: VQGANConfig, count: int = 256) -> dict[str, float]:
    """Oracle acceptance of reconstructions (encode -> tokens -> decode), per split."""
    from dalleflow.shapes import judge

    result = {}
    for split in ("train", "held_out"):
        sampler = SceneSampler(split, seed=4321)
        scenes = [sampler.sample() for _ in range(count)]
        pixels = np.stack([render_scene(s) for s in scenes]).astype(np.float32) / 255.0
        tokens = encode_tokens(params, config, jnp.asarray(pixels))
        grid = (pixels.shape[1] // 2 ** (len(config.ch_mult) - 1),) * 2
        images = np.asarray(jnp.round(decode_tokens(params, config, tokens, grid) * 255)).astype(np.uint8)
        result[split] = float(np.mean([bool(judge(image, s.caption)) for image, s in zip(images, scenes)]))
    return result


def export(params: dict, config: VQGANConfig, folder: Path, record: dict) -> None:
    VQGANDecoder(config, jax.tree_util.tree_map(np.asarray, params)).save_pretrained(folder)
    (folder / "training.json").write_text(json.dumps(record, indent=1) + "\n")


def load_params(folder: str | Path) -> tuple[VQGANConfig, dict]:
    """A whole VQGAN (encoder too) from an exported folder: what tokenizes a DalleBart's data."""
    folder = Path(folder)
    config = VQGANConfig.from_json(folder / "config.json")
    tree = msgpack_io.load_tree(folder / "flax_model.msgpack", convert=lambda path, array: jnp.asarray(array))
    params = tree.get("params", tree)
    if "encoder" not in params:
        raise ValueError(f"{folder}: this VQGAN checkpoint has no encoder (a decoder-only export cannot tokenize images)")
    return config, params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/vqgan", help="checkpoint folder (resumed when present)")
    parser.add_argument("--minutes", type=float, default=60.0, help="stop after this much training time in total")
    parser.add_argument("--max-steps", type=int, default=10**9)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--restart-every", type=int, default=100, help="steps between dead-code restarts (0: never)")
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0)
    parser.add_argument("--eval-images", type=int, default=256)
    parser.add_argument("--export", default=None, help="write the VQGAN as a pretrained folder here at the end")
    parser.add_argument("--channels", type=int, default=SHAPES_VQGAN.ch, help="width of the first level (ch)")
    parser.add_argument("--res-blocks", type=int, default=SHAPES_VQGAN.num_res_blocks, help="per level (the decoder has one more)")
    parser.add_argument("--codes", type=int, default=SHAPES_VQGAN.n_embed, help="codebook size (n_embed)")
    parser.add_argument("--decoder-only-from", default=None,
                        help="start from this VQGAN folder and train only its decoder: the encoder and codebook, so "
                        "every image's tokens, stay as they are (a DalleBart trained on them stays valid)")
    args = parser.parse_args(argv)
    with stop_on_signal() as stop:
        train(args, stop)


def train(args: argparse.Namespace, stop) -> None:
    if args.channels % GN_GROUPS:
        raise SystemExit(f"--channels must be a multiple of {GN_GROUPS} (the GroupNorm groups), got {args.channels}")
    config = dataclasses.replace(SHAPES_VQGAN, ch=args.channels, num_res_blocks=args.res_blocks, n_embed=args.codes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    params = init_params(config, jax.random.PRNGKey(args.seed))
    schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, 200, max(args.max_steps, 1000), end_value=args.lr * 0.05)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=0.0))
    tokens_frozen = args.decoder_only_from is not None
    if tokens_frozen:
        config, params = load_params(args.decoder_only_from)
        decoding = {"decoder", "post_quant_conv"}
        labels = {name: jax.tree_util.tree_map(lambda _: "train" if name in decoding else "freeze", part)
                  for name, part in params.items()}
        optimizer = optax.multi_transform({"train": optimizer, "freeze": optax.set_to_zero()}, labels)
        args.restart_every = 0  # moving a code would change tokens
    opt_state = optimizer.init(params)
    batches = ImageBatches(args.seed, args.batch_size)
    rng = np.random.default_rng(args.seed)
    state = {"step": 0, "minutes": 0.0, "curve": []}

    saved = jax_checkpoint.load(out, like={"params": params, "opt_state": opt_state})
    if saved is not None:
        trees, state = saved
        params, opt_state = trees["params"], trees["opt_state"]
        batches.sampler.rng.setstate(jax_checkpoint.random_state(state.pop("data_rng")))
        rng = np.random.default_rng(state.pop("numpy_seed_sequence"))
        print(f"resumed at step {state['step']} ({state['minutes']:.1f} min)", flush=True)

    def save() -> None:
        # The data sampler's state goes to JSON; the restart RNG is reseeded from the step.
        data_rng = batches.sampler.rng.getstate()
        jax_checkpoint.save(out, {"params": params, "opt_state": opt_state},
                            {**state, "data_rng": data_rng, "numpy_seed_sequence": [args.seed, state["step"]]})

    step_fn = make_step(config, optimizer, tokens_frozen)
    usage = np.zeros(config.n_embed, np.int64)
    clock = TrainingClock(state, args.checkpoint_minutes)
    running = None
    in_use = restarted = 0
    while state["minutes"] < args.minutes and state["step"] < args.max_steps and not stop.is_set():
        pixels = jnp.asarray(batches.next())
        params, opt_state, loss, aux = step_fn(params, opt_state, pixels)
        codes = np.asarray(aux["codes"])
        usage += np.bincount(codes.reshape(-1), minlength=config.n_embed)
        state["step"] += 1
        if args.restart_every and state["step"] % args.restart_every == 0:
            params, restarted = restart_dead_codes(params, usage, np.asarray(aux["latents"]), rng)
            in_use = int((usage > 0).sum())
            usage[:] = 0
        clock.tick()
        running = float(aux["pixel"]) if running is None else 0.95 * running + 0.05 * float(aux["pixel"])
        if state["step"] % 100 == 0:
            print(f"step {state['step']} min {state['minutes']:.1f} pixel {running:.4f} "
                  f"codes in use {in_use} restarted {restarted}", flush=True)
        clock.checkpoint_if_due(lambda: evaluate(params, config, args.eval_images), save)

    if stop.is_set():
        print(f"stopped by a signal at step {state['step']}: checkpoint saved, rerun the command to resume", flush=True)
    save()
    if args.export:
        quality = evaluate(params, config, args.eval_images)
        export(params, config, Path(args.export), {
            "steps": state["step"], "minutes": round(state["minutes"], 1), "curve": state["curve"],
            "reconstruction_accepted": quality, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
            "decoder_only_from": args.decoder_only_from,
            "channels": config.ch, "res_blocks": config.num_res_blocks, "codes": config.n_embed,
        })
        print(f"exported to {args.export}: reconstructions accepted {quality}", flush=True)


if __name__ == "__main__":
    main()
