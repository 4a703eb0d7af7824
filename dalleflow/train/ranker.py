"""Train the shapes-world CLIP ranker (the embedded default).

    dalleflow train ranker --out runs/ranker --minutes 20
    dalleflow train ranker --init runs/ranker/model --candidates runs/candidates --out runs/ranker-ft --minutes 15

An open_clip model of the project's own config (dalleflow/models/ranker/configs/
shapes-clip.json) trained contrastively on the train split, with one hard
negative caption per image: the same caption with one field changed (colour,
shape, position or background). Without them CLIP learns colours and ignores
shape and place, which is exactly what ranking candidates needs to see.

Retrieval among clean renders is not yet choosing among near misses (a rounded
square against a square, a lopsided triangle against a neat one). With
`--candidates` (a folder made by `dalleflow train candidates`) each step also
ranks the generators' candidates of a few prompts, with a listwise loss that
puts the oracle-accepted ones of a prompt above its rejected ones; the
contrastive loss stays, so retrieval is kept. A tenth of the candidate prompts
are held back to measure the ranking (top-ranked accepted) as it trains.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image

from dalleflow.models.ranker.clip import ClipRanker, create_untrained, model_config, save_local_dir
from dalleflow.shapes import SceneSampler, render_scene
from dalleflow.shapes.evaluate import retrieval_top1
from dalleflow.shapes.scene import FIELDS, caption_of, change_one_field
from dalleflow.train.candidates import load_candidates

CONFIG_NAME = "shapes-clip"
VALIDATION_EVERY = 10  # every tenth candidate prompt is held back for validation


class RankingData:
    """Candidates grouped by prompt: (caption, row indices, accepted flags)."""

    def __init__(self, folder: str | Path):
        data = load_candidates(folder)
        self.images = data["images"]
        rows = defaultdict(list)
        for row, caption in enumerate(data["captions"]):
            rows[str(caption)].append(row)
        prompts = [(caption, np.array(indices), data["accepted"][indices]) for caption, indices in rows.items()]
        self.validation = prompts[::VALIDATION_EVERY]
        held_back = {caption for caption, _, _ in self.validation}
        # Only prompts with both verdicts say which candidate is better.
        self.training = [p for p in prompts if p[0] not in held_back and p[2].any() and not p[2].all()]
        if not self.training:
            raise ValueError(f"no candidate prompt in {folder} has both accepted and rejected candidates")

    def sample(self, rng: random.Random, count: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
        return rng.sample(self.training, min(count, len(self.training)))


def ranking_loss(model, tokenizer, prompts: list[tuple[str, np.ndarray, np.ndarray]], images: np.ndarray) -> torch.Tensor:
    """Listwise: -log of the softmax mass the prompt's accepted candidates get among all of its candidates."""
    rows = np.concatenate([indices for _, indices, _ in prompts])
    image_features = F.normalize(model.encode_image(normalise(images[rows])), dim=-1)
    text_features = F.normalize(model.encode_text(tokenizer([caption for caption, _, _ in prompts])), dim=-1)
    losses, start = [], 0
    for number, (_, indices, accepted) in enumerate(prompts):
        logits = model.logit_scale.exp() * image_features[start : start + len(indices)] @ text_features[number]
        start += len(indices)
        losses.append(torch.logsumexp(logits, 0) - torch.logsumexp(logits[torch.from_numpy(accepted)], 0))
    return torch.stack(losses).mean()


def ranking_quality(ranker: ClipRanker, prompts: list[tuple[str, np.ndarray, np.ndarray]], images: np.ndarray) -> dict:
    """On held-back prompts: the top-scored candidate is accepted / any one is / the best is."""
    top, mean, best = [], [], []
    for caption, indices, accepted in prompts:
        scores = ranker.score(caption, [Image.fromarray(image) for image in images[indices]])
        top.append(bool(accepted[int(np.argmax(scores))]))
        mean.append(float(accepted.mean()))
        best.append(bool(accepted.any()))
    return {"prompts": len(prompts), "top_ranked_accepted": round(float(np.mean(top)), 4),
            "mean_accepted": round(float(np.mean(mean)), 4), "best_possible": round(float(np.mean(best)), 4)}


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
    parser.add_argument("--init", default=None, help="start from this local-dir folder instead of random weights")
    parser.add_argument("--candidates", default=None, help="a `dalleflow train candidates` folder: add the ranking loss")
    parser.add_argument("--ranking-prompts", type=int, default=16, help="candidate prompts per step")
    parser.add_argument("--ranking-weight", type=float, default=1.0)
    parser.add_argument("--warmup-steps", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=1000, help="steps between evaluations")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = create_untrained(CONFIG_NAME)
    if args.init:
        model.load_state_dict(ClipRanker.from_pretrained(f"local-dir:{args.init}").model.state_dict())
    ranking = RankingData(args.candidates) if args.candidates else None
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
        if ranking:
            loss = loss + args.ranking_weight * ranking_loss(
                model, tokenizer, ranking.sample(rng, args.ranking_prompts), ranking.images)

        # Cosine decay over the time budget, after a short warmup.
        progress = minutes / args.minutes
        lr = args.lr * min(1.0, (step + 1) / args.warmup_steps) * 0.5 * (1 + np.cos(np.pi * progress))
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
        if step % args.eval_every == 0:
            model.eval()
            ranker = ClipRanker(model, _eval_preprocess(model), tokenizer, CONFIG_NAME)
            point = {"step": step, "minutes": round(minutes, 1),
                     "seen": retrieval_top1(ranker.similarity, "train", trials=2),
                     "held_out": retrieval_top1(ranker.similarity, "held_out", trials=2)}
            if ranking:
                point["ranking"] = ranking_quality(ranker, ranking.validation, ranking.images)
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
              "lr": args.lr, "seed": args.seed, "init": args.init, "curve": curve, "retrieval_top1_of_100": final}
    if ranking:
        record["candidates"] = {"folder": args.candidates, "training_prompts": len(ranking.training),
                                "ranking_prompts_per_step": args.ranking_prompts, "weight": args.ranking_weight}
        record["ranking_validation"] = ranking_quality(ranker, ranking.validation, ranking.images)
        print(f"final ranking on held-back prompts: {record['ranking_validation']}", flush=True)
    (out / "training.json").write_text(json.dumps(record, indent=1))
    if args.export:
        save_local_dir(model, model_config(CONFIG_NAME), args.export)
        (Path(args.export) / "training.json").write_text(json.dumps(record, indent=1))


def _eval_preprocess(model):
    return open_clip.image_transform(model.visual.image_size, is_train=False)


if __name__ == "__main__":
    main()
