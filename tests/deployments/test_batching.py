"""Batching across requests changes no answer: the same seed gives the same PNG
bytes alone and inside one batch with 8 other requests, plain and streamed ones
mixed, through the real ImageModel deployment, its @serve.batch and its
user_config, for each embedded generator (diffusion in torch, DALL·E in JAX)."""

import pytest
from ray import serve

from dalleflow.deployments.app import EMBEDDED_DALLE, EMBEDDED_DIFFUSION
from dalleflow.deployments.stages import ImageModel, Ranker
from dalleflow.models.contract import Sampling, expand
from dalleflow.service.batches import ImageCall
from dalleflow.service.images import encode_png
from dalleflow.service.progress import Done, Step

PROMPT = "a red circle on the left on a white background"
OTHERS = ["a blue square above a green triangle on a black background", "a yellow circle on the right on a gray background"]
FAST = Sampling(num_inference_steps=3, guidance_scale=3.0)


def call(prompt: str, seed: int, count: int = 1, sampling: Sampling = FAST, **fields) -> ImageCall:
    return ImageCall(prompt=prompt, seeds=tuple(expand([prompt], count, seed)[1]), sampling=sampling, **fields)


@pytest.mark.parametrize("spec", [EMBEDDED_DIFFUSION, EMBEDDED_DALLE], ids=lambda spec: spec.family)
def test_a_seed_gives_the_same_bytes_alone_and_in_a_batch_of_nine(serve_app, spec):
    # user_config sets 9 (the default is 8) and a long wait, so the nine calls
    # below surely form one batch: the batch of 9 also shows reconfigure ran.
    # DALL·E takes num_inference_steps and ignores it: the two calls of 2 steps
    # still form a model call of their own (other sampling options).
    generator = ImageModel.options(
        name="batching-generator", max_ongoing_requests=9,
        user_config={"max_batch_size": 9, "batch_wait_timeout_s": 5.0},
    ).bind(spec.model_dump(), ["generator"])
    handle = serve.run(generator, name="batching-test", route_prefix=None)
    streams = handle.options(stream=True)
    try:
        alone = handle.generate.remote(call(PROMPT, 42)).result(timeout_s=120)
        # Others of other prompts, image counts and seeds; two use other steps (a group of their
        # own); every other one streams its steps, as the web page, the CLI and jobs do.
        others = [
            (streams.generate_stream if i % 2 else handle.generate).remote(call(
                OTHERS[i % 2], 100 + i, 1 + i % 3, Sampling(num_inference_steps=2 if i < 2 else 3, guidance_scale=3.0),
                with_progress=bool(i % 2)))
            for i in range(8)
        ]  # fmt: skip
        batched = streams.generate_stream.remote(call(PROMPT, 42, with_progress=True))
        other_images = [list(o)[-1].output if i % 2 else o.result(timeout_s=120) for i, o in enumerate(others)]
        events = list(batched)
        assert handle.batch_sizes.remote().result(timeout_s=30) == {1: 1, 9: 1}
        steps = [(e.step, e.step_count) for e in events if isinstance(e, Step)]
        # Every step of the model call it shares: diffusion's 3, or DALL·E's 8 spans for each
        # of the calls of 4 rows that the 13 rows of its group take.
        assert steps == [(step, len(steps)) for step in range(1, len(steps) + 1)]
        assert len(steps) == (3 if spec.family != "dalle" else 8 * 4)
        assert isinstance(events[-1], Done) and events[-1].output[0].png == alone[0].png
        assert [len(images) for images in other_images] == [1 + i % 3 for i in range(8)]
        assert all(images[0].png != alone[0].png for images in other_images)
    finally:
        serve.delete("batching-test")


def test_the_ranker_scores_alike_alone_and_in_a_batch(serve_app):
    from PIL import Image

    ranker = Ranker.options(
        name="batching-ranker", user_config={"max_batch_size": 4, "batch_wait_timeout_s": 5.0},
    ).bind({"family": "open-clip", "weights": "embedded:shapes-clip"})
    handle = serve.run(ranker, name="batching-ranker-test", route_prefix=None)
    try:
        images = [encode_png(Image.new("RGB", (32, 32), colour)).png for colour in ("red", "blue", "white")]
        alone = handle.score.remote(PROMPT, images).result(timeout_s=60)
        calls = [handle.score.remote(OTHERS[i % 2], images[: 1 + i]) for i in range(3)]
        batched = handle.score.remote(PROMPT, images)
        assert [len(call.result(timeout_s=60)) for call in calls] == [1, 2, 3]
        assert batched.result(timeout_s=60) == alone
        assert handle.batch_sizes.remote().result(timeout_s=30) == {1: 1, 4: 1}
    finally:
        serve.delete("batching-ranker-test")
