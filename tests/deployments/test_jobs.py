"""Jobs through real Ray Serve and real HTTP."""

import time

import httpx
from dalleflow_client.schemas import FINISHED_JOB_STATUSES
from ray import serve

PROMPT = "a red circle on the left on a white background"


def job_status(server_url: str, job_id: str) -> dict:
    answer = httpx.get(f"{server_url}/v1/jobs/{job_id}", timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


def wait_for(server_url: str, job_id: str, condition, timeout_s: float = 240) -> dict:
    deadline = time.monotonic() + timeout_s
    while not condition(job := job_status(server_url, job_id)):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    return job


def submit(server_url: str, request: dict, kind: str = "generate") -> dict:
    answer = httpx.post(f"{server_url}/v1/jobs", json={"kind": kind, "request": request}, timeout=60)
    assert answer.status_code == 202, answer.text
    return answer.json()


def test_a_job_runs_to_its_result(server_url):
    job = submit(server_url, {"prompt": PROMPT, "num_images": 2, "num_inference_steps": 3, "seed": 9})
    assert job["status"] in ("queued", "running") and job["kind"] == "generate"
    done = wait_for(server_url, job["id"], lambda j: j["status"] == "done")
    # Steps done per generator: DALL·E counts eighths of its image tokens.
    assert done["progress"] == {"diffusion": {"step": 3, "step_count": 3}, "dalle": {"step": 8, "step_count": 8}}
    candidates = done["result"]["candidates"]
    assert sorted((c["generator"], c["seed"]) for c in candidates) == [("dalle", 9), ("dalle", 10), ("diffusion", 9), ("diffusion", 10)]
    assert [c["rank"] for c in candidates] == [0, 1, 2, 3]
    stored = httpx.get(f"{server_url}/v1/images/{done['result']['candidates'][0]['id']}", timeout=60)
    assert stored.status_code == 200


def step_counts(deployment: str) -> dict[str, int]:
    return serve.get_deployment_handle(deployment, "dalleflow").step_counts.remote().result(timeout_s=60)


def test_deleting_a_running_job_stops_the_model(server_url):
    pick = httpx.post(f"{server_url}/v1/generate", timeout=300,
                      json={"prompt": PROMPT, "num_images": 1, "num_inference_steps": 2, "generators": ["diffusion"]})
    before = step_counts("generator-diffusion")
    request = {"prompt": PROMPT, "image_id": pick.json()["candidates"][0]["id"], "num_images": 16,
               "skip_rate": 0.0, "num_inference_steps": 100}  # fmt: skip
    job = submit(server_url, request, kind="refine")
    wait_for(server_url, job["id"], lambda j: "refiner" in j["progress"])
    cancelled = httpx.delete(f"{server_url}/v1/jobs/{job['id']}", timeout=60)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["result"] is None
    deadline = time.monotonic() + 60
    while (after := step_counts("generator-diffusion"))["cancelled"] == before["cancelled"]:
        assert time.monotonic() < deadline, f"the diffusion model (the refiner) never reported the call cancelled: {after}"
        time.sleep(0.5)
    assert after["done"] == before["done"] and after["steps_run"] - before["steps_run"] < 100
    assert job_status(server_url, job["id"])["status"] == "cancelled"


def test_job_errors_name_the_field_or_the_id(server_url):
    bad = httpx.post(f"{server_url}/v1/jobs", json={"kind": "generate", "request": {"prompt": PROMPT, "num_images": 0}}, timeout=60)
    assert bad.status_code == 422 and "num_images" in bad.text
    unknown_kind = httpx.post(f"{server_url}/v1/jobs", json={"kind": "paint", "request": {}}, timeout=60)
    assert unknown_kind.status_code == 422 and "kind" in unknown_kind.text
    assert httpx.get(f"{server_url}/v1/jobs/{'0' * 32}", timeout=60).status_code == 404
    assert httpx.get(f"{server_url}/v1/jobs/..%2F..%2Fetc%2Fpasswd", timeout=60).status_code == 404
    assert httpx.delete(f"{server_url}/v1/jobs/{'0' * 32}", timeout=60).status_code == 404


def test_a_job_outlives_the_connection_that_submitted_it(server_url):
    # The CLI's way: a connection closed as soon as the 202 is read. Serve could
    # take that for the request's cancellation and cancel the job's stage calls
    # with it; the job then waited forever for generators that would never answer
    # (about 1 submission in 15 on a 2-core machine), holding the only job slot.
    for seed in range(30):
        job = submit(server_url, {"prompt": PROMPT, "num_images": 1, "num_inference_steps": 2, "seed": seed})
        finished = wait_for(server_url, job["id"], lambda j: j["status"] in FINISHED_JOB_STATUSES, timeout_s=120)
        assert finished["status"] == "done", finished


def test_a_job_of_kind_diffuse_the_old_name_is_a_refine_job_answered_under_that_name(server_url):
    pick = httpx.post(f"{server_url}/v1/generate", timeout=300,
                      json={"prompt": PROMPT, "num_images": 1, "num_inference_steps": 2, "generators": ["diffusion"]})
    request = {"prompt": PROMPT, "image_id": pick.json()["candidates"][0]["id"], "num_images": 1, "num_inference_steps": 2}
    for kind in ("refine", "diffuse"):
        job = submit(server_url, request, kind=kind)
        assert job["kind"] == kind  # an older client reads back the kind it sent
        done = wait_for(server_url, job["id"], lambda j: j["status"] in FINISHED_JOB_STATUSES)
        assert done["status"] == "done", done
        assert [c["generator"] for c in done["result"]["candidates"]] == ["refiner"]
