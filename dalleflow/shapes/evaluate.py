"""Quality measures of models against the oracle, shared by training and bench/.

Functions take plain callables, so this module knows no model code:
- generate(captions, num_images, seed) -> images, caption-major
- score(caption, images) -> one score per image
- similarity(images, captions) -> [images, captions] matrix
- refine(image, caption, seed) -> images
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from PIL import Image

from dalleflow.shapes.oracle import judge
from dalleflow.shapes.render import render_scene
from dalleflow.shapes.scene import CaptionSpec, Scene, SceneSampler, Split, caption_of, parse_caption


def distinct_scenes(split: Split, count: int, seed: int) -> list[Scene]:
    """`count` scenes of the split whose captions all differ: at most one per caption the split has."""
    sampler, scenes, seen = SceneSampler(split, seed=seed), [], set()
    if count > len(sampler.specs):  # each spec is one caption: asking for more would never end
        raise ValueError(f"the {split} split has {len(sampler.specs)} distinct captions, not {count}")
    while len(scenes) < count:
        scene = sampler.sample()
        if scene.caption not in seen:
            seen.add(scene.caption)
            scenes.append(scene)
    return scenes


def retrieval_top1(similarity: Callable, split: Split, count: int = 100, trials: int = 5, seed: int = 7) -> float:
    """Share of rendered images whose own caption ranks first among `count` distinct captions."""
    hits = 0
    for trial in range(trials):
        scenes = distinct_scenes(split, count, seed + trial)
        matrix = np.asarray(similarity([Image.fromarray(render_scene(s)) for s in scenes], [s.caption for s in scenes]))
        hits += int((matrix.argmax(axis=1) == np.arange(count)).sum())
    return hits / (count * trials)


def rearrangements(spec: CaptionSpec) -> list[CaptionSpec]:
    """The other captions of a two-object caption's colours and shapes: the pair in reverse order,
    or the two colours (or the two shapes) exchanged. One object has none."""
    if len(spec.objects) != 2:
        return []
    (c1, s1), (c2, s2) = spec.objects
    orders = (((c2, s2), (c1, s1)), ((c2, s1), (c1, s2)), ((c1, s2), (c2, s1)))
    return [dataclasses.replace(spec, objects=objects) for objects in dict.fromkeys(orders) if objects != spec.objects]


def accepted_for_a_rearrangement(image, caption: str) -> bool:
    return any(judge(image, caption_of(other)).accepted for other in rearrangements(parse_caption(caption)))


def is_misarranged(image, caption: str) -> bool:
    """Rejected for its caption but accepted for one of its rearrangements: the caption's colours and
    shapes drawn, bound to each other or placed against the words' order (a generator whose text
    encoder reads a bag of words draws these)."""
    return not judge(image, caption).accepted and accepted_for_a_rearrangement(image, caption)


def drawn_in_batches(generators: dict[str, Callable], captions: list[str], num_images: int, seed: int, batch: int,
                     first: int = 0):  # fmt: skip
    """(index of its first caption, captions, {name: their candidates}) for each `batch` of captions from
    index `first` on. A batch starting at caption i is drawn with seed + i, so a caption's candidates are
    the same whatever the draw's length or where it began (at a batch boundary)."""
    for start in range(first, len(captions), batch):
        chunk = captions[start : start + batch]
        yield start, chunk, {name: generate(chunk, num_images, seed + start) for name, generate in generators.items()}


@dataclasses.dataclass
class GenerationQuality:
    prompts: int
    top_ranked_accepted: float  # the ranker's pick passes the oracle
    mean_accepted: float  # any one candidate passes (what an unranked pick gets)
    best_possible: float  # at least one candidate passes (a perfect ranker)
    mean_misarranged: float  # any one candidate shows the caption's objects in another arrangement
    accepted_picks: list[tuple[str, Image.Image]]  # (caption, top image) where accepted
    # generator -> share of prompts whose top-ranked candidate it drew and the oracle refuses
    # (in the joint pool: which generator the ranker's wrong picks come from)
    rejected_picks_from: dict[str, float] = dataclasses.field(default_factory=dict)


def generation_quality(
    generators: dict[str, Callable], score: Callable, captions: list[str], num_images: int, seed: int = 0, batch: int = 8
) -> dict[str, GenerationQuality]:
    """Each generator's quality with its own num_images candidates ranked alone and,
    with several generators, "joint": the whole pool ranked together (what the
    service answers). generators: name -> generate(captions, num_images, seed)."""
    names = list(generators) + (["joint"] if len(generators) > 1 else [])
    tallies = {name: ([], [], [], [], [], []) for name in names}  # top, mean, best, misarranged, picks, rejected

    def tally(name: str, caption: str, candidates: list, verdicts: list[bool], misarranged: list[bool],
              sources: list[str]) -> None:  # fmt: skip
        top, mean, best, wrongly_arranged, picks, rejected = tallies[name]
        pick = int(np.argmax(score(caption, candidates)))
        top.append(verdicts[pick])
        mean.append(np.mean(verdicts))
        best.append(any(verdicts))
        wrongly_arranged.append(np.mean(misarranged))
        if verdicts[pick]:
            picks.append((caption, candidates[pick]))
        else:
            rejected.append(sources[pick])

    for _, chunk, images in drawn_in_batches(generators, captions, num_images, seed, batch):
        for index, caption in enumerate(chunk):
            pool, pool_verdicts, pool_misarranged, pool_sources = [], [], [], []
            for name in generators:
                candidates = images[name][index * num_images : (index + 1) * num_images]
                verdicts = [judge(image, caption).accepted for image in candidates]
                # is_misarranged, with the caption's verdicts already at hand
                misarranged = [not accepted and accepted_for_a_rearrangement(image, caption)
                               for image, accepted in zip(candidates, verdicts)]
                sources = [name] * len(candidates)
                tally(name, caption, candidates, verdicts, misarranged, sources)
                pool += candidates
                pool_verdicts += verdicts
                pool_misarranged += misarranged
                pool_sources += sources
            if "joint" in tallies:
                tally("joint", caption, pool, pool_verdicts, pool_misarranged, pool_sources)
    return {
        name: GenerationQuality(len(captions), *(float(np.mean(values)) for values in (top, mean, best, misarranged)),
                                picks, {source: rejected.count(source) / len(captions) for source in generators})
        for name, (top, mean, best, misarranged, picks, rejected) in tallies.items()
    }


# A pixel "changes" when a channel moves by more than this (of 255): past the PNG rounding and
# the sampler's noise, a difference one can see side by side.
VISIBLE_CHANGE = 16


def refinement_quality(refine: Callable, picks: list[tuple[str, Image.Image]]) -> dict[str, float]:
    """Variations of accepted images: the share still accepted; mean |Δ| / 255 over every channel of
    every pixel; and the share of pixels some channel of which moved by more than VISIBLE_CHANGE."""
    kept, change, changed_pixels = [], [], []
    for index, (caption, image) in enumerate(picks):
        source = np.asarray(image.convert("RGB"), dtype=np.float32)
        for variation in refine(image, caption, index):
            kept.append(judge(variation, caption).accepted)
            difference = np.abs(np.asarray(variation.convert("RGB"), dtype=np.float32) - source)
            change.append(difference.mean() / 255)
            changed_pixels.append((difference.max(axis=-1) > VISIBLE_CHANGE).mean())
    return {"variations": len(kept), "still_accepted": float(np.mean(kept)), "mean_abs_change": float(np.mean(change)),
            f"pixels_changed_over_{VISIBLE_CHANGE}_of_255": float(np.mean(changed_pixels))}
