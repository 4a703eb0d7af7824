"""The shapes world told to a user: the words its models know, the sentences they were
trained on, prompts to try, and where to go for models that draw anything.

GET /v1/models answers this (dalleflow_client.schemas.PromptWorld) when a serving model
knows this world's words only; the web page shows it.
"""

from __future__ import annotations

import random

from dalleflow.shapes import world
from dalleflow.shapes.scene import caption_of, specs_of_split

NAME = "shapes"
SUMMARY = (
    "The embedded models draw one small generated world: one or two coloured shapes on a plain "
    f"background, {world.CANVAS_SIZE}x{world.CANVAS_SIZE} px. They were trained on its captions only, "
    "so a prompt in the caption forms below, with these words, is what they can draw; other words are "
    "unknown to them and the answer warns of them."
)
CAPTION_FORMS = (
    "a {colour} {shape} on the {position} on a {background} background",
    *(f"a {{colour}} {{shape}} {relation} a {{colour}} {{shape}} on a {{background}} background"
      for relation in world.RELATIONS),
)  # fmt: skip
WORDS: dict[str, list[str]] = {
    "colours": list(world.COLOURS),
    "shapes": list(world.SHAPES),
    "positions": list(world.POSITIONS),
    "relations": list(world.RELATIONS),
    "backgrounds": list(world.BACKGROUNDS),
}
REAL_CHECKPOINTS = (
    "To draw anything else, serve real checkpoints: in a serve config (`dalleflow serve --config`) give `generators` a `diffusers` model "
    "(Stable Diffusion, SDXL, SD3, FLUX.1: a local folder or a hub id) or DALL·E Mega, and `ranker` an open_clip "
    "model such as ViT-L-14@openai. The README's section \"Configure\" shows how."
)
EXAMPLE_COUNT = 6


def known_words() -> frozenset[str]:
    """Every word a caption of the world can use."""
    slots = {word for words in WORDS.values() for word in words}
    fixed = {word for form in CAPTION_FORMS for word in form.split() if not word.startswith("{")}
    return frozenset(word for text in slots | fixed for word in text.split())


def example_prompts(count: int = EXAMPLE_COUNT, seed: int = 0) -> list[str]:
    """Captions of the training split, drawn with a fixed seed: prompts the models draw best,
    the same on every page load."""
    specs = random.Random(seed).sample(specs_of_split("train"), count)
    return [caption_of(spec) for spec in specs]


def describe() -> dict:
    """The fields of dalleflow_client.schemas.PromptWorld."""
    return {
        "name": NAME,
        "summary": SUMMARY,
        "words": WORDS,
        "caption_forms": list(CAPTION_FORMS),
        "example_prompts": example_prompts(),
        "real_checkpoints": REAL_CHECKPOINTS,
    }
