"""Sync and async clients of the dalleflow HTTP API.

    from dalleflow_client import Client

    with Client("http://127.0.0.1:8000") as client:
        result = client.generate("a red circle to the left of a blue square", num_images=2)
        result.grid().save("grid.png")
        variations = client.refine(result.best, "a red circle to the left of a blue square")
        final = client.upscale(variations.best)

Both clients build their requests and read the answers through the same `Call`s below;
they differ only in how they send. The diffuse methods are the old names of the refine
ones (see schemas.py on the one name).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx
from PIL import Image
from pydantic import BaseModel

from .errors import DalleflowError, RequestError, TransportError
from .images import decode_image, encode_png
from .results import CandidateImage, Result, UpscaledImage
from .streaming import STREAM_HEADERS, Event, aiter_events, is_finished, iter_events, read_job
from .retries import AsyncRetryTransport, RetryPolicy, RetryTransport
from .schemas import (
    IMAGE_ID_PATTERN,
    Candidate,
    GenerateRequest,
    GenerateResponse,
    Job,
    ModelInfo,
    ModelsResponse,
    RefineRequest,
    UpscaleRequest,
    UpscaleResponse,
)

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
API_KEY_ENV = "DALLEFLOW_API_KEY"  # the client's key; the server's keys are in DALLEFLOW_API_KEYS
# Generation on a CPU, or a large model on a busy GPU, takes minutes; a dead server is found by the connect timeout.
DEFAULT_TIMEOUT = httpx.Timeout(300.0, connect=10.0)
DEFAULT_RETRY = RetryPolicy()
# Per call: a number of seconds, an httpx.Timeout, None for no limit; by default the client's.
CallTimeout = float | httpx.Timeout | None | type(httpx.USE_CLIENT_DEFAULT)  # httpx does not export the class

ImageInput = Image.Image | CandidateImage | UpscaledImage | Candidate | str | os.PathLike
"""A PIL image, an earlier answer's image (or its id: 32 hex digits), or a PNG/JPEG file path."""

_IMAGE_ID = re.compile(IMAGE_ID_PATTERN)
T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[T]):
    """One HTTP exchange: what to send, and how to read the answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    body: dict[str, Any] | None = None

    def read(self, response: httpx.Response) -> T:
        check_response(response)
        try:
            return self.parse(response)
        except (ValueError, OSError) as error:  # bad JSON, a schema mismatch, an undecodable image
            raise DalleflowError(f"unexpected answer from {self.method} {self.path}: {error}") from error


def check_response(response: httpx.Response) -> None:
    """Raise RequestError, with the server's detail, for a 4xx or 5xx answer."""
    if response.is_success:
        return
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        detail = response.text[:1000] or response.reason_phrase  # not FastAPI's JSON: a proxy, a crash page
    raise RequestError(response.status_code, detail, response.request.method, str(response.request.url))


def request_body(model: type[BaseModel], **fields: Any) -> dict[str, Any]:
    """The JSON body of `model`, without the fields left at None (the server's defaults apply).

    Names are checked, so a field renamed in the schema fails here; values are not: the
    server is the authority on limits, and its 422 names the field.
    """
    unknown = fields.keys() - model.model_fields.keys()
    if unknown:
        raise TypeError(f"{model.__name__} has no field {', '.join(sorted(unknown))}")
    return {name: value for name, value in fields.items() if value is not None}


def image_fields(image: ImageInput) -> dict[str, str]:
    """The `image` or `image_id` field that names `image` in a request."""
    if isinstance(image, Image.Image):
        return {"image": encode_png(image)}
    if isinstance(image, (CandidateImage, UpscaledImage, Candidate)):
        return {"image_id": image.id}  # the server still holds it: send 32 characters, not the picture
    if isinstance(image, str) and _IMAGE_ID.fullmatch(image):
        return {"image_id": image}
    if isinstance(image, (str, os.PathLike)):
        if not Path(image).is_file():
            raise ValueError(f"{str(image)!r} is neither an image id (32 hex digits) nor a file")
        with Image.open(image) as opened:
            return {"image": encode_png(opened)}
    raise TypeError(f"expected a PIL image, a candidate, an image id or a file path, not {type(image).__name__}")


def _parse_result(response: httpx.Response) -> Result:
    return Result(GenerateResponse.model_validate_json(response.content))


def generate_call(**fields: Any) -> Call[Result]:
    return Call("POST", "/v1/generate", _parse_result, request_body(GenerateRequest, **fields))


def refine_call(image: ImageInput, **fields: Any) -> Call[Result]:
    return Call("POST", "/v1/refine", _parse_result, request_body(RefineRequest, **image_fields(image), **fields))


def upscale_call(image: ImageInput) -> Call[UpscaledImage]:
    source = image if isinstance(image, CandidateImage) else None  # its prompt and seed go into the metadata

    def parse(response: httpx.Response) -> UpscaledImage:
        return UpscaledImage.from_schema(UpscaleResponse.model_validate_json(response.content), source)

    return Call("POST", "/v1/upscale", parse, request_body(UpscaleRequest, **image_fields(image)))


def models_call() -> Call[list[ModelInfo]]:
    return Call("GET", "/v1/models", lambda response: ModelsResponse.model_validate_json(response.content).models)


def health_call() -> Call[dict[str, Any]]:
    return Call("GET", "/healthz", lambda response: response.json())


def image_call(image_id: str) -> Call[Image.Image]:
    if not _IMAGE_ID.fullmatch(image_id):
        raise ValueError(f"{image_id!r} is not an image id (32 hex digits)")
    return Call("GET", f"/v1/images/{image_id}", lambda response: decode_image(response.content))


def submit_call(kind: str, request: Call[Result]) -> Call[Job]:
    """POST /v1/jobs with the body `request` (a generate_call or refine_call) would send."""
    return Call("POST", "/v1/jobs", read_job, {"kind": kind, "request": request.body})


def job_call(job_id: str, method: str = "GET") -> Call[Job]:
    if not _IMAGE_ID.fullmatch(job_id):  # job ids have the shape of image ids
        raise ValueError(f"{job_id!r} is not a job id (32 hex digits)")
    return Call(method, f"/v1/jobs/{job_id}", read_job)


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The bearer header of `api_key`, or of $DALLEFLOW_API_KEY when it is None; none without a key."""
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
    return {"authorization": f"Bearer {key}"} if key else {}


@contextmanager
def _no_answer_as_error(base_url: httpx.URL, call: Call) -> Iterator[None]:
    try:
        yield
    except httpx.TransportError as error:  # timeouts included
        reason = f"{type(error).__name__}: {error}"
        raise TransportError(f"no answer to {call.method} {call.path} from {base_url}: {reason}") from error


class Client:
    """Blocking client. Use it as a context manager, or call close().

    `timeout` applies to each call unless the call names its own; `retry` says when a 429,
    a 503 or a connection failure is tried again (None: never; see dalleflow_client.retries);
    `api_key` is sent as `Authorization: Bearer <key>` (default: $DALLEFLOW_API_KEY, if set).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        api_key: str | None = None,
    ):
        transport = RetryTransport(retry) if retry is not None else None
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport, headers=auth_headers(api_key))

    def _send(self, call: Call[T], timeout: CallTimeout = httpx.USE_CLIENT_DEFAULT) -> T:
        with _no_answer_as_error(self._http.base_url, call):
            response = self._http.request(call.method, call.path, json=call.body, timeout=timeout)
        return call.read(response)

    def generate(
        self,
        prompt: str,
        num_images: int = 4,
        generators: list[str] | None = None,
        seed: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        negative_prompt: str | None = None,
        height: int | None = None,
        width: int | None = None,
        *,
        timeout: CallTimeout = httpx.USE_CLIENT_DEFAULT,
    ) -> Result:
        """Images of `prompt` from each generator (`num_images` each; None: every enabled one), ranked best first."""
        return self._send(generate_call(
            prompt=prompt, num_images=num_images, generators=generators, seed=seed,
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, negative_prompt=negative_prompt,
            height=height, width=width,
        ), timeout)  # fmt: skip

    def refine(
        self,
        image: ImageInput,
        prompt: str,
        skip_rate: float = 0.5,
        num_images: int = 4,
        seed: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        negative_prompt: str | None = None,
        *,
        timeout: CallTimeout = httpx.USE_CLIENT_DEFAULT,
    ) -> Result:
        """Ranked variations of `image` towards `prompt`, best first; skip_rate near 1 stays close to the image."""
        return self._send(refine_call(
            image, prompt=prompt, skip_rate=skip_rate, num_images=num_images, seed=seed,
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, negative_prompt=negative_prompt,
        ), timeout)  # fmt: skip

    def upscale(self, image: ImageInput, *, timeout: CallTimeout = httpx.USE_CLIENT_DEFAULT) -> UpscaledImage:
        """`image` at four times its width and height."""
        return self._send(upscale_call(image), timeout)

    def models(self, *, timeout: CallTimeout = httpx.USE_CLIENT_DEFAULT) -> list[ModelInfo]:
        """The model behind each stage, and where its weights came from."""
        return self._send(models_call(), timeout)

    def health(self, *, timeout: CallTimeout = httpx.USE_CLIENT_DEFAULT) -> dict[str, Any]:
        return self._send(health_call(), timeout)

    def image(self, image_id: str, *, timeout: CallTimeout = httpx.USE_CLIENT_DEFAULT) -> Image.Image:
        """An image the server stored for an earlier answer."""
        return self._send(image_call(image_id), timeout)

    def _stream(self, call: Call[Result], timeout: CallTimeout) -> Iterator[Event]:
        with _no_answer_as_error(self._http.base_url, call):
            with self._http.stream(
                call.method, call.path, json=call.body, headers=STREAM_HEADERS, timeout=timeout
            ) as response:
                if not response.is_success:
                    response.read()
                    check_response(response)
                yield from iter_events(response)

    def generate_stream(
        self,
        prompt: str,
        num_images: int = 4,
        generators: list[str] | None = None,
        seed: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        negative_prompt: str | None = None,
        height: int | None = None,
        width: int | None = None,
        *,
        timeout: CallTimeout = httpx.USE_CLIENT_DEFAULT,
    ) -> Iterator[Event]:
        """generate as it runs: a ProgressEvent per model step (with a small preview), a
        GeneratedEvent per generator, then a ResultEvent (Result(event.result) is what
        generate returns). Stopping the iteration early cancels the work on the server."""
        return self._stream(generate_call(
            prompt=prompt, num_images=num_images, generators=generators, seed=seed,
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, negative_prompt=negative_prompt,
            height=height, width=width,
        ), timeout)  # fmt: skip

    def refine_stream(
        self,
        image: ImageInput,
        prompt: str,
        skip_rate: float = 0.5,
        num_images: int = 4,
        seed: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        negative_prompt: str | None = None,
        *,
        timeout: CallTimeout = httpx.USE_CLIENT_DEFAULT,
    ) -> Iterator[Event]:
        """refine as it runs; see generate_stream."""
        return self._stream(refine_call(
            image, prompt=prompt, skip_rate=skip_rate, num_images=num_images, seed=seed,
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, negative_prompt=negative_prompt,
        ), timeout)  # fmt: skip

    def submit_generate(self, prompt: str, *, timeout: CallTimeout = httpx.USE_CLIENT_DEFAULT, **options: Any) -> Job:
        """Queues a generate request (generate's options) as a job; answers at once."""
        return self._send(submit_call("generate", generate_call(prompt=prompt, **options)), timeout)

    def submit_refine(
        self, image: ImageInput, prompt: str, *, timeout: CallTimeout = httpx.USE_CLIENT_DEFAULT, **options: Any
    ) -> Job:
        """Queues a refine request (refine's options) as a job; answers at once."""
        return self._send(submit_call("refine", refine_call(image, prompt=prompt, **options)), timeout)

    # dalle-flow's name for refine, kept for the code that uses it.
    diffuse = refine
    diffuse_stream = refine_stream
    submit_diffuse = submit_refine

    def job(self, job_id: str, *, timeout: CallTimeout = httpx.USE_CLIENT_DEFAULT) -> Job:
        """The job's status, queue position, progress, and its result once done."""
        return self._send(job_call(job_id), timeout)

    def cancel_job(self, job_id: str, *, timeout: CallTimeout = httpx.USE_CLIENT_DEFAULT) -> Job:
        """Cancels that job (a RequestError 409 if it already finished)."""
        return self._send(job_call(job_id, "DELETE"), timeout)

    def wait_job(
        self,
        job_id: str,
        poll_interval: float = 0.5,
        wait_timeout: float | None = None,
        on_update: Callable[[Job], None] | None = None,
    ) -> Job:
        """Polls the job until it is done, failed or cancelled, and returns it; on_update
        sees each poll's answer. A TimeoutError after wait_timeout seconds."""
        deadline = None if wait_timeout is None else time.monotonic() + wait_timeout
        while True:
            job = self.job(job_id)
            if on_update is not None:
                on_update(job)
            if is_finished(job):
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job.status} after {wait_timeout} s")
            time.sleep(poll_interval)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncClient:
    """The asyncio form of Client: the same methods and options, awaited. Use `async with`, or await close()."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        api_key: str | None = None,
    ):
        transport = AsyncRetryTransport(retry) if retry is not None else None
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout, transport=transport, headers=auth_headers(api_key)
        )

    async def _send(self, call: Call[T], timeout: CallTimeout = httpx.USE_CLIENT_DEFAULT) -> T:
        with _no_answer_as_error(self._http.base_url, call):
            response = await self._http.request(call.method, call.path, json=call.body, timeout=timeout)
        return call.read(response)

    async def generate(
        self,
        prompt: str,
        num_images: int = 4,
        generators: list[str] | None = None,
        seed: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        negative_prompt: str | None = None,
        height: int | None = None,
        width: int | None = None,
        *,
        timeout: CallTimeout = httpx.USE_CLIENT_DEFAULT,
    ) -> Result:
        """See Client.generate."""
        return await self._send(generate_call(
            prompt=prompt, num_images=num_images, generators=generators, seed=seed,
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, negative_prompt=negative_prompt,
            height=height, width=width,
        ), timeout)  # fmt: skip

    async def refine(
        self,
        image: ImageInput,
        prompt: str,
        skip_rate: float = 0.5,
        num_images: int = 4,
        seed: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        negative_prompt: str | None = None,
        *,
        timeout: CallTimeout = httpx.USE_CLIENT_DEFAULT,
    ) -> Result:
        """See Client.refine."""
        return await self._send(refine_call(
            image, prompt=prompt, skip_rate=skip_rate, num_images=num_images, seed=seed,
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, negative_prompt=negative_prompt,
        ), timeout)  # fmt: skip

    async def upscale(self, image: ImageInput, *, timeout: CallTimeout = httpx.USE_CLIENT_DEFAULT) -> UpscaledImage:
        return await self._send(upscale_call(image), timeout)

    async def models(self, *, timeout: CallTimeout = httpx.USE_CLIENT_DEFAULT) -> list[ModelInfo]:
        return await self._send(models_call(), timeout)

    async def health(self, *, timeout: CallTimeout = httpx.USE_CLIENT_DEFAULT) -> dict[str, Any]:
        return await self._send(health_call(), timeout)

    async def image(self, image_id: str, *, timeout: CallTimeout = httpx.USE_CLIENT_DEFAULT) -> Image.Image:
        return await self._send(image_call(image_id), timeout)

    async def _stream(self, call: Call[Result], timeout: CallTimeout) -> AsyncIterator[Event]:
        with _no_answer_as_error(self._http.base_url, call):
            async with self._http.stream(
                call.method, call.path, json=call.body, headers=STREAM_HEADERS, timeout=timeout
            ) as response:
                if not response.is_success:
                    await response.aread()
                    check_response(response)
                async for event in aiter_events(response):
                    yield event

    def generate_stream(
        self,
        prompt: str,
        num_images: int = 4,
        generators: list[str] | None = None,
        seed: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        negative_prompt: str | None = None,
        height: int | None = None,
        width: int | None = None,
        *,
        timeout: CallTimeout = httpx.USE_CLIENT_DEFAULT,
    ) -> AsyncIterator[Event]:
        """See Client.generate_stream: `async for event in client.generate_stream(...)`."""
        return self._stream(generate_call(
            prompt=prompt, num_images=num_images, generators=generators, seed=seed,
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, negative_prompt=negative_prompt,
            height=height, width=width,
        ), timeout)  # fmt: skip

    def refine_stream(
        self,
        image: ImageInput,
        prompt: str,
        skip_rate: float = 0.5,
        num_images: int = 4,
        seed: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        negative_prompt: str | None = None,
        *,
        timeout: CallTimeout = httpx.USE_CLIENT_DEFAULT,
    ) -> AsyncIterator[Event]:
        """See Client.refine_stream."""
        return self._stream(refine_call(
            image, prompt=prompt, skip_rate=skip_rate, num_images=num_images, seed=seed,
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, negative_prompt=negative_prompt,
        ), timeout)  # fmt: skip

    async def submit_generate(self, prompt: str, *, timeout: CallTimeout = httpx.USE_CLIENT_DEFAULT, **options: Any) -> Job:
        return await self._send(submit_call("generate", generate_call(prompt=prompt, **options)), timeout)

    async def submit_refine(
        self, image: ImageInput, prompt: str, *, timeout: CallTimeout = httpx.USE_CLIENT_DEFAULT, **options: Any
    ) -> Job:
        return await self._send(submit_call("refine", refine_call(image, prompt=prompt, **options)), timeout)

    diffuse = refine  # the old names, as in Client
    diffuse_stream = refine_stream
    submit_diffuse = submit_refine

    async def job(self, job_id: str, *, timeout: CallTimeout = httpx.USE_CLIENT_DEFAULT) -> Job:
        return await self._send(job_call(job_id), timeout)

    async def cancel_job(self, job_id: str, *, timeout: CallTimeout = httpx.USE_CLIENT_DEFAULT) -> Job:
        return await self._send(job_call(job_id, "DELETE"), timeout)

    async def wait_job(
        self,
        job_id: str,
        poll_interval: float = 0.5,
        wait_timeout: float | None = None,
        on_update: Callable[[Job], None] | None = None,
    ) -> Job:
        """See Client.wait_job."""
        deadline = None if wait_timeout is None else time.monotonic() + wait_timeout
        while True:
            job = await self.job(job_id)
            if on_update is not None:
                on_update(job)
            if is_finished(job):
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job.status} after {wait_timeout} s")
            await asyncio.sleep(poll_interval)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
