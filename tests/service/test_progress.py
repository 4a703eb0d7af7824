"""A model's step callback as an async stream, with the tiny diffusion model in a worker thread."""

import asyncio

import pytest
from PIL import Image

from dalleflow.service.progress import Done, Step, SteppedCall, preview_strip

PROMPT = "a red circle on the left on a white background"


async def test_every_step_comes_before_the_answer(tiny_diffusion):
    call = SteppedCall(tiny_diffusion.generate, [PROMPT], num_images=2, seed=1, num_inference_steps=3)
    events = [event async for event in call.events()]
    assert [(e.step, e.step_count) for e in events[:-1]] == [(1, 3), (2, 3), (3, 3)]
    assert all(isinstance(e, Step) and e.preview.size == (64, 32) for e in events[:-1])  # two 32 px images side by side
    assert isinstance(events[-1], Done) and [im.size for im in events[-1].output] == [(32, 32)] * 2
    assert (call.steps_run, call.outcome) == (3, "done")


async def test_leaving_early_stops_the_model_between_steps(tiny_diffusion):
    finished = asyncio.Event()
    call = SteppedCall(tiny_diffusion.generate, [PROMPT], num_inference_steps=100, on_finish=lambda _: finished.set())
    events = call.events()
    assert isinstance(await anext(events), Step)
    await events.aclose()
    await asyncio.wait_for(finished.wait(), 30)
    assert call.outcome == "cancelled"
    assert call.steps_run < 100  # the thread saw the stop flag at its next step


async def test_a_cancelled_reader_stops_the_model(tiny_diffusion):
    finished = asyncio.Event()
    call = SteppedCall(tiny_diffusion.generate, [PROMPT], num_inference_steps=100, on_finish=lambda _: finished.set())
    first_step = asyncio.Event()

    async def read():
        async for _ in call.events():
            first_step.set()

    reader = asyncio.create_task(read())
    await asyncio.wait_for(first_step.wait(), 30)
    reader.cancel()
    await asyncio.wait_for(finished.wait(), 30)
    assert call.outcome == "cancelled" and call.steps_run < 100


async def test_the_models_error_comes_through(tiny_diffusion):
    call = SteppedCall(tiny_diffusion.refine, Image.new("RGB", (32, 32)), PROMPT, skip_rate=2.0)
    with pytest.raises(ValueError, match="skip_rate"):
        [event async for event in call.events()]
    assert call.outcome == "failed"


def test_preview_strip_scales_large_images_down():
    strip = preview_strip([Image.new("RGB", (512, 256)), Image.new("RGB", (32, 32))])
    assert strip.size == (64 + 32, 32)


async def test_a_model_call_without_a_step_callback_streams_its_answer_alone():
    def upscale(image):  # no callback parameter: nothing to report between steps
        return image.resize((8, 8))

    call = SteppedCall(upscale, Image.new("RGB", (2, 2)))
    events = [event async for event in call.events()]
    assert len(events) == 1 and events[0].output.size == (8, 8)
    assert (call.steps_run, call.outcome) == (0, "done")
