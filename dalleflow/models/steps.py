"""The step-callback contract every model with a loop shares (diffusion steps,
DALL·E token spans), so the serving layer streams any of them the same way."""

from __future__ import annotations

from collections.abc import Callable

from PIL import Image

# Called after each step with (step_index, step_count, preview images or None:
# one per image of the call, what the images look like so far); returning True
# asks the loop to stop (diffusers' interrupt flag).
StepCallback = Callable[[int, int, list[Image.Image] | None], bool | None]


class Interrupted(Exception):
    """The step callback asked to stop; no images were finished."""
