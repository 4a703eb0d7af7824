"""Streaming through real Ray Serve and real HTTP: progress before the answer, and a
client that leaves stops the model's loop."""

import base64
import io
import json
import time

import httpx
from dalleflow_client.schemas import NDJSON, STREAM_EVENT, GeneratedEvent, ProgressEvent, ResultEvent
from PIL import Image
from ray import serve

PROMPT = "a red circle on the left on a white background"


def stream_lines(server_url: str, path: str, body: dict):
    with httpx.stream("POST", server_url + path, json=body, headers={"accept": NDJSON}, timeout=300) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith(NDJSON)
        yield from response.iter_lines()


def progress_of(events: list, generator: str) -> list[tuple[int, int]]:
    return [(e.step, e.step_count) for e in events if isinstance(e, ProgressEvent) and e.generator == generator]


def test_generate_streams_both_generators_progress_then_images_then_the_same_answer(server_url):
    body = {"prompt": PROMPT, "num_images": 2, "num_inference_steps": 4, "seed": 21}
    events = [STREAM_EVENT.validate_json(line) for line in stream_lines(server_url, "/v1/generate", body)]
    assert isinstance(events[-1], ResultEvent) and not any(isinstance(e, ResultEvent) for e in events[:-1])
    # Each generator's steps in order (DALL·E's are eighths of its image tokens), all with previews,
    # then its images; the two generators' events interleave as they run.
    assert progress_of(events, "diffusion") == [(step, 4) for step in range(1, 5)]
    assert progress_of(events, "dalle") == [(step, 8) for step in range(1, 9)]
    # Every diffusion step shows a preview (cheap beside its UNet); the DALL·E's first one does, and
    # later ones while their VQGAN decodes stay within their share of the loop (service/batches.py).
    assert all(e.preview for e in events if isinstance(e, ProgressEvent) and e.generator == "diffusion")
    assert next(e for e in events if isinstance(e, ProgressEvent) and e.generator == "dalle").preview
    generated = {e.generator: (index, e) for index, e in enumerate(events) if isinstance(e, GeneratedEvent)}
    assert set(generated) == {"diffusion", "dalle"}
    for name, (index, event) in generated.items():
        assert event.report.status == "ok" and [image.seed for image in event.images] == [21, 22]
        assert all(e.generator != name for e in events[index:] if isinstance(e, ProgressEvent))
    result = events[-1].result
    assert sorted(c.generator for c in result.candidates) == ["dalle", "dalle", "diffusion", "diffusion"]
    plain = httpx.post(server_url + "/v1/generate", json=body, timeout=300).json()
    # The same images (their PNGs differ in the ids inside them only).
    assert [(c["generator"], c["seed"], c["rank"], pixels(c["image"])) for c in plain["candidates"]] == [
        (c.generator, c.seed, c.rank, pixels(c.image)) for c in result.candidates
    ]


def test_refine_streams_the_refiners_steps(server_url):
    pick = httpx.post(server_url + "/v1/generate", timeout=300,
                      json={"prompt": PROMPT, "num_images": 1, "num_inference_steps": 2, "generators": ["diffusion"]})
    body = {"prompt": PROMPT, "image_id": pick.json()["candidates"][0]["id"], "num_images": 2, "skip_rate": 0.5,
            "num_inference_steps": 8}  # fmt: skip
    events = [STREAM_EVENT.validate_json(line) for line in stream_lines(server_url, "/v1/refine", body)]
    steps = [(e.generator, e.step, e.step_count) for e in events if isinstance(e, ProgressEvent)]
    assert steps == [("refiner", step, 4) for step in range(1, 5)]  # half the schedule skipped
    assert isinstance(events[-1], ResultEvent) and len(events[-1].result.candidates) == 2


def test_a_bad_request_is_refused_before_the_stream_starts(server_url):
    answer = httpx.post(server_url + "/v1/generate", json={"prompt": PROMPT, "generators": ["nope"]},
                        headers={"accept": NDJSON}, timeout=60)  # fmt: skip
    assert answer.status_code == 422 and "generators" in answer.text


def pixels(image: str) -> bytes:
    return Image.open(io.BytesIO(base64.b64decode(image))).convert("RGB").tobytes()


def step_counts(generator: str) -> dict[str, int]:
    handle = serve.get_deployment_handle(f"generator-{generator}", "dalleflow")
    return handle.step_counts.remote().result(timeout_s=60)


def test_closing_the_stream_stops_both_generators_loops(server_url):
    before = {name: step_counts(name) for name in ("diffusion", "dalle")}
    body = {"prompt": PROMPT, "num_images": 16, "num_inference_steps": 100, "seed": 3}
    with httpx.stream("POST", server_url + "/v1/generate", json=body, headers={"accept": NDJSON}, timeout=300) as response:
        first = json.loads(next(response.iter_lines()))
        assert first["type"] == "progress"
    # The connection is closed: Ray Serve cancels the request, the cancellation reaches each
    # generator's replica, and its model stops at its next step. Watch their own counts.
    for name, total_steps in (("diffusion", 100), ("dalle", 4 * 8)):  # DALL·E: 4 calls of 4 rows, 8 spans each
        deadline = time.monotonic() + 60
        while (after := step_counts(name))["cancelled"] == before[name]["cancelled"]:
            assert time.monotonic() < deadline, f"{name} never reported the call cancelled: {after}"
            time.sleep(0.5)
        assert after["done"] == before[name]["done"], name  # it did not run to the end
        assert after["steps_run"] - before[name]["steps_run"] < total_steps, name


def test_the_same_events_through_a_ray_handle(serve_app):
    from dalleflow_client.schemas import GenerateRequest

    handle = serve.get_app_handle("dalleflow").options(stream=True)
    request = GenerateRequest(prompt=PROMPT, num_images=1, num_inference_steps=2, seed=8)
    events = list(handle.generate_stream.remote(request))
    assert progress_of(events, "diffusion") == [(1, 2), (2, 2)]
    assert progress_of(events, "dalle") == [(step, 8) for step in range(1, 9)]
    assert sorted(e.generator for e in events if isinstance(e, GeneratedEvent)) == ["dalle", "diffusion"]
    assert isinstance(events[-1], ResultEvent) and len(events) == 2 + 8 + 2 + 1
    assert [c.seed for c in events[-1].result.candidates] == [8, 8]
