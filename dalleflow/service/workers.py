"""What a model stage does around its model, with no Ray in it: the one place a
stage's calls are turned into model calls and its answers into PNGs.

deployments/stages.py serves these as Ray Serve deployments (adding @serve.batch
across requests); service/stages.py's LocalStage runs them in this process (a
batch of one), so the flow, its benchmarks and its tests take the same path.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from dalleflow.models.contract import Capabilities, ImageToImage, Ranker, TextToImage, Upscaler, capabilities_of, check_role
from dalleflow.service.batches import ImageCall, Ticket, run_calls
from dalleflow.service.images import encode_png, open_png, png_metadata
from dalleflow.service.progress import Done, EncodedImage, Failed, Step


class ImageWorker:
    """An image model in every role it plays: generate (TextToImage) and refine
    (ImageToImage), each plain or as a stream of Step events ending with Done."""

    def __init__(self, model: Any):
        self.model = model
        self.counts: Counter[str] = Counter()

    async def generate(self, call: ImageCall) -> list[EncodedImage]:
        return await self._answer(self._checked(call, "generator"))

    async def generate_stream(self, call: ImageCall) -> AsyncIterator[Step | Done]:
        async for event in self._events(self._checked(call, "generator")):
            yield event

    async def refine(self, call: ImageCall) -> list[EncodedImage]:
        return await self._answer(self._checked(call, "refiner"))

    async def refine_stream(self, call: ImageCall) -> AsyncIterator[Step | Done]:
        async for event in self._events(self._checked(call, "refiner")):
            yield event

    def capabilities(self) -> Capabilities:
        """What of a request the model honours (the flow refuses the rest up front)."""
        return capabilities_of(self.model)

    def step_counts(self) -> dict[str, int]:
        """Steps this model's loops ran, and how many requests ended done, failed or cancelled."""
        return {key: self.counts[key] for key in ("steps_run", "done", "failed", "cancelled")}

    def _checked(self, call: ImageCall, role: str) -> ImageCall:
        check_role(self.model, role)
        if call.role != role:
            method = "generate" if role == "generator" else "refine"
            raise ValueError(f"{method}: the call {'has a' if call.source else 'has no'} source image (a {call.role} call)")
        return call

    async def _answer(self, call: ImageCall) -> list[EncodedImage]:
        async for event in self._events(call):
            if isinstance(event, Done):
                return event.output
        raise RuntimeError("the model call ended without an answer")

    async def _events(self, call: ImageCall) -> AsyncIterator[Step | Done]:
        ticket = Ticket(call)
        try:
            async for event in self._run(ticket):
                if event is None:
                    continue
                if event is StopIteration:
                    return
                if isinstance(event, Failed):
                    raise event.error
                if isinstance(event, Done):
                    ticket.is_finished = True
                yield event
        finally:
            ticket.leave()  # before the answer: this request has gone (see batches.py)

    async def _run(self, ticket: Ticket):
        """The ticket's events; a batch of one here, a batch across requests in a deployment."""
        async for row in run_calls(self.model, [ticket], self.counts):
            yield row[0]


class RankerWorker:
    """A ranker scoring PNG bytes (what the flow holds), decoded here."""

    def __init__(self, model: Any):
        self.model = model

    def score(self, prompt: str, pngs: list[bytes]) -> list[float]:
        return self.score_together([(prompt, pngs)])[0]

    def score_together(self, calls: list[tuple[str, list[bytes]]]) -> list[list[float]]:
        return self.model.score_together([(prompt, [open_png(png) for png in pngs]) for prompt, pngs in calls])

    def embed_text(self, prompt: str) -> list[float]:
        return self.model.embed_text(prompt)


class UpscalerWorker:
    def __init__(self, model: Any):
        self.model = model

    def upscale(self, png: bytes, metadata: dict) -> EncodedImage:
        """The image x scale, as a PNG carrying its source's metadata (prompt, seed,
        generator, parameters) with `metadata` and the scale added."""
        big = self.model.upscale(open_png(png))
        return encode_png(big, {**png_metadata(png), **metadata, "scale": self.model.scale})


def worker_for(model: Any) -> ImageWorker | RankerWorker | UpscalerWorker:
    """The worker of a model, by the roles of the contract it implements."""
    if isinstance(model, TextToImage | ImageToImage):
        return ImageWorker(model)
    if isinstance(model, Ranker):
        return RankerWorker(model)
    if isinstance(model, Upscaler):
        return UpscalerWorker(model)
    raise TypeError(f"{type(model).__name__} implements no role of the model contract")
