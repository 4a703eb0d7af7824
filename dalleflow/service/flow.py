"""The pick-and-refine flow: fan out to generators, gather, rank, store, answer.

It holds no model: every stage is reached through a Stage (see stages.py).
A generator that fails or runs past its deadline is reported in the answer and
left out of the pool; the request fails only when no generator produced an
image or the ranker could not rank.

One code path serves both answers (min-dalle's way): generate_events and
refine_events check the request, then give its run as events (progress per
step, each generator's images as it finishes, the ranked result last);
generate and refine run the same events without progress and keep the last.
Without progress a stage is reached with a plain call, with progress through its
step stream; both join the same batches in the model's deployment
(service/batches.py).

Images travel as the PNG bytes their model made (with their metadata inside):
the flow ranks, stores, answers and streams those bytes and never decodes or
encodes an image itself.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from dalleflow_client.schemas import (
    Candidate,
    GeneratedEvent,
    GeneratedImage,
    GenerateRequest,
    GenerateResponse,
    ModelInfo,
    ModelsResponse,
    ProgressEvent,
    RefineRequest,
    ResultEvent,
    StageReport,
    StreamEvent,
    UpscaleRequest,
    UpscaleResponse,
)
from dalleflow.models.contract import Capabilities, Sampling, expand, unknown_words
from dalleflow.service.batches import ImageCall
from dalleflow.service.errors import InvalidInput, ServiceError, StageFailed, StageTimedOut, StageUnavailable
from dalleflow.service.images import base64_of, checked_image_bytes, new_image_id
from dalleflow.service.progress import Done, EncodedImage
from dalleflow.service.stages import Stage
from dalleflow.service.store import ImageStore
from dalleflow.shapes import guide as shapes_guide


# How long GET /v1/models waits for a stage's capabilities (a loading stage's come later).
MODELS_ANSWER_S = 5.0


logger = logging.getLogger(__name__)


@dataclass
class Flow:
    generators: dict[str, Stage]
    ranker: Stage
    refiner: Stage
    upscaler: Stage
    store: ImageStore
    models: list[ModelInfo] = field(default_factory=list)
    generator_timeout_s: float = 120.0
    # Each image stage's Capabilities, asked once: a stage's model is fixed by its config.
    _capabilities: dict[str, Capabilities] = field(default_factory=dict, repr=False)

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        return await final_result(await self.generate_events(request, with_progress=False))

    async def refine(self, request: RefineRequest) -> GenerateResponse:
        return await final_result(await self.refine_events(request, with_progress=False))

    async def generate_events(self, request: GenerateRequest, with_progress: bool = True) -> AsyncIterator[StreamEvent]:
        """Checks the request now (InvalidInput before any event), then gives its run as events."""
        names = self._chosen_generators(request.generators)
        stages = {name: self.generators[name] for name in names}
        await self._refuse_what_is_not_honoured(request, stages)
        warnings = await self._unknown_words_warnings(request, stages)
        seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
        return self._generate_run(request, names, seed, with_progress, warnings)

    async def refine_events(self, request: RefineRequest, with_progress: bool = True) -> AsyncIterator[StreamEvent]:
        """Loads the image now (NotFound, InvalidInput before any event), then gives the run as events."""
        source = await self._input_png(request.image, request.image_id)
        await self._refuse_what_is_not_honoured(request, {"refiner": self.refiner})
        warnings = await self._unknown_words_warnings(request, {"refiner": self.refiner})
        seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
        return self._refine_run(request, source, seed, with_progress, warnings)

    async def _generate_run(
        self, request: GenerateRequest, names: list[str], seed: int, with_progress: bool, warnings: list[str]
    ) -> AsyncIterator[StreamEvent]:
        timings: dict[str, float] = {}
        started = time.perf_counter()
        # Every generator's task puts its events here; this generator passes them on as they come.
        events: asyncio.Queue[ProgressEvent | GeneratedEvent] = asyncio.Queue()
        emit = events.put_nowait if with_progress else None
        outcomes: dict[str, tuple[StageReport, list[EncodedImage]]] = {}

        async def run(name: str) -> None:
            outcomes[name] = await self._run_generator(name, request, seed, emit)
            report, images = outcomes[name]
            events.put_nowait(GeneratedEvent(generator=name, report=report, images=_generated(images, seed, with_progress)))

        tasks = [asyncio.create_task(run(name)) for name in names]
        try:
            finished_count = 0
            while finished_count < len(names):
                event = await events.get()
                finished_count += isinstance(event, GeneratedEvent)
                yield event
        finally:
            for task in tasks:  # only left running when this run is cancelled or closed early
                task.cancel()
        timings["generate"] = time.perf_counter() - started
        reports = {name: outcomes[name][0] for name in names}
        pool = [(name, seed + i, image) for name in names for i, image in enumerate(outcomes[name][1])]
        if not pool:
            raise _no_generator_answered(reports)
        candidates = await self._rank_and_store(request.prompt, pool, timings)
        timings["total"] = time.perf_counter() - started
        yield ResultEvent(result=GenerateResponse(
            id=secrets.token_hex(16), prompt=request.prompt, seed=seed,
            candidates=candidates, generators=reports, timings=timings, warnings=warnings,
        ))  # fmt: skip

    async def _refine_run(
        self, request: RefineRequest, source: bytes, seed: int, with_progress: bool, warnings: list[str]
    ) -> AsyncIterator[StreamEvent]:
        timings: dict[str, float] = {}
        started = time.perf_counter()
        variations: list[EncodedImage] = []
        parameters = request.model_dump(exclude={"prompt", "seed", "image", "image_id"})
        call = _image_call(request, seed, "refiner", parameters, with_progress,
                           source=source, skip_rate=request.skip_rate, source_id=request.image_id)  # fmt: skip
        try:
            steps = self._stage_events(self.refiner, "refine", "refiner", with_progress, call)
            async with aclosing(steps):
                async for event in steps:
                    if isinstance(event, Done):
                        variations = event.output
                    else:
                        yield event
        except Exception as error:
            raise _stage_failure("refiner", error) from error
        timings["refine"] = time.perf_counter() - started
        report = StageReport(status="ok", count=len(variations), seconds=timings["refine"])
        yield GeneratedEvent(generator="refiner", report=report, images=_generated(variations, seed, with_progress))
        pool = [("refiner", seed + i, variation) for i, variation in enumerate(variations)]
        candidates = await self._rank_and_store(request.prompt, pool, timings)
        timings["total"] = time.perf_counter() - started
        yield ResultEvent(result=GenerateResponse(
            id=secrets.token_hex(16), prompt=request.prompt, seed=seed,
            candidates=candidates, generators={"refiner": report}, timings=timings, warnings=warnings,
        ))  # fmt: skip

    async def upscale(self, request: UpscaleRequest) -> UpscaleResponse:
        source = await self._input_png(request.image, request.image_id)
        try:
            metadata = {"id": new_image_id(), "stage": "upscaler", "source_id": request.image_id}
            upscaled = await self.upscaler.call("upscale", source, metadata)
        except Exception as error:
            raise _stage_failure("upscaler", error) from error
        image_id = await asyncio.to_thread(self.store.save_png, upscaled.png, upscaled.id)
        return UpscaleResponse(id=image_id, image=base64_of(upscaled.png), width=upscaled.width, height=upscaled.height)

    async def embed_text(self, prompt: str) -> list[float]:
        """The ranker's embedding of a prompt."""
        try:
            return await self.ranker.call("embed_text", prompt)
        except Exception as error:
            raise _stage_failure("ranker", error) from error

    async def readiness(self, timeout_s: float = 2.0) -> dict[str, bool]:
        """Which stages have a replica that has finished loading."""
        stages = {f"generator:{name}": stage for name, stage in self.generators.items()}
        stages |= {"ranker": self.ranker, "refiner": self.refiner, "upscaler": self.upscaler}

        async def is_ready(stage: Stage) -> bool:
            try:
                return bool(await asyncio.wait_for(stage.ready(), timeout_s))
            except Exception:  # still loading, or failed to load: not ready either way
                return False

        answers = await asyncio.gather(*(is_ready(stage) for stage in stages.values()))
        return dict(zip(stages, answers))

    async def _refuse_what_is_not_honoured(self, request: GenerateRequest | RefineRequest, stages: dict[str, Stage]):
        """InvalidInput naming the field when a chosen model cannot honour it (FLUX without
        true guidance has no negative prompt; DALL·E makes one size): refused before
        anything runs, never silently ignored."""
        sampling = _sampling(request)
        for name, stage in stages.items():
            capabilities = await self._capabilities_of(name, stage)
            refused = capabilities.refusal(sampling) if capabilities else None
            if refused:
                field_name, why = refused
                who = "the refiner" if name == "refiner" else f"the generator {name!r}"
                hint = "" if name == "refiner" else "; leave it out or choose other generators"
                raise InvalidInput(f"{field_name}: {who} cannot honour it: {why}{hint}", field=field_name)

    async def _unknown_words_warnings(self, request: GenerateRequest | RefineRequest, stages: dict[str, Stage]) -> list[str]:
        """A warning per text field and set of words that chosen models with a closed vocabulary
        (the embedded ones) do not know: their images silently leave those words out."""
        warnings = []
        for field_name in ("prompt", "negative_prompt"):
            text = getattr(request, field_name) or ""
            models_by_unknown: dict[tuple[str, ...], list[str]] = {}
            for name, stage in stages.items():
                capabilities = await self._capabilities_of(name, stage)
                unknown = unknown_words(text, capabilities.vocabulary if capabilities else None)
                if unknown:
                    models_by_unknown.setdefault(tuple(unknown), []).append(name)
            warnings += [_unknown_words_warning(field_name, words, names) for words, names in models_by_unknown.items()]
        return warnings

    async def models_response(self) -> ModelsResponse:
        """The model of each stage, the words of those with a closed vocabulary, and, when one of
        them knows the embedded shapes world's words only, what that world is."""
        image_stages = {f"generator:{name}": (name, stage) for name, stage in self.generators.items()}
        image_stages["refiner"] = ("refiner", self.refiner)

        async def described(info: ModelInfo) -> ModelInfo:
            if info.stage not in image_stages:
                return info
            # A stage still loading says nothing yet rather than hold the answer up.
            capabilities = await self._capabilities_of(*image_stages[info.stage], timeout_s=MODELS_ANSWER_S)
            if capabilities is None or capabilities.vocabulary is None:
                return info
            return info.model_copy(update={"vocabulary": sorted(capabilities.vocabulary)})

        models = await asyncio.gather(*(described(ModelInfo.model_validate(model)) for model in self.models))
        world_words = shapes_guide.known_words()
        draws_shapes = any(info.vocabulary is not None and set(info.vocabulary) <= world_words for info in models)
        return ModelsResponse(models=list(models), world=shapes_guide.describe() if draws_shapes else None)

    async def _capabilities_of(self, name: str, stage: Stage, timeout_s: float | None = None) -> Capabilities | None:
        if name not in self._capabilities:
            try:
                async with asyncio.timeout(timeout_s or self.generator_timeout_s):
                    self._capabilities[name] = await stage.call("capabilities")
            except Exception:  # a stage that cannot answer fails the run itself, as reported there
                return None
        return self._capabilities[name]

    def _chosen_generators(self, requested: list[str] | None) -> list[str]:
        if requested is None:
            return list(self.generators)
        if not requested:
            raise InvalidInput(f"generators: choose at least one of {sorted(self.generators)}", field="generators")
        unknown = [name for name in requested if name not in self.generators]
        if unknown:
            raise InvalidInput(
                f"generators: unknown {unknown}; enabled are {sorted(self.generators)}",
                field="generators",
            )
        return list(dict.fromkeys(requested))

    async def _run_generator(
        self, name: str, request: GenerateRequest, seed: int, emit: Callable[[ProgressEvent], None] | None
    ) -> tuple[StageReport, list[EncodedImage]]:
        started = time.perf_counter()
        images: list[EncodedImage] = []
        parameters = request.model_dump(exclude={"prompt", "seed", "generators"})
        call = _image_call(request, seed, name, parameters, with_progress=emit is not None)
        try:
            async with asyncio.timeout(self.generator_timeout_s):
                steps = self._stage_events(self.generators[name], "generate", name, emit is not None, call)
                async with aclosing(steps):
                    async for event in steps:
                        if isinstance(event, Done):
                            images = event.output
                        else:
                            emit(event)
        except TimeoutError:
            seconds = time.perf_counter() - started
            return StageReport(status="timeout", seconds=seconds, error=f"no answer in {self.generator_timeout_s} s"), []
        except StageUnavailable:
            seconds = time.perf_counter() - started
            return StageReport(status="unavailable", seconds=seconds, error="no replica could take the call"), []
        except Exception as error:  # one generator's failure degrades the answer, never fails it
            logger.error("generator %s failed", name, exc_info=error)
            seconds = time.perf_counter() - started
            # Its own exception text stays in the server's log: it may hold paths or internals.
            return StageReport(status="failed", seconds=seconds, error="the model failed (the server log has why)"), []
        return StageReport(status="ok", count=len(images), seconds=time.perf_counter() - started), images

    @staticmethod
    async def _stage_events(
        stage: Stage, method: str, name: str, with_progress: bool, *args: Any, **kwargs: Any
    ) -> AsyncIterator[ProgressEvent | Done]:
        """The stage's answer as Done(answer); with progress, a ProgressEvent per step before it."""
        if not with_progress:
            yield Done(await stage.call(method, *args, **kwargs))
            return
        steps = stage.stream(method, *args, **kwargs)
        async with aclosing(steps):
            async for event in steps:
                if isinstance(event, Done):
                    yield event
                    return
                preview = base64_of(event.preview) if event.preview is not None else None
                yield ProgressEvent(generator=name, step=event.step, step_count=event.step_count, preview=preview)
        raise RuntimeError(f"{name}: the step stream ended without an answer")

    async def _rank_and_store(
        self, prompt: str, pool: list[tuple[str, int, EncodedImage]], timings: dict[str, float]
    ) -> list[Candidate]:
        started = time.perf_counter()
        try:
            scores = await self.ranker.call("score", prompt, [image.png for _, _, image in pool])
        except Exception as error:
            raise _stage_failure("ranker", error) from error
        timings["rank"] = time.perf_counter() - started
        started = time.perf_counter()
        order = sorted(range(len(pool)), key=lambda i: -scores[i])
        candidates = await asyncio.to_thread(self._store_ranked, pool, scores, order)
        timings["store"] = time.perf_counter() - started
        return candidates

    def _store_ranked(self, pool, scores, order) -> list[Candidate]:
        """Each PNG stored and answered as its model made it: rank and score belong to
        this answer, not to the image, so they stay out of its file."""
        candidates = []
        for rank, index in enumerate(order):
            generator, seed, image = pool[index]
            image_id = self.store.save_png(image.png, image.id)
            candidates.append(Candidate(
                id=image_id, generator=generator, rank=rank, clip_score=scores[index], seed=seed,
                image=base64_of(image.png), width=image.width, height=image.height,
                nsfw_content_detected=image.nsfw_content_detected,
            ))  # fmt: skip
        return candidates

    async def _input_png(self, data: str | None, image_id: str | None) -> bytes:
        """The image a request names: stored bytes by id, or its own, once checked."""
        if image_id is not None:
            return await asyncio.to_thread(self.store.png_bytes, image_id)
        return await asyncio.to_thread(checked_image_bytes, data, "image")


async def final_result(events: AsyncIterator[StreamEvent]) -> GenerateResponse:
    """The run's answer: its last event, once every other one has passed."""
    async with aclosing(events):
        async for event in events:
            if isinstance(event, ResultEvent):
                return event.result
    raise RuntimeError("the run ended without a result")


def _unknown_words_warning(field_name: str, words: tuple[str, ...], models: list[str]) -> str:
    if models == ["refiner"]:
        who, verb = "the refiner", "does"
    else:
        who = ("the generator " if len(models) == 1 else "the generators ") + " and ".join(map(repr, models))
        verb = "does" if len(models) == 1 else "do"
    return (f"{field_name}: {who} {verb} not know {', '.join(map(repr, words))}, so the images leave "
            f"{'it' if len(words) == 1 else 'them'} out (GET /v1/models lists the words each model knows)")


def _generated(images: list[EncodedImage], seed: int, with_progress: bool) -> list[GeneratedImage]:
    # Only a stream shows images before the ranking.
    if not with_progress:
        return []
    return [
        GeneratedImage(seed=seed + i, image=base64_of(image.png), width=image.width, height=image.height)
        for i, image in enumerate(images)
    ]


def _image_call(
    request: GenerateRequest | RefineRequest, seed: int, generator: str, parameters: dict, with_progress: bool,
    source: bytes | None = None, skip_rate: float | None = None, source_id: str | None = None,
) -> ImageCall:
    """A request's ask of one image model: image i seeded seed + i, each with the id it will be
    stored under, sampling fields left None taking the model's own defaults."""
    source_of = {"source_id": source_id} if source is not None else {}
    return ImageCall(
        prompt=request.prompt, seeds=tuple(expand([request.prompt], request.num_images, seed)[1]),
        ids=tuple(new_image_id() for _ in range(request.num_images)),
        sampling=_sampling(request),
        metadata={"prompt": request.prompt, "generator": generator, **source_of, "parameters": parameters},
        source=source, skip_rate=skip_rate, with_progress=with_progress,
    )


def _sampling(request: GenerateRequest | RefineRequest) -> Sampling:
    """How the request asks its models to sample (None: each model's own)."""
    return Sampling(
        request.num_inference_steps, request.guidance_scale, request.negative_prompt,
        height=getattr(request, "height", None), width=getattr(request, "width", None),
    )


def _stage_failure(stage: str, error: Exception) -> ServiceError:
    """What a stage's failure answers: 503 where nothing ran (no replica took it), 504 for no
    answer in time, else 502; the message names the stage, the model's own error is logged."""
    if isinstance(error, StageUnavailable):
        return StageUnavailable(f"{stage}: no replica could take the call", stage=stage)
    if isinstance(error, TimeoutError):
        return StageTimedOut(f"{stage}: no answer in time", stage=stage)
    logger.error("%s failed", stage, exc_info=error)
    return StageFailed(f"{stage} failed (the server log has why)", stage=stage)


def _no_generator_answered(reports: dict[str, StageReport]) -> ServiceError:
    summary = "no generator produced an image: " + "; ".join(f"{name}: {report.status}" for name, report in reports.items())
    statuses = {report.status for report in reports.values()}
    if statuses == {"unavailable"}:
        return StageUnavailable(summary, stage="generators")
    if statuses == {"timeout"}:
        return StageTimedOut(summary, stage="generators")
    return StageFailed(summary, stage="generators")
