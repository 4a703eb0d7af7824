"""Train the shapes-world DALL·E: a small DalleBart over the shapes VQGAN's tokens.

    dalleflow train dalle --vqgan dalleflow/weights/shapes-vqgan --out runs/dalle \\
        --max-steps 4000 --export dalleflow/weights/shapes-dalle

The same DalleBart as DALL·E Mega (dalleflow/models/dalle/bart.py), narrow and
shallow: captions -> 64 image tokens (the VQGAN's 8x8 grid), teacher-forced
cross-entropy, AdamW with warmup and cosine decay (optax). 10% of captions are
replaced by "" so the model also learns the unconditional distribution that
super-conditioning subtracts. Images are rendered and tokenized on the fly from
the train split, so no example repeats and the held-out pairs never appear.
The text side is a word-level tokenizer.json over the world's words, with BART's
special tokens, read by the same DalleBartTokenizer as Mega's BPE one. The
export is dalle-mini's checkpoint layout (config.json, flax_model.msgpack with
scanned layers, tokenizer.json), loaded by DallePipeline.from_pretrained.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dalleflow.models.dalle.bart import DalleBart, decode_logits, encode, init_params
from dalleflow.models.dalle.config import DalleBartConfig
from dalleflow.models.dalle.text import DalleBartTokenizer
from dalleflow.models.dalle.vqgan import encode_tokens
from dalleflow.models.diffusion.text_encoder import shapes_vocab
from dalleflow.shapes import SceneSampler, render_scene
from dalleflow.train import jax_checkpoint
from dalleflow.train.clock import TrainingClock, stop_on_signal
from dalleflow.train.vqgan import load_params

CAPTION_DROPOUT = 0.1
MAX_TEXT_LENGTH = 20  # the longest caption is 14 words, + <s> and </s>
# BART's special tokens, at BART's ids: the tokenizer side of the checkpoint format.
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]


def word_tokenizer():
    """A tokenizers.Tokenizer over the shapes world's words: lower-cased, split on
    whitespace and punctuation, wrapped in <s> ... </s> as BART's tokenizer does;
    any other word is <unk>."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    words = [w for w in shapes_vocab() if not w.startswith("<")]
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + words)}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])]
    )
    return tokenizer


def shapes_config(vocab_size: int, codebook_size: int, image_length: int, width: int, layers: int) -> DalleBartConfig:
    return DalleBartConfig(
        encoder_vocab_size=vocab_size, image_vocab_size=codebook_size, image_length=image_length,
        max_text_length=MAX_TEXT_LENGTH, encoder_layers=layers, decoder_layers=layers,
        encoder_ffn_dim=2 * width, decoder_ffn_dim=2 * width,
        encoder_attention_heads=max(1, width // 64), decoder_attention_heads=max(1, width // 64),
        d_model=width,
    )


class TokenBatches:
    """Endless seeded (input_ids, attention_mask, image_tokens) from the train split,
    captions dropped to "" at CAPTION_DROPOUT."""

    def __init__(self, seed: int, batch_size: int, tokenizer: DalleBartTokenizer, vqgan_config, vqgan_params):
        self.sampler = SceneSampler("train", seed=seed)
        self.drop = np.random.default_rng(seed)
        self.batch_size = batch_size
        self.tokenizer = tokenizer
        self.vqgan = (vqgan_config, vqgan_params)

    def next(self):
        scenes = [self.sampler.sample() for _ in range(self.batch_size)]
        pixels = np.stack([render_scene(s) for s in scenes]).astype(np.float32) / 255.0
        tokens = encode_tokens(self.vqgan[1], self.vqgan[0], jnp.asarray(pixels))
        dropped = self.drop.random(len(scenes)) < CAPTION_DROPOUT
        captions = ["" if d else s.caption for s, d in zip(scenes, dropped)]
        ids, mask = self.tokenizer(captions)
        return jnp.asarray(ids), jnp.asarray(mask), tokens


def loss_fn(params: dict, config: DalleBartConfig, ids, mask, tokens):
    start = jnp.full((tokens.shape[0], 1), config.start_token, jnp.int32)
    inputs = jnp.concatenate([start, tokens[:, :-1]], axis=1)
    states = encode(params, config, ids, mask)
    logits = decode_logits(params, config, states, mask, inputs)[:, :, : config.codebook_size]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, tokens).mean()
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == tokens)
    return loss, accuracy


def make_step(config: DalleBartConfig, optimizer: optax.GradientTransformation):
    @jax.jit
    def step(params, opt_state, ids, mask, tokens):
        (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, config, ids, mask, tokens)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, accuracy

    return step


def evaluate(pipeline, prompt_count: int, condition_scale: float = 3.0) -> dict[str, float]:
    """Oracle acceptance of one image per prompt, on fixed seen and held-out prompts."""
    from dalleflow.shapes import judge

    result = {}
    for split in ("train", "held_out"):
        sampler = SceneSampler(split, seed=1234)
        captions = [sampler.sample().caption for _ in range(prompt_count)]
        images = pipeline.generate(captions, num_images=1, seed=0, condition_scale=condition_scale)
        result[split] = float(np.mean([bool(judge(im, c)) for im, c in zip(images, captions)]))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vqgan", required=True, help="the trained VQGAN folder (with its encoder)")
    parser.add_argument("--out", default="runs/dalle", help="checkpoint folder (resumed when present)")
    parser.add_argument("--minutes", type=float, default=120.0, help="stop after this much training time in total")
    parser.add_argument("--max-steps", type=int, default=10**9)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0)
    parser.add_argument("--eval-prompts", type=int, default=64)
    parser.add_argument("--export", default=None, help="write the model as a pretrained folder here at the end")
    args = parser.parse_args(argv)
    with stop_on_signal() as stop:
        train(args, stop)


def train(args: argparse.Namespace, stop) -> None:
    from dalleflow.models.dalle import DallePipeline

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    vq_config, vq_params = load_params(args.vqgan)
    text = word_tokenizer()
    text.save(str(out / "tokenizer.json"))
    tokenizer = DalleBartTokenizer(out / "tokenizer.json", MAX_TEXT_LENGTH)
    grid_side = 32 // 2 ** (len(vq_config.ch_mult) - 1)
    config = shapes_config(text.get_vocab_size(), vq_config.n_embed, grid_side**2, args.width, args.layers)
    params = init_params(config, jax.random.PRNGKey(args.seed))
    schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, 300, max(args.max_steps, 1000), end_value=args.lr * 0.05)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=0.01))
    opt_state = optimizer.init(params)
    batches = TokenBatches(args.seed, args.batch_size, tokenizer, vq_config, vq_params)
    state = {"step": 0, "minutes": 0.0, "curve": []}

    saved = jax_checkpoint.load(out, like={"params": params, "opt_state": opt_state})
    if saved is not None:
        trees, state = saved
        params, opt_state = trees["params"], trees["opt_state"]
        batches.sampler.rng.setstate(jax_checkpoint.random_state(state.pop("data_rng")))
        batches.drop = np.random.default_rng([args.seed, state["step"]])
        print(f"resumed at step {state['step']} ({state['minutes']:.1f} min)", flush=True)

    def save() -> None:
        jax_checkpoint.save(out, {"params": params, "opt_state": opt_state},
                            {**state, "data_rng": batches.sampler.rng.getstate()})

    def export(folder: Path) -> DallePipeline:
        DalleBart(config, jax.tree_util.tree_map(np.asarray, params)).save_pretrained(folder)
        text.save(str(folder / "tokenizer.json"))
        return DallePipeline.from_pretrained(folder, args.vqgan)

    step_fn = make_step(config, optimizer)
    clock = TrainingClock(state, args.checkpoint_minutes)
    running = None
    while state["minutes"] < args.minutes and state["step"] < args.max_steps and not stop.is_set():
        params, opt_state, loss, accuracy = step_fn(params, opt_state, *batches.next())
        state["step"] += 1
        clock.tick()
        running = (float(loss), float(accuracy)) if running is None else tuple(
            0.95 * r + 0.05 * float(v) for r, v in zip(running, (loss, accuracy)))
        if state["step"] % 50 == 0:
            print(f"step {state['step']} min {state['minutes']:.1f} loss {running[0]:.4f} "
                  f"token accuracy {running[1]:.3f}", flush=True)
        clock.checkpoint_if_due(lambda: evaluate(export(out / "latest"), args.eval_prompts), save)

    if stop.is_set():
        print(f"stopped by a signal at step {state['step']}: checkpoint saved, rerun the command to resume", flush=True)
    save()
    if args.export:
        folder = Path(args.export)
        export(folder)
        (folder / "training.json").write_text(json.dumps({
            "steps": state["step"], "minutes": round(state["minutes"], 1), "curve": state["curve"],
            "batch_size": args.batch_size, "lr": args.lr, "width": args.width, "layers": args.layers,
            "seed": args.seed, "vqgan": str(args.vqgan),
        }, indent=1) + "\n")
        print(f"exported to {folder}", flush=True)


if __name__ == "__main__":
    main()
