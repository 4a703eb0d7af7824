"""The job queue as a deployment of its own: one replica that owns every job (service/jobs.py).

Every ingress replica reaches it through its handle (RemoteJobs), so a job outlives the
ingress replica that accepted it, and Serve's downscaling of the ingress cannot end a job
(a job is not one of its ongoing requests). The queue's own state is in the result store:
a replica that replaces a dead one runs the unfinished jobs again, from their stored
requests and seeds, as soon as it starts.
"""

from __future__ import annotations

import asyncio
import logging

from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from dalleflow.deployments.observability import log_through_serve
from dalleflow.service.errors import ServiceError
from dalleflow.service.flow import Flow
from dalleflow.service.jobs import JobManager
from dalleflow.service.retention import PRUNE_EVERY_S, Retention, prune
from dalleflow.service.stages import HandleStage
from dalleflow.service.store import ImageStore

logger = logging.getLogger(__name__)
REPLICA_LOST = (RayActorError,)


# One replica: the one queue. Jobs' calls are light (each job's work is in the model
# stages), so many may be in flight at once; Serve restarts it if it dies.
@serve.deployment(ray_actor_options={"num_cpus": 0.1}, num_replicas=1, max_ongoing_requests=1000)
class JobQueue:
    def __init__(
        self,
        generators: dict[str, DeploymentHandle],
        ranker: DeploymentHandle,
        refiner: DeploymentHandle,
        upscaler: DeploymentHandle,
        store_path: str | None = None,
        generator_timeout_s: float = 120.0,
        jobs_at_once: int = 1,
        max_queued_jobs: int = 100,
        retention: dict | None = None,
    ):
        log_through_serve()
        flow = Flow(
            generators={name: HandleStage(handle, REPLICA_LOST) for name, handle in generators.items()},
            ranker=HandleStage(ranker, REPLICA_LOST), refiner=HandleStage(refiner, REPLICA_LOST),
            upscaler=HandleStage(upscaler, REPLICA_LOST), store=ImageStore(store_path),
            generator_timeout_s=generator_timeout_s,
        )  # fmt: skip
        self.jobs = JobManager(flow, concurrency=jobs_at_once, max_queued=max_queued_jobs)
        self.retention = Retention.model_validate(retention or {})
        self._recovery: asyncio.Future | None = None
        try:  # Serve builds replicas on their event loop: start at once, not at the first call
            self._recovered()
        except RuntimeError:
            pass  # no loop here: the first call or health check starts it

    def _recovered(self) -> asyncio.Future:
        if self._recovery is None:
            self._recovery = asyncio.ensure_future(self._recover())
        return self._recovery

    async def _recover(self) -> None:
        recovered = await self.jobs.recover()
        if recovered:
            logger.warning("running again %d jobs a previous queue replica left unfinished", len(recovered))
        self._pruning = asyncio.ensure_future(self._prune_every_hour())

    async def _prune_every_hour(self) -> None:
        """The one queue prunes the store (service/retention.py), so replicas never race at it."""
        while True:
            try:
                pruned = await asyncio.to_thread(prune, self.jobs.store.root, self.retention)
                if pruned.files:
                    logger.info("retention: removed %d files (%d bytes) from the store", pruned.files, pruned.bytes)
            except Exception:  # a full or read-only disk must not stop the queue
                logger.exception("retention: pruning the store failed")
            await asyncio.sleep(PRUNE_EVERY_S)

    async def check_health(self) -> None:
        await asyncio.shield(self._recovered())

    async def submit(self, request):
        await asyncio.shield(self._recovered())  # after the jobs before it, whose places are theirs
        return await self.jobs.submit(request)

    async def get(self, job_id: str):
        await asyncio.shield(self._recovered())
        return await self.jobs.get(job_id)

    async def cancel(self, job_id: str):
        await asyncio.shield(self._recovered())
        return await self.jobs.cancel(job_id)


class RemoteJobs:
    """The JobManager interface over the queue's handle, for the ingress's routes."""

    def __init__(self, handle: DeploymentHandle):
        self.handle = handle

    async def submit(self, request):
        return await self._call("submit", request)

    async def get(self, job_id: str):
        return await self._call("get", job_id)

    async def cancel(self, job_id: str):
        return await self._call("cancel", job_id)

    async def _call(self, method: str, *args):
        try:
            return await getattr(self.handle, method).remote(*args)
        except Exception as error:
            # A ServiceError raised in the queue (409, 429, a 422 of the request) arrives
            # wrapped by Ray: answer it as itself.
            cause = getattr(error, "cause", None)
            if isinstance(cause, ServiceError):
                raise cause from None
            raise
