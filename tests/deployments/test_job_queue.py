"""Jobs on the one queue hold when replicas die (issue 17, acceptance 1): 20 jobs submitted
through 2 ingress replicas; one ingress replica and then the queue's replica, mid-job, are
killed with SIGKILL; every job still ends done, with the pixels a direct request with its seed
gives, and none is lost, left running, or answered twice."""

import asyncio
import base64
import io
import os
import signal
import time

import httpx
import pytest
import ray
from PIL import Image
from ray import serve

from dalleflow.deployments.app import EMBEDDED_DIFFUSION, compose_app

PROMPT = "a green triangle above a red square on a white background"
FAST = {"num_inference_steps": 2, "num_images": 1, "generators": ["diffusion"]}
JOB_COUNT = 20


def replica_pids(app: str, deployment: str) -> list[int]:
    """The process of each live replica (asked of the replica itself: a SIGKILL needs a pid)."""
    names = [actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
             if actor["name"].startswith(f"SERVE_REPLICA::{app}#{deployment}#")]  # fmt: skip
    pids = []
    for name in names:
        try:
            actor = ray.get_actor(name, namespace="serve")
            pids.append(ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=30))
        except Exception:  # gone (or going) between the listing and the call
            continue
    return pids


def wait_until(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def pixels(image: str) -> bytes:
    return Image.open(io.BytesIO(base64.b64decode(image))).convert("RGB").tobytes()


@pytest.fixture
def two_ingress_app(serve_app, store_path):
    serve.run(compose_app({"store_path": str(store_path), "generators": {"diffusion": EMBEDDED_DIFFUSION.model_dump()}},
                          deployments=[{"name": "ingress", "num_replicas": 2}]),
              name="queue", route_prefix="/queue")  # fmt: skip
    wait_until(lambda: len(replica_pids("queue", "ingress")) == 2, 60, "two ingress replicas")
    yield f"{serve_app}/queue"
    serve.delete("queue")


async def submit_all(url: str) -> list[dict]:
    async with httpx.AsyncClient(timeout=120) as client:
        # A long first job holds the queue still while the others arrive, so their positions are a snapshot.
        first = await client.post(f"{url}/v1/jobs", json={"kind": "generate", "request": {
            "prompt": PROMPT, "seed": 0, **FAST, "num_inference_steps": 60}})  # fmt: skip
        answers = [first] + await asyncio.gather(*(
            client.post(f"{url}/v1/jobs", json={"kind": "generate", "request": {"prompt": PROMPT, "seed": seed, **FAST}})
            for seed in range(1, JOB_COUNT)))  # fmt: skip
    assert [answer.status_code for answer in answers] == [202] * JOB_COUNT, [a.text for a in answers]
    return [answer.json() for answer in answers]


def test_jobs_outlive_the_ingress_that_took_them_and_the_queue_that_ran_them(two_ingress_app, server_url):
    jobs = asyncio.run(submit_all(two_ingress_app))
    ids = [job["id"] for job in jobs]
    # Queue positions are the one queue's, whichever ingress replica answered: 0 to 18, once each.
    assert sorted(job["queue_position"] for job in jobs[1:]) == list(range(JOB_COUNT - 1))

    os.kill(replica_pids("queue", "ingress")[0], signal.SIGKILL)
    status = lambda job_id: httpx.get(f"{two_ingress_app}/v1/jobs/{job_id}", timeout=120).json()  # noqa: E731
    running = wait_until(lambda: next((i for i in ids if status(i)["status"] == "running"), None), 120, "a job running")
    (queue_pid,) = replica_pids("queue", "jobs")
    os.kill(queue_pid, signal.SIGKILL)
    wait_until(lambda: replica_pids("queue", "jobs") not in ([], [queue_pid]), 120, "Serve's new queue replica")

    def all_finished():
        found = [status(job_id) for job_id in ids]
        return found if all(job["status"] in ("done", "failed", "cancelled") for job in found) else None

    finished = wait_until(all_finished, 600, "every job finished")
    assert [job["status"] for job in finished] == ["done"] * JOB_COUNT, [job.get("error") for job in finished]
    killed_mid_run = next(job for job in finished if job["id"] == running)
    assert killed_mid_run["result"]["seed"] == ids.index(running)
    for seed in sorted({1, ids.index(running), JOB_COUNT - 1} - {0}):
        direct = httpx.post(f"{server_url}/v1/generate", json={"prompt": PROMPT, "seed": seed, **FAST}, timeout=300)
        assert pixels(direct.json()["candidates"][0]["image"]) == pixels(finished[seed]["result"]["candidates"][0]["image"])
