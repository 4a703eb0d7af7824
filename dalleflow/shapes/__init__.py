"""The shapes world: a generated, captioned world of coloured shapes with a pixel oracle."""

from dalleflow.shapes.oracle import Verdict, judge
from dalleflow.shapes.render import render_caption, render_scene
from dalleflow.shapes.scene import (
    CaptionError,
    CaptionSpec,
    Scene,
    SceneSampler,
    ShapeObject,
    all_caption_specs,
    caption_of,
    parse_caption,
    specs_of_split,
)

__all__ = [
    "CaptionError",
    "CaptionSpec",
    "Scene",
    "SceneSampler",
    "ShapeObject",
    "Verdict",
    "all_caption_specs",
    "caption_of",
    "judge",
    "parse_caption",
    "render_caption",
    "render_scene",
    "specs_of_split",
]
