"""How the embedded DALL·E's sampling defaults are chosen: acceptance per guidance and temperature.

    .venv/bin/python bench/sampling.py --prompts 96

For each split, `--prompts` distinct captions drawn with seed 777 (validation
prompts: bench/quality.py measures on seed 2024's, which no choice is made on),
`--num-images` candidates each from the DALL·E at every guidance (super-conditioning's
scale) and temperature of the grid, ranked by the CLIP ranker. For each setting: the
share of prompts whose top-ranked candidate the oracle accepts, alone and in the joint
pool with the diffusion generator's candidates (drawn once per split at its own
defaults: the pool the service answers), the mean acceptance of all candidates, the
best possible (any candidate accepted), and how far apart one prompt's candidates are
(mean |Δ| / 255 over each pair of them: what a lower temperature gives up). The shipped
defaults are those in the model's generation_config.json; this grid checks them, and a
setting it favours is measured on bench/quality.py's prompts (--dalle-guidance,
--dalle-temperature) before it replaces them: one lead among many settings on few
prompts is often chance.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

from harness import provenance

from dalleflow.models.contract import Sampling, expand
from dalleflow.models.factory import create_model
from dalleflow.shapes.evaluate import distinct_scenes, generation_quality

VALIDATION_SEED = 777


def mean_pairwise_change(images, num_images: int) -> float:
    """Mean |Δ| / 255 over each pair of one prompt's candidates, averaged over the prompts."""
    pixels = np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) / 255 for image in images])
    changes = [np.abs(prompt[i] - prompt[j]).mean()
               for prompt in pixels.reshape(-1, num_images, *pixels.shape[1:])
               for i, j in itertools.combinations(range(num_images), 2)]  # fmt: skip
    return float(np.mean(changes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=96)
    parser.add_argument("--num-images", type=int, default=4)
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0])
    parser.add_argument("--temperature", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--dalle", default="embedded:shapes-dalle")
    parser.add_argument("--vqgan", default="embedded:shapes-vqgan")
    parser.add_argument("--diffusion", default="embedded:shapes-diffusion", help="'' ranks the DALL·E's alone")
    parser.add_argument("--ranker", default="embedded:shapes-clip")
    parser.add_argument("--out", default="bench/results/sampling-dalle.json")
    args = parser.parse_args()
    torch.set_num_threads(2)

    ranker = create_model({"family": "open-clip", "weights": args.ranker})
    dalle = create_model({"family": "dalle", "weights": args.dalle, "options": {"vqgan": args.vqgan}})
    shipped = {"guidance": dalle.defaults.guidance_scale, "temperature": dalle.sampling["temperature"]}
    generators = {}
    if args.diffusion:
        diffusion = create_model({"family": "shapes-diffusion", "weights": args.diffusion})

        @functools.cache  # one draw per batch of captions, whatever DALL·E setting it is pooled with
        def diffusion_draw(captions: tuple[str, ...], num_images: int, seed: int):
            return diffusion.generate(*expand(captions, num_images, seed))

        generators["diffusion"] = lambda captions, num_images, seed: diffusion_draw(tuple(captions), num_images, seed)

    def sampled_at(guidance: float, temperature: float, drawn: list):
        def generate(captions, num_images, seed):
            dalle.sampling["temperature"] = temperature  # a deployment option: one model serves the grid
            images = dalle.generate(*expand(captions, num_images, seed), Sampling(guidance_scale=guidance))
            drawn.extend(images)
            return images
        return generate

    grid, started = [], time.time()
    for split, label in (("train", "seen"), ("held_out", "held-out")):
        captions = [s.caption for s in distinct_scenes(split, args.prompts, seed=VALIDATION_SEED)]
        for guidance, temperature in itertools.product(args.guidance, args.temperature):
            drawn = []
            generators["dalle"] = sampled_at(guidance, temperature, drawn)
            quality = generation_quality(generators, ranker.score, captions, args.num_images)
            row = {"split": label, "guidance": guidance, "temperature": temperature, "prompts": len(captions),
                   "top_ranked_accepted": quality["dalle"].top_ranked_accepted,
                   "mean_accepted": quality["dalle"].mean_accepted, "best_possible": quality["dalle"].best_possible,
                   "mean_pairwise_change": mean_pairwise_change(drawn, args.num_images)}  # fmt: skip
            if "joint" in quality:
                row["joint_top_ranked_accepted"] = quality["joint"].top_ranked_accepted
                row["diffusion_top_ranked_accepted"] = quality["diffusion"].top_ranked_accepted
            grid.append(row)
            print(f"{label:9} guidance {guidance:4.2f} temperature {temperature:4.2f}: top-ranked "
                  f"{row['top_ranked_accepted']:6.1%} mean {row['mean_accepted']:6.1%} best {row['best_possible']:6.1%}"
                  + (f" joint {row['joint_top_ranked_accepted']:6.1%}" if "joint" in quality else ""), flush=True)  # fmt: skip

    print(f"\nDALL·E ({args.dalle}), {args.prompts} validation prompts per split, {args.num_images} candidates, "
          f"ranked by {args.ranker}; shipped defaults: guidance {shipped['guidance']}, temperature {shipped['temperature']}")
    if args.diffusion:
        alone = {row["split"]: row["diffusion_top_ranked_accepted"] for row in grid}
        print(f"the diffusion generator's own top-ranked, accepted: seen {alone['seen']:.1%}, held-out {alone['held-out']:.1%}")
    columns = ["top", "mean", "best", "joint", "spread"]
    print(f"{'guidance':>8} {'temp':>5} | " + " ".join(f"{c:>6}" for c in columns) + " | "
          + " ".join(f"{c:>6}" for c in columns) + "   (seen | held-out; spread: mean pairwise |Δ| / 255)")  # fmt: skip
    for guidance, temperature in itertools.product(args.guidance, args.temperature):
        cells = []
        for label in ("seen", "held-out"):
            row = next(r for r in grid if r["split"] == label and r["guidance"] == guidance and r["temperature"] == temperature)
            values = [row["top_ranked_accepted"], row["mean_accepted"], row["best_possible"],
                      row.get("joint_top_ranked_accepted", float("nan"))]  # fmt: skip
            cells.append(" ".join(f"{v:6.1%}" for v in values) + f" {row['mean_pairwise_change']:6.3f}")
        print(f"{guidance:8.2f} {temperature:5.2f} | " + " | ".join(cells))
    print(f"({time.time() - started:.0f} s)")
    settings = {"prompts_seed": VALIDATION_SEED, "num_images": args.num_images, "shipped_defaults": shipped,
                "diffusion_sampling": "its own defaults" if args.diffusion else None,
                "weights": {"dalle": args.dalle, "vqgan": args.vqgan, "diffusion": args.diffusion or None,
                            "ranker": args.ranker}}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({**provenance(), "settings": settings, "grid": grid}, indent=1))


if __name__ == "__main__":
    main()
