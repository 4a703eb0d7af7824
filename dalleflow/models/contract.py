"""The one contract every model family implements, whatever it is built on.

A family plays one or more roles:

- TextToImage: `generate(prompts, seeds, sampling, callback)`, one image per row;
- ImageToImage: `refine(images, prompts, seeds, skip_rate, sampling, callback)`,
  one variation per row;
- Ranker: `score_together(calls)`, `embed_text(prompt)`;
- Upscaler: `upscale(image)`.

Rows, not requests: a serving layer hands a model the rows of many requests at
once (dalleflow/service/batches.py), each row with its own seed. A family keeps
its networks at one batch shape (`images_per_call`, padded), so the bytes of a
row's image depend on its prompt, seed and sampling only, never on what else
shares the call. The conformance suite (tests/models/test_contract.py) proves it
for every family on tiny random checkpoints.

Sampling says how: steps, guidance, negative prompt. A field left None takes the
model's own default, which comes from one place: the checkpoint folder's
`generation_config.json` when it has one, else the family's (SamplingDefaults).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from PIL import Image

GENERATION_CONFIG = "generation_config.json"
# A family whose safety checker replaced an image (Stable Diffusion's blacks it out) says so in
# the image's info under this key, so the answer tells the user why, never a silent black square.
NSFW_FLAG = "nsfw_content_detected"

# After each step: (step_index, step_count, previews). `previews` makes, when
# called, one image per row of the call showing what it looks like so far (or is
# None where the family has none): a thunk, because a preview costs a decode
# that only a streamed request wants. Returning True asks the loop to stop
# between two steps (diffusers' interrupt flag); the call then raises Interrupted.
Previews = Callable[[], list[Image.Image]]
StepCallback = Callable[[int, int, Previews | None], bool | None]


class Interrupted(Exception):
    """The step callback asked to stop; no images were finished."""


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How to sample, as diffusers names it. None: the model's own default."""

    num_inference_steps: int | None = None  # denoising steps (ignored by autoregressive families)
    guidance_scale: float | None = None  # classifier-free guidance; 1 turns it off
    negative_prompt: str | None = None  # what guidance steers away from ("" or None: the empty prompt)
    height: int | None = None  # pixels; None: the model's own size (SizeLimits says what else it makes)
    width: int | None = None

    def __post_init__(self):
        if self.num_inference_steps is not None and (
            not isinstance(self.num_inference_steps, int) or self.num_inference_steps < 1
        ):
            raise ValueError(f"num_inference_steps must be an integer of at least 1, got {self.num_inference_steps!r}")
        if self.guidance_scale is not None and not self.guidance_scale >= 0:
            raise ValueError(f"guidance_scale must be at least 0, got {self.guidance_scale!r}")
        if self.negative_prompt is not None and not isinstance(self.negative_prompt, str):
            raise ValueError(f"negative_prompt must be a string, got {type(self.negative_prompt).__name__}")
        for name in ("height", "width"):
            side = getattr(self, name)
            if side is not None and (not isinstance(side, int) or side < 1):
                raise ValueError(f"{name} must be a positive integer, got {side!r}")


@dataclasses.dataclass(frozen=True)
class SamplingDefaults:
    """A model's defaults for the Sampling fields a request leaves None."""

    num_inference_steps: int | None  # None for a family without steps (DALL·E)
    guidance_scale: float

    @classmethod
    def of_checkpoint(cls, folder: str | Path | None, family: SamplingDefaults) -> SamplingDefaults:
        """The checkpoint's generation_config.json where the folder has one, else the family's."""
        saved = Path(folder) / GENERATION_CONFIG if folder is not None else None
        values = json.loads(saved.read_text()) if saved is not None and saved.is_file() else {}
        return cls(
            num_inference_steps=values.get("num_inference_steps", family.num_inference_steps),
            guidance_scale=float(values.get("guidance_scale", family.guidance_scale)),
        )

    def resolve(self, sampling: Sampling | None) -> Sampling:
        """sampling with every None taken from these defaults (negative_prompt stays "" at most)."""
        sampling = sampling or Sampling()
        return Sampling(
            num_inference_steps=sampling.num_inference_steps or self.num_inference_steps,
            guidance_scale=self.guidance_scale if sampling.guidance_scale is None else sampling.guidance_scale,
            negative_prompt=sampling.negative_prompt or "",
            height=sampling.height,
            width=sampling.width,
        )


def image_seed(seed: int, index: int) -> int:
    """Image i of a request seeded s is the only image of a request seeded s + i,
    so any candidate can be made again alone from the seed it reports."""
    return seed + index


def expand(prompts: Sequence[str], num_images: int = 1, seed: int = 0) -> tuple[list[str], list[int]]:
    """(prompt, seed) of each row for num_images per prompt, prompt-major: what a
    request of prompts, num_images and seed asks a model for."""
    if num_images < 1:
        raise ValueError(f"num_images must be at least 1, got {num_images}")
    rows = [prompt for prompt in prompts for _ in range(num_images)]
    return rows, [image_seed(seed, i) for i in range(len(rows))]


def check_rows(prompts: Sequence[str], seeds: Sequence[int], images: Sequence[Image.Image] | None = None) -> None:
    """The errors every family raises for rows that do not line up."""
    if isinstance(prompts, str):
        raise ValueError("prompts must be a list of strings, one per image, not a string")
    if len(prompts) != len(seeds):
        raise ValueError(f"seeds: {len(seeds)} given for {len(prompts)} prompts (one per image)")
    if not prompts:
        raise ValueError("prompts: at least one row is needed")
    if not all(isinstance(seed, int) and seed >= 0 for seed in seeds):
        raise ValueError(f"seeds must be integers of at least 0, got {list(seeds)}")
    if images is not None and len(images) != len(prompts):
        raise ValueError(f"images: {len(images)} given for {len(prompts)} prompts (one per variation)")


def plan_refine(
    defaults: SamplingDefaults,
    images: Sequence[Image.Image],
    prompts: Sequence[str],
    seeds: Sequence[int],
    skip_rate: float,
    sampling: Sampling | None,
) -> tuple[Sampling, int]:
    """What every family's refine checks and runs: (the sampling with its defaults, the
    steps kept). skip_rate is the share of the schedule skipped (dalle-flow's meaning;
    diffusers' strength = 1 - skip_rate): all steps kept is generate's fresh sample, none
    keeps the image."""
    check_rows(prompts, seeds, images)
    if not 0.0 <= skip_rate <= 1.0:
        raise ValueError(f"skip_rate must be within [0, 1], got {skip_rate}")
    resolved = defaults.resolve(sampling)
    steps = resolved.num_inference_steps
    return resolved, steps - min(int(round(skip_rate * steps)), steps)


@dataclasses.dataclass(frozen=True)
class SizeLimits:
    """The image sizes a model makes: its own, and where it makes others (multiple > 0),
    every side a multiple of `multiple` from `multiple` to `largest`."""

    own: tuple[int, int] | None = None  # (height, width); None where the model says nothing of it
    multiple: int = 0  # 0: its own size only
    largest: int = 0

    def refusal(self, height: int | None, width: int | None) -> tuple[str, str] | None:
        """(the side, why) for a size the model cannot make; None when it can."""
        for index, (name, side) in enumerate((("height", height), ("width", width))):
            if side is None:
                continue
            if not self.multiple:
                if self.own is None or side != self.own[index]:
                    own = f" ({self.own[0]}x{self.own[1]})" if self.own else ""
                    return name, f"{side} px: it makes images of its own size only{own}"
            elif side < self.multiple or side > self.largest or side % self.multiple:
                return name, f"{side} px is outside its limits: a multiple of {self.multiple} from {self.multiple} to {self.largest}"
        return None

    def size_of(self, sampling: Sampling | None) -> tuple[int, int]:
        """(height, width) a call with this sampling makes; ValueError naming a side it cannot."""
        sampling = sampling or Sampling()
        refused = self.refusal(sampling.height, sampling.width)
        if refused:
            raise ValueError(f"{refused[0]}: {refused[1]}")
        if self.own is None:
            raise ValueError("this model's own size is not known")
        return sampling.height or self.own[0], sampling.width or self.own[1]


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What of a request an image model honours, so a serving layer can refuse the rest
    (a 4xx naming the field) before anything runs, rather than ignore it. A family
    without a `capabilities` attribute honours all of it but sizes: its own only."""

    negative_prompt: bool = True
    progress: bool = True  # takes a step callback (progress and cancel between steps)
    refine: bool = True  # an ImageToImage that can run (diffusers has a twin for the pipeline)
    size: SizeLimits = SizeLimits()
    # The words its text encoder knows; None: any text (a BPE or T5 tokenizer reads every word,
    # if not well). A word-level model maps the others to one unknown token, so a serving layer
    # warns of them rather than let the images silently ignore them.
    vocabulary: frozenset[str] | None = None

    def refusal(self, sampling: Sampling) -> tuple[str, str] | None:
        """(the field of sampling this model cannot honour, why), or None."""
        if sampling.negative_prompt and not self.negative_prompt:
            return "negative_prompt", "it takes none as configured"
        return self.size.refusal(sampling.height, sampling.width)


def unknown_words(text: str, vocabulary: frozenset[str] | None) -> list[str]:
    """The words of text outside vocabulary, in order, once each; none for an open vocabulary.
    Words are split as the embedded tokenizers split them (lower case, runs of letters and
    digits); punctuation is not a word."""
    if vocabulary is None:
        return []
    return [word for word in dict.fromkeys(re.findall(r"\w+", text.lower())) if word not in vocabulary]


def capabilities_of(model: object) -> Capabilities:
    return getattr(model, "capabilities", None) or Capabilities()


@runtime_checkable
class TextToImage(Protocol):
    defaults: SamplingDefaults
    images_per_call: int  # the fixed batch shape of its networks, in images

    def generate(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        sampling: Sampling | None = None,
        callback: StepCallback | None = None,
    ) -> list[Image.Image]:
        """One image per (prompts[i], seeds[i])."""


@runtime_checkable
class ImageToImage(Protocol):
    defaults: SamplingDefaults
    images_per_call: int

    def refine(
        self,
        images: Sequence[Image.Image],
        prompts: Sequence[str],
        seeds: Sequence[int],
        skip_rate: float = 0.5,
        sampling: Sampling | None = None,
        callback: StepCallback | None = None,
    ) -> list[Image.Image]:
        """One variation of images[i] per row. skip_rate is the share of the schedule
        skipped: 1 keeps the image as it is, 0 is a fresh sample (what generate makes
        from the same prompt and seed), between them SDEdit from that point."""


@runtime_checkable
class Ranker(Protocol):
    def score_together(self, calls: list[tuple[str, list[Image.Image]]]) -> list[list[float]]:
        """For each (prompt, images): a score per image, higher is better."""

    def embed_text(self, prompt: str) -> list[float]: ...


@runtime_checkable
class Upscaler(Protocol):
    scale: int

    def upscale(self, image: Image.Image) -> Image.Image: ...


ROLES = {"generator": TextToImage, "refiner": ImageToImage, "ranker": Ranker, "upscaler": Upscaler}


def check_role(model: object, role: str) -> None:
    """A clear error when a configured model cannot play the role the config gives it."""
    if not isinstance(model, ROLES[role]):
        raise TypeError(f"{type(model).__name__} cannot be a {role}: it does not implement {ROLES[role].__name__}")
