"""A model call that reports its steps through a callback, as an async stream of events.

The models run their loops in a worker thread and call `callback(step, step_count,
previews)` after each step (see dalleflow/models/diffusion/pipeline.py); a truthy
answer makes them stop between two steps (raising Interrupted). SteppedCall turns
that into an async iterator of Step events ending with Done(output). Closing the
iterator early, or cancelling the task that reads it (a client gone: Ray Serve
raises CancelledError in the replica), sets the stop flag, so the model stops at its
next step instead of finishing work nobody will read. A model call without a
`callback` parameter runs as it is: its stream is its answer alone.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image

# Each image of a preview strip is at most this many pixels on a side: enough to see
# the picture take shape, small enough to send after every step.
PREVIEW_TILE = 64


@dataclass(frozen=True)
class Step:
    step: int  # steps done, 1 to step_count
    step_count: int
    preview: Image.Image | None  # the call's images so far, side by side


@dataclass(frozen=True)
class Done:
    output: Any


Outcome = Literal["done", "failed", "cancelled"]


def preview_strip(images: list[Image.Image], tile: int = PREVIEW_TILE) -> Image.Image:
    """The images side by side, each scaled down to fit a tile x tile square."""
    scaled = []
    for image in images:
        image = image.convert("RGB")
        if max(image.size) > tile:
            image = image.copy()
            image.thumbnail((tile, tile), Image.Resampling.BILINEAR)
        scaled.append(image)
    strip = Image.new("RGB", (sum(image.width for image in scaled), max(image.height for image in scaled)))
    x = 0
    for image in scaled:
        strip.paste(image, (x, 0))
        x += image.width
    return strip


def _takes_callback(function: Callable[..., Any]) -> bool:
    parameters = inspect.signature(function).parameters
    return "callback" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


class SteppedCall:
    """`function(*args, callback=..., **kwargs)` in a worker thread, its steps as events.

    steps_run counts the steps the model actually made; outcome is set when its
    thread ends: "done", "failed", or "cancelled" when it stopped early on request.
    on_finish(self) runs then, once.
    """

    def __init__(self, function: Callable[..., Any], *args: Any, on_finish: Callable[[SteppedCall], None] | None = None, **kwargs: Any):
        self._call = functools.partial(function, *args, **kwargs)
        self._stop = threading.Event()
        self._on_finish = on_finish
        self.steps_run = 0
        self.outcome: Outcome | None = None

    def _on_step(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, step: int, step_count: int, previews) -> bool:
        self.steps_run += 1
        preview = preview_strip(previews) if previews else None
        loop.call_soon_threadsafe(queue.put_nowait, Step(step + 1, step_count, preview))
        return self._stop.is_set()

    def _finished(self, worker: asyncio.Future) -> None:
        if worker.cancelled() or worker.exception() is not None:
            self.outcome = "cancelled" if self._stop.is_set() else "failed"
        else:
            self.outcome = "done"
        if self._on_finish is not None:
            self._on_finish(self)

    async def events(self) -> AsyncIterator[Step | Done]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Step] = asyncio.Queue()
        callback = functools.partial(self._on_step, loop, queue)
        if _takes_callback(self._call.func):
            worker = asyncio.ensure_future(asyncio.to_thread(self._call, callback=callback))
        else:
            worker = asyncio.ensure_future(asyncio.to_thread(self._call))
        worker.add_done_callback(self._finished)
        try:
            while not worker.done():
                next_step = asyncio.ensure_future(queue.get())
                try:
                    await asyncio.wait({next_step, worker}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    next_step.cancel()
                if next_step.done() and not next_step.cancelled():
                    yield next_step.result()
            while not queue.empty():
                yield queue.get_nowait()
            yield Done(worker.result())  # the model's own error, if it raised one
        finally:
            # Reached early only when the reader went away: stop the model between steps.
            # The thread cannot be killed; it notices the flag at its next step.
            if not worker.done():
                self._stop.set()
