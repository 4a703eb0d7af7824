"""Quality of the embedded default by the pixel oracle (issue: acceptance points 2-4).

    .venv/bin/python bench/quality.py --prompts 200

For each split (seen compositions, held-out compositions): `--prompts` distinct
captions, `--num-images` candidates each from each generator (diffusion and
DALL·E, as the service fans out), ranked by the CLIP ranker; prints, per
generator alone and for the joint pool the service answers, the share of
prompts whose top-ranked candidate the oracle accepts, the mean acceptance of
all candidates (what an unranked pick gets) and the best possible (any
candidate accepted), for the joint pool which generator drew the refused top
picks, and the mean share of candidates misarranged: the caption's
colours and shapes drawn in another arrangement (order reversed, colours or
shapes exchanged), what a generator that reads a caption as a bag of words
draws. Then the ranker's caption retrieval (top-1 of 100) and the
refiner on accepted picks of the joint pool (skip_rate 0.5). Models run
in-process: this measures the models, not the service.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from harness import provenance

from dalleflow.models.contract import Sampling, expand
from dalleflow.models.factory import create_model
from dalleflow.shapes.evaluate import distinct_scenes, generation_quality, refinement_quality, retrieval_top1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--num-images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--diffusion", default="embedded:shapes-diffusion")
    parser.add_argument("--dalle", default="embedded:shapes-dalle", help="'' leaves the DALL·E out")
    parser.add_argument("--vqgan", default="embedded:shapes-vqgan")
    parser.add_argument("--dalle-guidance", type=float, default=None,
                        help="the DALL·E's guidance (default: its own, from its generation_config.json)")
    parser.add_argument("--dalle-temperature", type=float, default=None,
                        help="the DALL·E's sampling temperature (default: its own, from its generation_config.json)")
    parser.add_argument("--ranker", default="embedded:shapes-clip")
    parser.add_argument("--refine-picks", type=int, default=100, help="accepted picks to vary")
    parser.add_argument("--out", default="bench/results/quality.json")
    args = parser.parse_args()
    torch.set_num_threads(2)

    diffusion = create_model({"family": "shapes-diffusion", "weights": args.diffusion})
    ranker = create_model({"family": "open-clip", "weights": args.ranker})

    diffusion_sampling = Sampling(num_inference_steps=args.steps, guidance_scale=args.guidance)
    generators = {"diffusion": lambda captions, num_images, seed: diffusion.generate(
        *expand(captions, num_images, seed), diffusion_sampling)}
    if args.dalle:
        dalle = create_model({"family": "dalle", "weights": args.dalle, "options": {"vqgan": args.vqgan}})
        dalle_guidance = dalle.defaults.guidance_scale if args.dalle_guidance is None else args.dalle_guidance
        if args.dalle_temperature is not None:
            dalle.sampling["temperature"] = args.dalle_temperature  # a deployment option, as a serve config sets it
        generators["dalle"] = lambda captions, num_images, seed: dalle.generate(
            *expand(captions, num_images, seed), Sampling(guidance_scale=dalle_guidance))

    def refine(image, caption, seed):
        return diffusion.refine([image] * 2, *expand([caption], 2, seed), skip_rate=0.5, sampling=diffusion_sampling)

    results, started = {}, time.time()
    rows = []
    for split, label in (("train", "seen"), ("held_out", "held-out")):
        captions = [s.caption for s in distinct_scenes(split, args.prompts, seed=2024)]
        by_generator = generation_quality(generators, ranker.score, captions, args.num_images)
        retrieval = retrieval_top1(ranker.similarity, split)
        results[label] = {"prompts": len(captions), "ranker_retrieval_top1_of_100": retrieval}
        for name, quality in by_generator.items():
            results[label][name] = {"top_ranked_accepted": quality.top_ranked_accepted,
                                    "mean_accepted": quality.mean_accepted, "best_possible": quality.best_possible,
                                    "mean_misarranged": quality.mean_misarranged}
            if name == "joint":
                results[label][name]["rejected_picks_from"] = quality.rejected_picks_from
            rows.append((label, name, quality.prompts, quality.top_ranked_accepted, quality.mean_accepted,
                         quality.best_possible, quality.mean_misarranged, retrieval))
        if split == "train":
            served = by_generator.get("joint", by_generator["diffusion"])
            results["refiner"] = refinement_quality(refine, served.accepted_picks[: args.refine_picks])

    print(f"\nembedded default, {args.num_images} candidates per prompt per generator, diffusion {args.steps} steps, "
          f"guidance {args.guidance}" + (f", DALL·E guidance {dalle_guidance}, {dalle.sampling}" if args.dalle else ""))
    print(f"{'split':10} {'generator':10} {'prompts':>7} {'top-ranked':>10} {'mean':>6} {'best-of-n':>9} "
          f"{'misarranged':>11} {'ranker top-1/100':>16}")
    for label, name, prompts, top, mean, best, misarranged, retrieval in rows:
        print(f"{label:10} {name:10} {prompts:7d} {top:10.1%} {mean:6.1%} {best:9.1%} {misarranged:11.1%} {retrieval:16.1%}")
    for label in ("seen", "held-out"):
        if "joint" in results[label]:
            shares = ", ".join(f"{share:.1%} {name}" for name, share in results[label]["joint"]["rejected_picks_from"].items())
            print(f"joint pool, {label}: top-ranked candidate refused and drawn by: {shares} (of prompts)")
    refiner = results["refiner"]
    print(f"refiner (skip_rate 0.5) on {refiner['variations']} variations of accepted picks: "
          f"still accepted {refiner['still_accepted']:.1%}, mean |Δ| / 255 {refiner['mean_abs_change']:.1%}, "
          f"pixels changed (a channel by over 16 of 255) {refiner['pixels_changed_over_16_of_255']:.1%}")
    print(f"({time.time() - started:.0f} s)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    settings = {"num_images": args.num_images, "steps": args.steps, "guidance": args.guidance,
                "dalle_guidance": dalle_guidance if args.dalle else None,
                "dalle_sampling": dict(dalle.sampling) if args.dalle else None, "refine_picks": args.refine_picks,
                "weights": {"diffusion": args.diffusion, "dalle": args.dalle, "vqgan": args.vqgan, "ranker": args.ranker}}
    Path(args.out).write_text(json.dumps({**provenance(), "settings": settings, **results}, indent=1))


if __name__ == "__main__":
    main()
