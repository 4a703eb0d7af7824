"""Remake docs/ranked-grid.png, the README's picture: the embedded default's two
generators, 4 candidates each for one prompt (seed 3), ranked together by the
embedded ranker as /v1/generate ranks them, each upscaled x4 by the embedded upscaler.

    .venv/bin/python scripts/make_readme_grid.py docs/ranked-grid.png

Prints each candidate's generator, score and oracle verdict in rank order (the
README's caption says what the picture shows).
"""

from __future__ import annotations

import sys

from dalleflow.deployments.app import AppConfig
from dalleflow.models.contract import Sampling, expand, image_seed
from dalleflow.models.factory import create_model
from dalleflow.shapes import judge
from dalleflow_client.images import make_grid
from dalleflow_client.schemas import GenerateRequest

PROMPT = "a red circle to the left of a blue square on a white background"
SEED = 3


def main(out: str) -> None:
    config = AppConfig()
    ranker = create_model(config.ranker)
    upscaler = create_model(config.upscaler)
    request = GenerateRequest(prompt=PROMPT, num_images=4, seed=SEED)  # the HTTP API's defaults
    sampling = Sampling(**request.model_dump(include={"num_inference_steps", "guidance_scale", "negative_prompt"}))
    pool = []
    for name, spec in config.generators.items():
        images = create_model(spec).generate(*expand([PROMPT], request.num_images, SEED), sampling)
        pool += [(name, image_seed(SEED, i), image) for i, image in enumerate(images)]
    scores = ranker.score(PROMPT, [image for _, _, image in pool])
    ranked = sorted(zip(scores, pool), key=lambda pair: -pair[0])
    for rank, (score, (name, seed, image)) in enumerate(ranked):
        print(f"{rank}: {name:9} seed {seed} score {score:.3f} accepted {judge(image, PROMPT).accepted}")
    make_grid([upscaler.upscale(image) for _, (_, _, image) in ranked], columns=4).save(out)


if __name__ == "__main__":
    main(sys.argv[1])
