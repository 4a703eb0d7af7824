"""A generator replica killed under load costs no request (issue 4, acceptance 4).

A second app with two generator replicas serves 50 concurrent requests; one
replica is killed with ray.kill while they run. The ingress retries the stage
call of each request it had in flight once, on the other replica, with the same
seed: all 50 answer 200 with the generator reported ok, and an answer's image is
the very image the undisturbed app makes from that seed.
"""

import asyncio
import base64
import io

import httpx
import pytest
import ray
from PIL import Image
from ray import serve

from dalleflow.deployments.app import EMBEDDED_DIFFUSION, compose_app

PROMPT = "a green triangle above a red square on a white background"
# The diffusion generator alone: the test is about its replicas.
FAST = {"num_inference_steps": 2, "num_images": 1, "generators": ["diffusion"]}
REQUEST_COUNT = 50


def generator_replicas(app: str) -> list[str]:
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith(f"SERVE_REPLICA::{app}#generator-diffusion#")]


async def load_with_a_kill(url: str, app: str) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=300) as client:
        requests = [asyncio.create_task(client.post(url, json={"prompt": PROMPT, "seed": seed, **FAST}))
                    for seed in range(REQUEST_COUNT)]
        # Kill once answers have started to come back: the killed replica is mid-batch then.
        done, _ = await asyncio.wait(requests, return_when=asyncio.FIRST_COMPLETED)
        victim = generator_replicas(app)[0]
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        return await asyncio.gather(*requests)


def pixels(image: str) -> bytes:
    return Image.open(io.BytesIO(base64.b64decode(image))).convert("RGB").tobytes()


@pytest.fixture
def two_generator_app(serve_app, store_path):
    serve.run(
        compose_app({"store_path": str(store_path), "generators": {"diffusion": EMBEDDED_DIFFUSION.model_dump()}},
                  deployments=[{"name": "generator-diffusion", "num_replicas": 2,
                                "user_config": {"max_batch_size": 4, "batch_wait_timeout_s": 0.05}}]),
        name="faults", route_prefix="/faults",
    )
    assert len(generator_replicas("faults")) == 2
    yield f"{serve_app}/faults"
    serve.delete("faults")


def test_a_killed_generator_replica_costs_no_request(two_generator_app, server_url):
    answers = asyncio.run(load_with_a_kill(f"{two_generator_app}/v1/generate", "faults"))
    assert [a.status_code for a in answers] == [200] * REQUEST_COUNT, [a.text for a in answers if a.status_code != 200]
    bodies = [a.json() for a in answers]
    assert [b["generators"]["diffusion"]["status"] for b in bodies] == ["ok"] * REQUEST_COUNT
    assert [b["candidates"][0]["seed"] for b in bodies] == list(range(REQUEST_COUNT))
    for seed in (0, 17, REQUEST_COUNT - 1):
        again = httpx.post(f"{server_url}/v1/generate", json={"prompt": PROMPT, "seed": seed, **FAST}, timeout=300)
        # The same pixels (the PNGs differ only in the ids inside them).
        assert pixels(again.json()["candidates"][0]["image"]) == pixels(bodies[seed]["candidates"][0]["image"])


@pytest.fixture
def broken_generator_app(serve_app, store_path, tmp_path):
    """An app whose one generator raises on every call: a real misconfiguration, its text
    encoder narrower than its UNet's cross-attention (found only when it runs)."""
    from tests.conftest import build_tiny_diffusion

    build_tiny_diffusion(text_width=8).save_pretrained(tmp_path / "broken")
    spec = {"family": "shapes-diffusion", "weights": f"local-dir:{tmp_path / 'broken'}"}
    serve.run(compose_app({"store_path": str(store_path), "generators": {"broken": spec}, "refiner": "broken"}),
              name="broken", route_prefix="/broken")  # fmt: skip
    yield f"{serve_app}/broken"
    serve.delete("broken")


def test_a_generator_that_raises_is_a_502_naming_the_stage_and_the_client_does_not_send_it_again(broken_generator_app):
    from dalleflow_client import Client, RequestError

    with Client(broken_generator_app, timeout=300) as client:  # the default retry policy
        with pytest.raises(RequestError) as raised:
            client.generate(PROMPT, num_images=1, num_inference_steps=2, seed=3)
    assert raised.value.status_code == 502
    answer = httpx.post(f"{broken_generator_app}/v1/generate", json={"prompt": PROMPT, "num_inference_steps": 2}, timeout=300)
    assert answer.status_code == 502 and answer.json()["code"] == "stage_failed" and answer.json()["stage"] == "generators"
    assert "broken: failed" in answer.json()["detail"] and "Error" not in answer.json()["detail"]
    # Two requests, two generations: the client sent its request once.
    counts = serve.get_deployment_handle("generator-broken", app_name="broken").step_counts.remote().result()
    assert counts["failed"] == 2
