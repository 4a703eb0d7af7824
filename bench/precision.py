"""The embedded diffusion model on each device and precision it runs in, against the CPU in float32.

    .venv/bin/python bench/precision.py --prompts 16

A GPU runs the model in half precision by default (models/devices.py); this says
what that costs. The same prompts and seeds everywhere (the noise is drawn on the
CPU), so the images can be compared pixel by pixel. Prints, per device and
precision: seconds for the batch, the mean |pixel difference| from the CPU's
float32 images (of 255), and the oracle's acceptance. On a CPU it runs float32
and bfloat16; with a GPU, also float32 and float16 there. Saves
bench/results/precision.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from harness import machine, provenance

from dalleflow.models.contract import Sampling, expand
from dalleflow.models.diffusion import ShapesDiffusion
from dalleflow.models.factory import resolve_weights
from dalleflow.shapes import judge
from dalleflow.shapes.evaluate import distinct_scenes


def settings() -> list[tuple[str, str]]:
    found = [("cpu", "float32"), ("cpu", "bfloat16")]
    if torch.cuda.is_available():
        found += [("cuda", "float32"), ("cuda", "float16")]
    return found


def run(folder: str, device: str, dtype: str, prompts: list[str], images_per_prompt: int, steps: int):
    """(images, seconds) for every prompt's images in one call, timed after a warm-up call."""
    model = ShapesDiffusion.from_pretrained(folder, device=device, dtype=dtype)
    model.generate(prompts[:1], [0], Sampling(num_inference_steps=2))
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    images = model.generate(*expand(prompts, images_per_prompt, seed=11), Sampling(num_inference_steps=steps))
    seconds = time.perf_counter() - started
    return images, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16, help="distinct seen-split captions")
    parser.add_argument("--images-per-prompt", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--weights", default="embedded:shapes-diffusion")
    parser.add_argument("--out", default="bench/results/precision.json")
    args = parser.parse_args()

    folder = resolve_weights(args.weights)
    prompts = [scene.caption for scene in distinct_scenes("train", args.prompts, seed=5)]
    captions = [prompt for prompt in prompts for _ in range(args.images_per_prompt)]
    rows, reference = [], None
    for device, dtype in settings():
        images, seconds = run(folder, device, dtype, prompts, args.images_per_prompt, args.steps)
        pixels = np.stack([np.asarray(image) for image in images]).astype(int)
        reference = pixels if reference is None else reference
        rows.append({"device": device, "dtype": dtype, "seconds": seconds,
                     "mean_abs_pixel_difference": float(np.abs(pixels - reference).mean()),
                     "accepted": float(np.mean([judge(image, c).accepted for image, c in zip(images, captions)]))})

    print(f"\n{args.weights}: {len(captions)} images ({args.prompts} prompts), {args.steps} steps; {machine()}\n")
    print(f"{'device':6} {'dtype':9} {'seconds':>8} {'|diff| vs cpu float32':>22} {'oracle accepts':>15}")
    for row in rows:
        print(f"{row['device']:6} {row['dtype']:9} {row['seconds']:8.2f} "
              f"{row['mean_abs_pixel_difference']:22.2f} {row['accepted']:15.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**provenance(), "weights": args.weights, "steps": args.steps,
                               "prompts": args.prompts, "images_per_prompt": args.images_per_prompt,
                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
