"""Jobs: a generate or refine request run in the background and followed by its id.

    POST /v1/jobs {"kind": "generate", "request": {...}}   -> the job, queued
    GET /v1/jobs/{id}                                       -> status, queue position, progress, result
    DELETE /v1/jobs/{id}                                    -> cancels that job only

Where jobs run, and what survives what: one JobManager owns the queue. Served, it lives in
the `jobs` deployment (deployments/jobs.py), one replica that every ingress replica reaches
through its handle, so queue positions are true whichever replica answers, a cancel reaches
the job wherever it was submitted, and an ingress replica that dies or is scaled down takes no
job with it. In-process (tests, benches) it runs beside the flow.

A job is accepted only once it is durable: its request, with its seed drawn, and its record
are files in the result store before the 202. At most `concurrency` run at once; the others
wait in arrival order. The record is rewritten when the job starts, makes progress (at most
every PROGRESS_WRITE_S), and ends, and every HEARTBEAT_S while it is live. When the queue's
replica dies (Serve starts another), the new one runs every unfinished job again from its
stored request: the same seed, so the same images; a job whose runs were cut MAX_RUNS times
ends `failed` with that reason. A record left unfinished and silent for STALE_AFTER_S with
no queue to run it (an in-process manager that stopped) is answered as failed, never as
running forever.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing

from dalleflow_client.schemas import (
    FINISHED_JOB_STATUSES,
    GenerateJobRequest,
    Job,
    JobRequest,
    ProgressEvent,
    RefineJobRequest,
    ResultEvent,
    StepProgress,
    StreamEvent,
)

from pydantic import TypeAdapter

from dalleflow.service.errors import ServiceError
from dalleflow.service.flow import Flow

logger = logging.getLogger(__name__)

PROGRESS_WRITE_S = 0.5
MAX_RUNS = 3  # starts of one job, counting those cut by the queue's death
HEARTBEAT_S = 5.0
STALE_AFTER_S = 30.0
# How often a replica looks for cancel notes left by DELETEs that reached another replica.
CANCEL_NOTE_POLL_S = 1.0


class JobConflict(ServiceError):
    status_code = 409


class TooManyJobs(ServiceError):
    status_code = 429
    headers = {"Retry-After": "10"}


class JobManager:
    def __init__(self, flow: Flow, concurrency: int = 1, max_queued: int = 100):
        self.flow = flow
        self.store = flow.store
        self.max_queued = max_queued
        self._slots = asyncio.Semaphore(concurrency)
        self._live: dict[str, Job] = {}  # queued or running on this replica, in arrival order
        self._tasks: dict[str, asyncio.Task] = {}
        self._written_at: dict[str, float] = {}
        self._ending: set[str] = set()  # live jobs whose final record is being written
        # Records are written in the order of the changes they hold: a heartbeat's
        # write never lands after the final one (see _heartbeat).
        self._write_lock = asyncio.Lock()
        self._watcher: asyncio.Task | None = None

    async def submit(self, job_request: GenerateJobRequest | RefineJobRequest) -> Job:
        """Checks the request now (the same 4xx as the direct call), then queues it."""
        queued_count = sum(job.status == "queued" for job in self._live.values())
        if queued_count >= self.max_queued:
            raise TooManyJobs(f"{queued_count} jobs are queued, the limit is {self.max_queued}; try again later")
        # Its seed drawn now and stored, so a run again after a crash makes the same images.
        if job_request.request.seed is None:
            job_request = job_request.model_copy(
                update={"request": job_request.request.model_copy(update={"seed": secrets.randbelow(2**31)})})
        events = await self._events(job_request)
        now = time.time()
        job = Job(id=uuid.uuid4().hex, kind=job_request.kind, status="queued", created_at=now, updated_at=now)
        stored = {"job": job_request.model_dump(mode="json"), "runs": 0}
        await asyncio.to_thread(self.store.save_job_request, job.id, json.dumps(stored))
        self._live[job.id] = job  # before the write: a GET meanwhile answers the live job
        await self._write(job)
        self._queue(job, events)
        return self._answer(job)

    async def _events(self, job_request: GenerateJobRequest | RefineJobRequest) -> AsyncIterator[StreamEvent]:
        """The request checked now (the same 4xx as the direct call); its run, as events."""
        if isinstance(job_request, GenerateJobRequest):
            return await self.flow.generate_events(job_request.request)
        return await self.flow.refine_events(job_request.request)

    def _queue(self, job: Job, events: AsyncIterator[StreamEvent]) -> None:
        self._live[job.id] = job
        self._tasks[job.id] = _detached_task(self._run(job, events))
        if self._watcher is None or self._watcher.done():
            self._watcher = _detached_task(self._watch())

    async def recover(self) -> list[str]:
        """Queues again, in their first order, the jobs a queue that died left unfinished (see
        the module docstring); returns their ids."""
        records = []
        for job_id in await asyncio.to_thread(self.store.job_ids):
            job = Job.model_validate_json(await asyncio.to_thread(self.store.job_record, job_id))
            if job.status not in FINISHED_JOB_STATUSES and job_id not in self._live:
                records.append(job)
        recovered = []
        for job in sorted(records, key=lambda job: job.created_at):
            try:
                stored = json.loads(await asyncio.to_thread(self.store.job_request, job.id))
                stored["runs"] += job.status == "running"
                if stored["runs"] >= MAX_RUNS:
                    raise RuntimeError(f"the service stopped while it ran, {stored['runs']} times")
                await asyncio.to_thread(self.store.save_job_request, job.id, json.dumps(stored))
                events = await self._events(TypeAdapter(JobRequest).validate_python(stored["job"]))
            except Exception as error:  # not runnable again: ended with the reason, never left waiting
                await self._write(job.model_copy(update={"status": "failed", "finished_at": time.time(),
                                                         "error": f"lost: {error}; submit it again"}))  # fmt: skip
                continue
            job = job.model_copy(update={"status": "queued", "started_at": None, "progress": {}})
            self._live[job.id] = job
            await self._write(job)
            self._queue(job, events)
            recovered.append(job.id)
        return recovered

    async def get(self, job_id: str) -> Job:
        if job_id in self._live:
            return self._answer(self._live[job_id])
        job = Job.model_validate_json(await asyncio.to_thread(self.store.job_record, job_id))
        if job.status not in FINISHED_JOB_STATUSES and time.time() - job.updated_at > STALE_AFTER_S:
            # No replica has written it for a long while: the one that ran it is gone.
            job.error = f"lost: the service stopped while the job was {job.status}; submit it again"
            job.status, job.queue_position, job.finished_at = "failed", None, time.time()
            await self._write(job)
        return job

    async def cancel(self, job_id: str) -> Job:
        """Cancels the job (a running one stops between two model steps); a finished job is a 409."""
        task = self._tasks.get(job_id)
        if task is not None:
            if job_id not in self._ending:  # else its end is being written: that end stands
                task.cancel()
            await asyncio.wait({task})
            if job_id in self._live:  # cancelled before its task first ran: _run never saw it
                await self._finish(self._live[job_id], "cancelled")
            return await self.get(job_id)
        job = await self.get(job_id)
        if job.status == "cancelled":
            return job
        if job.status in FINISHED_JOB_STATUSES:
            raise JobConflict(f"job {job_id} is already {job.status}", field="job_id")
        await asyncio.to_thread(self.store.request_job_cancel, job_id)  # another replica runs it
        return job

    def _answer(self, job: Job) -> Job:
        answer = job.model_copy(deep=True)
        if job.status == "queued":
            queued = [other for other in self._live.values() if other.status == "queued"]
            answer.queue_position = queued.index(job)
        return answer

    async def _run(self, job: Job, events: AsyncIterator[StreamEvent]) -> None:
        try:
            async with aclosing(events), self._slots:
                job.status, job.started_at = "running", time.time()
                await self._write(job)
                async for event in events:
                    if isinstance(event, ProgressEvent):
                        job.progress[event.generator] = StepProgress(step=event.step, step_count=event.step_count)
                        if time.monotonic() - self._written_at.get(job.id, 0.0) > PROGRESS_WRITE_S:
                            await self._write(job)
                    elif isinstance(event, ResultEvent):
                        job.result = event.result
        except asyncio.CancelledError:
            await self._finish(job, "cancelled")  # this task is the job's own: its cancel ends here
        except ServiceError as error:
            await self._finish(job, "failed", error.message)
        except Exception as error:
            logger.error("job %s failed", job.id, exc_info=error)
            await self._finish(job, "failed", "the job failed (the server log has why)")
        else:
            await self._finish(job, "done")

    async def _finish(self, job: Job, status: str, error: str | None = None) -> None:
        # Written before anyone is told: until the record is on disk, GET still answers the
        # live state, so no client sees an end a restart could lose.
        final = job.model_copy(update={"status": status, "error": error, "finished_at": time.time()})
        self._ending.add(job.id)  # from now on no heartbeat writes the live (unfinished) state
        try:
            await asyncio.shield(self._write(final))
        finally:
            del self._live[job.id], self._tasks[job.id]
            self._written_at.pop(job.id, None)
            self._ending.discard(job.id)

    async def _write(self, job: Job) -> None:
        async with self._write_lock:
            await self._save(job)

    async def _heartbeat(self, job: Job) -> None:
        """Rewrites a live job's record as it stands, unless the job has ended meanwhile.

        The watcher decides to write between awaits: by the time it holds the lock the
        job may have ended (or be ending), and its live object still says queued or
        running. Written then, that would replace the final record, and with no one
        left to rewrite it, GET would answer "lost" once it went stale.
        """
        async with self._write_lock:
            if self._is_live(job):
                await self._save(job)

    def _is_live(self, job: Job) -> bool:
        """Whether this live object is still the job's state here, with its end not begun."""
        return self._live.get(job.id) is job and job.id not in self._ending

    async def _save(self, job: Job) -> None:
        job.updated_at = time.time()
        self._written_at[job.id] = time.monotonic()
        await asyncio.to_thread(self.store.save_job, job.id, job.model_dump_json(exclude={"queue_position"}))

    async def _watch(self) -> None:
        """While jobs are live here: keep their records fresh, and honour cancel notes."""
        while self._live:
            await asyncio.sleep(CANCEL_NOTE_POLL_S)
            for job_id, job in list(self._live.items()):
                # Each await below lets jobs end: one that has is not looked at again.
                if not self._is_live(job):
                    continue
                if await asyncio.to_thread(self.store.is_job_cancel_requested, job_id):
                    if self._is_live(job):  # else it ended while we looked: nothing left to cancel
                        await self.cancel(job_id)
                elif time.monotonic() - self._written_at.get(job_id, 0.0) > HEARTBEAT_S:
                    await self._heartbeat(job)


def _detached_task(coroutine) -> asyncio.Task:
    """A task that outlives the request that started it.

    A task inherits its creator's context variables, and Ray Serve keeps the
    request it is serving in one: every handle call made under it becomes that
    request's child, which Serve cancels when it believes the request cancelled.
    A client that closes its connection right after reading the 202 can make it
    believe so; the job's stage calls must not go with it, so the job runs in
    a context of its own.
    """
    return asyncio.create_task(coroutine, context=contextvars.Context())
