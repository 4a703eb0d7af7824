"""The JAX trainers (shapes VQGAN, shapes DalleBart) run, resume and export folders
that the same loaders as DALL·E Mega's read (a few steps, tiny batches)."""

import json

import jax
import numpy as np
import pytest

from dalleflow.models.dalle import DallePipeline, VQGANDecoder
from dalleflow.models.dalle.text import DalleBartTokenizer
from dalleflow.models.dalle.vqgan import encode_tokens
from dalleflow.shapes import SceneSampler, render_scene
from dalleflow.train import dalle, jax_checkpoint, vqgan

CAPTION = "a red circle on the left on a white background"


@pytest.fixture(scope="module")
def trained_vqgan(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vqgan")
    common = ["--out", str(folder / "run"), "--batch-size", "2", "--eval-images", "2", "--restart-every", "2"]
    vqgan.main([*common, "--max-steps", "3"])
    vqgan.main([*common, "--max-steps", "5", "--export", str(folder / "model")])  # resumes at step 3
    return folder


def test_the_vqgan_resumes_and_exports_a_loadable_tokenizer_of_images(trained_vqgan):
    record = json.loads((trained_vqgan / "model" / "training.json").read_text())
    assert record["steps"] == 5 and set(record["reconstruction_accepted"]) == {"train", "held_out"}
    config, params = vqgan.load_params(trained_vqgan / "model")
    pixels = np.stack([render_scene(SceneSampler(seed=s).sample()) for s in range(2)]).astype(np.float32) / 255
    tokens = encode_tokens(params, config, pixels)
    assert tokens.shape == (2, 64) and int(tokens.max()) < config.n_embed
    decoded = VQGANDecoder.from_pretrained(trained_vqgan / "model").decode(tokens)
    assert decoded.shape == (2, 32, 32, 3)


def test_a_decoder_only_checkpoint_cannot_tokenize(tmp_path, trained_vqgan):
    decoder = VQGANDecoder.from_pretrained(trained_vqgan / "model")
    decoder.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no encoder"):
        vqgan.load_params(tmp_path)


def test_dead_codes_restart_at_encoder_outputs():
    params = {"quantize": {"embedding": {"embedding": np.zeros((4, 2), np.float32)}}}
    latents = np.full((1, 2, 2, 2), 7.0, np.float32)
    usage = np.array([3, 0, 1, 0])
    restarted, count = vqgan.restart_dead_codes(params, usage, latents, np.random.default_rng(0))
    codebook = np.asarray(restarted["quantize"]["embedding"]["embedding"])
    assert count == 2 and np.allclose(codebook[[1, 3]], 7.0, atol=0.01) and np.all(codebook[[0, 2]] == 0)


def test_the_word_tokenizer_speaks_bart(tmp_path):
    dalle.word_tokenizer().save(str(tmp_path / "tokenizer.json"))
    tokenizer = DalleBartTokenizer(tmp_path / "tokenizer.json", dalle.MAX_TEXT_LENGTH)
    ids, mask = tokenizer(["A Red circle, zebra"])
    vocab = dalle.word_tokenizer().get_vocab()
    words = [vocab[w] for w in ("<s>", "a", "red", "circle")] + [vocab["<unk>"], vocab["<unk>"], vocab["</s>"]]
    assert list(ids[0, :7]) == words and set(ids[0, 7:]) == {vocab["<pad>"]} and mask[0].sum() == 7
    longest = "a yellow triangle to the left of a purple triangle on a white background"
    assert tokenizer([longest])[1].sum() <= dalle.MAX_TEXT_LENGTH


def test_the_dalle_resumes_and_exports_a_pipeline(tmp_path, trained_vqgan):
    common = ["--vqgan", str(trained_vqgan / "model"), "--out", str(tmp_path / "run"), "--batch-size", "2",
              "--width", "64", "--layers", "1", "--eval-prompts", "1"]
    dalle.main([*common, "--max-steps", "2"])
    dalle.main([*common, "--max-steps", "4", "--export", str(tmp_path / "model")])
    assert json.loads((tmp_path / "model" / "training.json").read_text())["steps"] == 4
    pipeline = DallePipeline.from_pretrained(tmp_path / "model", trained_vqgan / "model")
    assert pipeline.model.config.image_length == 64 and pipeline.model.config.codebook_size == 512
    images = pipeline.generate([CAPTION], num_images=2, seed=0, condition_scale=3.0)
    assert [image.size for image in images] == [(32, 32)] * 2


def test_a_jax_checkpoint_must_match_its_model(tmp_path):
    jax_checkpoint.save(tmp_path, {"params": {"w": np.ones(2)}}, {"step": 1})
    trees, state = jax_checkpoint.load(tmp_path, like={"params": {"w": np.zeros(2)}})
    assert state == {"step": 1} and np.array_equal(trees["params"]["w"], np.ones(2))
    with pytest.raises(ValueError, match="another configuration"):
        jax_checkpoint.load(tmp_path, like={"params": {"w": np.zeros(2), "b": np.zeros(1)}})
    assert jax_checkpoint.load(tmp_path / "none", like={}) is None
    assert len(list(tmp_path.glob("arrays-*.msgpack"))) == 1
    assert jax.tree_util.tree_leaves(trees)  # arrays, not empty


def test_decoder_only_training_keeps_every_token(tmp_path, trained_vqgan):
    vqgan.main(["--decoder-only-from", str(trained_vqgan / "model"), "--out", str(tmp_path / "run"), "--batch-size", "2",
                "--eval-images", "2", "--max-steps", "2", "--export", str(tmp_path / "model")])
    (_, before), (_, after) = vqgan.load_params(trained_vqgan / "model"), vqgan.load_params(tmp_path / "model")
    for part in ("encoder", "quant_conv", "quantize"):
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(before[part]),
                                                        jax.tree_util.tree_leaves(after[part])))
    assert not np.array_equal(before["decoder"]["conv_out"]["kernel"], after["decoder"]["conv_out"]["kernel"])
