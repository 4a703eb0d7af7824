"""Train the shapes-world CLIP ranker (the embedded default).

    dalleflow train ranker --out runs/ranker --minutes 25

An open_clip model of the project's own config (dalleflow/models/ranker/configs/
shapes-clip.json) trained contrastively on the train split, with one hard
negative per image: the same caption with one field changed (colour, shape,
position or background). Without them CLIP learns colours and ignores shape
and place, which is exactly what ranking candidates needs to see.

--image-negatives also renders each negative caption, so a caption must choose
its own image over the image of its near miss: ranking is exactly that choice
(candidates of one prompt that differ in one object's colour, shape or place),
and text-side negatives alone never ask it. --noise adds pixel noise to the
training images, as generated candidates are not clean renders.
--size-negatives, --malformed-negatives and --between-negatives make some of
the negative images ones no caption says: an object of a wrong size, of no
shape of the world, or half-way between two shapes (what the DALL·E draws on
held-out compositions: a rounded triangle, a squarish circle).
--judged-prompts has the embedded generators draw candidates for that many
train-split prompts before training (cached in --out), judged by the oracle;
each step then also asks the model to score, for --judged-pairs of those
prompts, an accepted candidate over a rejected one of the same prompt (a
Bradley-Terry loss, weighted by --judged-weight): the near misses the ranker
meets in service, not renderings of them. --judged-generators draws from some
of the generators only: the one whose near misses the ranker picks.

The run checkpoints to --out every --checkpoint-minutes and resumes from it when
rerun; SIGTERM or SIGINT stops it at a step boundary with its checkpoint and
export written (while judged candidates are drawn: at the draw's next save). --init-from continues from a shipped folder, and the exported
training.json lists every phase (with its command) that made the weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import threading
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from scipy import ndimage

from dalleflow.models.ranker.clip import ClipRanker, create_untrained, model_config, save_local_dir
from dalleflow.shapes import SceneSampler, judge, render_scene, world
from dalleflow.shapes.render import object_mask
from dalleflow.shapes.evaluate import retrieval_top1
from dalleflow.shapes.scene import FIELDS, Scene, caption_of, change_one_field, specs_of_split
from dalleflow.train.checkpoint import load_checkpoint, save_checkpoint
from dalleflow.train.clock import TrainingClock, cosine_lr, run, start_torch_run
from dalleflow.train.judged_candidates import (JudgedCandidates, embedded_generator_specs, embedded_generators,
                                               judge_candidates)

CONFIG_NAME = "shapes-clip"
WARMUP_STEPS = 200
CURVE_FIELDS = "caption retrieval top-1 of 100 rendered images (2 trials per split) against training minutes in total"


def normalise(images: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (tensor - mean) / std


class Batches:
    """Scenes of the train split with one near-miss caption each and, on request, its rendering."""

    def __init__(self, seed: int, batch_size: int, image_negatives: bool, noise: float, size_negatives: float = 0.0,
                 malformed_negatives: float = 0.0, between_negatives: float = 0.0):
        self.sampler = SceneSampler("train", seed=seed)
        self.rng = random.Random(seed + 1)
        self.batch_size = batch_size
        self.image_negatives = image_negatives
        self.noise = noise
        self.size_negatives = size_negatives
        self.malformed_negatives = malformed_negatives
        self.between_negatives = between_negatives

    def next(self) -> Batch:
        scenes = [self.sampler.sample() for _ in range(self.batch_size)]
        negative_specs = [change_one_field(s.spec, self.rng.choice(FIELDS), self.rng, allow_held_out=False) for s in scenes]
        batch = Batch(self.pixels([render_scene(s) for s in scenes]), [s.caption for s in scenes],
                      negative_captions=[caption_of(spec) for spec in negative_specs])  # fmt: skip
        if self.image_negatives:
            negatives, batch.matched = [], []
            for scene, spec in zip(scenes, negative_specs):
                draw = self.rng.random()
                if draw < self.size_negatives:
                    negatives.append(render_scene(self._missized(scene)))
                    batch.matched.append(False)
                elif draw < self.size_negatives + self.malformed_negatives:
                    negatives.append(self._malformed(scene))
                    batch.matched.append(False)
                elif draw < self.size_negatives + self.malformed_negatives + self.between_negatives:
                    negatives.append(self._between(scene))
                    batch.matched.append(False)
                else:
                    negatives.append(render_scene(self.sampler.scene_for(spec)))
                    batch.matched.append(True)
            batch.negative_images = self.pixels(negatives)
        return batch

    def _missized(self, scene: Scene) -> Scene:
        """The scene with one object too small or too big for the world (no caption says such an image)."""
        side = scene.canvas_size
        index = self.rng.randrange(len(scene.objects))
        low, high = self.rng.choice([(0.12, 0.2), (0.56, 0.66)])
        size = round(self.rng.uniform(low, high) * side)
        obj = scene.objects[index]
        centre = [min(max(c, size / 2), side - size / 2) for c in (obj.centre_x, obj.centre_y)]
        objects = list(scene.objects)
        objects[index] = dataclasses.replace(obj, size=size, centre_x=centre[0], centre_y=centre[1])
        return dataclasses.replace(scene, objects=tuple(objects))

    def _malformed(self, scene: Scene) -> np.ndarray:
        """The scene with one object's outline none of the world's shapes: squashed, or hollow (a
        square or circle) or upside down (a triangle): what a generator draws when it half-knows a shape."""
        side = scene.canvas_size
        index = self.rng.randrange(len(scene.objects))
        obj = scene.objects[index]
        mask = object_mask(obj, side)
        # A hollow triangle still passes for one (a triangle's fill is low anyway): it is turned over instead.
        kind = self.rng.choice(["squashed", "upside down" if obj.shape == "triangle" else "hollow"])
        if kind == "squashed":
            factor = self.rng.uniform(1.6, 2.0)
            ys, xs = np.mgrid[0:side, 0:side] + 0.5
            # Squashed along one axis, about its centre: it stays on the canvas, its aspect 1.6-2.
            if self.rng.random() < 0.5:
                xs = (xs - obj.centre_x) * factor + obj.centre_x
            else:
                ys = (ys - obj.centre_y) * factor + obj.centre_y
            cols, rows = np.floor(xs).astype(int), np.floor(ys).astype(int)
            inside = (cols >= 0) & (cols < side) & (rows >= 0) & (rows < side)
            mask = mask[rows.clip(0, side - 1), cols.clip(0, side - 1)] & inside
        elif kind == "hollow":
            mask = mask & ~ndimage.binary_erosion(mask, iterations=self.rng.choice([1, 2]))
        else:
            rows = np.nonzero(mask.any(axis=1))[0]
            mask = mask.copy()
            mask[rows.min() : rows.max() + 1] = mask[rows.min() : rows.max() + 1][::-1]
        return with_outline(scene, index, mask)

    def _between(self, scene: Scene, tries: int = 8) -> np.ndarray:
        """The scene with one object's outline blended between its shape and another one's (a rounded
        triangle, a squarish circle, a square gone round): the near misses the DALL·E draws for a
        composition it never saw, which the shipped ranker picked over its accepted candidates for
        most of the prompts it got wrong (a phase trained with them picked no better: see the model card).
        A blend can still pass for its shape, so a draw counts only where the oracle refuses the image
        for its caption; after `tries` draws that all pass, a malformed object stands in."""
        side = scene.canvas_size
        for _ in range(tries):
            index = self.rng.randrange(len(scene.objects))
            obj = scene.objects[index]
            other = dataclasses.replace(obj, shape=self.rng.choice([s for s in world.SHAPES if s != obj.shape]))
            weight, blur = self.rng.uniform(0.3, 0.7), self.rng.uniform(0.5, 1.5)
            own, theirs = (ndimage.gaussian_filter(object_mask(o, side).astype(np.float32), blur) for o in (obj, other))
            image = with_outline(scene, index, (1 - weight) * own + weight * theirs > 0.5)
            if not judge(image, scene.spec).accepted:
                return image
        return self._malformed(scene)

    def pixels(self, rendered: list[np.ndarray]) -> torch.Tensor:
        tensor = normalise(np.stack(rendered))
        if self.noise > 0:
            # A noise level per image, from clean to --noise, so clean renders stay in the data.
            levels = torch.rand(len(rendered), 1, 1, 1) * self.noise
            tensor = tensor + levels * torch.randn_like(tensor) / torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
        return tensor

    def rng_state(self) -> list:
        return [self.sampler.rng.getstate(), self.rng.getstate()]

    def set_rng_state(self, states: list) -> None:
        for rng, state in zip((self.sampler.rng, self.rng), states):
            rng.setstate(state)


def with_outline(scene: Scene, index: int, mask: np.ndarray) -> np.ndarray:
    """The scene rendered with object `index` drawn as `mask` in its colour, over the others."""
    image = render_scene(dataclasses.replace(scene, objects=scene.objects[:index] + scene.objects[index + 1 :]))
    image[mask] = world.COLOURS[scene.objects[index].colour]
    return image


@dataclasses.dataclass
class Batch:
    images: torch.Tensor
    captions: list[str]
    negative_captions: list[str]  # each image's near-miss caption
    negative_images: torch.Tensor | None = None  # each caption's near-miss image
    matched: list[bool] | None = None  # whether negative image i is what negative caption i says


def contrastive_loss(model, tokenizer, batch: Batch) -> torch.Tensor:
    """CLIP's symmetric loss, each image also choosing against its near-miss caption and, with
    negative images, each caption against the image of its near miss. A negative image with its
    own caption is a pair of its own; one that no caption says (a mis-sized object) only ever
    loses, as does the caption beside it."""
    count = len(batch.captions)
    images, matched = batch.images, [True] * count
    if batch.negative_images is not None:
        images = torch.cat([images, batch.negative_images])
        matched += batch.matched
    image_features = F.normalize(model.encode_image(images), dim=-1)
    text_features = F.normalize(model.encode_text(tokenizer(batch.captions + batch.negative_captions)), dim=-1)
    logits = model.logit_scale.exp() * image_features @ text_features.T
    rows = torch.tensor([i for i, pair in enumerate(matched) if pair])  # pairs: image i with caption i
    image_to_text = F.cross_entropy(logits[rows], rows)
    text_to_image = F.cross_entropy(logits[:, rows].T, rows)
    return (image_to_text + text_to_image) / 2


def preference_loss(model, tokenizer, judged: JudgedCandidates, pairs: np.ndarray, pixels) -> torch.Tensor:
    """-log P(accepted over rejected) for (accepted, rejected) candidate pairs of one prompt each, by
    the model's scores (its logit scale times the cosine): the choice ranking makes."""
    count = len(pairs)
    image_features = F.normalize(model.encode_image(pixels(list(judged.images[pairs.T.reshape(-1)]))), dim=-1)
    text_features = F.normalize(model.encode_text(tokenizer([judged.captions[i] for i in judged.prompt[pairs[:, 0]]])), dim=-1)
    scores = model.logit_scale.exp() * (image_features.view(2, count, -1) * text_features).sum(-1)
    return F.softplus(scores[1] - scores[0]).mean()


def load_or_judge(out: Path, prompts: int, num_images: int, seed: int, stop: threading.Event,
                  generator_names: list[str] | None = None, save_every: int = 64) -> JudgedCandidates | None:  # fmt: skip
    """The run's judged candidates, cached beside its checkpoint every `save_every` prompts: a resumed
    run reuses them, a stopped draw resumes, and a run asking for more prompts draws only the rest.
    None when a signal stopped the draw (at a save, so the cache is whole)."""
    cache = out / "judged-candidates.npz"
    judged = JudgedCandidates.load(cache) if cache.exists() else None
    if judged is None or len(judged.captions) != prompts:
        print(f"drawing {num_images} candidates per generator for {prompts} train-split prompts (seed {seed})"
              + (f", {len(judged.captions)} drawn before" if judged is not None else ""), flush=True)  # fmt: skip
        generators = embedded_generators(generator_names)
        while judged is None or len(judged.captions) != prompts:
            have = 0 if judged is None else len(judged.captions)
            target = min(have // save_every * save_every + save_every, prompts) if have < prompts else prompts
            judged = judge_candidates(generators, target, num_images, seed, earlier=judged)
            partial = out / "judged-candidates.partial.npz"  # renamed when written: a kill never leaves half a cache
            judged.save(partial)
            partial.replace(cache)
            print(f"judged {len(judged.captions)}/{prompts} prompts", flush=True)
            if stop.is_set():
                print("stopped by a signal while drawing: the draw is cached, rerun the command to resume", flush=True)
                return None
    print(f"judged candidates: {judged.summary()}", flush=True)
    return judged


def evaluate(model, tokenizer) -> dict[str, float]:
    model.eval()
    ranker = ClipRanker(model, open_clip.image_transform(model.visual.image_size, is_train=False), tokenizer, CONFIG_NAME)
    point = {"seen": retrieval_top1(ranker.similarity, "train", trials=2),
             "held_out": retrieval_top1(ranker.similarity, "held_out", trials=2)}
    model.train()
    return point


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/ranker", help="checkpoint folder (resumed when present)")
    parser.add_argument("--minutes", type=float, default=20.0, help="stop after this much training time in total")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint-minutes", type=float, default=10.0)
    parser.add_argument("--image-negatives", action="store_true", help="render each near-miss caption as a negative image")
    parser.add_argument("--size-negatives", type=float, default=0.0,
                        help="with --image-negatives, the share of them that are the image with one object mis-sized")
    parser.add_argument("--malformed-negatives", type=float, default=0.0,
                        help="with --image-negatives, the share of them with one object's outline none of the world's shapes")
    parser.add_argument("--between-negatives", type=float, default=0.0,
                        help="with --image-negatives, the share of them with one object's outline blended half-way "
                             "to another shape (kept where the oracle refuses it)")
    parser.add_argument("--judged-prompts", type=int, default=0,
                        help="train-split prompts the embedded generators draw judged candidates for (0: none)")
    parser.add_argument("--judged-images", type=int, default=4, help="candidates per prompt per generator")
    parser.add_argument("--judged-generators", nargs="+", default=None, metavar="NAME",
                        help="which of the embedded default's generators draw them (default: all), e.g. the one "
                             "whose near misses the ranker picks")
    parser.add_argument("--judged-seed", type=int, default=100, help="draws the judged prompts and their candidates")
    parser.add_argument("--judged-pairs", type=int, default=32, help="accepted-over-rejected pairs per step")
    parser.add_argument("--judged-weight", type=float, default=1.0, help="the preference loss's weight beside the contrastive one")
    parser.add_argument("--noise", type=float, default=0.0, help="largest std of pixel noise added to training images (0-1 scale)")
    parser.add_argument("--init-from", default=None, help="start from a local-dir folder (e.g. the shipped weights)")
    parser.add_argument("--export", default=None, help="write the model as a local-dir folder here")
    parser.add_argument("--export-dtype", choices=["float16", "float32"], default="float16",
                        help="the exported weights' precision (the shipped ones are float16: half the bytes)")
    parser.add_argument("--note", default=None, help="kept with this phase in the exported training.json")
    args = parser.parse_args(argv)
    train_captions = len(specs_of_split("train"))
    if args.judged_prompts > train_captions:
        parser.error(f"--judged-prompts: at most {train_captions}, the train split's distinct captions")
    try:
        embedded_generator_specs(args.judged_generators)  # a misspelt name is refused before the run starts
    except ValueError as error:
        parser.error(f"--judged-generators: {error}")
    run("ranker", args, argv, train)


def train(args: argparse.Namespace, stop: threading.Event) -> None:
    out = start_torch_run(args)
    model = create_untrained(CONFIG_NAME)
    tokenizer = open_clip.get_tokenizer(CONFIG_NAME)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    batches = Batches(args.seed, args.batch_size, args.image_negatives, args.noise, args.size_negatives,
                      args.malformed_negatives, args.between_negatives)
    judged = load_or_judge(out, args.judged_prompts, args.judged_images, args.judged_seed, stop,
                           args.judged_generators) if args.judged_prompts else None  # fmt: skip
    if args.judged_prompts and judged is None:
        return
    pairs = judged.preference_pairs() if judged is not None else None
    state = {"step": 0, "minutes": 0.0, "curve": []}
    earlier_phases: list[dict] = []
    if args.init_from:
        shipped = ClipRanker.from_pretrained(f"local-dir:{args.init_from}").model
        model.load_state_dict(shipped.state_dict())
        earlier_phases = _phases_of(Path(args.init_from) / "training.json")
    phase_start = {"steps": sum(p["stopped_at"]["steps"] for p in earlier_phases),
                   "minutes": sum(p["stopped_at"]["minutes"] for p in earlier_phases)}

    saved = load_checkpoint(out)
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        torch.set_rng_state(saved["torch_rng"])
        batches.set_rng_state(saved["data_rng"])
        print(f"resumed at step {state['step']} ({state['minutes']:.1f} min)", flush=True)

    def save() -> None:
        save_checkpoint(out, {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state,
                              "torch_rng": torch.get_rng_state(), "data_rng": batches.rng_state()})

    model.train()
    clock = TrainingClock(state, args.checkpoint_minutes)
    while state["minutes"] < args.minutes and not stop.is_set():
        loss = contrastive_loss(model, tokenizer, batches.next())
        if pairs is not None and len(pairs):
            chosen = pairs[batches.rng.sample(range(len(pairs)), min(args.judged_pairs, len(pairs)))]
            loss = loss + args.judged_weight * preference_loss(model, tokenizer, judged, chosen, batches.pixels)
        lr = cosine_lr(args.lr, state["step"], WARMUP_STEPS, state["minutes"] / args.minutes)  # over the time budget
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100))
        state["step"] += 1
        clock.tick()
        if state["step"] % 100 == 0:
            print(f"step {state['step']} min {state['minutes']:.1f} loss {loss.item():.4f}", flush=True)
        clock.checkpoint_if_due(lambda: evaluate(model, tokenizer), save)

    if stop.is_set():
        print(f"stopped by a signal at step {state['step']}: checkpoint saved, rerun the command to resume", flush=True)
    save()
    model.eval()
    save_local_dir(model, model_config(CONFIG_NAME), out / "model")
    ranker = ClipRanker.from_pretrained(f"local-dir:{out / 'model'}")
    final = {"seen": retrieval_top1(ranker.similarity, "train"), "held_out": retrieval_top1(ranker.similarity, "held_out")}
    print(f"final retrieval top-1 of 100: {final}", flush=True)
    phase = {"command": args.command, "stopped_at": {"steps": state["step"], "minutes": round(state["minutes"], 1)},
             "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
             "image_negatives": args.image_negatives, "size_negatives": args.size_negatives,
             "malformed_negatives": args.malformed_negatives, "between_negatives": args.between_negatives,
             "noise": args.noise, "export_dtype": args.export_dtype,
             **({"judged_candidates": {"prompts": args.judged_prompts, "images_per_generator": args.judged_images,
                                       "seed": args.judged_seed, "pairs_per_step": args.judged_pairs,
                                       "weight": args.judged_weight, "drawn": judged.summary()}} if judged else {}),
             "curve": state["curve"]}
    if args.note:
        phase["note"] = args.note
    phases = [*earlier_phases, phase]
    record = {"steps": phase_start["steps"] + state["step"], "minutes": round(phase_start["minutes"] + state["minutes"], 1),
              "phases": phases, "curve_fields": CURVE_FIELDS, "retrieval_top1_of_100": final}
    (out / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    if args.export:
        save_local_dir(model, model_config(CONFIG_NAME), args.export, dtype=getattr(torch, args.export_dtype))
        (Path(args.export) / "training.json").write_text(json.dumps(record, indent=1) + "\n")


def _phases_of(record_file: Path) -> list[dict]:
    """The phases that made a shipped folder; a record from before phases were kept is one phase."""
    if not record_file.exists():
        return []
    record = json.loads(record_file.read_text())
    if "phases" in record:
        return record["phases"]
    return [{"stopped_at": {"steps": record["steps"], "minutes": record["minutes"]},
             **{key: record[key] for key in ("batch_size", "lr", "seed", "curve") if key in record}}]


if __name__ == "__main__":
    main()
