"""The conformance suite: every model family against the contract of
dalleflow/models/contract.py, on a tiny random checkpoint of its own (as
diffusers' PipelineTesterMixin runs every pipeline through one set of tests).

Adding a family = adding a Family to FAMILIES: a loader of its tiny checkpoint,
the roles it plays and the sampling that keeps it fast.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from dalleflow.models.contract import (
    ImageToImage,
    Interrupted,
    Sampling,
    SamplingDefaults,
    TextToImage,
    check_role,
    expand,
    unknown_words,
)
from tests.tiny_checkpoints import DALLE_FIXTURES

PROMPT = "a red circle on the left on a white background"
OTHERS = ["a blue square above a green triangle on a black background", "a yellow circle on the right on a gray background"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    load: Callable[[Path], object]  # (a temporary folder) -> the model
    roles: tuple[str, ...]
    sampling: Sampling  # fast, guided, with a negative prompt
    step_count: Callable[[int, int], int]  # (rows, images_per_call) -> steps the callback sees
    other_sizes: bool = False  # makes sizes besides its own (SizeLimits.multiple)


def _shapes_diffusion(folder: Path):
    from dalleflow.models.diffusion import ShapesDiffusion
    from tests.conftest import build_tiny_diffusion

    build_tiny_diffusion().save_pretrained(folder)
    return ShapesDiffusion.from_pretrained(folder, device="cpu")


def _dalle(folder: Path):
    from dalleflow.models.factory import create_model

    return create_model({
        "family": "dalle", "weights": f"local-dir:{DALLE_FIXTURES / 'dalle-tiny'}",
        "options": {"vqgan": f"local-dir:{DALLE_FIXTURES / 'vqgan-tiny'}",
                    "hashtag_word_list": str(DALLE_FIXTURES / "hashtag-words.txt"), "top_k": 16},
    })  # fmt: skip


def _stable_diffusion(folder: Path):
    from dalleflow.models.factory import create_model
    from tests.tiny_checkpoints import save_tiny_stable_diffusion

    _, checkpoint = save_tiny_stable_diffusion(folder)
    return create_model({"family": "stable-diffusion", "weights": f"local-dir:{checkpoint}", "options": {"images_per_call": 2}})


def _diffusers(kind: str, **options):
    """A loader of the tiny `kind` pipeline (tests/tiny_checkpoints.py) through the diffusers family."""

    def load(folder: Path):
        from dalleflow.models.factory import create_model
        from tests.tiny_checkpoints import save_tiny_pipeline

        checkpoint = save_tiny_pipeline(kind, folder)
        return create_model({"family": "diffusers", "weights": f"local-dir:{checkpoint}",
                             "options": {"images_per_call": 2, **options}})  # fmt: skip

    return load


def _glid3(folder: Path):
    from dalleflow.models.factory import create_model
    from tests.tiny_checkpoints import save_tiny_glid3

    files, tokenizer = save_tiny_glid3(folder)
    # diffusion.pt, without clip_proj (finetune.pt's CLIP path: tests/models/test_glid3.py); PLMS, its default.
    return create_model({"family": "glid3", "weights": f"local-dir:{files}", "options": {
        "tokenizer": f"local-dir:{tokenizer}", "unet": "diffusion.pt", "image_size": 64, "images_per_call": 2}})  # fmt: skip


def _chunks(rows: int, per_call: int) -> int:
    return -(-rows // per_call)


FAMILIES = [
    Family("shapes-diffusion", _shapes_diffusion, ("generator", "refiner"),
           Sampling(num_inference_steps=3, guidance_scale=3.0, negative_prompt=OTHERS[0]), lambda rows, per_call: 3),
    # An autoregressive model: 8 spans of its tokens per call of images_per_call rows.
    Family("dalle", _dalle, ("generator",),
           Sampling(guidance_scale=3.0, negative_prompt=OTHERS[0]), lambda rows, per_call: 8 * _chunks(rows, per_call)),
    Family("stable-diffusion", _stable_diffusion, ("generator", "refiner"),
           Sampling(num_inference_steps=3, guidance_scale=3.0, negative_prompt=OTHERS[0]),
           lambda rows, per_call: 3 * _chunks(rows, per_call), other_sizes=True),
    # GLID-3 XL from its original files; PLMS evaluates its first step twice (steps + 1 calls).
    Family("glid3", _glid3, ("generator", "refiner"),
           Sampling(num_inference_steps=3, guidance_scale=3.0, negative_prompt=OTHERS[0]), lambda rows, per_call: 4,
           other_sizes=True),
    # Today's diffusers families: SDXL's UNet, SD3's and FLUX's flow-matching transformers
    # (FLUX.1-dev's guidance embedding; its negative prompt through true guidance).
    *(Family(kind, _diffusers(kind, **options), ("generator", "refiner"),
             Sampling(num_inference_steps=3, guidance_scale=3.0, negative_prompt=OTHERS[0]),
             lambda rows, per_call: 3 * _chunks(rows, per_call), other_sizes=True)
      for kind, options in (("sdxl", {}), ("sd3", {}), ("flux", {"image_size": 32, "true_cfg_scale": 2.0}))),
]  # fmt: skip
REFINERS = [family for family in FAMILIES if "refiner" in family.roles]
SIZED = [family for family in FAMILIES if family.other_sizes]


@pytest.fixture(scope="module", params=FAMILIES, ids=lambda family: family.name)
def family(request, tmp_path_factory):
    model = request.param.load(tmp_path_factory.mktemp(request.param.name))
    return request.param, model


@pytest.fixture(scope="module", params=REFINERS, ids=lambda family: family.name)
def refiner(request, tmp_path_factory):
    model = request.param.load(tmp_path_factory.mktemp(request.param.name))
    return request.param, model


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def batch_around(prompt: str, seed: int, size: int, position: int) -> tuple[list[str], list[int]]:
    """`size` rows with (prompt, seed) at `position`, the others of other prompts and seeds."""
    prompts = [OTHERS[i % 2] for i in range(size)]
    seeds = [100 + 7 * i for i in range(size)]
    prompts[position], seeds[position] = prompt, seed
    return prompts, seeds


def test_the_family_implements_its_roles(family):
    spec, model = family
    for role in spec.roles:
        check_role(model, role)
    assert isinstance(model.defaults, SamplingDefaults) and model.images_per_call >= 1


@pytest.mark.parametrize("size, position", [(3, 1), (9, 7)])
def test_a_seed_gives_the_same_bytes_alone_and_inside_a_batch(family, size, position):
    spec, model = family
    alone = model.generate([PROMPT], [42], spec.sampling)
    assert len(alone) == 1 and isinstance(alone[0], Image.Image)
    batch = model.generate(*batch_around(PROMPT, 42, size, position), spec.sampling)
    assert len(batch) == size
    assert png(batch[position]) == png(alone[0])
    # The others are images of their own: the rows do not collapse into one.
    assert len({png(image) for image in batch}) == size


def test_sampling_left_none_takes_the_model_defaults(family):
    spec, model = family
    defaults = model.defaults
    explicit = Sampling(num_inference_steps=defaults.num_inference_steps, guidance_scale=defaults.guidance_scale)
    if defaults.num_inference_steps and defaults.num_inference_steps > 10:  # keep the run short
        model.defaults = dataclasses.replace(defaults, num_inference_steps=3)
        explicit = dataclasses.replace(explicit, num_inference_steps=3)
    try:
        assert png(model.generate([PROMPT], [5])[0]) == png(model.generate([PROMPT], [5], explicit)[0])
    finally:
        model.defaults = defaults


def test_guidance_and_the_negative_prompt_change_the_image(family):
    spec, model = family
    base = png(model.generate([PROMPT], [3], spec.sampling)[0])
    other_negative = dataclasses.replace(spec.sampling, negative_prompt=OTHERS[1])
    other_guidance = dataclasses.replace(spec.sampling, guidance_scale=7.0)
    assert png(model.generate([PROMPT], [3], other_negative)[0]) != base
    assert png(model.generate([PROMPT], [3], other_guidance)[0]) != base


def test_the_callback_sees_every_step_with_previews_of_each_row(family):
    spec, model = family
    rows = model.images_per_call + 1  # two calls where a family runs fixed calls of rows
    seen, preview_sizes = [], []

    def callback(step, step_count, previews):
        seen.append((step, step_count))
        if previews is not None:
            preview_sizes.append(len(previews()))

    images = model.generate(*expand([PROMPT], rows, seed=0), spec.sampling, callback)
    count = spec.step_count(rows, model.images_per_call)
    assert seen == [(i, count) for i in range(count)]
    assert len(images) == rows
    # Previews, where a family has them, show every row of the call they come from.
    assert all(size in (rows, model.images_per_call) for size in preview_sizes)


def test_the_callback_stops_the_loop_between_two_steps(family):
    spec, model = family
    seen = []
    with pytest.raises(Interrupted):
        model.generate([PROMPT], [0], spec.sampling, lambda step, count, previews: seen.append(step) or step == 1)
    assert seen == [0, 1]


@pytest.mark.parametrize("call, message", [
    (lambda model: model.generate([PROMPT, PROMPT], [1]), "seeds"),
    (lambda model: model.generate(PROMPT, [1]), "prompts"),
    (lambda model: model.generate([], []), "prompts"),
    (lambda model: model.generate([PROMPT], [-1]), "seeds"),
    (lambda model: model.generate([PROMPT], [1], Sampling(num_inference_steps=0)), "num_inference_steps"),
    (lambda model: model.generate([PROMPT], [1], Sampling(guidance_scale=-1.0)), "guidance_scale"),
])  # fmt: skip
def test_bad_arguments_raise_errors_that_name_them(family, call, message):
    _, model = family
    with pytest.raises(ValueError, match=message):
        call(model)


# The refiner role.


@pytest.fixture(scope="module")
def source(refiner) -> Image.Image:
    spec, model = refiner
    return model.generate([OTHERS[0]], [11], spec.sampling)[0]


def test_refine_at_skip_rate_1_keeps_the_image(refiner, source):
    spec, model = refiner
    kept = model.refine([source, source], [PROMPT, PROMPT], [0, 1], skip_rate=1.0, sampling=spec.sampling)
    assert [png(image) for image in kept] == [png(source)] * 2


def test_refine_at_skip_rate_0_is_a_fresh_sample(refiner, source):
    spec, model = refiner
    fresh = model.refine([source], [PROMPT], [8], skip_rate=0.0, sampling=spec.sampling)
    assert png(fresh[0]) == png(model.generate([PROMPT], [8], spec.sampling)[0])


def test_refine_at_skip_rate_half_makes_seeded_variations(refiner, source):
    spec, model = refiner
    variations = model.refine([source] * 2, [PROMPT] * 2, [4, 5], skip_rate=0.5, sampling=spec.sampling)
    again = model.refine([source], [PROMPT], [4], skip_rate=0.5, sampling=spec.sampling)
    assert png(variations[0]) == png(again[0])
    assert png(variations[0]) != png(variations[1])
    assert png(source) not in {png(image) for image in variations}
    fresh = model.generate([PROMPT], [4], spec.sampling)[0]
    assert png(variations[0]) != png(fresh)


@pytest.mark.parametrize("size, position", [(3, 2), (9, 4)])
def test_a_variation_has_the_same_bytes_alone_and_inside_a_batch(refiner, source, size, position):
    spec, model = refiner
    alone = model.refine([source], [PROMPT], [21], skip_rate=0.5, sampling=spec.sampling)[0]
    prompts, seeds = batch_around(PROMPT, 21, size, position)
    other = Image.new("RGB", source.size, "white")
    images = [other] * size
    images[position] = source
    batch = model.refine(images, prompts, seeds, skip_rate=0.5, sampling=spec.sampling)
    assert png(batch[position]) == png(alone)


def test_refine_reports_its_steps_and_stops_when_asked(refiner, source):
    spec, model = refiner
    seen = []
    model.refine([source], [PROMPT], [0], skip_rate=0.5, sampling=spec.sampling,
                 callback=lambda step, count, previews: seen.append((step, count)))  # fmt: skip
    assert seen and seen == [(i, len(seen)) for i in range(len(seen))]
    assert len(seen) < 3  # half of the 3-step schedule is skipped
    with pytest.raises(Interrupted):
        model.refine([source], [PROMPT], [0], skip_rate=0.0, sampling=spec.sampling,
                     callback=lambda step, count, previews: step == 0)  # fmt: skip


@pytest.mark.parametrize("call, message", [
    (lambda model, image: model.refine([image], [PROMPT], [0], skip_rate=1.5), "skip_rate"),
    (lambda model, image: model.refine([image], [PROMPT], [0], skip_rate=-0.1), "skip_rate"),
    (lambda model, image: model.refine([image, image], [PROMPT], [0]), "images"),
    (lambda model, image: model.refine([image], [PROMPT], [0, 1]), "seeds"),
])  # fmt: skip
def test_bad_refine_arguments_raise_errors_that_name_them(refiner, source, call, message):
    _, model = refiner
    with pytest.raises(ValueError, match=message):
        call(model, source)


def test_defaults_come_from_the_checkpoints_generation_config(tmp_path):
    family = SamplingDefaults(num_inference_steps=50, guidance_scale=7.5)
    assert SamplingDefaults.of_checkpoint(tmp_path, family) == family
    (tmp_path / "generation_config.json").write_text('{"guidance_scale": 2, "temperature": 0.5}')
    assert SamplingDefaults.of_checkpoint(tmp_path, family) == SamplingDefaults(50, 2.0)
    assert family.resolve(Sampling(guidance_scale=0.0)) == Sampling(50, 0.0, "")


def test_a_model_that_lacks_a_role_is_refused_by_name(embedded_upscaler):
    with pytest.raises(TypeError, match="cannot be a refiner"):
        check_role(embedded_upscaler, "refiner")
    assert not isinstance(embedded_upscaler, (TextToImage, ImageToImage))


def test_a_size_the_family_cannot_make_is_refused_naming_the_side(family):
    spec, model = family
    limits = model.capabilities.size
    assert bool(limits.multiple) == spec.other_sizes
    height, width = limits.own
    assert model.generate([PROMPT], [0], dataclasses.replace(spec.sampling, height=height, width=width))[0].size == (width, height)
    odd = width + 1 if not limits.multiple else limits.largest + limits.multiple
    with pytest.raises(ValueError, match=f"width: {odd} px"):
        model.generate([PROMPT], [0], dataclasses.replace(spec.sampling, width=odd))
    assert limits.refusal(None, odd)[0] == "width"


@pytest.fixture(scope="module", params=SIZED, ids=lambda family: family.name)
def sized(request, tmp_path_factory):
    model = request.param.load(tmp_path_factory.mktemp(request.param.name))
    return request.param, model


def test_a_family_that_makes_other_sizes_makes_the_size_asked(sized):
    spec, model = sized
    limits = model.capabilities.size
    height, width = limits.own[0], limits.own[1] + limits.multiple
    images = model.generate([PROMPT, OTHERS[0]], [0, 1], dataclasses.replace(spec.sampling, height=height, width=width))
    assert [image.size for image in images] == [(width, height)] * 2


def test_unknown_words_are_those_outside_a_closed_vocabulary_in_order_once():
    known = frozenset({"a", "red", "circle", "on", "the", "left"})
    assert unknown_words("A red CIRCLE, a teddy bear; a Teddy!", known) == ["teddy", "bear"]
    assert unknown_words("a red circle on the left.", known) == []
    assert unknown_words("anything at all", None) == []  # an open vocabulary reads every word
