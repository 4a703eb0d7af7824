"""Candidates the embedded generators draw for train-split prompts, each judged by the oracle.

The ranker's hardest choices are between candidates of one prompt that a generator
drew: a near miss (a rounded triangle, a square a few pixels too big) beside an
accepted image. Rendered negatives only approximate those near misses; these are
the real ones, so a ranker can learn the choice it is asked to make, as a reward
model learns from judged samples of the models it scores. Only train-split
prompts are drawn: held-out compositions stay unseen by the ranker.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dalleflow.shapes.evaluate import distinct_scenes, drawn_in_batches
from dalleflow.shapes.oracle import judge

Generate = Callable[[list[str], int, int], list]  # (captions, num_images, seed) -> images, caption-major


@dataclasses.dataclass
class JudgedCandidates:
    captions: list[str]
    images: np.ndarray  # [candidates, height, width, 3] uint8
    prompt: np.ndarray  # [candidates]: the index in captions of the prompt each was drawn for
    accepted: np.ndarray  # [candidates] bool: the oracle's verdict for its prompt
    generator: np.ndarray  # [candidates]: the index in generators of the one that drew it
    generators: list[str]

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, captions=np.array(self.captions), images=self.images, prompt=self.prompt,
                            accepted=self.accepted, generator=self.generator, generators=np.array(self.generators))  # fmt: skip

    @classmethod
    def load(cls, path: str | Path) -> JudgedCandidates:
        with np.load(path) as saved:
            return cls(list(saved["captions"]), saved["images"], saved["prompt"], saved["accepted"],
                       saved["generator"], list(saved["generators"]))  # fmt: skip

    def preference_pairs(self) -> np.ndarray:
        """[pairs, 2]: (accepted, rejected) candidate indices of one prompt, every such pair."""
        pairs = []
        for prompt in range(len(self.captions)):
            own = np.nonzero(self.prompt == prompt)[0]
            accepted, rejected = own[self.accepted[own]], own[~self.accepted[own]]
            pairs += [(a, r) for a in accepted for r in rejected]
        return np.array(pairs, dtype=np.int64).reshape(-1, 2)

    def summary(self) -> str:
        pairs = self.preference_pairs()
        per_generator = ", ".join(
            f"{name} {self.accepted[self.generator == index].mean():.1%} accepted"
            for index, name in enumerate(self.generators))  # fmt: skip
        return (f"{len(self.captions)} prompts, {len(self.images)} candidates ({per_generator}), "
                f"{len(pairs)} accepted-over-rejected pairs")  # fmt: skip


def judge_candidates(generators: dict[str, Generate], prompts: int, num_images: int, seed: int, batch: int = 8,
                     earlier: JudgedCandidates | None = None) -> JudgedCandidates:  # fmt: skip
    """num_images candidates of each generator for `prompts` distinct train-split captions drawn with `seed`.

    A draw of more prompts begins with a draw of fewer (the captions come in the same order and each
    batch of prompts has seeds of its own), so `earlier`, a draw with the same settings, is kept up to
    its last whole batch and only the rest is drawn: a stopped draw resumes, a finished one grows."""
    captions = [scene.caption for scene in distinct_scenes("train", prompts, seed=seed)]
    kept, images, prompt, accepted, generator = 0, [], [], [], []
    if earlier is not None:
        kept = min(len(earlier.captions), prompts) // batch * batch
        if earlier.generators != list(generators) or earlier.captions[:kept] != captions[:kept] or \
                len(earlier.images) != len(earlier.captions) * num_images * len(generators):  # fmt: skip
            raise ValueError("the earlier draw was made with other generators, prompts or num_images")
        rows = earlier.prompt < kept
        images, prompt, accepted, generator = (list(values[rows]) for values in
                                               (earlier.images, earlier.prompt, earlier.accepted, earlier.generator))  # fmt: skip
    for start, chunk, drawn_by in drawn_in_batches(generators, captions, num_images, seed, batch, first=kept):
        for generator_index, drawn in enumerate(drawn_by.values()):
            for row, image in enumerate(drawn):
                caption_index = start + row // num_images
                images.append(np.asarray(image.convert("RGB")))
                prompt.append(caption_index)
                accepted.append(judge(image, captions[caption_index]).accepted)
                generator.append(generator_index)
    return JudgedCandidates(captions, np.stack(images), np.array(prompt), np.array(accepted, dtype=bool),
                            np.array(generator), list(generators))  # fmt: skip


def embedded_generator_specs(names: list[str] | None = None) -> dict:
    """The model specs of the embedded default's generators (the service's default config), or of those
    of them named; ValueError for a name it has not."""
    from dalleflow.deployments.app import AppConfig

    specs = AppConfig().generators
    unknown = sorted(set(names or []) - set(specs))
    if unknown:
        raise ValueError(f"no embedded generator named {', '.join(unknown)}; there are {', '.join(specs)}")
    return {name: spec for name, spec in specs.items() if names is None or name in names}


def embedded_generators(names: list[str] | None = None) -> dict[str, Generate]:
    """The embedded default's generators, or those of them named, sampled with their own defaults as the
    service does."""
    from dalleflow.models.contract import Sampling, expand
    from dalleflow.models.factory import create_model

    def sampler(model) -> Generate:
        return lambda captions, num_images, seed: model.generate(*expand(captions, num_images, seed), Sampling())

    return {name: sampler(create_model(spec)) for name, spec in embedded_generator_specs(names).items()}
