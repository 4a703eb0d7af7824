"""Many requests as one model call (service/batches.py), with the tiny diffusion
model in a worker thread: each request its own steps, images and cancel."""

import asyncio
import io
import time
from collections import Counter

import pytest
from PIL import Image

from dalleflow.models.contract import Sampling, expand
from dalleflow.service.batches import ImageCall, PreviewBudget, Ticket, run_calls
from dalleflow.service.images import encode_png, png_metadata
from dalleflow.service.progress import Done, Failed, Step, preview_strip
from dalleflow.service.workers import ImageWorker

PROMPT = "a red circle on the left on a white background"
OTHER = "a blue square above a green circle on a black background"
THREE_STEPS = Sampling(num_inference_steps=3)


def call(prompt=PROMPT, seed=1, count=2, sampling=THREE_STEPS, with_progress=False, **fields) -> ImageCall:
    return ImageCall(prompt=prompt, seeds=tuple(expand([prompt], count, seed)[1]), sampling=sampling,
                     with_progress=with_progress, metadata={"prompt": prompt, "generator": "tiny"}, **fields)  # fmt: skip


async def collect(model, tickets, counts=None) -> list[list]:
    """Each ticket's events, as a reader of a streamed batch would see them."""
    per_ticket = [[] for _ in tickets]
    async for row in run_calls(model, tickets, counts):
        assert len(row) == len(tickets)  # what a streaming @serve.batch function must yield
        for events, event in zip(per_ticket, row):
            events.append(event)
    return per_ticket


async def test_streamed_and_plain_requests_share_one_model_call_and_get_their_own_events(tiny_diffusion):
    counts = Counter()
    streamed, plain = Ticket(call(with_progress=True)), Ticket(call(OTHER, seed=5, count=1))
    events = await collect(tiny_diffusion, [streamed, plain], counts)
    steps = [e for e in events[0] if isinstance(e, Step)]
    assert [(s.step, s.step_count) for s in steps] == [(1, 3), (2, 3), (3, 3)]
    # The streamed request's preview shows its own two images, not the other's (the first
    # step always has one; later ones while previews stay within their share of the time).
    assert steps[0].preview is not None
    assert all(Image.open(io.BytesIO(s.preview)).size == (64, 32) for s in steps if s.preview)
    assert [e for e in events[1] if e is not None] == [events[1][-1]] and isinstance(events[1][-1], Done)
    assert counts["steps_run"] == 3 and counts["done"] == 2  # one loop of three steps for both
    # Each answer is the PNG its rows make alone, with the row's seed in its metadata.
    alone = (await collect(tiny_diffusion, [Ticket(call())]))[0][-1]
    assert [image.png for image in events[0][-1].output] == [image.png for image in alone.output]
    assert [png_metadata(image.png)["seed"] for image in events[0][-1].output] == [1, 2]


async def test_requests_with_other_sampling_run_one_group_after_the_other(tiny_diffusion):
    first, second = Ticket(call()), Ticket(call(sampling=Sampling(num_inference_steps=2)))
    counts = Counter()
    events = await collect(tiny_diffusion, [first, second], counts)
    assert isinstance(events[0][-2], Done) or events[0][-1] is StopIteration
    assert counts["steps_run"] == 3 + 2
    assert events[0].index(next(e for e in events[0] if isinstance(e, Done))) < events[1].index(events[1][-1])


async def test_a_request_that_leaves_stops_nothing_for_the_others(tiny_diffusion):
    leaving, staying = Ticket(call(with_progress=True)), Ticket(call(seed=9, with_progress=True))
    counts = Counter()
    per_ticket = [[], []]
    async for row in run_calls(tiny_diffusion, [leaving, staying], counts):
        for events, event in zip(per_ticket, row):
            events.append(event)
        if isinstance(row[0], Step):
            leaving.leave()  # its client went away after the first step
    # It gets no steps after it left; the other runs to its answer.
    assert sum(isinstance(e, Step) for e in per_ticket[0]) < 3
    assert isinstance(per_ticket[1][-1], Done) and counts["done"] == 1 and counts["cancelled"] == 1


async def test_the_loop_stops_between_steps_once_every_request_has_gone(tiny_diffusion):
    tickets = [Ticket(call(sampling=Sampling(num_inference_steps=100), with_progress=True)) for _ in range(2)]
    counts = Counter()
    async for row in run_calls(tiny_diffusion, tickets, counts):
        if isinstance(row[0], Step):
            for ticket in tickets:
                ticket.leave()
    assert counts["steps_run"] < 100 and counts["cancelled"] == 2 and counts["done"] == 0


async def test_a_request_gone_before_its_group_starts_is_never_run(tiny_diffusion):
    gone = Ticket(call(sampling=Sampling(num_inference_steps=2)))
    gone.leave()
    counts = Counter()
    await collect(tiny_diffusion, [Ticket(call()), gone], counts)
    assert counts["steps_run"] == 3 and counts["cancelled"] == 1


async def test_a_failing_group_fails_its_requests_only(tiny_diffusion):
    source = encode_png(Image.new("RGB", (32, 32), "white")).png
    bad = Ticket(call(source=source, skip_rate=2.0))  # refused by the model: skip_rate
    good = Ticket(call())
    events = await collect(tiny_diffusion, [bad, good])
    failed = next(e for e in events[0] if isinstance(e, Failed))
    assert isinstance(failed.error, ValueError) and "skip_rate" in str(failed.error)
    assert isinstance(next(e for e in events[1] if isinstance(e, Done)), Done)


async def test_the_worker_answers_plain_and_streamed_calls_alike(tiny_diffusion):
    worker = ImageWorker(tiny_diffusion)
    plain = await worker.generate(call())
    streamed = [event async for event in worker.generate_stream(call(with_progress=True))]
    assert [type(e) for e in streamed] == [Step, Step, Step, Done]
    assert [image.png for image in streamed[-1].output] == [image.png for image in plain]
    with pytest.raises(ValueError, match="generate: the call has a source image"):
        await worker.generate(call(source=plain[0].png, skip_rate=0.5))
    variations = await worker.refine(call(source=plain[0].png, skip_rate=0.5))
    assert len(variations) == 2 and png_metadata(variations[0].png)["prompt"] == PROMPT


async def test_a_reader_that_leaves_a_stream_stops_the_model(tiny_diffusion):
    worker = ImageWorker(tiny_diffusion)
    stream = worker.generate_stream(call(sampling=Sampling(num_inference_steps=100), with_progress=True))
    assert isinstance(await anext(stream), Step)
    await stream.aclose()
    for _ in range(300):  # the thread notices at its next step
        if worker.counts["cancelled"]:
            break
        await asyncio.sleep(0.1)
    assert worker.counts["cancelled"] == 1 and worker.counts["steps_run"] < 100


def test_previews_take_at_most_their_share_of_the_loops_time():
    budget = PreviewBudget(share=0.25)
    assert budget.allows()  # the first step always shows one
    budget.started -= 1.0  # one second into the loop...
    budget.preview_seconds = 0.3  # ...0.3 s of it on previews: more than a quarter of the model's 0.7 s
    assert not budget.allows()
    budget.preview_seconds = 0.15
    assert budget.allows()
    with budget.spending():
        time.sleep(0.05)
    assert budget.preview_seconds >= 0.2


def test_preview_strip_scales_large_images_down():
    strip = preview_strip([Image.new("RGB", (512, 256)), Image.new("RGB", (32, 32))])
    assert strip.size == (64 + 32, 32)
