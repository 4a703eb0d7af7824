"""The rows of many requests as one model call, each request with its own progress and cancel.

Every request to an image model, plain, streamed or a job, is an ImageCall and
takes this one path: a serving layer gathers the calls of concurrent requests
(deployments/stages.py, with Ray Serve's @serve.batch on an async generator), and
`run_calls` runs those that share their sampling as one model call in a worker
thread, each row with its own seed, so each request gets exactly the images it
would have had alone (the model keeps its network rows fixed: models/contract.py).

As the model steps, run_calls yields one entry per request, as a streaming
@serve.batch function must: a Step for a request that asked for progress (with a
preview of its images while previews cost at most PREVIEW_SHARE of the loop), None
for one that did not (its reader skips it), Done with its PNGs at the end, and
StopIteration once it is finished. So a streamed request and a plain one share a
batch, and differ only in what they read.

A request that goes away (its client disconnected, its job was cancelled) leaves
its Ticket. Its rows stay in the model call already running, which cannot drop
rows between steps without changing its batch shape; they are discarded at the
end. The loop itself stops between two steps once every request in it has gone,
and a request that goes before its group starts is never run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from dalleflow.models.contract import NSFW_FLAG, Interrupted, Sampling
from dalleflow.service.images import encode_png, open_png
from dalleflow.service.progress import Done, EncodedImage, Failed, Step, preview_strip

Event = Step | Done | Failed | None | type[StopIteration]

# Previews may take at most this share of a model loop's time: a preview costs a
# decode per image, which a batch does not make cheaper (DALL·E's VQGAN decodes a
# row in about the time the batch samples four); beyond it a Step comes without one.
PREVIEW_SHARE = 0.25


@dataclasses.dataclass(frozen=True)
class ImageCall:
    """One request's ask of an image model: its rows (a seed each), how to sample, and
    the metadata every PNG carries (the row's seed and id are added)."""

    prompt: str
    seeds: tuple[int, ...]
    ids: tuple[str, ...] = ()  # the id each row's image will be stored under (none: no id in the PNG)
    sampling: Sampling = Sampling()
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, hash=False)
    source: bytes | None = dataclasses.field(default=None, repr=False)  # refine: the image to vary
    skip_rate: float | None = None  # refine
    with_progress: bool = False

    @property
    def role(self) -> str:
        return "generator" if self.source is None else "refiner"

    @property
    def group(self) -> tuple:
        """Calls that agree on this run as one model call."""
        return self.role, self.sampling, self.skip_rate


class PreviewBudget:
    """Whether the next step may make previews: while they have taken at most
    PREVIEW_SHARE of the time the model itself took since the loop began."""

    def __init__(self, share: float | None = None):
        self.share = PREVIEW_SHARE if share is None else share
        self.started = time.perf_counter()
        self.preview_seconds = 0.0

    def allows(self) -> bool:
        model_seconds = time.perf_counter() - self.started - self.preview_seconds
        return self.preview_seconds <= self.share * model_seconds

    @contextlib.contextmanager
    def spending(self):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.preview_seconds += time.perf_counter() - started


class Ticket:
    """A request's place in a batch. leave() before the answer means it has gone."""

    def __init__(self, call: ImageCall):
        self.call = call
        self.is_finished = False
        self._gone = threading.Event()

    @property
    def is_gone(self) -> bool:
        return self._gone.is_set()

    def leave(self) -> None:
        if not self.is_finished:
            self._gone.set()


async def run_calls(model: Any, tickets: list[Ticket], counts: Counter | None = None) -> AsyncIterator[list[Event]]:
    """The calls' events, one entry per ticket at each yield (see the module docstring).
    counts: steps_run, and per request done, failed or cancelled."""
    counts = counts if counts is not None else Counter()
    finished = [False] * len(tickets)
    groups: dict[tuple, list[int]] = {}
    for index, ticket in enumerate(tickets):
        groups.setdefault(ticket.call.group, []).append(index)
    for indices in groups.values():
        live = [i for i in indices if not tickets[i].is_gone]
        for index in set(indices) - set(live):
            finished[index] = True
            counts["cancelled"] += 1
        if not live:
            continue
        async for update in _run_group(model, [tickets[i] for i in live], counts):
            row: list[Event] = [StopIteration if done else None for done in finished]
            for position, event in update.items():
                row[live[position]] = event
                if event is StopIteration or isinstance(event, Done | Failed):
                    finished[live[position]] = True
            yield row


async def _run_group(model: Any, tickets: list[Ticket], counts: Counter) -> AsyncIterator[dict[int, Event]]:
    """One model call for calls of one group: {ticket position: event} as they come."""
    loop = asyncio.get_running_loop()
    updates: asyncio.Queue[dict[int, Event]] = asyncio.Queue()
    abandoned = threading.Event()  # this generator was closed: nobody reads the rest
    row_counts = [len(ticket.call.seeds) for ticket in tickets]
    offsets = [sum(row_counts[:i]) for i in range(len(tickets))]
    budget = PreviewBudget()

    def on_step(step: int, step_count: int, previews) -> bool:
        counts["steps_run"] += 1
        present = [j for j, ticket in enumerate(tickets) if not ticket.is_gone]
        if abandoned.is_set() or not present:
            return True
        watching = [j for j in present if tickets[j].call.with_progress]
        strips: dict[int, bytes] = {}
        if watching and previews is not None and budget.allows():
            with budget.spending():
                images = previews()
                # A family that previews one network call at a time gives steps without pictures.
                if len(images) == sum(row_counts):
                    strips = {j: encode_png(preview_strip(images[offsets[j] : offsets[j] + row_counts[j]])).png
                              for j in watching}  # fmt: skip
        steps = {j: Step(step + 1, step_count, strips.get(j)) for j in watching}
        if steps:
            loop.call_soon_threadsafe(updates.put_nowait, steps)
        return False

    worker = asyncio.ensure_future(asyncio.to_thread(_call_model, model, tickets, on_step))
    try:
        while not worker.done():
            next_update = asyncio.ensure_future(updates.get())
            try:
                await asyncio.wait({next_update, worker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                next_update.cancel()
            if next_update.done() and not next_update.cancelled():
                yield next_update.result()
        while not updates.empty():
            yield updates.get_nowait()
        try:
            outputs = worker.result()
        except Interrupted:  # every request had gone
            counts["cancelled"] += len(tickets)
            yield {j: StopIteration for j in range(len(tickets))}
        except Exception as error:  # the model's own error fails this group's requests only
            counts["failed"] += len(tickets)
            yield {j: Failed(error) for j in range(len(tickets))}
        else:
            gone = sum(ticket.is_gone for ticket in tickets)
            counts["done"] += len(tickets) - gone
            counts["cancelled"] += gone
            yield {j: Done(outputs[j]) for j in range(len(tickets))}
    finally:
        # Reached early only when the batch's reader went away: the thread cannot be
        # killed; it stops at its next step, and nobody reads what it leaves.
        if not worker.done():
            abandoned.set()
            counts["cancelled"] += len(tickets)
            worker.add_done_callback(lambda finished: finished.cancelled() or finished.exception())


def _call_model(model: Any, tickets: list[Ticket], on_step) -> list[list[EncodedImage]]:
    """The group's rows through the model in one call, then each row's PNG, made once."""
    calls = [ticket.call for ticket in tickets]
    first = calls[0]
    prompts = [call.prompt for call in calls for _ in call.seeds]
    seeds = [seed for call in calls for seed in call.seeds]
    if first.role == "generator":
        images = model.generate(prompts, seeds, first.sampling, on_step)
    else:
        sources = [open_png(call.source) for call in calls]
        rows = [source for call, source in zip(calls, sources) for _ in call.seeds]
        images = model.refine(rows, prompts, seeds, first.skip_rate, first.sampling, on_step)
    encoded, start = [], 0
    for call in calls:
        rows = images[start : start + len(call.seeds)]
        ids = call.ids or (None,) * len(rows)
        encoded.append([
            encode_png(image, {**call.metadata, "seed": seed} | ({"id": image_id} if image_id else {})
                       | ({NSFW_FLAG: True} if image.info.get(NSFW_FLAG) else {}))
            for seed, image_id, image in zip(call.seeds, ids, rows)
        ])  # fmt: skip
        start += len(call.seeds)
    return encoded
