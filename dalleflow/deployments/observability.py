"""The project's own metrics and logs at the ingress, beside Ray Serve's.

Ray exports them with its own (Prometheus, on each node's metrics export port),
each tagged by Serve with its application, deployment and replica:

    dalleflow_stage_seconds{stage, generator, outcome}   how long the ingress waited for a stage call
    dalleflow_rejections{route, status_code}             answers 401, 404, 408, 413, 422, 429 by route
    dalleflow_ingress_in_flight                          requests inside this ingress replica now

Serve's own cover the rest: ray_serve_deployment_queued_queries (waiting for a
replica), ray_serve_num_http_error_requests (the proxy's 429s and 408s, which
never reach the app); the generators count dalleflow_images_generated and their
batches (deployments/stages.py).

Logs: the package's loggers write through Serve's handlers, so each line of a
request carries Serve's request_id (also the X-Request-Id response header).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi import FastAPI, Request
from ray.serve import metrics
from starlette.routing import Match

from dalleflow.service.stages import HandleStage

# The answers that turn a request away rather than fail it.
REJECTED = frozenset({401, 404, 408, 413, 422, 429})
STAGE_SECONDS_BOUNDARIES = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]

logger = logging.getLogger("dalleflow.ingress")


class IngressMetrics:
    def __init__(self) -> None:
        self.stage_seconds = metrics.Histogram(
            "dalleflow_stage_seconds", description="Seconds the ingress waited for one stage call (or stream).",
            boundaries=STAGE_SECONDS_BOUNDARIES, tag_keys=("stage", "generator", "outcome"))
        self.rejections = metrics.Counter(
            "dalleflow_rejections", description="Requests turned away, by route and status code.",
            tag_keys=("route", "status_code"))
        self.in_flight = metrics.Gauge(
            "dalleflow_ingress_in_flight", description="Requests inside this ingress replica now.")
        self._in_flight_count = 0

    def enter(self) -> None:
        self._in_flight_count += 1
        self.in_flight.set(self._in_flight_count)

    def leave(self) -> None:
        self._in_flight_count -= 1
        self.in_flight.set(self._in_flight_count)


class TimedStage:
    """A HandleStage whose calls and streams are timed into dalleflow_stage_seconds."""

    def __init__(self, inner: HandleStage, seconds: metrics.Histogram, stage: str, generator: str = ""):
        self.inner = inner
        self.seconds = seconds
        self.tags = {"stage": stage, "generator": generator}

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        started, outcome = time.perf_counter(), "failed"
        try:
            answer = await self.inner.call(method, *args, **kwargs)
            outcome = "ok"
            return answer
        finally:
            self._observe(started, outcome)

    async def stream(self, method: str, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        started, outcome = time.perf_counter(), "failed"
        try:
            # aclosing: a reader leaving early closes the handle's stream now (cancelling the model).
            async with aclosing(self.inner.stream(method, *args, **kwargs)) as events:
                async for event in events:
                    yield event
            outcome = "ok"
        finally:  # also a stream cancelled or left early: counted as failed
            self._observe(started, outcome)

    async def ready(self) -> bool:
        return await self.inner.ready()

    def _observe(self, started: float, outcome: str) -> None:
        self.seconds.observe(time.perf_counter() - started, tags={**self.tags, "outcome": outcome})


def observe_requests(app: FastAPI, ingress_metrics: IngressMetrics) -> None:
    """Counts the app's requests in flight and its rejections; logs each rejection.
    Added last, so it is the outermost middleware and sees the API-key and size checks' answers."""

    @app.middleware("http")
    async def observe(request: Request, call_next):
        ingress_metrics.enter()
        try:
            response = await call_next(request)
        finally:
            ingress_metrics.leave()
        if response.status_code in REJECTED:
            route = route_of(app, request)
            ingress_metrics.rejections.inc(tags={"route": route, "status_code": str(response.status_code)})
            logger.info("rejected %s %s: %d", request.method, route, response.status_code)
        return response


def route_of(app: FastAPI, request: Request) -> str:
    """The route's template (/v1/jobs/{job_id}), never the raw path: a metric tag takes few values."""
    for route in app.router.routes:
        match, _ = route.matches(request.scope)
        if match == Match.FULL:
            return getattr(route, "path", "other")
    return "unmatched"


def log_through_serve(name: str = "dalleflow") -> None:
    """Gives the `name` logger Serve's handlers (JSON or text, as the app's
    logging_config says), whose filters add the request_id of the request being served."""
    serve_logger = logging.getLogger("ray.serve")
    package_logger = logging.getLogger(name)
    for handler in serve_logger.handlers:
        if handler not in package_logger.handlers:
            package_logger.addHandler(handler)
    package_logger.setLevel(serve_logger.level or logging.INFO)
    package_logger.propagate = False
