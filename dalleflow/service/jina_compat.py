"""dalle-flow's 2022 client code, unchanged, against this service: Jina's HTTP protocol over the Flow
(and, through `respond`, its gRPC protocol: service/jina_grpc).

    from docarray import Document                      # docarray 0.x with jina 3.x
    server_url = 'http://127.0.0.1:8000'               # the service's own HTTP port
    doc = Document(text=prompt).post(server_url, parameters={'num_images': 8})
    fav = doc.matches[3]; fav.embedding = doc.embedding
    diffused = fav.post(server_url, parameters={'skip_rate': 0.5, 'num_images': 36}, target_executor='diffusion').matches
    fav = diffused[34].post(f'{server_url}/upscale')

What the Jina client does, and so what this module answers:
- it always sends `POST /post` with `{header: {request_id, exec_endpoint, target_executor?},
  parameters, data: [Doc...], exec_endpoint, target_executor?}` (older clients: data as
  `{docs: [...]}`); numbers in parameters arrive as floats; it adds keys such as
  `__results__`, which are ignored here;
- jina >= 3.15 reads /openapi.json first and posts to a listed path named like the endpoint
  (or /default) instead of /post, so this route stays out of the schema;
- it accepts only `header`, `parameters`, `routes` and `data` at the top of the answer, and
  reads an HTTP 200 whose `header.status.code` is 1 as the server's error (it raises BadServer).

The endpoints are dalle-flow's:
- `/` (no target): each Doc's text is a prompt for Flow.generate; its `matches` become the
  ranked candidates as `data:image/png;base64` uris, with the generator and CLIP score in
  tags, and its `embedding` the ranker's text embedding (the README copies it onto the pick);
  the answer's warnings (words the models do not know) in `tags.warnings`.
  `num_images` keeps dalle-flow's meaning, images per generator: the embedded default has one
  generator, so `num_images: 8` gives 8 candidates where dalle-flow's three generators gave 24.
- a target_executor naming the refiner (`refiner`, or dalle-flow's `diffusion`, which
  this service's native API calls refine): Flow.refine of each Doc's image with its text;
  the variations, ranked, in `matches`. The Doc's embedding is kept but not used: the refiner
  is conditioned on the text.
- `/upscale`: Flow.upscale; the same Doc with its uri replaced by the x4 PNG and
  `tags.upscaled = true`.
Every Doc comes back in order with its id. No model is reached but through the Flow.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Any

from dalleflow_client.schemas import Candidate, GenerateRequest, RefineRequest, UpscaleRequest
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dalleflow.service.errors import ServiceError
from dalleflow.service.flow import Flow
from dalleflow.service.safe_json import SafeJSONResponse, strict_loads

logger = logging.getLogger(__name__)

# The Jina client gives up after 300 s; answer before it does, with an error if need be.
ANSWER_DEADLINE_S = 290.0
GENERATE_PARAMETERS = set(GenerateRequest.model_fields) - {"prompt"}
REFINE_PARAMETERS = set(RefineRequest.model_fields) - {"prompt", "image", "image_id"}
# The target_executor names that mean the refiner: dalle-flow called its executor "diffusion".
REFINER_TARGETS = ("refine", "diffusion")
# Docs per request: dalle-flow's client posts one; each is a whole generation.
MAX_DOCS = 8


class Doc(BaseModel):
    """A docarray 0.x Document as JSON; fields not read here come back as they were sent."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    text: str | None = None
    uri: str | None = None
    blob: str | None = None
    mime_type: str | None = None
    tags: dict[str, Any] | None = None
    embedding: list[float] | None = None
    matches: list[dict[str, Any]] | None = None


class Header(BaseModel):
    request_id: str | None = None
    exec_endpoint: str | None = None
    target_executor: str | None = None


class JinaRequest(BaseModel):
    header: Header = Header()
    parameters: dict[str, Any] | None = None
    data: list[Doc] | None = Field(None, max_length=MAX_DOCS)
    exec_endpoint: str | None = None
    target_executor: str | None = None

    @field_validator("data", mode="before")
    @classmethod
    def _docs_list(cls, data: Any) -> Any:
        # Older clients send {docs: [...]}.
        return data["docs"] if isinstance(data, dict) and "docs" in data else data

    @property
    def docs(self) -> list[Doc]:
        return self.data or []

    @property
    def endpoint(self) -> str:
        return self.exec_endpoint or self.header.exec_endpoint or "/"

    @property
    def target(self) -> str:
        return self.target_executor or self.header.target_executor or ""


class JinaError(Exception):
    """A request this translation refuses, with the reason the client shows."""


router = APIRouter()


@router.post("/post", include_in_schema=False)
async def post(request: Request) -> JSONResponse:
    try:
        body = _strict_json(await request.body())
    except Exception as error:
        return SafeJSONResponse(error_body(None, error))
    # Safe: the Docs come back as sent, and a tag may hold what UTF-8 cannot encode.
    return SafeJSONResponse(await respond(request.app.state.flow, body))


async def respond(flow: Flow, body: Any) -> dict[str, Any]:
    """The answer to a Jina request body (its JSON form, whichever transport brought it):
    the answered Docs, or Jina's error shape; never an exception, never a hang."""
    request_id = None
    try:
        if isinstance(body, dict) and isinstance(body.get("header"), dict):
            request_id = body["header"].get("request_id")
        jina_request = JinaRequest.model_validate(body)
        docs = await asyncio.wait_for(answer(flow, jina_request), ANSWER_DEADLINE_S)
    except TimeoutError:
        return error_body(request_id, TimeoutError(f"no answer within {ANSWER_DEADLINE_S:.0f} s"))
    except Exception as error:  # every failure is the client's BadServer, never a hang or a 500
        if not _is_the_requests_fault(error):
            logger.exception("jina-compatible request %s failed", request_id)
        return error_body(request_id, error)
    header = {"request_id": jina_request.header.request_id, "exec_endpoint": jina_request.endpoint,
              "status": {"code": 0}}
    if jina_request.target:
        header["target_executor"] = jina_request.target
    return {"header": header, "data": docs}


async def answer(flow: Flow, request: JinaRequest) -> list[dict[str, Any]]:
    """The answered Docs, one per Doc sent, in order."""
    parameters = {k: v for k, v in (request.parameters or {}).items() if not k.startswith("__")}
    if request.endpoint == "/upscale":
        handle = upscale
        _check_known(parameters, set())
    elif request.endpoint in ("/", "/default") and any(name in request.target for name in REFINER_TARGETS):
        handle = refine
        _check_known(parameters, REFINE_PARAMETERS | GENERATE_PARAMETERS)
    elif request.endpoint in ("/", "/default"):
        handle = generate
        # dalle-flow sent one set of parameters to every executor; skip_rate was the diffuser's.
        _check_known(parameters, GENERATE_PARAMETERS | REFINE_PARAMETERS)
    else:
        raise JinaError(f"exec_endpoint: unknown {request.endpoint!r}; this service answers '/' and '/upscale'")
    try:
        # A TaskGroup, not gather: one Doc's failure cancels the others' work.
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(handle(flow, doc, i, parameters)) for i, doc in enumerate(request.docs)]
    except ExceptionGroup as failures:
        raise failures.exceptions[0] from None
    return [task.result() for task in tasks]


async def generate(flow: Flow, doc: Doc, index: int, parameters: dict[str, Any]) -> dict[str, Any]:
    prompt = _required_text(doc, index)
    generation = _stage_request(GenerateRequest, index, prompt=prompt, **_only(parameters, GENERATE_PARAMETERS))
    result, embedding = await asyncio.gather(flow.generate(generation), flow.embed_text(prompt))
    answered = _echo(doc)
    answered["embedding"] = embedding
    answered["tags"] = {**(doc.tags or {}), "seed": result.seed,
                        "generators": {name: report.status for name, report in result.generators.items()}}
    if result.warnings:
        answered["tags"]["warnings"] = result.warnings
    answered["matches"] = [_candidate_doc(candidate, prompt) for candidate in result.candidates]
    return answered


async def refine(flow: Flow, doc: Doc, index: int, parameters: dict[str, Any]) -> dict[str, Any]:
    prompt = _required_text(doc, index)
    refinement = _stage_request(
        RefineRequest, index, prompt=prompt, image=_image(doc, index), **_only(parameters, REFINE_PARAMETERS)
    )
    async with _image_errors_named(index):
        result = await flow.refine(refinement)
    answered = _echo(doc)
    answered["matches"] = [_candidate_doc(candidate, prompt) for candidate in result.candidates]
    return answered


async def upscale(flow: Flow, doc: Doc, index: int, parameters: dict[str, Any]) -> dict[str, Any]:
    async with _image_errors_named(index):
        result = await flow.upscale(_stage_request(UpscaleRequest, index, image=_image(doc, index)))
    answered = _echo(doc)
    answered.update(uri=f"data:image/png;base64,{result.image}", mime_type="image/png", blob=None, tensor=None)
    answered["tags"] = {**(doc.tags or {}), "upscaled": True, "image_id": result.id,
                        "width": result.width, "height": result.height}
    return answered


def error_body(request_id: str | None, error: Exception) -> dict[str, Any]:
    """Jina's error shape: header.status.code 1 (ERROR), answered with HTTP 200 (or gRPC OK)."""
    description = _describe(error)
    status = {"code": 1, "description": description,
              "exception": {"name": type(error).__name__, "args": [description], "stacks": []}}
    return {"header": {"request_id": request_id or "", "status": status}}


def _strict_json(body: bytes) -> Any:
    try:
        return strict_loads(body)
    except ValueError as error:  # bad UTF-8 and JSONDecodeError are ValueErrors too
        raise JinaError(f"body: not JSON ({error})") from None


def _is_the_requests_fault(error: Exception) -> bool:
    if isinstance(error, ServiceError):
        return error.status_code < 500
    return isinstance(error, (JinaError, ValidationError))


def _describe(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(f"{_location(e['loc'])}: {e['msg']}" for e in error.errors())
    return str(error) or type(error).__name__


def _check_known(parameters: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise JinaError(f"parameters: unknown {unknown}; this endpoint takes {sorted(known)}")


def _only(parameters: dict[str, Any], names: set[str]) -> dict[str, Any]:
    # Jina's protobuf Struct has only floats: num_images 8 arrives as 8.0, which the API's
    # strict types refuse, so a whole float is given back as the integer it was.
    return {name: int(value) if isinstance(value, float) and value.is_integer() else value
            for name, value in parameters.items() if name in names}  # fmt: skip


def _location(loc: tuple) -> str:
    """("data", 0, "text") -> "data[0].text"."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "body"


def _stage_request(model: type[BaseModel], index: int, **fields: Any) -> BaseModel:
    """The native request, its errors named by where the Jina request put the value."""
    try:
        return model.model_validate(fields)
    except ValidationError as error:
        where = {"prompt": f"data[{index}].text", "image": f"data[{index}].uri"}
        problems = []
        for e in error.errors():
            name = str(e["loc"][0]) if e["loc"] else ""
            problems.append(f"{where.get(name, f'parameters.{name}' if name else 'parameters')}: {e['msg']}")
        raise JinaError("; ".join(problems)) from error


def _required_text(doc: Doc, index: int) -> str:
    if not doc.text:
        raise JinaError(f"data[{index}].text: the prompt is missing")
    return doc.text


def _image(doc: Doc, index: int) -> str:
    """The Doc's image as base64 (or a base64 data: URI); never fetched from a URL or read from a path."""
    if doc.uri:
        media, _, _ = doc.uri.partition(",")
        if not (media.startswith("data:") and media.endswith(";base64")):
            raise JinaError(f"data[{index}].uri: only base64 data: URIs are read, got {doc.uri[:40]!r}")
        return doc.uri
    if doc.blob:
        return doc.blob
    raise JinaError(f"data[{index}]: no image; give it as a data: uri or a blob")


@asynccontextmanager
async def _image_errors_named(index: int):
    """The Flow names its image field `image`; here the image came in data[i].uri or .blob."""
    try:
        yield
    except ServiceError as error:
        if error.field != "image":
            raise
        raise JinaError(f"data[{index}].uri: {error.message.removeprefix('image: ')}") from error


def _echo(doc: Doc) -> dict[str, Any]:
    return doc.model_dump()


def _candidate_doc(candidate: Candidate, prompt: str) -> dict[str, Any]:
    return {
        "id": candidate.id,
        "text": prompt,
        "uri": f"data:image/png;base64,{candidate.image}",
        "mime_type": "image/png",
        "tags": {"generator": candidate.generator, "clip_score": candidate.clip_score, "rank": candidate.rank,
                 "seed": candidate.seed, "image_id": candidate.id, "width": candidate.width, "height": candidate.height},
        "scores": {"clip_score": {"value": candidate.clip_score}},
    }
