"""The ingress: the FastAPI app of service/http.py, served by Ray Serve, over stage handles.

The app is built in the replica after the constructor (Ray's late-bound
`__serve_build_asgi_app__`), so it carries this replica's Flow on app.state;
an app object created at import time would be pickled and copied by Serve.
"""

from __future__ import annotations

import functools

from fastapi import FastAPI
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from dalleflow.deployments.jobs import RemoteJobs
from dalleflow.deployments.observability import IngressMetrics, TimedStage, log_through_serve, observe_requests
from dalleflow.service.auth import ApiKeys
from dalleflow.service.flow import Flow
from dalleflow.service.http import create_app
from dalleflow.service.jina_compat import respond
from dalleflow.service.jina_grpc import JinaGrpcServer
from dalleflow.service.jobs import JobManager
from dalleflow.service.limits import HttpLimits
from dalleflow.service.stages import HandleStage
from dalleflow.service.store import ImageStore


# A replica killed mid-call (ActorDiedError) or unreachable (ActorUnavailableError):
# the stage call runs once more, on another replica (service/stages.py).
REPLICA_LOST = (RayActorError,)


# Slots are cheap here (no model; a request waits on others): the overload limit is the app's
# own admission, counted from complete bodies (service/limits.py), so slow uploads starve nobody.
@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256)
@serve.ingress()
class Ingress:
    def __init__(
        self,
        generators: dict[str, DeploymentHandle],
        ranker: DeploymentHandle,
        refiner: DeploymentHandle,
        upscaler: DeploymentHandle,
        models: list[dict],
        store_path: str | None = None,
        generator_timeout_s: float = 120.0,
        jina_compat: bool = True,
        jina_grpc: str | None = None,
        jobs_at_once: int = 1,
        max_queued_jobs: int = 100,
        api_keys_env: str = "DALLEFLOW_API_KEYS",
        api_key_required: bool = False,
        jobs: DeploymentHandle | None = None,
        http_limits: dict | None = None,
    ):
        log_through_serve()
        self.jina_compat = jina_compat
        # Read here, in the replica: the keys are in its environment (a Kubernetes Secret), never in the config.
        self.api_keys = ApiKeys.from_env(api_keys_env, required=api_key_required)
        self.metrics = IngressMetrics()
        self.http_limits = HttpLimits.model_validate(http_limits or {})

        def stage(handle: DeploymentHandle, name: str, generator: str = "") -> TimedStage:
            return TimedStage(HandleStage(handle, REPLICA_LOST), self.metrics.stage_seconds, name, generator)

        self.flow = Flow(
            generators={name: stage(handle, "generator", name) for name, handle in generators.items()},
            ranker=stage(ranker, "ranker"),
            refiner=stage(refiner, "refiner"),
            upscaler=stage(upscaler, "upscaler"),
            store=ImageStore(store_path),
            models=models,
            generator_timeout_s=generator_timeout_s,
        )
        # The one queue, in its own deployment (deployments/jobs.py); in-process without one.
        self.jobs = RemoteJobs(jobs) if jobs is not None else JobManager(self.flow, concurrency=jobs_at_once,
                                                                          max_queued=max_queued_jobs)  # fmt: skip
        # Started with the app, on the replica's event loop (see service/jina_grpc).
        self.jina_grpc = JinaGrpcServer(functools.partial(respond, self.flow), jina_grpc, self.api_keys) if jina_grpc else None

    def __serve_build_asgi_app__(self) -> FastAPI:
        app = create_app(jina_compat_enabled=self.jina_compat, api_keys=self.api_keys, limits=self.http_limits)
        observe_requests(app, self.metrics)
        app.state.flow = self.flow
        app.state.jobs = self.jobs
        if self.jina_grpc is not None:
            app.router.on_startup.append(self.jina_grpc.start)
            app.router.on_shutdown.append(self.jina_grpc.stop)
        return app

    # The same calls as the HTTP routes, for Ray Python handles:
    #   handle = serve.get_app_handle("dalleflow")
    #   answer = await handle.generate.remote(GenerateRequest(prompt="..."))
    async def generate(self, request):
        return await self.flow.generate(request)

    async def refine(self, request):
        return await self.flow.refine(request)

    diffuse = refine  # the old name

    async def upscale(self, request):
        return await self.flow.upscale(request)

    # Streaming through a handle: handle.options(stream=True).generate_stream.remote(request)
    # gives the same events as the HTTP stream, as objects.
    async def generate_stream(self, request):
        async for event in await self.flow.generate_events(request):
            yield event

    async def refine_stream(self, request):
        async for event in await self.flow.refine_events(request):
            yield event

    diffuse_stream = refine_stream  # the old name

    async def submit_job(self, request):
        return await self.jobs.submit(request)

    async def job(self, job_id: str):
        return await self.jobs.get(job_id)

    async def cancel_job(self, job_id: str):
        return await self.jobs.cancel(job_id)
