"""The pick-and-refine flow: fan out to generators, gather, rank, store, answer.

It holds no model: every stage is reached through a Stage (see stages.py).
A generator that fails or runs past its deadline is reported in the answer and
left out of the pool; the request fails only when no generator produced an
image or the ranker could not rank.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field

from dalleflow_client.schemas import (
    Candidate,
    DiffuseRequest,
    GenerateRequest,
    GenerateResponse,
    ModelInfo,
    StageReport,
    UpscaleRequest,
    UpscaleResponse,
)
from PIL import Image

from dalleflow.service.errors import InvalidInput, StageUnavailable
from dalleflow.service.images import decode_image, encode_png
from dalleflow.service.stages import Stage
from dalleflow.service.store import ImageStore


@dataclass
class Flow:
    generators: dict[str, Stage]
    ranker: Stage
    refiner: Stage
    upscaler: Stage
    store: ImageStore
    models: list[ModelInfo] = field(default_factory=list)
    generator_timeout_s: float = 120.0

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        names = self._chosen_generators(request.generators)
        seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
        timings: dict[str, float] = {}
        started = time.perf_counter()
        outcomes = await asyncio.gather(
            *(self._run_generator(name, request, seed) for name in names)
        )
        timings["generate"] = time.perf_counter() - started
        reports = {name: report for name, (report, _) in zip(names, outcomes)}
        pool = [(name, seed + i, image) for name, (_, images) in zip(names, outcomes) for i, image in enumerate(images)]
        if not pool:
            raise StageUnavailable(
                "no generator produced an image: "
                + "; ".join(f"{n}: {r.status} ({r.error})" for n, r in reports.items())
            )
        parameters = request.model_dump(exclude={"prompt", "seed", "generators"})
        candidates = await self._rank_and_store(request.prompt, pool, parameters, timings)
        timings["total"] = time.perf_counter() - started
        return GenerateResponse(
            id=secrets.token_hex(16), prompt=request.prompt, seed=seed,
            candidates=candidates, generators=reports, timings=timings,
        )

    async def diffuse(self, request: DiffuseRequest) -> GenerateResponse:
        image = await self._input_image(request.image, request.image_id)
        seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
        timings: dict[str, float] = {}
        started = time.perf_counter()
        try:
            variations = await self.refiner.call(
                "refine", image, request.prompt, skip_rate=request.skip_rate, num_images=request.num_images,
                seed=seed, num_inference_steps=request.num_inference_steps,
                guidance_scale=request.guidance_scale, negative_prompt=request.negative_prompt,
            )
        except Exception as error:
            raise StageUnavailable(f"refiner failed: {error}") from error
        timings["refine"] = time.perf_counter() - started
        report = StageReport(status="ok", count=len(variations), seconds=timings["refine"])
        parameters = request.model_dump(exclude={"prompt", "seed", "image"})
        pool = [("refiner", seed + i, variation) for i, variation in enumerate(variations)]
        candidates = await self._rank_and_store(request.prompt, pool, parameters, timings)
        timings["total"] = time.perf_counter() - started
        return GenerateResponse(
            id=secrets.token_hex(16), prompt=request.prompt, seed=seed,
            candidates=candidates, generators={"refiner": report}, timings=timings,
        )

    async def upscale(self, request: UpscaleRequest) -> UpscaleResponse:
        image = await self._input_image(request.image, request.image_id)
        try:
            upscaled = await self.upscaler.call("upscale", image)
        except Exception as error:
            raise StageUnavailable(f"upscaler failed: {error}") from error
        metadata = {"stage": "upscaler", "source_id": request.image_id}
        image_id = await asyncio.to_thread(self.store.save, upscaled, metadata)
        return UpscaleResponse(id=image_id, image=encode_png(upscaled), width=upscaled.width, height=upscaled.height)

    async def embed_text(self, prompt: str) -> list[float]:
        """The ranker's embedding of a prompt."""
        try:
            return await self.ranker.call("embed_text", prompt)
        except Exception as error:
            raise StageUnavailable(f"ranker failed: {error}") from error

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

    def _chosen_generators(self, requested: list[str] | None) -> list[str]:
        if requested is None:
            return list(self.generators)
        unknown = [name for name in requested if name not in self.generators]
        if unknown or not requested:
            raise InvalidInput(
                f"generators: unknown {unknown or requested}; enabled are {sorted(self.generators)}",
                field="generators",
            )
        return list(dict.fromkeys(requested))

    async def _run_generator(
        self, name: str, request: GenerateRequest, seed: int
    ) -> tuple[StageReport, list[Image.Image]]:
        started = time.perf_counter()
        try:
            images = await asyncio.wait_for(
                self.generators[name].call(
                    "generate", [request.prompt], num_images=request.num_images, seed=seed,
                    num_inference_steps=request.num_inference_steps, guidance_scale=request.guidance_scale,
                    negative_prompt=request.negative_prompt,
                ),
                timeout=self.generator_timeout_s,
            )
        except TimeoutError:
            seconds = time.perf_counter() - started
            return StageReport(status="timeout", seconds=seconds, error=f"no answer in {self.generator_timeout_s} s"), []
        except Exception as error:  # one generator's failure degrades the answer, never fails it
            seconds = time.perf_counter() - started
            return StageReport(status="failed", seconds=seconds, error=f"{type(error).__name__}: {error}"), []
        return StageReport(status="ok", count=len(images), seconds=time.perf_counter() - started), images

    async def _rank_and_store(
        self, prompt: str, pool: list[tuple[str, int, Image.Image]], parameters: dict, timings: dict[str, float]
    ) -> list[Candidate]:
        started = time.perf_counter()
        try:
            scores = await self.ranker.call("score", prompt, [image for _, _, image in pool])
        except Exception as error:
            raise StageUnavailable(f"ranker failed: {error}") from error
        timings["rank"] = time.perf_counter() - started
        started = time.perf_counter()
        order = sorted(range(len(pool)), key=lambda i: -scores[i])
        candidates = await asyncio.to_thread(self._store_ranked, prompt, pool, scores, order, parameters)
        timings["store"] = time.perf_counter() - started
        return candidates

    def _store_ranked(self, prompt, pool, scores, order, parameters) -> list[Candidate]:
        candidates = []
        for rank, index in enumerate(order):
            generator, seed, image = pool[index]
            metadata = {"prompt": prompt, "seed": seed, "generator": generator, "rank": rank,
                        "clip_score": scores[index], "parameters": parameters}
            image_id = self.store.save(image, metadata)
            candidates.append(Candidate(
                id=image_id, generator=generator, rank=rank, clip_score=scores[index], seed=seed,
                image=encode_png(image), width=image.width, height=image.height,
            ))
        return candidates

    async def _input_image(self, data: str | None, image_id: str | None) -> Image.Image:
        if image_id is not None:
            return await asyncio.to_thread(self.store.load, image_id)
        return await asyncio.to_thread(decode_image, data, "image")
