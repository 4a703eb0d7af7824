"""The HTTP API: FastAPI routes over a Flow found on app.state.flow, and the web page's files.

The routes know nothing of Ray; deployments/ingress.py serves this same app
through Ray Serve, and tests or benchmarks can serve it in-process.
"""

from __future__ import annotations

from dalleflow_client.schemas import (
    MAX_IMAGE_BASE64_CHARS,
    DiffuseRequest,
    GenerateRequest,
    GenerateResponse,
    ModelsResponse,
    UpscaleRequest,
    UpscaleResponse,
)
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from dalleflow.service import jina_compat
from dalleflow.service.errors import ServiceError
from dalleflow.service.flow import Flow
from dalleflow.web import STATIC_DIR

# The largest body a route accepts: one base64 image and a few small fields.
MAX_BODY_BYTES = MAX_IMAGE_BASE64_CHARS + 64_000


def _flow(request: Request) -> Flow:
    return request.app.state.flow


def create_app(jina_compat_enabled: bool = True) -> FastAPI:
    """The API; with jina_compat_enabled, also dalle-flow's Jina protocol at POST /post (see jina_compat.py)."""
    app = FastAPI(
        title="dalleflow",
        version="0.1.0",
        description="Human-in-the-loop text-to-image: generate, rank, pick, refine, upscale.",
    )

    @app.middleware("http")
    async def limit_body_size(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse(
                status_code=413, content={"detail": f"request body over the limit of {MAX_BODY_BYTES} bytes"}
            )
        return await call_next(request)

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, error: ServiceError) -> JSONResponse:
        if error.status_code == 422 and error.field:
            # Same shape as FastAPI's own validation errors, so clients parse one format.
            detail = [{"loc": ["body", error.field], "msg": error.message, "type": "value_error"}]
        else:
            detail = error.message
        return JSONResponse(status_code=error.status_code, content={"detail": detail})

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
        return ModelsResponse(models=_flow(request).models)

    @app.post("/v1/generate")
    async def generate(body: GenerateRequest, request: Request) -> GenerateResponse:
        return await _flow(request).generate(body)

    @app.post("/v1/diffuse")
    async def diffuse(body: DiffuseRequest, request: Request) -> GenerateResponse:
        return await _flow(request).diffuse(body)

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

    if jina_compat_enabled:
        app.include_router(jina_compat.router)

    return app
