"""The flow in-process with real (tiny) models: a broken or late generator degrades the answer."""

import base64
import io

import pytest
from PIL import Image
from dalleflow_client.schemas import GenerateRequest, RefineRequest

from dalleflow.models.ranker import ClipRanker
from dalleflow.service.errors import InvalidInput, StageFailed, StageTimedOut
from dalleflow.service.flow import Flow
from dalleflow.service.stages import LocalStage
from dalleflow.service.store import ImageStore
from tests.conftest import build_tiny_diffusion

PROMPT = "a red circle on the left on a white background"


@pytest.fixture(scope="module")
def ranker(tiny_clip_folder):
    return LocalStage(ClipRanker.from_pretrained(f"local-dir:{tiny_clip_folder[1]}"))


def pixels(image: str) -> bytes:
    return Image.open(io.BytesIO(base64.b64decode(image))).convert("RGB").tobytes()


def flow(generators, ranker, tmp_path, timeout=120.0) -> Flow:
    stage = LocalStage(build_tiny_diffusion())
    return Flow(generators=generators, ranker=ranker, refiner=stage, upscaler=stage,
                store=ImageStore(tmp_path), generator_timeout_s=timeout)


async def test_a_failing_generator_is_reported_and_the_others_answer(tiny_diffusion, ranker, tmp_path):
    # A real misconfiguration: the text encoder is narrower than the UNet's cross-attention.
    broken = LocalStage(build_tiny_diffusion(text_width=8))
    answer = await flow({"good": LocalStage(tiny_diffusion), "broken": broken}, ranker, tmp_path).generate(
        GenerateRequest(prompt=PROMPT, num_images=2, num_inference_steps=2, seed=1)
    )
    assert [c.generator for c in answer.candidates] == ["good", "good"]
    assert answer.generators["good"].status == "ok" and answer.generators["good"].count == 2
    assert answer.generators["broken"].status == "failed" and answer.generators["broken"].error
    # The model's own exception (a shape mismatch, with its tensors' sizes) stays in the server's log.
    assert "Error" not in answer.generators["broken"].error and "size" not in answer.generators["broken"].error


async def test_a_request_whose_only_generator_fails_is_a_502_naming_it(ranker, tmp_path):
    broken = flow({"broken": LocalStage(build_tiny_diffusion(text_width=8))}, ranker, tmp_path)
    with pytest.raises(StageFailed, match="no generator produced an image: broken: failed") as raised:
        await broken.generate(GenerateRequest(prompt=PROMPT, num_images=1, num_inference_steps=2))
    assert (raised.value.status_code, raised.value.code, raised.value.stage) == (502, "stage_failed", "generators")


async def test_a_late_generator_times_out_instead_of_hanging(tiny_diffusion, ranker, tmp_path):
    late = flow({"late": LocalStage(tiny_diffusion)}, ranker, tmp_path, timeout=0.001)
    with pytest.raises(StageTimedOut, match="late: timeout") as raised:
        await late.generate(GenerateRequest(prompt=PROMPT, num_images=4, num_inference_steps=50))
    assert raised.value.status_code == 504


async def test_unknown_generators_name_the_field(tiny_diffusion, ranker, tmp_path):
    with pytest.raises(InvalidInput) as raised:
        await flow({"good": LocalStage(tiny_diffusion)}, ranker, tmp_path).generate(
            GenerateRequest(prompt=PROMPT, generators=["good", "nope"])
        )
    assert raised.value.field == "generators" and "nope" in raised.value.message


async def test_readiness_lists_every_stage(tiny_diffusion, ranker, tmp_path):
    stages = await flow({"good": LocalStage(tiny_diffusion)}, ranker, tmp_path).readiness()
    assert stages == {"generator:good": True, "ranker": True, "refiner": True, "upscaler": True}


async def test_streaming_gives_progress_then_each_generators_images_then_the_same_answer(tiny_diffusion, ranker, tmp_path):
    from dalleflow_client.schemas import GeneratedEvent, ProgressEvent, ResultEvent

    stage = LocalStage(tiny_diffusion)
    request = GenerateRequest(prompt=PROMPT, num_images=2, num_inference_steps=3, seed=4)
    subject = flow({"a": stage, "b": stage}, ranker, tmp_path)
    events = [event async for event in await subject.generate_events(request)]
    assert isinstance(events[-1], ResultEvent)
    progress = [e for e in events if isinstance(e, ProgressEvent)]
    assert sorted((e.generator, e.step) for e in progress) == [(g, s) for g in "ab" for s in (1, 2, 3)]
    assert all(e.step_count == 3 for e in progress)
    assert all(next(e for e in progress if e.generator == g).preview for g in "ab")  # the first step shows one
    generated = [e for e in events if isinstance(e, GeneratedEvent)]
    assert {e.generator for e in generated} == {"a", "b"}
    assert all([i.seed for i in e.images] == [4, 5] for e in generated)
    for generated_event in generated:  # a generator's images come after its last step
        assert events.index(generated_event) > max(i for i, e in enumerate(events) if getattr(e, "generator", None) == generated_event.generator and isinstance(e, ProgressEvent))
    streamed, plain = events[-1].result, await subject.generate(request)
    # The same images: their PNGs differ in the ids inside them only.
    assert [(c.generator, c.seed, pixels(c.image)) for c in streamed.candidates] == [
        (c.generator, c.seed, pixels(c.image)) for c in plain.candidates]


async def test_an_image_is_encoded_to_png_once_and_those_bytes_are_stored_answered_and_streamed(
    tiny_diffusion, ranker, embedded_upscaler, tmp_path, monkeypatch
):
    from dalleflow_client.schemas import GeneratedEvent, ProgressEvent, ResultEvent, UpscaleRequest
    from PIL import Image

    encoded = []  # the size of every image PIL encodes to PNG, wherever it happens
    png_encoder = Image.SAVE["PNG"]
    monkeypatch.setitem(Image.SAVE, "PNG", lambda image, fp, filename: encoded.append(image.size) or png_encoder(image, fp, filename))
    subject = Flow(generators={"a": LocalStage(tiny_diffusion), "b": LocalStage(tiny_diffusion)}, ranker=ranker,
                   refiner=LocalStage(tiny_diffusion), upscaler=LocalStage(embedded_upscaler), store=ImageStore(tmp_path))  # fmt: skip
    request = GenerateRequest(prompt=PROMPT, num_images=2, num_inference_steps=2, seed=1)
    answer = await subject.generate(request)
    assert encoded == [(32, 32)] * 4  # two generators x two images, nothing else
    for candidate in answer.candidates:
        assert subject.store.png_bytes(candidate.id) == base64.b64decode(candidate.image)
    encoded.clear()
    events = [event async for event in await subject.generate_events(request)]
    steps = [e for e in events if isinstance(e, ProgressEvent)]
    previews = sum(bool(e.preview) for e in steps)
    assert len(steps) == 2 * 2 and len(encoded) == 4 + previews  # a step's preview strip is one encode too
    streamed = {image.image for e in events if isinstance(e, GeneratedEvent) for image in e.images}
    assert streamed == {c.image for c in events[-1].result.candidates} and isinstance(events[-1], ResultEvent)
    encoded.clear()
    upscaled = await subject.upscale(UpscaleRequest(image_id=answer.candidates[0].id))
    assert encoded == [(128, 128)] and subject.store.png_bytes(upscaled.id) == base64.b64decode(upscaled.image)


TEDDY = "a teddy bear on a skateboard in Times Square"  # dalle-flow's own example


async def test_words_the_models_do_not_know_are_named_in_one_warning_per_field(tiny_diffusion, ranker, tmp_path):
    stage = LocalStage(tiny_diffusion)  # a word-level text encoder: the shapes world's words only
    subject = flow({"a": stage, "b": stage}, ranker, tmp_path)
    answer = await subject.generate(GenerateRequest(prompt=TEDDY, negative_prompt="blurry, a red circle",
                                                    num_images=1, num_inference_steps=1, seed=0))  # fmt: skip
    assert answer.warnings == [
        "prompt: the generators 'a' and 'b' do not know 'teddy', 'bear', 'skateboard', 'in', 'times', so the "
        "images leave them out (GET /v1/models lists the words each model knows)",
        "negative_prompt: the generators 'a' and 'b' do not know 'blurry', so the images leave it out "
        "(GET /v1/models lists the words each model knows)",
    ]
    known = await subject.generate(GenerateRequest(prompt=PROMPT.upper() + ".", num_images=1, num_inference_steps=1))
    assert known.warnings == []
    refined = await subject.refine(RefineRequest(prompt=TEDDY, image_id=answer.candidates[0].id, num_images=1,
                                                 num_inference_steps=1))  # fmt: skip
    assert [warning.split(" do")[0] for warning in refined.warnings] == ["prompt: the refiner"]


async def test_models_answer_their_words_and_the_world_they_draw(tiny_diffusion, ranker, tmp_path):
    from dalleflow.shapes import guide, parse_caption

    subject = flow({"a": LocalStage(tiny_diffusion)}, ranker, tmp_path)
    subject.models = [{"stage": "generator:a", "name": "a", "model": "shapes-diffusion", "weights": "embedded:x"},
                      {"stage": "ranker", "name": "ranker", "model": "open-clip", "weights": "local-dir:y"}]  # fmt: skip
    answer = await subject.models_response()
    assert answer.models[0].vocabulary == sorted(guide.known_words())
    assert answer.models[1].vocabulary is None  # a ranker reads no prompt for the images
    assert answer.world.name == "shapes" and answer.world.words["shapes"] == ["circle", "square", "triangle"]
    assert all(parse_caption(prompt) for prompt in answer.world.example_prompts)
    assert "Configure" in answer.world.real_checkpoints


async def test_an_image_the_models_safety_checker_blacked_out_is_flagged_in_the_answer(ranker, tmp_path):
    from dalleflow.models.factory import create_model
    from tests.tiny_checkpoints import save_tiny_stable_diffusion

    _, folder = save_tiny_stable_diffusion(tmp_path / "sd", safety_checker=True)
    checked = LocalStage(create_model({"family": "diffusers", "weights": f"local-dir:{folder}"}))
    answer = await flow({"sd": checked}, ranker, tmp_path / "store").generate(
        GenerateRequest(prompt=PROMPT, num_images=1, num_inference_steps=1, seed=2))
    (candidate,) = answer.candidates
    assert candidate.nsfw_content_detected is True
    assert ImageStore(tmp_path / "store").metadata(candidate.id)["nsfw_content_detected"] is True
