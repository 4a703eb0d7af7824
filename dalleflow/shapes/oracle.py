"""The pixel oracle: does an image show what its caption says?

It reads an image the way the world spec is written: the background is the colour
of most border pixels; every pixel close to a palette colour belongs to that
colour; each connected region of one colour big enough to be an object is an
object; its bounding box gives its centre and size, its outline its shape.
Blurred edges between two colours fall into no colour, so they never make
objects of their own.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image
from scipy import ndimage

from dalleflow.shapes import world
from dalleflow.shapes.scene import CaptionSpec, parse_caption

# A pixel takes a reference colour when it lies within this RGB distance of it.
COLOUR_TOLERANCE = 60.0
# A region smaller than this share of the smallest legal object (a triangle of
# side 0.30 S, area about 0.045 S^2) is noise, not an object.
MIN_OBJECT_AREA_FRACTION = 0.4
# Allowed slack on the object size limits, as a fraction of the canvas side
# (the rasteriser rounds edges to whole pixels).
SIZE_SLACK_FRACTION = 0.06
# Share of border pixels that must have the background colour.
MIN_BACKGROUND_BORDER_SHARE = 0.6


@dataclasses.dataclass(frozen=True)
class FoundObject:
    colour: str
    shape: str | None  # None when the outline matches no shape
    centre_x: float
    centre_y: float
    width: int
    height: int
    area: int


@dataclasses.dataclass(frozen=True)
class Verdict:
    accepted: bool
    reasons: tuple[str, ...]  # empty when accepted
    background: str | None
    objects: tuple[FoundObject, ...]

    def __bool__(self) -> bool:
        return self.accepted


def _as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] != image.shape[1]:
        raise ValueError(f"expected a square RGB image, got shape {image.shape}")
    return image.astype(np.float32)


def _nearest_labels(pixels: np.ndarray, names: list[str], colours: np.ndarray) -> np.ndarray:
    """Index into names of the nearest colour within tolerance, or -1."""
    distances = np.linalg.norm(pixels[..., None, :] - colours, axis=-1)
    labels = distances.argmin(axis=-1)
    labels[distances.min(axis=-1) > COLOUR_TOLERANCE] = -1
    return labels


def _classify_shape(mask: np.ndarray) -> str | None:
    height, width = mask.shape
    if min(height, width) < 3 or not 0.7 <= width / height <= 1.43:
        return None
    rows = mask.sum(axis=1).astype(np.float32)
    half = height // 2
    top, bottom = rows[:half].mean(), rows[height - half :].mean()
    fill = mask.sum() / (height * width)
    # A triangle with its apex up is narrow at the top and wide at the bottom.
    if top < 0.7 * bottom:
        return "triangle" if 0.35 <= fill <= 0.7 else None
    if bottom < 0.7 * top:
        return None  # upside down: no such shape in this world
    if fill >= 0.89:
        return "square"
    if fill >= 0.65:
        return "circle"
    return None


def find_objects(image: Image.Image | np.ndarray) -> tuple[str | None, list[FoundObject]]:
    """The background name (None if no background colour dominates) and the objects."""
    pixels = _as_array(image)
    side = pixels.shape[0]
    names = list(world.BACKGROUNDS) + list(world.COLOURS)
    colours = np.array([*world.BACKGROUNDS.values(), *world.COLOURS.values()], dtype=np.float32)
    labels = _nearest_labels(pixels, names, colours)

    border = np.concatenate([labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]])
    background = None
    counts = np.bincount(border[border >= 0], minlength=len(names))
    if counts.size and counts.max() >= MIN_BACKGROUND_BORDER_SHARE * border.size:
        best = int(counts.argmax())
        if best < len(world.BACKGROUNDS):
            background = names[best]

    min_area = MIN_OBJECT_AREA_FRACTION * 0.5 * (world.MIN_OBJECT_FRACTION * side) ** 2
    found = []
    for index in range(len(world.BACKGROUNDS), len(names)):
        regions, count = ndimage.label(labels == index)
        for region_slice, region_id in zip(ndimage.find_objects(regions), range(1, count + 1)):
            mask = regions[region_slice] == region_id
            area = int(mask.sum())
            if area < min_area:
                continue
            ys, xs = region_slice
            found.append(
                FoundObject(
                    colour=names[index],
                    shape=_classify_shape(mask),
                    centre_x=(xs.start + xs.stop) / 2,
                    centre_y=(ys.start + ys.stop) / 2,
                    width=xs.stop - xs.start,
                    height=ys.stop - ys.start,
                    area=area,
                )
            )
    return background, found


def judge(image: Image.Image | np.ndarray, caption: str | CaptionSpec) -> Verdict:
    """Check an image against a caption; the reasons name every field that is wrong."""
    spec = parse_caption(caption) if isinstance(caption, str) else caption
    pixels = _as_array(image)
    side = pixels.shape[0]
    background, found = find_objects(pixels)
    reasons: list[str] = []
    if background != spec.background:
        reasons.append(f"background: expected {spec.background}, found {background}")

    wanted_colours = [colour for colour, _ in spec.objects]
    matched: list[FoundObject] = []
    for colour, shape in spec.objects:
        candidates = [obj for obj in found if obj.colour == colour]
        if len(candidates) != 1:
            reasons.append(f"colour: expected one {colour} object, found {len(candidates)}")
            continue
        obj = candidates[0]
        matched.append(obj)
        if obj.shape != shape:
            reasons.append(f"shape: the {colour} object should be a {shape}, looks like {obj.shape}")
        low = (world.MIN_OBJECT_FRACTION - SIZE_SLACK_FRACTION) * side
        high = (world.MAX_OBJECT_FRACTION + SIZE_SLACK_FRACTION) * side
        if not (low <= obj.width <= high and low <= obj.height <= high):
            reasons.append(f"size: the {colour} {shape} is {obj.width}x{obj.height} px, not within {low:.1f}-{high:.1f}")
    extras = [obj for obj in found if obj.colour not in wanted_colours]
    if extras:
        reasons.append("extra objects: " + ", ".join(f"{o.colour} {o.shape}" for o in extras))

    if len(matched) == len(spec.objects):
        reasons.extend(_position_reasons(spec, matched, side))
    return Verdict(not reasons, tuple(reasons), background, tuple(found))


def _position_reasons(spec: CaptionSpec, objs: list[FoundObject], side: int) -> list[str]:
    if spec.position is not None:
        obj, band = objs[0], world.BAND_FRACTION * side
        holds = {
            "left": obj.centre_x < band,
            "right": obj.centre_x > side - band,
            "top": obj.centre_y < band,
            "bottom": obj.centre_y > side - band,
        }[spec.position]
        if holds:
            return []
        return [f"position: centre ({obj.centre_x:.1f}, {obj.centre_y:.1f}) is not on the {spec.position}"]
    first, second = objs
    gap = world.RELATION_GAP_FRACTION * side
    if spec.relation == "to the left of":
        distance = second.centre_x - first.centre_x
    else:
        distance = second.centre_y - first.centre_y
    if distance >= gap:
        return []
    return [f"position: the first object is {distance:.1f} px {spec.relation} the second, needs {gap:.1f}"]
