"""Streaming through real Ray Serve and real HTTP: progress before the answer, and a
client that leaves stops the model's loop."""

import json
import time

import httpx
import pytest
from dalleflow_client.schemas import NDJSON, STREAM_EVENT, GeneratedEvent, ProgressEvent, ResultEvent
from ray import serve

PROMPT = "a red circle on the left on a white background"


def stream_lines(server_url: str, path: str, body: dict):
    with httpx.stream("POST", server_url + path, json=body, headers={"accept": NDJSON}, timeout=300) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith(NDJSON)
        yield from response.iter_lines()


def test_generate_streams_progress_then_images_then_the_same_answer(server_url):
    body = {"prompt": PROMPT, "num_images": 2, "num_inference_steps": 4, "seed": 21}
    events = [STREAM_EVENT.validate_json(line) for line in stream_lines(server_url, "/v1/generate", body)]
    kinds = [type(event) for event in events]
    assert kinds == [ProgressEvent] * 4 + [GeneratedEvent, ResultEvent], kinds
    assert [(e.step, e.step_count) for e in events[:4]] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert all(e.generator == "diffusion" and e.preview for e in events[:4])
    generated, result = events[4], events[5].result
    assert generated.report.status == "ok" and [image.seed for image in generated.images] == [21, 22]
    plain = httpx.post(server_url + "/v1/generate", json=body, timeout=300).json()
    assert [(c["seed"], c["rank"], c["image"]) for c in plain["candidates"]] == [
        (c.seed, c.rank, c.image) for c in result.candidates
    ]


def test_diffuse_streams_the_refiners_steps(server_url):
    pick = httpx.post(server_url + "/v1/generate", json={"prompt": PROMPT, "num_images": 1, "num_inference_steps": 2}, timeout=300)
    body = {"prompt": PROMPT, "image_id": pick.json()["candidates"][0]["id"], "num_images": 2, "skip_rate": 0.5,
            "num_inference_steps": 8}  # fmt: skip
    events = [STREAM_EVENT.validate_json(line) for line in stream_lines(server_url, "/v1/diffuse", body)]
    steps = [(e.generator, e.step, e.step_count) for e in events if isinstance(e, ProgressEvent)]
    assert steps == [("refiner", step, 4) for step in range(1, 5)]  # half the schedule skipped
    assert isinstance(events[-1], ResultEvent) and len(events[-1].result.candidates) == 2


def test_a_bad_request_is_refused_before_the_stream_starts(server_url):
    answer = httpx.post(server_url + "/v1/generate", json={"prompt": PROMPT, "generators": ["nope"]},
                        headers={"accept": NDJSON}, timeout=60)  # fmt: skip
    assert answer.status_code == 422 and "generators" in answer.text


def step_counts() -> dict[str, int]:
    return serve.get_deployment_handle("generator-diffusion", "dalleflow").step_counts.remote().result(timeout_s=60)


def test_closing_the_stream_stops_the_generators_loop(server_url):
    before = step_counts()
    body = {"prompt": PROMPT, "num_images": 16, "num_inference_steps": 100, "seed": 3}
    with httpx.stream("POST", server_url + "/v1/generate", json=body, headers={"accept": NDJSON}, timeout=300) as response:
        first = json.loads(next(response.iter_lines()))
        assert first["type"] == "progress" and first["step_count"] == 100
    # The connection is closed: Ray Serve cancels the request, the cancellation reaches the
    # generator's replica, and the model stops at its next step. Watch its own counts.
    deadline = time.monotonic() + 60
    while (after := step_counts())["cancelled"] == before["cancelled"]:
        assert time.monotonic() < deadline, f"the generator never reported the call cancelled: {after}"
        time.sleep(0.5)
    assert after["done"] == before["done"]  # it did not run to the end
    assert after["steps_run"] - before["steps_run"] < 100


def test_the_same_events_through_a_ray_handle(serve_app):
    from dalleflow_client.schemas import GenerateRequest

    handle = serve.get_app_handle("dalleflow").options(stream=True)
    request = GenerateRequest(prompt=PROMPT, num_images=1, num_inference_steps=2, seed=8)
    events = list(handle.generate_stream.remote(request))
    assert [type(e) for e in events] == [ProgressEvent, ProgressEvent, GeneratedEvent, ResultEvent]
    assert events[-1].result.candidates[0].seed == 8
