import dataclasses

import jax
import numpy as np
import pytest

from dalleflow.models.contract import Sampling, expand
from dalleflow.models.dalle import DalleBart, DallePipeline, TextNormalizer, VQGANConfig, VQGANDecoder
from dalleflow.models.dalle.bart import init_params
from dalleflow.models.dalle.vqgan import init_decoder_params

from .conftest import FIXTURES

PROMPT = "a red circle to the left of a blue square"
# f2, 16384 codes: decodes the tiny DalleBart's 16x16 token grid to 32x32 pixels
TINY_VQGAN = VQGANConfig(ch=32, ch_mult=(1, 1), num_res_blocks=1, resolution=32, z_channels=32, embed_dim=32)


@pytest.fixture(scope="module")
def pipeline(tiny_tokenizer):
    model = DalleBart.from_pretrained(FIXTURES / "dalle-tiny")
    vqgan = VQGANDecoder(TINY_VQGAN, init_decoder_params(TINY_VQGAN, jax.random.PRNGKey(0)))
    return DallePipeline(tiny_tokenizer, model, vqgan)


def pixels(images):
    return np.stack([np.asarray(im) for im in images])


def test_prompts_become_images(pipeline):
    images = pipeline.generate([PROMPT, "sunset"], num_images=2, seed=1, top_k=64)
    assert [im.size for im in images] == [(32, 32)] * 4
    assert len({pixels([im]).tobytes() for im in images}) == 4


def test_an_image_depends_only_on_its_prompt_and_seed(pipeline):
    options = dict(top_p=0.9, temperature=0.8)
    alone = pipeline.generate_tokens([PROMPT, PROMPT, PROMPT], num_images=1, seed=7, **options)
    # image 2 of a request seeded 5 samples with seed 7, here beside another prompt's
    # images (both calls run 4 rows at a time, so the arithmetic is the same)
    batched = pipeline.generate_tokens([PROMPT, "sunset"], num_images=3, seed=5, **options)
    assert np.array_equal(alone[0], batched[2])
    assert not np.array_equal(batched[0], batched[1])


def test_sampling_stays_inside_the_vqgan_codebook_and_the_top_k(pipeline):
    tokens = pipeline.generate_tokens([PROMPT], num_images=1, seed=0, top_k=1, condition_scale=1.0)
    ids, mask = pipeline.tokenizer([PROMPT])
    # greedy without super-conditioning: every token is the argmax of its teacher-forced logits
    logits = np.asarray(pipeline.model.decode_logits(ids, mask, tokens))[:, :, :16384]
    assert np.array_equal(tokens, logits.argmax(-1))


def test_a_vqgan_with_more_codes_than_the_model_is_refused(tiny_tokenizer, tiny_dalle):
    bigger = dataclasses.replace(TINY_VQGAN, n_embed=20000)
    vqgan = VQGANDecoder(bigger, init_decoder_params(bigger, jax.random.PRNGKey(0)))
    with pytest.raises(ValueError, match="n_embed=20000"):
        DallePipeline(tiny_tokenizer, tiny_dalle, vqgan)


def test_fresh_weights_save_and_load_in_the_published_layout(tmp_path):
    model = DalleBart(tiny_config := DalleBart.from_pretrained(FIXTURES / "dalle-tiny").config,
                      init_params(tiny_config, jax.random.PRNGKey(1)))
    model.save_pretrained(tmp_path / "dalle")
    vqgan = VQGANDecoder(TINY_VQGAN, init_decoder_params(TINY_VQGAN, jax.random.PRNGKey(2)))
    vqgan.save_pretrained(tmp_path / "vqgan")
    loaded = VQGANDecoder.from_pretrained(tmp_path / "vqgan")
    codes = np.arange(64).reshape(1, 64)
    assert np.array_equal(np.asarray(loaded.decode(codes)), np.asarray(vqgan.decode(codes)))
    assert DalleBart.from_pretrained(tmp_path / "dalle").config == model.config


def test_the_normaliser_works_offline_without_a_word_list():
    # dalle-mini downloads its hashtag word list; without one a hashtag stays one word
    assert TextNormalizer()("A #RedCircle!!! &amp; 😀") == " a redcircle, &, grinning face"


def test_a_missing_checkpoint_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="flax_model.msgpack"):
        (tmp_path / "config.json").write_text("{}")
        DalleBart.from_pretrained(tmp_path)


def test_an_unsupported_variant_is_refused(tmp_path):
    from dalleflow.models.dalle import DalleBartConfig

    with pytest.raises(ValueError, match="ln_positions='swinv2'"):
        DalleBartConfig.from_dict({"ln_positions": "swinv2"})


def test_the_factory_builds_it_from_weight_sources():
    from dalleflow.models.factory import create_model

    generator = create_model({
        "family": "dalle",
        "weights": f"local-dir:{FIXTURES / 'dalle-tiny'}",
        "options": {"vqgan": f"local-dir:{FIXTURES / 'vqgan-tiny'}", "hashtag_word_list": str(FIXTURES / "hashtag-words.txt"),
                    "top_k": 16},
    })
    assert generator.pipeline.model.config.codebook_size == 1024  # the tiny VQGAN's codebook
    # the contract's fields: guidance_scale is super-conditioning's scale; steps mean nothing here
    images = generator.generate([PROMPT], [0], Sampling(guidance_scale=4.0, num_inference_steps=7))
    assert [im.size for im in images] == [(32, 32)]
    same = generator.pipeline.generate([PROMPT], num_images=1, seed=0, top_k=16, condition_scale=4.0)
    assert pixels(images).tobytes() == pixels(same).tobytes()


def test_a_negative_prompt_replaces_the_unconditional_one(pipeline):
    plain = pipeline.generate_tokens([PROMPT], num_images=2, seed=3, condition_scale=5.0)
    empty = pipeline.generate_tokens([PROMPT], num_images=2, seed=3, condition_scale=5.0, negative_prompt="")
    negative = pipeline.generate_tokens([PROMPT], num_images=2, seed=3, condition_scale=5.0, negative_prompt="sunset")
    assert np.array_equal(plain, empty)
    assert not np.array_equal(plain, negative)


def test_progress_comes_in_spans_and_changes_no_token(pipeline):
    seen = []

    def callback(step, step_count, previews):
        images = previews()
        seen.append((step, step_count, len(images), images[0].size))

    options = dict(num_images=3, seed=2, top_k=32)
    with_progress = pipeline.generate([PROMPT], callback=callback, **options)
    assert pixels(with_progress).tobytes() == pixels(pipeline.generate([PROMPT], **options)).tobytes()
    # 3 rows run as one chunk of 4; 256 positions in 8 spans
    assert seen == [(i, 8, 3, (32, 32)) for i in range(8)]


def test_a_truthy_callback_stops_between_spans(pipeline):
    from dalleflow.models.contract import Interrupted

    steps = []
    with pytest.raises(Interrupted, match="step 2 of 8"):
        pipeline.generate([PROMPT], num_images=1, seed=0, callback=lambda step, count, previews: steps.append(step) or step == 1)
    assert steps == [0, 1]


def test_a_checkpoints_generation_config_sets_the_sampling_defaults(tmp_path):
    import shutil

    from dalleflow.models.dalle.generator import DalleGenerator

    shutil.copytree(FIXTURES / "dalle-tiny", tmp_path / "dalle")
    vqgan = FIXTURES / "vqgan-tiny"
    words = FIXTURES / "hashtag-words.txt"
    assert DalleGenerator.from_pretrained(tmp_path / "dalle", vqgan, hashtag_word_list=words).sampling["temperature"] == 1.0
    (tmp_path / "dalle" / "generation_config.json").write_text('{"temperature": 0.5, "top_k": 8, "guidance_scale": 2.0}')
    saved = DalleGenerator.from_pretrained(tmp_path / "dalle", vqgan, hashtag_word_list=words)
    assert saved.sampling == {"temperature": 0.5, "top_k": 8, "top_p": None} and saved.defaults.guidance_scale == 2.0
    # A request without guidance_scale samples at the checkpoint's guidance_scale.
    pixels = [np.asarray(image) for image in saved.generate(*expand([PROMPT], 2, seed=1))]
    guided = saved.generate(*expand([PROMPT], 2, seed=1), Sampling(guidance_scale=2.0))
    assert [np.array_equal(a, np.asarray(b)) for a, b in zip(pixels, guided)] == [True, True]
    overridden = DalleGenerator.from_pretrained(tmp_path / "dalle", vqgan, hashtag_word_list=words, top_k=None)
    assert overridden.sampling == {"temperature": 0.5, "top_k": None, "top_p": None}
    with pytest.raises(TypeError, match="unknown sampling options"):
        DalleGenerator.from_pretrained(tmp_path / "dalle", vqgan, hashtag_word_list=words, tempreature=0.5)


def test_the_generators_images_per_call_sets_how_many_images_one_sampling_call_holds():
    from dalleflow.models.dalle.generator import DalleGenerator

    def step_counts(images_per_call):
        generator = DalleGenerator.from_pretrained(FIXTURES / "dalle-tiny", FIXTURES / "vqgan-tiny", top_k=32,
                                                   hashtag_word_list=FIXTURES / "hashtag-words.txt",
                                                   images_per_call=images_per_call)
        counts = set()
        generator.generate(*expand([PROMPT], 3), callback=lambda step, count, previews: counts.add(count))
        return counts

    # 8 progress spans per call: 3 images in one call of 16 rows, or in three calls of 1.
    assert step_counts(16) == {8}
    assert step_counts(1) == {24}
