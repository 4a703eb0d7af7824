"""Batching across requests changes no answer (issue 4, acceptance 2): the same
seed gives the same PNG bytes alone and inside one batch with 8 other requests,
through the real Generator deployment, its @serve.batch and its user_config, for
each embedded generator (diffusion in torch, DALL·E in JAX)."""

import io

import pytest
from ray import serve

from dalleflow.deployments.app import EMBEDDED_DALLE, EMBEDDED_DIFFUSION
from dalleflow.deployments.stages import Generator, Ranker

PROMPT = "a red circle on the left on a white background"
OTHERS = ["a blue square above a green triangle on a black background", "a yellow circle on the right on a gray background"]
FAST = {"num_inference_steps": 3, "guidance_scale": 3.0}


def png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("spec", [EMBEDDED_DIFFUSION, EMBEDDED_DALLE], ids=lambda spec: spec.family)
def test_a_seed_gives_the_same_bytes_alone_and_in_a_batch_of_nine(serve_app, spec):
    # user_config sets 9 (the default is 8) and a long wait, so the nine calls
    # below surely form one batch: the batch of 9 also shows reconfigure ran.
    # DALL·E takes num_inference_steps and ignores it: the two calls of 2 steps
    # still form a model call of their own (other sampling options).
    generator = Generator.options(
        name="batching-generator", max_ongoing_requests=9,
        user_config={"max_batch_size": 9, "batch_wait_timeout_s": 5.0},
    ).bind(spec.model_dump())
    handle = serve.run(generator, name="batching-test", route_prefix=None)
    try:
        alone = handle.generate.remote([PROMPT], num_images=1, seed=42, **FAST).result(timeout_s=120)
        # Others of other prompts, image counts and seeds; two use other steps (a group of their own).
        others = [
            handle.generate.remote([OTHERS[i % 2]], num_images=1 + i % 3, seed=100 + i,
                                   **{**FAST, "num_inference_steps": 2 if i < 2 else 3})
            for i in range(8)
        ]
        batched = handle.generate.remote([PROMPT], num_images=1, seed=42, **FAST)
        other_images = [call.result(timeout_s=120) for call in others]
        assert handle.batch_sizes.remote().result(timeout_s=30) == {1: 1, 9: 1}
        assert png(batched.result(timeout_s=120)[0]) == png(alone[0])
        assert [len(images) for images in other_images] == [1 + i % 3 for i in range(8)]
        assert all(png(images[0]) != png(alone[0]) for images in other_images)
    finally:
        serve.delete("batching-test")


def test_the_ranker_scores_alike_alone_and_in_a_batch(serve_app):
    from PIL import Image

    ranker = Ranker.options(
        name="batching-ranker", user_config={"max_batch_size": 4, "batch_wait_timeout_s": 5.0},
    ).bind({"family": "open-clip", "weights": "embedded:shapes-clip"})
    handle = serve.run(ranker, name="batching-ranker-test", route_prefix=None)
    try:
        images = [Image.new("RGB", (32, 32), colour) for colour in ("red", "blue", "white")]
        alone = handle.score.remote(PROMPT, images).result(timeout_s=60)
        calls = [handle.score.remote(OTHERS[i % 2], images[: 1 + i]) for i in range(3)]
        batched = handle.score.remote(PROMPT, images)
        assert [len(call.result(timeout_s=60)) for call in calls] == [1, 2, 3]
        assert batched.result(timeout_s=60) == alone
        assert handle.batch_sizes.remote().result(timeout_s=30) == {1: 1, 4: 1}
    finally:
        serve.delete("batching-ranker-test")
