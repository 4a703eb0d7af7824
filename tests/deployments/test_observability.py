"""The project's metrics, read back from Ray's Prometheus export of the test session
(the node's metrics export port), after real requests through the served app."""

from __future__ import annotations

import re
import time

import httpx

PROMPT = "a red circle on the left on a white background"


def exported_metrics(ray) -> str:
    port = ray._private.worker.global_worker.node.metrics_export_port
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text


def sample(text: str, name: str, **tags: str) -> float | None:
    """The value of the first sample of `name` (Ray may prefix it ray_) carrying every tag given."""
    for line in text.splitlines():
        match = re.match(rf"(?:ray_)?{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{key}="{value}"' in match.group(1) for key, value in tags.items()):
            return float(match.group(2))
    return None


def wait_for(ray, name: str, at_least: float, **tags: str) -> float:
    """Ray pushes metrics to its exporter every few seconds: poll until the sample is there."""
    return poll(ray, name, lambda value: value >= at_least, f">= {at_least}", **tags)


def poll(ray, name: str, wanted, description: str, **tags: str) -> float:
    deadline, value = time.monotonic() + 60, None
    while time.monotonic() < deadline:
        value = sample(exported_metrics(ray), name, **tags)
        if value is not None and wanted(value):
            return value
        time.sleep(1)
    raise AssertionError(f"{name}{tags}: {value} after 60 s, wanted {description}")


def test_stage_latency_images_and_rejections_are_exported(ray_session, server_url):
    answer = httpx.post(f"{server_url}/v1/generate", timeout=300,
                        json={"prompt": PROMPT, "num_images": 2, "num_inference_steps": 2, "seed": 5})
    assert answer.status_code == 200
    request_id = answer.headers["x-request-id"]
    assert request_id
    rejected = httpx.post(f"{server_url}/v1/generate", json={"prompt": PROMPT, "generators": ["nope"]})
    assert rejected.status_code == 422

    for generator in ("diffusion", "dalle"):
        assert wait_for(ray_session, "dalleflow_stage_seconds_count", 1, stage="generator", generator=generator, outcome="ok")
        assert wait_for(ray_session, "dalleflow_images_generated_total", 2, application="dalleflow", deployment=f"generator-{generator}")
    assert wait_for(ray_session, "dalleflow_stage_seconds_count", 1, stage="ranker", outcome="ok")
    assert wait_for(ray_session, "dalleflow_rejections_total", 1, route="/v1/generate", status_code="422")
    # The gauge is back to 0 once the requests are answered (each replica reports its own).
    # The last value pushed may predate the answer, so wait for the next push; other tests'
    # apps have ingresses too (a flooded one may have left its last value behind).
    poll(ray_session, "dalleflow_ingress_in_flight", lambda value: value == 0, "== 0",
         application="dalleflow", deployment="ingress")
