"""The port against the original dalle-mini 0.1.5 code, on tiny random weights in
the published file layout (fixtures made by scripts/make_dalle_fixtures.py)."""

import numpy as np

from dalleflow.models.dalle import TextNormalizer, VQGANDecoder

from .conftest import FIXTURES

PROMPTS = [
    "A Red circle to the LEFT of a #bluesquare!!!",
    "Café crème 😀 at <b>night</b>, 1,000 dogs & cats http://example.com/x 3.5 km 12/05",
    "sunset over the sea",
]
TOLERANCE = 1e-4


def test_text_normalisation_matches(golden):
    normalizer = TextNormalizer(FIXTURES / "hashtag-words.txt")
    assert [normalizer(p) for p in PROMPTS] == list(golden["normalized"])


def test_tokens_match(golden, tiny_tokenizer):
    ids, mask = tiny_tokenizer(PROMPTS)
    assert np.array_equal(ids, golden["input_ids"])
    assert np.array_equal(mask, golden["attention_mask"])
    uncond_ids, uncond_mask = tiny_tokenizer.uncond()
    assert np.array_equal(uncond_ids, golden["uncond_input_ids"])
    assert np.array_equal(uncond_mask, golden["uncond_attention_mask"])


def test_encoder_states_match(golden, tiny_dalle):
    states = np.asarray(tiny_dalle.encode(golden["input_ids"], golden["attention_mask"]))
    assert np.abs(states - golden["encoder_states"]).max() <= TOLERANCE


def test_teacher_forced_logits_match(golden, tiny_dalle):
    logits = np.asarray(tiny_dalle.decode_logits(golden["input_ids"], golden["attention_mask"], golden["image_tokens"]))
    assert logits.shape == (3, 256, 16385)
    on_columns = logits[:, :, golden["logit_columns"]]
    at_positions = logits[:, golden["logit_positions"], :]
    assert np.abs(on_columns - golden["logits_on_columns"]).max() <= TOLERANCE
    assert np.abs(at_positions - golden["logits_at_positions"]).max() <= TOLERANCE
    assert np.abs(golden["logits_on_columns"]).max() > 1.0  # the weights are not near zero


def test_greedy_super_conditioned_generation_matches(golden, tiny_dalle):
    # top_k=1 takes the sampler's randomness out: the KV-cache decode loop,
    # cross-attention cache and super-conditioning decide every token.
    tokens = tiny_dalle.generate(
        golden["input_ids"], golden["attention_mask"],
        golden["uncond_input_ids"], golden["uncond_attention_mask"],
        top_k=1, condition_scale=float(golden["condition_scale"]),
    )
    assert np.array_equal(tokens, golden["greedy_tokens"])


def test_vqgan_pixels_match(golden):
    vqgan = VQGANDecoder.from_pretrained(FIXTURES / "vqgan-tiny")
    assert "encoder" not in vqgan.params  # the decoder alone is read
    pixels = np.asarray(vqgan.decode(golden["vqgan_codes"]))
    assert pixels.shape == golden["vqgan_pixels"].shape == (2, 16, 16, 3)
    assert np.abs(pixels - golden["vqgan_pixels"]).max() <= TOLERANCE
