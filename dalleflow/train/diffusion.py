"""Train the shapes-world diffusion generator (the embedded default).

    dalleflow train diffusion --out runs/diffusion --minutes 120

A diffusers UNet2DConditionModel over pixel-unshuffled 32x32 images and a
word-level text encoder trained jointly on a cosine schedule, 10% caption
dropout for classifier-free guidance, offset noise (flat white and black
backgrounds), and an EMA of the weights. The default target is epsilon with
the plain loss: it weights low-noise steps most, where crisp shapes and exact
colours are decided, and learned objects several times faster than
v-prediction here (see the model card for both runs). Checkpoints every few
minutes; rerunning the same command resumes; --init-from continues from a
pretrained folder. The model card of dalleflow/weights/shapes-diffusion gives
the exact commands that made it.
"""

from __future__ import annotations

import argparse
import copy
import json
import threading
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DPMSolverMultistepScheduler

from dalleflow.models.diffusion import PixelDiffusionConfig, ShapesDiffusion, TextEncoder, TextEncoderConfig, shapes_vocab
from dalleflow.models.contract import Sampling
from dalleflow.models.diffusion.pixel_space import CoordinateUNet, PixelSpace, build_unet, noise_schedule
from dalleflow.shapes import SceneSampler, parse_caption, render_scene, world
from dalleflow.train.checkpoint import LEGACY, load_checkpoint, save_checkpoint
from dalleflow.train.clock import TrainingClock, cosine_lr, run, start_torch_run

CAPTION_DROPOUT = 0.1
WARMUP_STEPS = 500  # of each phase: --init-from starts a fresh optimizer

# What a caption says, slot by slot: what --slot-loss asks the pooled caption to tell apart.
SLOTS: dict[str, list[str | None]] = {
    "background": list(world.BACKGROUNDS),
    "first colour": list(world.COLOURS),
    "first shape": list(world.SHAPES),
    "second colour": [None, *world.COLOURS],
    "second shape": [None, *world.SHAPES],
    "position": [None, *world.POSITIONS],
    "relation": [None, *world.RELATIONS],
}


def slot_targets(captions: list[str]) -> torch.Tensor:
    """[B, len(SLOTS)] class indices: each caption's background, its objects in caption order,
    its position or relation (None where its form has no such slot)."""
    rows = []
    for caption in captions:
        spec = parse_caption(caption)
        second = spec.objects[1] if len(spec.objects) == 2 else (None, None)
        values = (spec.background, *spec.objects[0], *second, spec.position, spec.relation)
        rows.append([options.index(value) for options, value in zip(SLOTS.values(), values)])
    return torch.tensor(rows)


class SlotHead(torch.nn.Module):
    """A linear read-out of every slot from the pooled caption, used in training only: the UNet
    takes the pooled caption beside the time embedding, and a mean of word states that cannot
    tell 'a red square above a blue circle' from its reverse gives it no order to follow."""

    def __init__(self, width: int):
        super().__init__()
        self.heads = torch.nn.ModuleList(torch.nn.Linear(width, len(options)) for options in SLOTS.values())

    def loss(self, pooled: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return sum(F.cross_entropy(head(pooled), targets[:, i]) for i, head in enumerate(self.heads)) / len(self.heads)


class Batches:
    """Endless seeded batches of (images in [-1, 1], captions) from the train split."""

    def __init__(self, seed: int, batch_size: int):
        self.sampler = SceneSampler("train", seed=seed)
        self.batch_size = batch_size

    def next(self) -> tuple[torch.Tensor, list[str]]:
        scenes = [self.sampler.sample() for _ in range(self.batch_size)]
        images = np.stack([render_scene(s) for s in scenes])
        tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
        return tensor, [s.caption for s in scenes]


def evaluate(model: ShapesDiffusion, prompt_count: int, steps: int, guidance: float) -> dict[str, float]:
    """Oracle acceptance of one image per prompt, on fixed seen and held-out prompts."""
    from dalleflow.shapes import judge

    result = {}
    for split in ("train", "held_out"):
        sampler = SceneSampler(split, seed=1234)
        captions = [sampler.sample().caption for _ in range(prompt_count)]
        images = model.generate(captions, [0] * len(captions), Sampling(num_inference_steps=steps, guidance_scale=guidance))
        result[split] = float(np.mean([bool(judge(im, c)) for im, c in zip(images, captions)]))
    return result


CURVE_FIELDS = ("oracle acceptance of one image per prompt (64 fixed prompts per split, 20 steps, guidance 3) "
                "against training minutes (of that phase up to phase 3; in total from phase 4, whose record the trainer writes)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/diffusion", help="checkpoint folder (resumed when present)")
    parser.add_argument("--minutes", type=float, default=120.0, help="stop after this much training time in total")
    parser.add_argument("--max-steps", type=int, default=10**9)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--decay-steps", type=int, default=0,
                        help="anneal: cosine decay of the learning rate to zero over this many steps of the phase "
                             "(0: constant after the warmup)")
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0)
    parser.add_argument("--eval-prompts", type=int, default=64)
    parser.add_argument("--export", default=None, help="write the EMA model as a pretrained folder here at the end")
    parser.add_argument("--prediction-type", choices=["epsilon", "v_prediction"], default="epsilon")
    parser.add_argument("--min-snr-gamma", type=float, default=0.0,
                        help="clamp per-timestep loss weights at this SNR (0: the plain loss of the prediction type)")
    parser.add_argument("--offset-noise", type=float, default=0.1,
                        help="per-channel constant noise added in training, so flat white and black are reachable")
    parser.add_argument("--position-scale", type=float, default=1.0,
                        help="multiply the text encoder's position embedding by this at the start of the phase: the "
                             "one it started with (std 0.02 against word embeddings of std 1) left the captions nearly "
                             "a bag of words, so 'a red square above a blue circle' and its reverse drew alike")
    parser.add_argument("--slot-loss", type=float, default=0.0,
                        help="weight of an auxiliary loss that reads every slot of the caption (objects in order, "
                             "relation, background) from the pooled caption (0: none)")
    parser.add_argument("--note", default=None, help="kept with this phase in the exported training.json")
    parser.add_argument("--init-from", default=None,
                        help="start from a pretrained folder (e.g. the shipped weights) instead of random weights")
    args = parser.parse_args(argv)
    run("diffusion", args, argv, train)


def train(args: argparse.Namespace, stop: threading.Event) -> None:
    out = start_torch_run(args)

    text_config = TextEncoderConfig(vocab=shapes_vocab())
    text_encoder = TextEncoder(text_config)
    denoiser = CoordinateUNet(build_unet(text_config.width))
    noise_scheduler = noise_schedule(args.prediction_type)
    space = PixelSpace(2)
    slot_head = SlotHead(text_config.width) if args.slot_loss > 0 else None
    parameters = list(denoiser.parameters()) + list(text_encoder.parameters())
    parameters += list(slot_head.parameters()) if slot_head is not None else []
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=0.01)
    ema_denoiser, ema_text = copy.deepcopy(denoiser), copy.deepcopy(text_encoder)
    state = {"step": 0, "minutes": 0.0, "curve": []}
    batches = Batches(args.seed, args.batch_size)
    earlier_phases: list[dict] = []  # the record of the weights this run starts from
    phase_start = {"steps": 0, "minutes": 0.0}

    if args.init_from:
        shipped = ShapesDiffusion.from_pretrained(args.init_from)
        for module, source in ((denoiser, shipped.denoiser), (ema_denoiser, shipped.denoiser),
                               (text_encoder, shipped.text_encoder), (ema_text, shipped.text_encoder)):
            module.load_state_dict(source.state_dict())
        shipped_record = Path(args.init_from) / "training.json"
        if shipped_record.exists():
            record = json.loads(shipped_record.read_text())
            earlier_phases = record.get("phases", [])
            state = {"step": record.get("steps", 0), "minutes": record.get("minutes", 0.0),
                     "curve": record.get("curve", [])}
            phase_start = {"steps": state["step"], "minutes": state["minutes"]}

    with torch.no_grad():
        for module in (text_encoder, ema_text):
            module.position_embedding.mul_(args.position_scale)

    saved = load_checkpoint(out)
    if saved is None and (out / LEGACY).exists():  # never start over on top of an older run
        raise SystemExit(f"{out / LEGACY} is an older checkpoint: python -m dalleflow.train.checkpoint --convert-legacy {out}")
    if saved is not None:
        denoiser.load_state_dict(saved["denoiser"])
        text_encoder.load_state_dict(saved["text_encoder"])
        ema_denoiser.load_state_dict(saved["ema_denoiser"])
        ema_text.load_state_dict(saved["ema_text"])
        if slot_head is not None:
            slot_head.load_state_dict(saved["slot_head"])
        optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        torch.set_rng_state(saved["torch_rng"])
        batches.sampler.rng.setstate(saved["data_rng"])
        print(f"resumed at step {state['step']} ({state['minutes']:.1f} min)", flush=True)

    alphas_cumprod = noise_scheduler.alphas_cumprod
    snr = alphas_cumprod / (1 - alphas_cumprod)
    # min-SNR weighting (Hang et al. 2023), expressed for the chosen target.
    if args.min_snr_gamma > 0:
        clamped = torch.clamp(snr, max=args.min_snr_gamma)
        loss_weight = clamped / (snr + 1) if args.prediction_type == "v_prediction" else clamped / snr
    else:
        loss_weight = torch.ones_like(snr)

    def export(folder: Path) -> ShapesDiffusion:
        # Turning predicted noise into a clean image divides by sqrt(alpha_bar), about
        # 0.006 at the noisiest step of a cosine schedule: without clamping that
        # estimate to the pixel range (dynamic thresholding, as pixel-space models
        # do), early errors blow up and the samples end as coloured noise.
        sampling = DPMSolverMultistepScheduler.from_config(
            noise_scheduler.config, thresholding=True, sample_max_value=1.0
        )
        # The trainer's own modules, which it trains on in float32 on the CPU: the
        # wrapper must neither move nor cast them.
        model = ShapesDiffusion(ema_denoiser.unet, ema_text, sampling, PixelDiffusionConfig(), device="cpu", dtype=torch.float32)
        model.save_pretrained(folder)
        return model

    def save() -> None:
        save_checkpoint(
            out,
            {
                "denoiser": denoiser.state_dict(),
                "text_encoder": text_encoder.state_dict(),
                "ema_denoiser": ema_denoiser.state_dict(),
                "ema_text": ema_text.state_dict(),
                "optimizer": optimizer.state_dict(),
                **({"slot_head": slot_head.state_dict()} if slot_head is not None else {}),
                "state": state,
                "torch_rng": torch.get_rng_state(),
                "data_rng": batches.sampler.rng.getstate(),
            },
        )

    def save_with_curve() -> None:
        (out / "curve.json").write_text(json.dumps(state["curve"], indent=1))
        save()

    denoiser.train()
    text_encoder.train()
    clock = TrainingClock(state, args.checkpoint_minutes)
    # A resumed optimizer keeps its moments, so only a fresh one (new or --init-from) warms up.
    state.setdefault("warmup_from", state["step"])
    running = None
    while state["minutes"] < args.minutes and state["step"] < args.max_steps and not stop.is_set():
        images, captions = batches.next()
        dropped = torch.rand(len(captions)) < CAPTION_DROPOUT
        captions = ["" if d else c for c, d in zip(captions, dropped)]
        clean = space.encode(images)
        noise = torch.randn_like(clean)
        # One offset per RGB colour, spread over the 4 pixels each unshuffled position holds.
        offset = torch.randn(clean.shape[0], 3, 1, 1).repeat_interleave(clean.shape[1] // 3, dim=1)
        noise += args.offset_noise * offset
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(captions),))
        noisy = noise_scheduler.add_noise(clean, noise, timesteps)
        if args.prediction_type == "v_prediction":
            target = noise_scheduler.get_velocity(clean, noise, timesteps)
        else:
            target = noise
        ids, mask = text_encoder.tokenizer()(captions)
        states, pooled = text_encoder(ids, mask)
        prediction = denoiser(noisy, timesteps, states, mask, pooled)
        per_image = F.mse_loss(prediction, target, reduction="none").mean(dim=(1, 2, 3))
        loss = (per_image * loss_weight[timesteps]).mean()
        if slot_head is not None and not dropped.all():
            kept = ~dropped
            loss = loss + args.slot_loss * slot_head.loss(pooled[kept], slot_targets([c for c, k in zip(captions, kept) if k]))

        phase_step = state["step"] - state["warmup_from"]
        # Without --decay-steps the schedule stays at its start: the warmup, then a constant rate.
        lr = cosine_lr(args.lr, phase_step, WARMUP_STEPS, phase_step / args.decay_steps if args.decay_steps else 0.0)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + state["step"]) / (10 + state["step"]))
            for ema, live in ((ema_denoiser, denoiser), (ema_text, text_encoder)):
                for e, p in zip(ema.parameters(), live.parameters()):
                    e.lerp_(p, 1 - decay)

        state["step"] += 1
        clock.tick()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if state["step"] % 100 == 0:
            print(f"step {state['step']} min {state['minutes']:.1f} loss {running:.4f}", flush=True)
        clock.checkpoint_if_due(lambda: evaluate(export(out / "ema"), args.eval_prompts, steps=20, guidance=3.0),
                                save_with_curve)

    if stop.is_set():
        print(f"stopped by a signal at step {state['step']}: checkpoint saved, rerun the command to resume", flush=True)
    save()
    if args.export:
        export(Path(args.export))
        # The record of every phase that made these weights, this one appended: the commands reproduce them.
        phase = {"command": args.command,
                 "stopped_at": {"steps": state["step"] - phase_start["steps"],
                                "minutes": round(state["minutes"] - phase_start["minutes"], 1)},
                 "batch_size": args.batch_size, "lr": args.lr, "decay_steps": args.decay_steps,
                 "position_scale": args.position_scale,
                 "slot_loss": args.slot_loss, "seed": args.seed,
                 "curve": state["curve"]}
        if args.note:
            phase["note"] = args.note
        # An export that trained nothing (its --init-from already holds this run's record) adds no phase.
        phases = [*earlier_phases, phase] if state["step"] > phase_start["steps"] else earlier_phases
        (Path(args.export) / "training.json").write_text(json.dumps({
            "steps": state["step"], "minutes": round(state["minutes"], 1), "phases": phases,
            "curve_fields": CURVE_FIELDS}, indent=1) + "\n")


if __name__ == "__main__":
    main()
