"""One thin Ray Serve deployment per stage; each wraps a model made by the factory.

No model math here: each method forwards to the model's own call. Resources
default small enough for a 2-core laptop; serve_config.yaml overrides them
per deployment (num_cpus, num_gpus, autoscaling) without touching code.

Generators and the ranker batch across requests with @serve.batch: the calls of
concurrent requests run as one model call (models/batching.py), which answers
each exactly as it would have alone. Batch size and wait are the deployment's
`user_config` (Batching), so `serve deploy` retunes them without a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import metrics

from dalleflow.models.batching import GenerateCall, generate_together
from dalleflow.models.factory import ModelSpec, create_model
from dalleflow.service.progress import SteppedCall


class Batching(BaseModel):
    """A model stage's user_config."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(8, ge=1, description="Most requests whose calls run as one model call.")
    batch_wait_timeout_s: float = Field(0.02, ge=0, description="How long a call waits for others to join its batch.")


DEFAULT_BATCHING = Batching()


class _ModelStage:
    def __init__(self, spec: dict):
        self.spec = ModelSpec.model_validate(spec)
        self.model = create_model(self.spec)
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

    async def _run_batch(self, function, calls: list) -> list:
        """function(calls) in a worker thread, so the replica keeps taking calls
        (the next batch forms while this one runs)."""
        started = time.perf_counter()
        answers = await asyncio.to_thread(function, calls)
        self._batch_sizes[len(calls)] += 1
        self._batch_size.observe(len(calls))
        self._batch_seconds.observe(time.perf_counter() - started)
        return answers

    def batch_sizes(self) -> dict[int, int]:
        """How many batches of each size (in requests) this replica has run."""
        return dict(self._batch_sizes)

    def ready(self) -> bool:
        return True

    def check_health(self) -> None:
        if self.model is None:  # pragma: no cover - construction raises first
            raise RuntimeError("model not loaded")


class _SteppedStage(_ModelStage):
    """A stage whose model has a step loop: its calls can also stream their steps
    (unbatched: a stream is one request's own model call)."""

    def __init__(self, spec: dict):
        super().__init__(spec)
        self._step_counts: Counter[str] = Counter()

    async def stream(self, method: str, *args, **kwargs):
        """`method` as a stream: a Step per step, then Done(answer). A cancelled
        request (a client gone) stops the model at its next step."""
        call = SteppedCall(getattr(self.model, method), *args, on_finish=self._count, **kwargs)
        async for event in call.events():
            yield event

    def _count(self, call: SteppedCall) -> None:
        self._step_counts["steps_run"] += call.steps_run
        self._step_counts[call.outcome] += 1

    def step_counts(self) -> dict[str, int]:
        """Steps this replica's streamed calls ran, and how many calls ended done, failed or cancelled."""
        return {key: self._step_counts[key] for key in ("steps_run", "done", "failed", "cancelled")}


# max_ongoing_requests >= max_batch_size x concurrent batches (1), or no batch could fill.
@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=16, user_config=DEFAULT_BATCHING.model_dump())
class Generator(_SteppedStage):
    def __init__(self, spec: dict):
        super().__init__(spec)
        self._images = metrics.Counter("dalleflow_images_generated", description="Images the generators made.")

    async def generate(self, prompts: list[str], **kwargs):
        return await self._generate_batch(GenerateCall.of(prompts, **kwargs))

    @serve.batch(max_batch_size=DEFAULT_BATCHING.max_batch_size, batch_wait_timeout_s=DEFAULT_BATCHING.batch_wait_timeout_s)
    async def _generate_batch(self, calls: list[GenerateCall]) -> list:
        answers = await self._run_batch(lambda batch: generate_together(self.model, batch), calls)
        self._images.inc(sum(len(images) for images in answers))
        return answers

    def _batched_methods(self) -> list:
        return [self._generate_batch]


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=16, user_config=DEFAULT_BATCHING.model_dump())
class Ranker(_ModelStage):
    async def score(self, prompt: str, images):
        return await self._score_batch((prompt, images))

    @serve.batch(max_batch_size=DEFAULT_BATCHING.max_batch_size, batch_wait_timeout_s=DEFAULT_BATCHING.batch_wait_timeout_s)
    async def _score_batch(self, calls: list[tuple]) -> list:
        return await self._run_batch(self.model.score_together, calls)

    def _batched_methods(self) -> list:
        return [self._score_batch]

    def embed_text(self, prompt: str) -> list[float]:
        return self.model.embed_text(prompt)


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=8)
class Refiner(_SteppedStage):
    def refine(self, image, prompt: str, **kwargs):
        return self.model.refine(image, prompt, **kwargs)


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=8)
class Upscaler(_ModelStage):
    def upscale(self, image):
        return self.model.upscale(image)
