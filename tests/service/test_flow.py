"""The flow in-process with real (tiny) models: a broken or late generator degrades the answer."""

import pytest
from dalleflow_client.schemas import GenerateRequest

from dalleflow.models.ranker import ClipRanker
from dalleflow.service.errors import InvalidInput, StageUnavailable
from dalleflow.service.flow import Flow
from dalleflow.service.stages import LocalStage
from dalleflow.service.store import ImageStore
from tests.conftest import build_tiny_diffusion

PROMPT = "a red circle on the left on a white background"


@pytest.fixture(scope="module")
def ranker(tiny_clip_folder):
    return LocalStage(ClipRanker.from_pretrained(f"local-dir:{tiny_clip_folder[1]}"))


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


async def test_a_late_generator_times_out_instead_of_hanging(tiny_diffusion, ranker, tmp_path):
    late = flow({"late": LocalStage(tiny_diffusion)}, ranker, tmp_path, timeout=0.001)
    with pytest.raises(StageUnavailable, match="late: timeout"):
        await late.generate(GenerateRequest(prompt=PROMPT, num_images=4, num_inference_steps=50))


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
    assert all(e.step_count == 3 and e.preview for e in progress)
    generated = [e for e in events if isinstance(e, GeneratedEvent)]
    assert {e.generator for e in generated} == {"a", "b"}
    assert all([i.seed for i in e.images] == [4, 5] for e in generated)
    for generated_event in generated:  # a generator's images come after its last step
        assert events.index(generated_event) > max(i for i, e in enumerate(events) if getattr(e, "generator", None) == generated_event.generator and isinstance(e, ProgressEvent))
    streamed, plain = events[-1].result, await subject.generate(request)
    assert [(c.generator, c.seed, c.image) for c in streamed.candidates] == [(c.generator, c.seed, c.image) for c in plain.candidates]
