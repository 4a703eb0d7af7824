"""Train the shapes-world x4 upscaler (the embedded default upscaler).

    dalleflow train upscaler --out runs/upscaler --minutes 20 --export dalleflow/weights/shapes-upscaler

Real-ESRGAN's compact network (SRVGGNetCompact, as spandrel builds it: spandrel
loads the exported file like any Real-ESRGAN compact checkpoint) learns 32 -> 128
pixels on the shapes world, where the truth is exact: the same scene rendered at four
times the size. Inputs are degraded as generated images are (a little blur, a little
noise), so the network cleans what a generator leaves as it enlarges. The loss is
the squared error: where an edge's place at 128 px is not in the 32 px image, its
minimum is the edge's expected coverage, a smooth edge; the absolute error's is the
median, which is nearest-neighbour's staircase (a run with it learned nothing else).

The run checkpoints to --out every --checkpoint-minutes and resumes from it when rerun;
SIGTERM or SIGINT stops it at a step boundary with its checkpoint and export written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import threading
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from spandrel.architectures.Compact import Compact

from dalleflow.shapes import SceneSampler, judge, render_scene
from dalleflow.shapes.evaluate import distinct_scenes
from dalleflow.shapes.scene import Scene
from dalleflow.train.checkpoint import load_checkpoint, save_checkpoint
from dalleflow.train.clock import TrainingClock, cosine_lr, run, start_torch_run

SCALE = 4
WEIGHTS_FILE = "shapes-upscaler-x4.safetensors"
CURVE_FIELDS = ("on 64 fixed scenes per split, clean 32 px renders upscaled: PSNR in dB against the scene rendered "
                "at 128 px, and the oracle's acceptance of the 128 px result, against training minutes")


def scaled(scene: Scene, factor: int) -> Scene:
    """The same scene on a canvas `factor` times the side."""
    objects = tuple(dataclasses.replace(o, centre_x=o.centre_x * factor, centre_y=o.centre_y * factor,
                                        size=o.size * factor) for o in scene.objects)  # fmt: skip
    return dataclasses.replace(scene, objects=objects, canvas_size=scene.canvas_size * factor)


def as_tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


def degrade(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per image: a Gaussian blur of sigma 0-0.8 px half of the time, noise of std 0-0.04 half of the time."""
    out = []
    for image in images:
        if torch.rand((), generator=generator) < 0.5:
            sigma = float(torch.rand((), generator=generator)) * 0.8 + 1e-3
            taps = torch.arange(-2, 3, dtype=torch.float32)
            kernel = torch.exp(-(taps**2) / (2 * sigma**2))
            kernel = kernel / kernel.sum()
            padded = F.pad(image[None], (2, 2, 2, 2), mode="replicate")
            image = F.conv2d(padded, kernel.view(1, 1, 1, 5).repeat(3, 1, 1, 1), groups=3)
            image = F.conv2d(image, kernel.view(1, 1, 5, 1).repeat(3, 1, 1, 1), groups=3)[0]
        if torch.rand((), generator=generator) < 0.5:
            image = image + torch.randn(image.shape, generator=generator) * float(torch.rand((), generator=generator)) * 0.04
        out.append(image.clamp(0, 1))
    return torch.stack(out)


def create_network(features: int, convolutions: int) -> Compact:
    return Compact(num_in_ch=3, num_out_ch=3, num_feat=features, num_conv=convolutions, upscale=SCALE, act_type="prelu")


def psnr(output: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR (dB) of the squared error over every pixel of every image (0-1 scale): a mean of per-image
    PSNRs would be ruled by the images an upscaler gets exactly (a square on the pixel grid)."""
    return float(10 * torch.log10(1 / F.mse_loss(output, target)))


@torch.no_grad()
def evaluate(network: Compact, count: int = 64) -> dict[str, float]:
    network.eval()
    point = {}
    for split, label in (("train", "seen"), ("held_out", "held_out")):
        scenes = distinct_scenes(split, count, seed=99)
        small = as_tensor([render_scene(s) for s in scenes])
        large = as_tensor([render_scene(scaled(s, SCALE)) for s in scenes])
        output = network(small).clamp(0, 1)
        pixels = (output * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        point[f"{label}_psnr_db"] = round(psnr(output, large), 2)
        point[f"{label}_accepted"] = float(np.mean([judge(p, s.caption).accepted for p, s in zip(pixels, scenes)]))
    network.train()
    return point


def export(network: Compact, folder: Path, record: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, folder / WEIGHTS_FILE)
    (folder / "training.json").write_text(json.dumps(record, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/upscaler", help="checkpoint folder (resumed when present)")
    parser.add_argument("--minutes", type=float, default=20.0, help="stop after this much training time in total")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--convolutions", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0)
    parser.add_argument("--export", default=None, help="write the weights and training.json to this folder")
    args = parser.parse_args(argv)
    run("upscaler", args, argv, train)


def train(args: argparse.Namespace, stop: threading.Event) -> None:
    out = start_torch_run(args)
    network = create_network(args.features, args.convolutions)
    optimizer = torch.optim.Adam(network.parameters(), lr=args.lr)
    sampler = SceneSampler("train", seed=args.seed)
    noise = torch.Generator().manual_seed(args.seed)
    state = {"step": 0, "minutes": 0.0, "curve": []}

    saved = load_checkpoint(out)
    if saved is not None:
        network.load_state_dict(saved["network"])
        optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        noise.set_state(saved["noise_rng"])
        sampler.rng.setstate(saved["data_rng"])
        print(f"resumed at step {state['step']} ({state['minutes']:.1f} min)", flush=True)

    def save() -> None:
        save_checkpoint(out, {"network": network.state_dict(), "optimizer": optimizer.state_dict(), "state": state,
                              "noise_rng": noise.get_state(), "data_rng": sampler.rng.getstate()})

    network.train()
    clock = TrainingClock(state, args.checkpoint_minutes)
    while state["minutes"] < args.minutes and not stop.is_set():
        scenes = [sampler.sample() for _ in range(args.batch_size)]
        small = degrade(as_tensor([render_scene(s) for s in scenes]), noise)
        large = as_tensor([render_scene(scaled(s, SCALE)) for s in scenes])
        loss = F.mse_loss(network(small), large)
        lr = cosine_lr(args.lr, state["step"], 100, state["minutes"] / args.minutes)  # over the time budget
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state["step"] += 1
        clock.tick()
        if state["step"] % 100 == 0:
            print(f"step {state['step']} min {state['minutes']:.1f} loss {loss.item():.4f}", flush=True)
        clock.checkpoint_if_due(lambda: evaluate(network), save)

    if stop.is_set():
        print(f"stopped by a signal at step {state['step']}: checkpoint saved, rerun the command to resume", flush=True)
    save()
    final = evaluate(network)
    print(f"final {final}", flush=True)
    record = {"command": args.command, "steps": state["step"], "minutes": round(state["minutes"], 1),
              "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed, "features": args.features,
              "convolutions": args.convolutions, "parameters": sum(p.numel() for p in network.parameters()),
              "curve": state["curve"], "curve_fields": CURVE_FIELDS, "final": final}  # fmt: skip
    (out / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    if args.export:
        export(network, Path(args.export), record)


if __name__ == "__main__":
    main()
