"""Autoscaling (issue 4): under load the generator adds a replica, and when idle
it goes back to one. Same keys as serve_config.yaml, with delays of seconds."""

import asyncio
import time

import httpx
from ray import serve

from dalleflow.deployments.app import EMBEDDED_DIFFUSION, compose_app

AUTOSCALING = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2,
               "upscale_delay_s": 1, "downscale_delay_s": 3, "metrics_interval_s": 0.5, "look_back_period_s": 2}
BODY = {"prompt": "a blue circle on the right on a black background", "num_images": 2, "num_inference_steps": 8}


def running_generators() -> int:
    deployment = serve.status().applications["autoscale"].deployments["generator-diffusion"]
    return deployment.replica_states.get("RUNNING", 0)


async def load_until_two_replicas(url: str, timeout_s: float) -> int:
    """Keeps 8 requests in flight until a second generator runs; the most replicas seen."""
    async with httpx.AsyncClient(timeout=300) as client:
        in_flight: set[asyncio.Task] = set()
        deadline, seen = time.monotonic() + timeout_s, 1
        while time.monotonic() < deadline and seen < 2:
            while len(in_flight) < 8:
                in_flight.add(asyncio.create_task(client.post(url, json=BODY)))
            done, in_flight = await asyncio.wait(in_flight, timeout=0.5)
            assert all(task.result().status_code == 200 for task in done)
            seen = max(seen, running_generators())
        await asyncio.gather(*in_flight)
        return seen


def test_the_generator_scales_up_under_load_and_down_when_idle(serve_app, store_path):
    serve.run(
        compose_app({"store_path": str(store_path), "generators": {"diffusion": EMBEDDED_DIFFUSION.model_dump()}}, deployments=[
            {"name": "generator-diffusion", "autoscaling_config": AUTOSCALING,
             "user_config": {"max_batch_size": 2, "batch_wait_timeout_s": 0.01}},
        ]),
        name="autoscale", route_prefix="/autoscale",
    )
    try:
        assert running_generators() == 1
        assert asyncio.run(load_until_two_replicas(f"{serve_app}/autoscale/v1/generate", timeout_s=150)) == 2
        deadline = time.monotonic() + 120
        while running_generators() > 1 and time.monotonic() < deadline:
            time.sleep(1)
        assert running_generators() == 1
    finally:
        serve.delete("autoscale")
