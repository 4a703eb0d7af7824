"""Train the shapes-world CLIP ranker (the embedded default).

    dalleflow train ranker --out runs/ranker --minutes 20

An open_clip model of the project's own config (dalleflow/models/ranker/configs/
shapes-clip.json) trained contrastively on the train split, with one hard
negative caption per image: the same caption with one field changed (colour,
shape, position or background). Without them CLIP learns colours and ignores
shape and place, which is exactly what ranking candidates needs to see.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from dalleflow.models.ranker.clip import ClipRanker, create_untrained, model_config, save_local_dir
from dalleflow.shapes import SceneSampler, render_scene
from dalleflow.shapes.evaluate import retrieval_top1
from dalleflow.shapes.scene import FIELDS, caption_of, change_one_field

CONFIG_NAME = "shapes-clip"


def normalise(images: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (tensor - mean) / std


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/ranker")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--export", default=None, help="write the model as a local-dir folder here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = create_untrained(CONFIG_NAME)
    tokenizer = open_clip.get_tokenizer(CONFIG_NAME)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    sampler = SceneSampler("train", seed=args.seed)
    started, step, curve = time.time(), 0, []
    model.train()
    while (minutes := (time.time() - started) / 60) < args.minutes:
        scenes = [sampler.sample() for _ in range(args.batch_size)]
        images = normalise(np.stack([render_scene(s) for s in scenes]))
        captions = [s.caption for s in scenes]
        negatives = [
            caption_of(change_one_field(s.spec, rng.choice(FIELDS), rng, allow_held_out=False)) for s in scenes
        ]
        image_features = F.normalize(model.encode_image(images), dim=-1)
        text_features = F.normalize(model.encode_text(tokenizer(captions + negatives)), dim=-1)
        logits = model.logit_scale.exp() * image_features @ text_features.T
        labels = torch.arange(len(scenes))
        # Images choose among all captions (hard negatives included); captions among images.
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits[:, : len(scenes)].T, labels)) / 2

        # Cosine decay over the time budget, after a short warmup.
        progress = minutes / args.minutes
        lr = args.lr * min(1.0, (step + 1) / 200) * 0.5 * (1 + np.cos(np.pi * progress))
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100))
        step += 1
        if step % 100 == 0:
            print(f"step {step} min {minutes:.1f} loss {loss.item():.4f}", flush=True)
        if step % 1000 == 0:
            model.eval()
            ranker = ClipRanker(model, _eval_preprocess(model), tokenizer, CONFIG_NAME)
            point = {"step": step, "minutes": round(minutes, 1),
                     "seen": retrieval_top1(ranker.similarity, "train", trials=2),
                     "held_out": retrieval_top1(ranker.similarity, "held_out", trials=2)}
            curve.append(point)
            print(f"eval {point}", flush=True)
            model.train()
            save_local_dir(model, model_config(CONFIG_NAME), out / "model")

    model.eval()
    save_local_dir(model, model_config(CONFIG_NAME), out / "model")
    ranker = ClipRanker.from_pretrained(f"local-dir:{out / 'model'}")
    final = {"seen": retrieval_top1(ranker.similarity, "train"), "held_out": retrieval_top1(ranker.similarity, "held_out")}
    print(f"final retrieval top-1 of 100: {final}", flush=True)
    record = {"steps": step, "minutes": round((time.time() - started) / 60, 1), "batch_size": args.batch_size,
              "lr": args.lr, "seed": args.seed, "curve": curve, "retrieval_top1_of_100": final}
    (out / "training.json").write_text(json.dumps(record, indent=1))
    if args.export:
        save_local_dir(model, model_config(CONFIG_NAME), args.export)
        (Path(args.export) / "training.json").write_text(json.dumps(record, indent=1))


def _eval_preprocess(model):
    return open_clip.image_transform(model.visual.image_size, is_train=False)


if __name__ == "__main__":
    main()
