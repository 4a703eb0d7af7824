"""One thin Ray Serve deployment per model; each wraps a model made by the factory.

No model math here: each deployment is a worker of service/workers.py (what a
stage does around its model) with Ray Serve's batching added. Resources default
small enough for a 2-core laptop; serve_config.yaml overrides them per
deployment (num_cpus, num_gpus, autoscaling) without touching code.

An image model is one deployment whatever roles it plays (generator, refiner):
its weights are loaded once. Every request to it, plain, streamed or from a job,
joins one @serve.batch queue (an async generator: service/batches.py yields each
request its own steps), so concurrent requests run as one model call that
answers each as it would have been answered alone. The ranker batches its calls
the same way. Batch size and wait are the deployment's `user_config` (Batching),
so `serve deploy` retunes them without a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import metrics

from dalleflow.models.contract import check_role
from dalleflow.models.factory import ModelSpec, create_model
from dalleflow.service.batches import Ticket, run_calls
from dalleflow.service.workers import ImageWorker, RankerWorker, UpscalerWorker


class Batching(BaseModel):
    """A model stage's user_config."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(8, ge=1, description="Most requests whose calls run as one model call.")
    batch_wait_timeout_s: float = Field(0.02, ge=0, description="How long a call waits for others to join its batch.")


DEFAULT_BATCHING = Batching()


class _ModelStage:
    def __init__(self, spec: dict, roles: list[str]):
        self.spec = ModelSpec.model_validate(spec)
        self.model = create_model(self.spec)
        for role in roles:
            check_role(self.model, role)
        self._batch_sizes: Counter[int] = Counter()
        # Serve tags each with its deployment, replica and application.
        self._batch_seconds = metrics.Histogram(
            "dalleflow_model_batch_seconds", description="Seconds one batched model call took.",
            boundaries=[0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60])
        self._batch_size = metrics.Histogram(
            "dalleflow_model_batch_size", description="Requests per batched model call.",
            boundaries=[1, 2, 4, 8, 16, 32])

    def reconfigure(self, user_config: dict) -> None:
        """Serve calls this at start and on every `serve deploy` with a new user_config."""
        batching = Batching.model_validate(user_config or {})
        for method in self._batched_methods():
            method.set_max_batch_size(batching.max_batch_size)
            method.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)

    def _batched_methods(self) -> list:
        return []

    def _observe_batch(self, size: int, seconds: float) -> None:
        self._batch_sizes[size] += 1
        self._batch_size.observe(size)
        self._batch_seconds.observe(seconds)

    async def _run_batch(self, function, calls: list) -> list:
        """function(calls) in a worker thread, so the replica keeps taking calls
        (the next batch forms while this one runs)."""
        started = time.perf_counter()
        answers = await asyncio.to_thread(function, calls)
        self._observe_batch(len(calls), time.perf_counter() - started)
        return answers

    def batch_sizes(self) -> dict[int, int]:
        """How many batches of each size (in requests) this replica has run."""
        return dict(self._batch_sizes)

    def ready(self) -> bool:
        return True

    def check_health(self) -> None:
        if self.model is None:  # pragma: no cover - construction raises first
            raise RuntimeError("model not loaded")


# max_ongoing_requests >= max_batch_size x concurrent batches (1), or no batch could fill.
@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=16, user_config=DEFAULT_BATCHING.model_dump())
class ImageModel(ImageWorker, _ModelStage):
    """A text-to-image or image-to-image model, in each role the config gives it:
    generate / generate_stream and refine / refine_stream (see ImageWorker)."""

    def __init__(self, spec: dict, roles: list[str]):
        _ModelStage.__init__(self, spec, roles)
        ImageWorker.__init__(self, self.model)
        self._images = metrics.Counter("dalleflow_images_generated", description="Images the image models made.")

    async def _run(self, ticket: Ticket):
        async for event in self._run_batched(ticket):
            yield event

    @serve.batch(max_batch_size=DEFAULT_BATCHING.max_batch_size, batch_wait_timeout_s=DEFAULT_BATCHING.batch_wait_timeout_s)
    async def _run_batched(self, tickets: list[Ticket]):
        started = time.perf_counter()
        async for row in run_calls(self.model, tickets, self.counts):
            yield row
        self._observe_batch(len(tickets), time.perf_counter() - started)
        self._images.inc(sum(len(ticket.call.seeds) for ticket in tickets))

    def _batched_methods(self) -> list:
        return [self._run_batched]


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=16, user_config=DEFAULT_BATCHING.model_dump())
class Ranker(RankerWorker, _ModelStage):
    def __init__(self, spec: dict):
        _ModelStage.__init__(self, spec, ["ranker"])
        RankerWorker.__init__(self, self.model)

    async def score(self, prompt: str, pngs: list[bytes]) -> list[float]:
        return await self._score_batch((prompt, pngs))

    @serve.batch(max_batch_size=DEFAULT_BATCHING.max_batch_size, batch_wait_timeout_s=DEFAULT_BATCHING.batch_wait_timeout_s)
    async def _score_batch(self, calls: list[tuple]) -> list:
        return await self._run_batch(self.score_together, calls)

    def _batched_methods(self) -> list:
        return [self._score_batch]


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=8)
class Upscaler(UpscalerWorker, _ModelStage):
    def __init__(self, spec: dict):
        _ModelStage.__init__(self, spec, ["upscaler"])
        UpscalerWorker.__init__(self, self.model)
