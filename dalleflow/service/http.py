"""The HTTP API: FastAPI routes over a Flow found on app.state.flow, and the web page's files.

The routes know nothing of Ray; deployments/ingress.py serves this same app
through Ray Serve, and tests or benchmarks can serve it in-process.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any


import fastapi_offline
from dalleflow_client.schemas import (
    NDJSON,
    ErrorEvent,
    GenerateRequest,
    GenerateResponse,
    Job,
    JobRequest,
    ModelsResponse,
    RefineRequest,
    StreamEvent,
    UpscaleRequest,
    UpscaleResponse,
)
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from dalleflow.service import jina_compat
from dalleflow.service.auth import INVALID_CHALLENGE, ApiKeys
from dalleflow.service.errors import ServiceError
from dalleflow.service.flow import Flow
from dalleflow.service.jobs import JobManager
from dalleflow.service.limits import (
    MAX_BODY_BYTES,
    Admission,
    BodyLimits,
    HostCheck,
    HttpLimits,
    JsonOnlyWrites,
    SecurityHeaders,
    app_path,
)
from dalleflow.service.safe_json import SafeJSONResponse, strict_loads
from dalleflow.web import STATIC_DIR

# The routes that run models, which Admission bounds.
MODEL_ROUTES = ("/v1/generate", "/v1/refine", "/v1/diffuse", "/v1/upscale", "/post")


logger = logging.getLogger(__name__)

# Swagger UI's and ReDoc's dist files, from the fastapi-offline package (its folder
# holds the files only; its FastAPIOffline app is not used). Served from here instead
# of FastAPI's default CDN, so /docs works on a machine without internet.
DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
DOCS_ASSETS_PATH = "/docs/assets"
# The docs pages may load from this app only. ReDoc's "API docs by Redocly" footer asks a
# CDN for its logo whatever its options say; this stops that request in the browser (the
# logo hides itself when it fails). FastAPI's pages start Swagger UI and ReDoc with inline
# scripts, and both style themselves inline; ReDoc's search runs in a blob: worker.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)

# POST /v1/generate and /v1/refine answer a stream when the request asks for one.
STREAMED = {
    200: {
        "description": f"The answer; with `Accept: {NDJSON}`, a stream of events (StreamEvent), one JSON object a line: "
        "progress per step, each generator's images, then the result, or an error event.",
        "content": {NDJSON: {}},
    }
}


def _flow(request: Request) -> Flow:
    return request.app.state.flow


def _jobs(request: Request) -> JobManager:
    state = request.app.state
    if getattr(state, "jobs", None) is None:  # an app served in-process: its flow's own jobs
        state.jobs = JobManager(state.flow)
    return state.jobs


def _wants_stream(request: Request) -> bool:
    return NDJSON in request.headers.get("accept", "")


def _ndjson(events: AsyncIterator[StreamEvent]) -> StreamingResponse:
    """The events, one JSON line each. The status (200) is sent before the run, so a
    failure during it is the last line: an error event with the status it would have had."""

    async def lines() -> AsyncIterator[str]:
        async with aclosing(events):
            try:
                async for event in events:
                    yield event.model_dump_json() + "\n"
            except ServiceError as error:
                yield ErrorEvent(status_code=error.status_code, detail=error.message, code=error.code,
                                 stage=error.stage).model_dump_json() + "\n"
            except Exception as error:
                logger.exception("a streamed request failed")
                yield ErrorEvent(status_code=500, detail=f"internal error: {type(error).__name__}").model_dump_json() + "\n"

    # no-cache and X-Accel-Buffering: no, so proxies pass each line on as it comes.
    return StreamingResponse(lines(), media_type=NDJSON, headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


def _require_api_key(app: FastAPI, api_keys: ApiKeys) -> None:
    """401 with WWW-Authenticate for a missing or wrong key; checked before the body limit,
    so a caller without a key learns nothing else."""

    @app.middleware("http")
    async def require_api_key(request: Request, call_next):
        # The path inside the app, whatever route prefix Serve mounted it under.
        challenge = api_keys.challenge(request.method, app_path(request.scope), request.headers.get("authorization"))
        if challenge is not None:
            detail = "invalid API key" if challenge == INVALID_CHALLENGE else "missing API key (Authorization: Bearer <key>)"
            return JSONResponse(status_code=401, content={"detail": detail}, headers={"www-authenticate": challenge})
        return await call_next(request)

    def openapi() -> dict:
        # The docs' Authorize button: every API route takes a bearer key.
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)  # also kept as app.openapi_schema
            schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            schema["security"] = [{"bearer": []}]
        return app.openapi_schema

    app.openapi = openapi


class JSONRequest(Request):
    """A request whose JSON is read by safe_json.strict_loads: a number of any length refused by
    the field it was sent for (Python's parser fails past 4,300 digits with an error that names
    none), as NaN and 1e400 are (they come as floats, which validation names), and nesting too
    deep for the parser refused as bad JSON, not a 500."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = strict_loads(body, non_finite=True)
            except ValueError as error:
                raise json.JSONDecodeError(str(error), body.decode("utf-8", "replace"), 0) from None
        return self._json


class JSONRoute(APIRoute):
    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            return await handler(JSONRequest(request.scope, request.receive))

        return handle


def _add_limits(app: FastAPI, limits: HttpLimits, api_keys: ApiKeys | None) -> None:
    """The middleware of service/limits.py, outermost first: Host, headers, (the key), JSON-only
    POSTs, the body, admission. Starlette runs the last added outermost, so they go in backwards."""
    app.add_middleware(Admission, paths=MODEL_ROUTES, max_running=limits.max_running,
                       max_waiting=limits.max_waiting, retry_after_s=limits.retry_after_s)  # fmt: skip
    app.add_middleware(BodyLimits, max_bytes=MAX_BODY_BYTES, timeout_s=limits.body_timeout_s)
    app.add_middleware(JsonOnlyWrites)
    if api_keys is not None and api_keys.is_enabled:
        _require_api_key(app, api_keys)
    app.add_middleware(SecurityHeaders)
    if api_keys is None or not api_keys.is_enabled:  # a key is the protection where there is one
        app.add_middleware(HostCheck, allowed_hosts=limits.allowed_hosts)


def _serve_docs(app: FastAPI) -> None:
    """/docs (Swagger UI, with its Authorize button and OAuth2 redirect) and /redoc, as FastAPI
    serves them but with every asset from DOCS_ASSETS_DIR; auth.py keeps these paths open."""
    app.mount(DOCS_ASSETS_PATH, StaticFiles(directory=DOCS_ASSETS_DIR), name="docs-assets")

    def root(request: Request) -> str:
        # Under a route prefix (Serve's route_prefix) every URL the page loads needs it.
        return request.scope.get("root_path", "")

    def self_only(page: HTMLResponse) -> HTMLResponse:
        page.headers["content-security-policy"] = DOCS_CSP
        return page

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        prefix = root(request)
        return self_only(get_swagger_ui_html(
            openapi_url=prefix + app.openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=prefix + app.swagger_ui_oauth2_redirect_url,
            swagger_js_url=f"{prefix}{DOCS_ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{prefix}{DOCS_ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{prefix}/favicon.ico",
        ))

    @app.get(app.swagger_ui_oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        prefix = root(request)
        return self_only(get_redoc_html(
            openapi_url=prefix + app.openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{prefix}{DOCS_ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{prefix}/favicon.ico",
            with_google_fonts=False,  # ReDoc falls back to the system's fonts
        ))


def create_app(jina_compat_enabled: bool = True, api_keys: ApiKeys | None = None, limits: HttpLimits | None = None) -> FastAPI:
    """The API; with jina_compat_enabled, also dalle-flow's Jina protocol at POST /post (see jina_compat.py);
    with api_keys, its routes answer 401 without one of them (auth.py says which stay open); limits
    bound every connection (service/limits.py)."""
    app = FastAPI(
        title="dalleflow",
        version="0.1.0",
        description="Human-in-the-loop text-to-image: generate, rank, pick, refine, upscale.",
        docs_url=None,  # served by _serve_docs, from local files
        redoc_url=None,
    )
    app.router.route_class = JSONRoute
    _add_limits(app, limits or HttpLimits(), api_keys)

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, error: ServiceError) -> JSONResponse:
        if error.status_code == 422 and error.field:
            # Same shape as FastAPI's own validation errors, so clients parse one format.
            detail = [{"loc": ["body", error.field], "msg": error.message, "type": "value_error"}]
        else:
            detail = error.message
        content = {"detail": detail, "code": error.code} | ({"stage": error.stage} if error.stage else {})
        return SafeJSONResponse(status_code=error.status_code, content=content, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer, rendered so that an input such as NaN or a lone surrogate,
        # which it names, cannot turn the 422 into a 500.
        return SafeJSONResponse(status_code=422, content={"detail": jsonable_encoder(error.errors())})

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        """200 once every stage has a loaded replica; 503 while any is still loading."""
        stages = await _flow(request).readiness()
        is_ready = all(stages.values())
        return JSONResponse(status_code=200 if is_ready else 503,
                            content={"status": "ready" if is_ready else "loading", "stages": stages})

    @app.get("/v1/models")
    async def models(request: Request) -> ModelsResponse:
        """Each stage's model and weights; the words of models with a closed vocabulary, and what
        the embedded world is when such a model serves."""
        return await _flow(request).models_response()

    @app.post("/v1/generate", responses=STREAMED)
    async def generate(body: GenerateRequest, request: Request) -> GenerateResponse:
        if _wants_stream(request):
            return _ndjson(await _flow(request).generate_events(body))
        return await _flow(request).generate(body)

    @app.post("/v1/refine", responses=STREAMED)
    async def refine(body: RefineRequest, request: Request) -> GenerateResponse:
        """Ranked variations of an image (dalle-flow's "diffuse")."""
        if _wants_stream(request):
            return _ndjson(await _flow(request).refine_events(body))
        return await _flow(request).refine(body)

    # dalle-flow's name, for the clients that use it; left out of the schema, which has one name per call.
    app.post("/v1/diffuse", responses=STREAMED, include_in_schema=False)(refine)

    @app.post("/v1/jobs", status_code=202)
    async def submit_job(body: JobRequest, request: Request) -> Job:
        """Queues a generate or refine request; follow it with GET /v1/jobs/{id}."""
        return await _jobs(request).submit(body)

    @app.get("/v1/jobs/{job_id}")
    async def job(job_id: str, request: Request) -> Job:
        return await _jobs(request).get(job_id)

    @app.delete("/v1/jobs/{job_id}")
    async def cancel_job(job_id: str, request: Request) -> Job:
        """Cancels the job: a queued one never runs, a running one stops between two model steps."""
        return await _jobs(request).cancel(job_id)

    @app.post("/v1/upscale")
    async def upscale(body: UpscaleRequest, request: Request) -> UpscaleResponse:
        return await _flow(request).upscale(body)

    @app.get("/v1/images/{image_id}", response_class=Response, responses={200: {"content": {"image/png": {}}}})
    async def image(image_id: str, request: Request) -> Response:
        return Response(_flow(request).store.png_bytes(image_id), media_type="image/png")

    # The web page: index.html at "/" and its assets under /static, nothing wider, so
    # other root paths stay free (the Jina-compatible POST /post). Both are left out
    # of the OpenAPI schema, which describes the JSON API only.
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        # Browsers ask the root for it whatever the page says; the docs pages link it.
        return FileResponse(STATIC_DIR / "favicon.ico", media_type="image/x-icon")

    _serve_docs(app)

    if jina_compat_enabled:
        app.include_router(jina_compat.router)

    return app
