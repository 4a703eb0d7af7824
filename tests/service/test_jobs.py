"""Jobs in-process with the tiny models: queue, progress, cancel, and records that outlive the ingress."""

import asyncio
import json
import threading
import time

import pytest
from dalleflow_client.schemas import GenerateJobRequest, GenerateRequest

from dalleflow.models.ranker import ClipRanker
from dalleflow.service import jobs
from dalleflow.service.errors import InvalidInput, NotFound
from dalleflow.service.flow import Flow
from dalleflow.service.jobs import STALE_AFTER_S, JobConflict, JobManager
from dalleflow.service.stages import LocalStage
from dalleflow.service.store import ImageStore

PROMPT = "a red circle on the left on a white background"


@pytest.fixture(scope="module")
def ranker(tiny_clip_folder):
    return LocalStage(ClipRanker.from_pretrained(f"local-dir:{tiny_clip_folder[1]}"))


def new_manager(tiny_diffusion, ranker, store_path, concurrency=1) -> JobManager:
    """What an ingress builds at start: a Flow and its JobManager over the store folder."""
    stage = LocalStage(tiny_diffusion)
    flow = Flow(generators={"tiny": stage}, ranker=ranker, refiner=stage, upscaler=stage, store=ImageStore(store_path))
    return JobManager(flow, concurrency=concurrency)


def generate_job(steps: int = 2, **fields) -> GenerateJobRequest:
    return GenerateJobRequest(request=GenerateRequest(prompt=PROMPT, num_images=2, num_inference_steps=steps, seed=7, **fields))


async def wait_for(manager: JobManager, job_id: str, condition, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while not condition(job := await manager.get(job_id)):
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.05)
    return job


async def test_a_finished_job_survives_a_restart_of_the_ingress(tiny_diffusion, ranker, tmp_path):
    first = new_manager(tiny_diffusion, ranker, tmp_path)
    job = await first.submit(generate_job())
    assert job.status == "queued" and job.queue_position == 0
    done = await wait_for(first, job.id, lambda j: j.status == "done")
    assert done.progress["tiny"].step == done.progress["tiny"].step_count == 2
    assert [c.seed for c in sorted(done.result.candidates, key=lambda c: c.seed)] == [7, 8]
    assert done.started_at >= done.created_at and done.finished_at >= done.started_at

    restarted = new_manager(tiny_diffusion, ranker, tmp_path)  # a fresh Flow over the same store
    again = await restarted.get(job.id)
    assert again == done
    # The result's images are in the store too.
    assert restarted.store.metadata(again.result.candidates[0].id)["prompt"] == PROMPT


async def test_cancelling_a_queued_job_cancels_that_job_only(tiny_diffusion, ranker, tmp_path):
    manager = new_manager(tiny_diffusion, ranker, tmp_path, concurrency=1)
    running = await manager.submit(generate_job(steps=30))
    await wait_for(manager, running.id, lambda j: j.status == "running")
    waiting = await manager.submit(generate_job())
    last = await manager.submit(generate_job())
    assert (waiting.queue_position, last.queue_position) == (0, 1)
    cancelled = await manager.cancel(waiting.id)
    assert cancelled.status == "cancelled" and cancelled.started_at is None and cancelled.result is None
    assert (await manager.get(last.id)).queue_position == 0
    finished = await wait_for(manager, running.id, lambda j: j.status != "running")
    assert finished.status == "done", finished.error
    finished = await wait_for(manager, last.id, lambda j: j.status not in ("queued", "running"))
    assert finished.status == "done", finished.error
    with pytest.raises(JobConflict, match="already done"):
        await manager.cancel(running.id)
    assert (await manager.cancel(waiting.id)).status == "cancelled"  # cancelling twice is no error


async def test_cancelling_a_running_job_stops_it_between_steps(tiny_diffusion, ranker, tmp_path):
    manager = new_manager(tiny_diffusion, ranker, tmp_path)
    job = await manager.submit(generate_job(steps=100))
    await wait_for(manager, job.id, lambda j: "tiny" in j.progress)
    cancelled = await manager.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.result is None
    assert cancelled.progress["tiny"].step < 100
    on_disk = json.loads(manager.store.job_record(job.id))
    assert on_disk["status"] == "cancelled"


class HeldNoteCheck:
    """The watcher's look for a cancel note, its first one held until the test lets it go:
    on a loaded machine the thread hop can last while a job ends."""

    def __init__(self, check):
        self.check = check
        self.entered, self.released = threading.Event(), threading.Event()
        self.calls = 0

    def __call__(self, job_id: str) -> bool:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            self.released.wait(30)
        return self.check(job_id)


async def test_a_job_that_ends_while_the_watcher_looks_at_it_stays_ended(tiny_diffusion, ranker, tmp_path, monkeypatch):
    monkeypatch.setattr(jobs, "CANCEL_NOTE_POLL_S", 0.01)
    manager = new_manager(tiny_diffusion, ranker, tmp_path)
    manager.store.is_job_cancel_requested = held = HeldNoteCheck(manager.store.is_job_cancel_requested)
    try:
        job = await manager.submit(generate_job())
        assert await asyncio.to_thread(held.entered.wait, 30)  # the watcher looks at the job...
        done = await wait_for(manager, job.id, lambda j: j.status not in ("queued", "running"))  # ...which ends
        assert done.status == "done", done.error
    finally:
        held.released.set()
    await asyncio.wait_for(manager._watcher, 30)  # it ends once no job is live here
    # Its heartbeat, decided before the end, did not write the running state over the final
    # record (which, left so, a GET answers "lost" once it is STALE_AFTER_S old).
    assert json.loads(manager.store.job_record(job.id))["status"] == "done"
    assert await manager.get(job.id) == done


async def test_a_cancel_note_for_a_job_that_just_ended_is_no_error(tiny_diffusion, ranker, tmp_path, monkeypatch):
    monkeypatch.setattr(jobs, "CANCEL_NOTE_POLL_S", 0.01)
    manager = new_manager(tiny_diffusion, ranker, tmp_path, concurrency=1)
    manager.store.is_job_cancel_requested = held = HeldNoteCheck(manager.store.is_job_cancel_requested)
    try:
        first = await manager.submit(generate_job())
        assert await asyncio.to_thread(held.entered.wait, 30)  # the watcher looks at the first job...
        second = await manager.submit(generate_job(steps=100))
        assert (await wait_for(manager, first.id, lambda j: j.status not in ("queued", "running"))).status == "done"
        manager.store.request_job_cancel(first.id)  # ...a DELETE, too late, on another replica
    finally:
        held.released.set()
    # The watcher is still at work: it honours the next note.
    await wait_for(manager, second.id, lambda j: j.status == "running")
    manager.store.request_job_cancel(second.id)
    assert (await wait_for(manager, second.id, lambda j: j.status != "running", timeout_s=30)).status == "cancelled"
    assert (await manager.get(first.id)).status == "done"


async def test_a_bad_request_is_refused_at_submission(tiny_diffusion, ranker, tmp_path):
    manager = new_manager(tiny_diffusion, ranker, tmp_path)
    with pytest.raises(InvalidInput, match="generators"):
        await manager.submit(generate_job(generators=["nope"]))
    with pytest.raises(NotFound):
        await manager.get("0123456789abcdef" * 2)
    with pytest.raises(NotFound):
        await manager.get("../../etc/passwd")


async def test_a_job_left_unfinished_by_a_stopped_replica_is_reported_lost(tiny_diffusion, ranker, tmp_path):
    first = new_manager(tiny_diffusion, ranker, tmp_path)
    job = await first.submit(generate_job(steps=100))
    await wait_for(first, job.id, lambda j: j.status == "running")
    # As the replica left it when it stopped: running, last written long ago.
    record = json.loads(first.store.job_record(job.id))
    record["updated_at"] -= STALE_AFTER_S + 1
    await first.cancel(job.id)
    first.store.save_job(job.id, json.dumps(record))

    lost = await new_manager(tiny_diffusion, ranker, tmp_path).get(job.id)
    assert lost.status == "failed" and "lost" in lost.error and "running" in lost.error


async def test_a_full_queue_answers_429_with_retry_after(tiny_diffusion, ranker, tmp_path):
    from dalleflow.service.jobs import TooManyJobs

    stage = LocalStage(tiny_diffusion)
    flow = Flow(generators={"tiny": stage}, ranker=ranker, refiner=stage, upscaler=stage, store=ImageStore(tmp_path))
    manager = JobManager(flow, concurrency=1, max_queued=1)
    running = await manager.submit(generate_job(steps=100))
    await wait_for(manager, running.id, lambda j: j.status == "running")
    waiting = await manager.submit(generate_job())
    with pytest.raises(TooManyJobs, match="limit is 1") as refused:
        await manager.submit(generate_job())
    assert refused.value.status_code == 429 and refused.value.headers["Retry-After"]
    for job in (waiting, running):
        assert (await manager.cancel(job.id)).status == "cancelled"


async def test_a_job_a_dead_queue_left_running_runs_again_with_its_seed(tiny_diffusion, ranker, tmp_path):
    first = new_manager(tiny_diffusion, ranker, tmp_path)
    job = await first.submit(generate_job(steps=3))  # no seed given: the queue draws and stores one
    await wait_for(first, job.id, lambda j: j.status == "running")
    running_record = first.store.job_record(job.id)  # what the disk held when the queue died
    done = await wait_for(first, job.id, lambda j: j.status == "done")
    first.store.save_job(job.id, running_record)

    restarted = new_manager(tiny_diffusion, ranker, tmp_path)
    assert await restarted.recover() == [job.id]
    again = await wait_for(restarted, job.id, lambda j: j.status == "done")
    assert again.result.seed == done.result.seed
    assert [restarted.store.png_bytes(c.id) != b"" for c in again.result.candidates] == [True, True]
    assert [c.seed for c in again.result.candidates] == [c.seed for c in done.result.candidates]
    assert json.loads(restarted.store.job_request(job.id))["runs"] == 1
    assert await new_manager(tiny_diffusion, ranker, tmp_path).recover() == []  # done: nothing to run again


async def test_a_job_cut_short_max_runs_times_ends_failed_with_the_reason(tiny_diffusion, ranker, tmp_path):
    first = new_manager(tiny_diffusion, ranker, tmp_path)
    job = await first.submit(generate_job(steps=3))
    await wait_for(first, job.id, lambda j: j.status == "running")
    running_record = first.store.job_record(job.id)
    await wait_for(first, job.id, lambda j: j.status == "done")
    first.store.save_job(job.id, running_record)
    stored = json.loads(first.store.job_request(job.id))
    first.store.save_job_request(job.id, json.dumps({**stored, "runs": jobs.MAX_RUNS - 1}))

    restarted = new_manager(tiny_diffusion, ranker, tmp_path)
    assert await restarted.recover() == []
    failed = await restarted.get(job.id)
    assert failed.status == "failed" and f"stopped while it ran, {jobs.MAX_RUNS} times" in failed.error
