"""Scenes of the shapes world, their captions, and a seeded sampler of both splits."""

from __future__ import annotations

import dataclasses
import math
import random
import re
from typing import Literal

import numpy as np

from dalleflow.shapes import world

Split = Literal["train", "held_out"]


@dataclasses.dataclass(frozen=True)
class ShapeObject:
    colour: str
    shape: str
    centre_x: float  # pixels, canvas coordinates
    centre_y: float
    size: float  # side of the bounding square, pixels

    @property
    def is_held_out(self) -> bool:
        return (self.colour, self.shape) in world.HELD_OUT_PAIRS


@dataclasses.dataclass(frozen=True)
class Scene:
    """What a caption says, made concrete: objects in caption order."""

    background: str
    objects: tuple[ShapeObject, ...]
    position: str | None = None  # for one object: left/right/top/bottom
    relation: str | None = None  # for two objects: "to the left of" / "above"
    canvas_size: int = world.CANVAS_SIZE

    @property
    def caption(self) -> str:
        return caption_of(self.spec)

    @property
    def spec(self) -> CaptionSpec:
        return CaptionSpec(
            background=self.background,
            objects=tuple((o.colour, o.shape) for o in self.objects),
            position=self.position,
            relation=self.relation,
        )

    @property
    def is_held_out(self) -> bool:
        return any(o.is_held_out for o in self.objects)


@dataclasses.dataclass(frozen=True)
class CaptionSpec:
    """The content of a caption, without any geometry."""

    background: str
    objects: tuple[tuple[str, str], ...]  # (colour, shape) in caption order
    position: str | None = None
    relation: str | None = None

    @property
    def is_held_out(self) -> bool:
        return any(pair in world.HELD_OUT_PAIRS for pair in self.objects)


def caption_of(spec: CaptionSpec) -> str:
    if len(spec.objects) == 1:
        (colour, shape), = spec.objects
        return f"a {colour} {shape} on the {spec.position} on a {spec.background} background"
    (c1, s1), (c2, s2) = spec.objects
    return f"a {c1} {s1} {spec.relation} a {c2} {s2} on a {spec.background} background"


_COLOUR = "|".join(world.COLOURS)
_SHAPE = "|".join(world.SHAPES)
_BACKGROUND = "|".join(world.BACKGROUNDS)
_ONE = re.compile(
    rf"a ({_COLOUR}) ({_SHAPE}) on the ({'|'.join(world.POSITIONS)}) on a ({_BACKGROUND}) background"
)
_TWO = re.compile(
    rf"a ({_COLOUR}) ({_SHAPE}) ({'|'.join(world.RELATIONS)}) a ({_COLOUR}) ({_SHAPE}) "
    rf"on a ({_BACKGROUND}) background"
)


class CaptionError(ValueError):
    pass


def parse_caption(caption: str) -> CaptionSpec:
    """Parse one of the world's three caption forms; raise CaptionError otherwise."""
    text = caption.strip()
    if match := _ONE.fullmatch(text):
        colour, shape, position, background = match.groups()
        return CaptionSpec(background, ((colour, shape),), position=position)
    if match := _TWO.fullmatch(text):
        c1, s1, relation, c2, s2, background = match.groups()
        if c1 == c2:
            raise CaptionError(f"the two objects must differ in colour: {caption!r}")
        return CaptionSpec(background, ((c1, s1), (c2, s2)), relation=relation)
    raise CaptionError(f"not a caption of the shapes world: {caption!r}")


def all_caption_specs() -> list[CaptionSpec]:
    """Every caption the world can say, in a fixed order."""
    pairs = [(c, s) for c in world.COLOURS for s in world.SHAPES]
    specs = []
    for background in world.BACKGROUNDS:
        for pair in pairs:
            for position in world.POSITIONS:
                specs.append(CaptionSpec(background, (pair,), position=position))
        for first in pairs:
            for second in pairs:
                if first[0] == second[0]:
                    continue
                for relation in world.RELATIONS:
                    specs.append(CaptionSpec(background, (first, second), relation=relation))
    return specs


def specs_of_split(split: Split) -> list[CaptionSpec]:
    want_held_out = split == "held_out"
    return [spec for spec in all_caption_specs() if spec.is_held_out == want_held_out]


class SceneSampler:
    """Seeded scenes: a caption spec drawn from the split, then geometry drawn to fit it."""

    def __init__(self, split: Split = "train", seed: int = 0, canvas_size: int = world.CANVAS_SIZE):
        self.specs = specs_of_split(split)
        self.canvas_size = canvas_size
        self.rng = random.Random(seed)

    def sample(self) -> Scene:
        return self.scene_for(self.rng.choice(self.specs))

    def scene_for(self, spec: CaptionSpec) -> Scene:
        if len(spec.objects) == 1:
            return self._one_object(spec)
        return self._two_objects(spec)

    # Geometry is snapped to whole pixels (integer sides, edges on pixel
    # boundaries) so the rendered bounding box has exactly the scene's centre
    # and size, and the limits hold with this margin after rasterising.
    _MARGIN = 0.5

    def _size(self) -> int:
        side = self.canvas_size
        low = math.ceil(world.MIN_OBJECT_FRACTION * side)
        high = math.floor(world.MAX_OBJECT_FRACTION * side)
        return self.rng.randint(low, high)

    def _centre(self, size: int) -> float:
        return self.rng.randint(0, self.canvas_size - size) + size / 2

    def _one_object(self, spec: CaptionSpec) -> Scene:
        side = self.canvas_size
        band = world.BAND_FRACTION * side - self._MARGIN
        in_band = {
            "left": lambda along: along < band,
            "right": lambda along: along > side - band,
            "top": lambda along: along < band,
            "bottom": lambda along: along > side - band,
        }[spec.position]
        size = self._size()
        while not in_band(along := self._centre(size)):
            pass
        across = self._centre(size)
        x, y = (along, across) if spec.position in ("left", "right") else (across, along)
        (colour, shape), = spec.objects
        obj = ShapeObject(colour, shape, x, y, size)
        return Scene(spec.background, (obj,), position=spec.position, canvas_size=side)

    def _two_objects(self, spec: CaptionSpec) -> Scene:
        side = self.canvas_size
        gap = world.RELATION_GAP_FRACTION * side + self._MARGIN
        for _ in range(10_000):
            sizes = self._size(), self._size()
            along = [self._centre(size) for size in sizes]
            if along[1] - along[0] < gap:
                continue
            objects = []
            for (colour, shape), size, first_axis in zip(spec.objects, sizes, along):
                second_axis = self._centre(size)
                if spec.relation == "to the left of":
                    x, y = first_axis, second_axis
                else:
                    x, y = second_axis, first_axis
                objects.append(ShapeObject(colour, shape, x, y, size))
            if _overlap_fraction(objects[0], objects[1], side) <= world.MAX_OVERLAP_FRACTION:
                return Scene(spec.background, tuple(objects), relation=spec.relation, canvas_size=side)
        raise RuntimeError(f"could not place {spec}")  # pragma: no cover - geometry always fits


def _overlap_fraction(a: ShapeObject, b: ShapeObject, side: int) -> float:
    from dalleflow.shapes.render import object_mask

    mask_a, mask_b = object_mask(a, side), object_mask(b, side)
    smaller = min(mask_a.sum(), mask_b.sum())
    return float(np.logical_and(mask_a, mask_b).sum() / max(smaller, 1))


OPPOSITE_POSITION = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}
FIELDS = ("background", "colour", "shape", "position")


def change_one_field(spec: CaptionSpec, field: str, rng: random.Random, allow_held_out: bool = True) -> CaptionSpec:
    """A caption that differs from spec in exactly one field and is false of any image of spec.

    "position" flips a single object to the opposite band, or swaps the order
    of two objects (which reverses their relation).
    """
    objects = list(spec.objects)
    if field == "background":
        background = rng.choice([b for b in world.BACKGROUNDS if b != spec.background])
        return dataclasses.replace(spec, background=background)
    if field == "position":
        if spec.position is not None:
            return dataclasses.replace(spec, position=OPPOSITE_POSITION[spec.position])
        return dataclasses.replace(spec, objects=tuple(reversed(objects)))
    index = rng.randrange(len(objects))
    colour, shape = objects[index]
    used = {c for c, _ in objects}
    if field == "colour":
        choices = [(c, shape) for c in world.COLOURS if c not in used]
    elif field == "shape":
        choices = [(colour, s) for s in world.SHAPES if s != shape]
    else:
        raise ValueError(f"unknown field {field!r}; one of {FIELDS}")
    if not allow_held_out:
        choices = [pair for pair in choices if pair not in world.HELD_OUT_PAIRS] or choices
    objects[index] = rng.choice(choices)
    return dataclasses.replace(spec, objects=tuple(objects))
