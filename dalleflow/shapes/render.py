"""Rendering scenes to images: flat colours, hard edges, a pixel is in a shape when its centre is."""

from __future__ import annotations

import numpy as np
from PIL import Image

from dalleflow.shapes import world
from dalleflow.shapes.scene import Scene, SceneSampler, ShapeObject, parse_caption


def object_mask(obj: ShapeObject, side: int) -> np.ndarray:
    ys, xs = np.mgrid[0:side, 0:side] + 0.5
    half = obj.size / 2
    dx, dy = xs - obj.centre_x, ys - obj.centre_y
    if obj.shape == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if obj.shape == "circle":
        return dx**2 + dy**2 <= half**2
    if obj.shape == "triangle":
        # Apex up at (cx, cy - half), base along y = cy + half.
        depth = (dy + half) / obj.size  # 0 at the apex, 1 at the base
        return (depth >= 0) & (depth <= 1) & (np.abs(dx) <= depth * half)
    raise ValueError(f"unknown shape {obj.shape!r}")


def render_scene(scene: Scene) -> np.ndarray:
    """Scene -> uint8 array [S, S, 3]; later objects are drawn over earlier ones."""
    side = scene.canvas_size
    image = np.empty((side, side, 3), dtype=np.uint8)
    image[:] = world.BACKGROUNDS[scene.background]
    for obj in scene.objects:
        image[object_mask(obj, side)] = world.COLOURS[obj.colour]
    return image


def render_caption(caption: str, seed: int = 0, canvas_size: int = world.CANVAS_SIZE) -> Image.Image:
    """One image of a caption, with seeded geometry."""
    sampler = SceneSampler("train", seed=seed, canvas_size=canvas_size)
    scene = sampler.scene_for(parse_caption(caption))
    return Image.fromarray(render_scene(scene))
