"""Running many requests' calls as one model call, without changing any answer.

A serving layer (deployments/stages.py, with Ray Serve's @serve.batch) collects
the calls of several requests; `generate_together` merges those that share their
sampling options into one `model.generate`, each image keeping the seed it would
have had alone; `run_in_fixed_rows` keeps the networks' batch shape fixed, so
the last bits of a row never depend on how many rows share its call.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


def image_seed(seed: int, index: int) -> int:
    """Image i of a request seeded s is the only image of a request seeded s + i,
    so any candidate can be made again alone from the seed it reports."""
    return seed + index


def run_in_fixed_rows(function: Callable, rows: int, *tensors: torch.Tensor):
    """function(*tensors), computed `rows` rows at a time, the last chunk padded
    by repeating its last row; the output rows of the padding are dropped.

    CPU (oneDNN, MKL) and GPU kernels choose their algorithm, and so their
    rounding, by batch size: on this project's CPU the same image came out of
    the diffusion UNet with other low bits at batch 1, at 2-3, at 4-12 and at
    16+. With every call of one shape, a row's numbers depend only on that row
    (measured byte-identical at any position, beside any other rows).
    """
    count = tensors[0].shape[0]
    outputs = []
    for start in range(0, count, rows):
        chunk = [tensor[start : start + rows] for tensor in tensors]
        real = chunk[0].shape[0]
        if real < rows:
            chunk = [torch.cat([part, part[-1:].expand(rows - real, *part.shape[1:])]) for part in chunk]
        output = function(*chunk)
        outputs.append(tuple(o[:real] for o in output) if isinstance(output, tuple) else output[:real])
    if isinstance(outputs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outputs))
    return torch.cat(outputs)


@dataclass(frozen=True)
class GenerateCall:
    """One request's `generate(prompts, num_images=, seed=, **sampling)`."""

    prompts: list[str]
    num_images: int = 1
    seed: int = 0
    sampling: dict[str, Any] = field(default_factory=dict)  # steps, guidance, negative prompt...

    @classmethod
    def of(cls, prompts: list[str], num_images: int = 1, seed: int = 0, **sampling: Any) -> GenerateCall:
        return cls(list(prompts), num_images, seed, sampling)

    @property
    def image_count(self) -> int:
        return len(self.prompts) * self.num_images

    def expanded(self) -> tuple[list[str], list[int]]:
        """(prompt, seed) of each image, prompt-major, as model.generate orders them."""
        prompts = [p for p in self.prompts for _ in range(self.num_images)]
        return prompts, [image_seed(self.seed, i) for i in range(len(prompts))]


def generate_together(model: Any, calls: list[GenerateCall]) -> list[list[Any]]:
    """Each call's images, as model.generate would make them for that call alone.

    Calls with the same sampling options become one model call with per-image
    seeds; a model whose generate takes no `seeds` runs each call on its own.
    """
    if "seeds" not in inspect.signature(model.generate).parameters:
        return [model.generate(c.prompts, num_images=c.num_images, seed=c.seed, **c.sampling) for c in calls]
    answers: list[list[Any] | None] = [None] * len(calls)
    groups: dict[str, list[int]] = {}
    for index, call in enumerate(calls):
        groups.setdefault(repr(sorted(call.sampling.items())), []).append(index)
    for indices in groups.values():
        prompts, seeds = [], []
        for index in indices:
            call_prompts, call_seeds = calls[index].expanded()
            prompts += call_prompts
            seeds += call_seeds
        images = model.generate(prompts, num_images=1, seeds=seeds, **calls[indices[0]].sampling)
        start = 0
        for index in indices:
            answers[index] = images[start : start + calls[index].image_count]
            start += calls[index].image_count
    return answers
