"""Candidates of the embedded generators, judged by the oracle: the ranker's
ranking data.

    dalleflow train candidates --prompts 1024 --out runs/candidates

A CLIP trained only on clean renders tells a circle from a square but not a
good square from a rounded one, and the generators' near misses are exactly
that. So the ranker also learns from the generators' own candidates for
train-split captions (held-out pairs never appear), each labelled by the
oracle: accepted or not. The captions of bench/quality.py's seen split are left
out, so the benchmark ranks candidates of prompts the ranker never trained on.
Written in parts of `--chunk` prompts (npz, no pickle), so a stopped run
resumes at the next part and the ranker can start on the parts that exist.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from dalleflow.models.factory import create_model
from dalleflow.shapes.evaluate import BENCH_PROMPTS, BENCH_SEED, distinct_scenes
from dalleflow.shapes.oracle import judge


def training_captions(count: int, seed: int) -> list[str]:
    """`count` distinct train-split captions, none of them a benchmark prompt."""
    benchmark = {s.caption for s in distinct_scenes("train", BENCH_PROMPTS, seed=BENCH_SEED)}
    pool = distinct_scenes("train", count + len(benchmark), seed=seed)
    return [s.caption for s in pool if s.caption not in benchmark][:count]


def load_candidates(folder: str | Path) -> dict[str, np.ndarray]:
    """All parts of a candidates folder, concatenated: images [N, S, S, 3] uint8,
    captions [N], accepted [N] bool, generators [N]; a prompt's candidates are
    the rows sharing its caption."""
    parts = sorted(Path(folder).glob("part-*.npz"))
    if not parts:
        raise FileNotFoundError(f"no candidate parts (part-*.npz) in {folder}")
    loaded = [np.load(part, allow_pickle=False) for part in parts]
    return {key: np.concatenate([part[key] for part in loaded]) for key in ("images", "captions", "accepted", "generators")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/candidates")
    parser.add_argument("--prompts", type=int, default=1024)
    parser.add_argument("--num-images", type=int, default=4, help="per generator, as the service's default")
    parser.add_argument("--chunk", type=int, default=64, help="prompts per part file")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--diffusion", default="embedded:shapes-diffusion")
    parser.add_argument("--dalle", default="embedded:shapes-dalle")
    parser.add_argument("--vqgan", default="embedded:shapes-vqgan")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    diffusion = create_model({"family": "shapes-diffusion", "weights": args.diffusion})
    dalle = create_model({"family": "dalle", "weights": args.dalle, "options": {"vqgan": args.vqgan}})
    generators = {
        "diffusion": lambda chunk, seed: diffusion.generate(
            chunk, num_images=args.num_images, seed=seed, num_inference_steps=args.steps, guidance_scale=args.guidance),
        "dalle": lambda chunk, seed: dalle.generate(chunk, num_images=args.num_images, seed=seed, guidance_scale=args.guidance),
    }
    captions = training_captions(args.prompts, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for index, start in enumerate(range(0, len(captions), args.chunk)):
        part = out / f"part-{index:04d}.npz"
        if part.exists():
            continue
        chunk = captions[start : start + args.chunk]
        rows = {"images": [], "captions": [], "accepted": [], "generators": []}
        for name, generate in generators.items():
            # A different seed per part and generator, so no two parts share noise.
            images = generate(chunk, seed=args.seed * 1_000_003 + start * 7 + len(rows["images"]))
            for number, image in enumerate(images):
                caption = chunk[number // args.num_images]
                rows["images"].append(np.asarray(image.convert("RGB")))
                rows["captions"].append(caption)
                rows["accepted"].append(judge(image, caption).accepted)
                rows["generators"].append(name)
        unfinished = out / f"unfinished-{index:04d}.npz"
        np.savez_compressed(unfinished, **{key: np.asarray(value) for key, value in rows.items()})
        unfinished.rename(part)
        print(f"{part.name}: {len(chunk)} prompts, {np.mean(rows['accepted']):.1%} accepted", flush=True)


if __name__ == "__main__":
    main()
