"""Golden fixtures for the DALL·E port, made by the original dalle-mini code.

Writes tests/models/dalle/fixtures/: a tiny random DalleBart checkpoint in the
published layout (config.json, flax_model.msgpack with scanned layers,
tokenizer.json), a tiny random VQGAN in vqgan-jax's layout, and what the original
code computes on them (golden.npz): normalised and tokenized prompts, encoder
states, teacher-forced logits, greedy (top_k=1) super-conditioned generations and
VQGAN pixels. tests/models/dalle/test_against_dalle_mini.py compares the port.

dalle-mini cannot be installed beside the project (it pins jax 0.3/0.4, flax 0.6,
transformers 4.25 with Flax code), so this runs once in a separate venv, outside
the repo, and only its small outputs are committed:

    nice -n 15 python3.11 -m venv /work/refvenv
    nice -n 15 /work/refvenv/bin/pip install "jax==0.4.13" "jaxlib==0.4.13" "flax==0.6.11" \
        "transformers==4.25.1" "numpy<2" "scipy<1.13" "ml_dtypes<0.3" "protobuf<5" wandb \
        einops ftfy unidecode emoji msgpack huggingface_hub "optax<0.1.8" "chex<0.1.83" \
        "orbax-checkpoint<0.2.4" "tensorstore<0.1.46"
    nice -n 15 /work/refvenv/bin/pip install --no-deps dalle-mini==0.1.5 \
        "vqgan-jax @ git+https://github.com/patil-suraj/vqgan-jax.git@10ef240f8ace869e437f3c32d14898f61512db12"
    OMP_NUM_THREADS=1 nice -n 15 /work/refvenv/bin/python scripts/make_dalle_fixtures.py

Nothing here downloads: the tokenizer is a byte-level BPE trained on the prompts
below, and dalle-mini's hashtag word list is replaced by a small local one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.experimental

# dalle-mini imports PartitionSpec from its pre-0.4 home
jax.experimental.PartitionSpec = jax.sharding.PartitionSpec

import numpy as np  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "tests" / "models" / "dalle" / "fixtures"
SEED = 20240611

PROMPTS = [
    "A Red circle to the LEFT of a #bluesquare!!!",
    "Café crème 😀 at <b>night</b>, 1,000 dogs & cats http://example.com/x 3.5 km 12/05",
    "sunset over the sea",
]
CORPUS = PROMPTS + [
    "a green triangle above a yellow star on a white background",
    "two blue squares and a red circle on a black background",
    "an astronaut riding a horse in a photorealistic style, trending on artstation",
    "face smiling face with open mouth cafe creme night dogs cats example com km",
]
WORDS = ["the", "a", "blue", "square", "red", "circle", "sun", "set", "sunset", "green", "s"]

DALLE_CONFIG = dict(
    encoder_vocab_size=512, image_vocab_size=16384, image_length=256, max_text_length=64,
    encoder_layers=2, decoder_layers=2, encoder_ffn_dim=24, decoder_ffn_dim=24,
    encoder_attention_heads=4, decoder_attention_heads=4, d_model=16, normalize_text=True,
    gradient_checkpointing=False,
)
VQGAN_CONFIG = dict(
    ch=32, ch_mult=[1, 1], num_res_blocks=1, attn_resolutions=[16], resolution=32,
    z_channels=32, embed_dim=32, n_embed=1024, out_ch=3, in_channels=3, double_z=False,
)


def make_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=DALLE_CONFIG["encoder_vocab_size"],
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer.save(str(folder / "tokenizer.json"))


def randomize(params, rng: np.random.Generator):
    """Weights of the scale trained ones have, so that every term matters."""

    def leaf(path, value):
        name = path[-1].key
        shape = value.shape
        if name == "scale":
            return (1.0 + 0.2 * rng.standard_normal(shape)).astype(np.float32)
        if name == "bias":
            return (0.2 * rng.standard_normal(shape)).astype(np.float32)
        if name == "embedding":
            return rng.standard_normal(shape).astype(np.float32)
        fan_in = int(np.prod(shape[-3:-1])) if len(shape) == 4 else shape[-2]
        return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(leaf, params)


def make_dalle(rng: np.random.Generator, golden: dict) -> None:
    from dalle_mini.model import DalleBart, DalleBartConfig, DalleBartProcessor, DalleBartTokenizer
    import dalle_mini.model.text as dm_text

    folder = OUT / "dalle-tiny"
    folder.mkdir(parents=True, exist_ok=True)
    make_tokenizer(folder)
    words = OUT / "hashtag-words.txt"
    words.write_text("\n".join(WORDS) + "\n")
    dm_text.hf_hub_download = lambda *args, **kwargs: str(words)  # never the network

    config = DalleBartConfig(**DALLE_CONFIG)
    model = DalleBart(config, seed=0, _do_init=True)
    model.params = randomize(model.params, rng)
    model.save_pretrained(folder)
    assert "FlaxBartDecoderLayers" in json.dumps(jax.tree_util.tree_map(lambda a: 0, model.params))

    tokenizer = DalleBartTokenizer.from_pretrained(str(folder))
    processor = DalleBartProcessor(tokenizer, config.normalize_text, config.max_text_length)
    golden["normalized"] = np.array([processor.text_processor(p) for p in PROMPTS])
    tokens = processor(PROMPTS)
    golden["input_ids"] = np.asarray(tokens["input_ids"])
    golden["attention_mask"] = np.asarray(tokens["attention_mask"])
    golden["uncond_input_ids"] = np.asarray(processor.input_ids_uncond)
    golden["uncond_attention_mask"] = np.asarray(processor.attention_mask_uncond)

    batch = len(PROMPTS)
    image_tokens = rng.integers(0, config.image_vocab_size, (batch, config.image_length)).astype(np.int32)
    start = np.full((batch, 1), config.decoder_start_token_id, np.int32)
    decoder_input_ids = np.concatenate([start, image_tokens[:, :-1]], axis=1)
    encoder_states = model.encode(tokens["input_ids"], tokens["attention_mask"]).last_hidden_state
    logits = np.asarray(
        model(tokens["input_ids"], tokens["attention_mask"], decoder_input_ids=decoder_input_ids).logits
    )
    # The full logits are 50 MB: keep every position on 256 columns (the start
    # token's and the codebook's ends among them) and every column on 2 positions.
    columns = np.unique(np.concatenate([[0, 16383, 16384], rng.choice(16385, 253, replace=False)]))
    positions = np.array([1, 255])
    golden["image_tokens"] = image_tokens
    golden["encoder_states"] = np.asarray(encoder_states)
    golden["logit_columns"] = columns
    golden["logits_on_columns"] = logits[:, :, columns]
    golden["logit_positions"] = positions
    golden["logits_at_positions"] = logits[:, positions, :]

    # Greedy decoding makes the sampler's choices deterministic, so the KV-cache
    # path and super-conditioning are compared token for token.
    golden["condition_scale"] = np.float32(3.0)
    greedy = model.generate(**tokens, prng_key=jax.random.PRNGKey(0), top_k=1, condition_scale=3.0)
    golden["greedy_tokens"] = np.asarray(greedy.sequences)[:, 1:]


def make_vqgan(rng: np.random.Generator, golden: dict) -> None:
    from vqgan_jax.modeling_flax_vqgan import VQModel, VQGANConfig

    folder = OUT / "vqgan-tiny"
    folder.mkdir(parents=True, exist_ok=True)
    config = VQGANConfig(**VQGAN_CONFIG)
    model = VQModel(config, input_shape=(1, 32, 32, 3), seed=0)
    model.params = randomize(model.params, rng)
    model.save_pretrained(folder)
    codes = rng.integers(0, config.n_embed, (2, 64)).astype(np.int32)  # two 8x8 grids
    golden["vqgan_codes"] = codes
    golden["vqgan_pixels"] = np.asarray(model.decode_code(codes)).clip(0.0, 1.0)


def main() -> None:
    print(f"jax {jax.__version__}", file=sys.stderr)
    rng = np.random.default_rng(SEED)
    golden: dict = {}
    make_dalle(rng, golden)
    make_vqgan(rng, golden)
    np.savez_compressed(OUT / "golden.npz", **golden)
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"wrote {OUT} ({total / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
