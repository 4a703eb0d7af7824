"""The refiner's measures in bench/quality.py, on variations made by hand: what each number counts."""

import numpy as np
from PIL import Image

from dalleflow.shapes.evaluate import distinct_scenes, refinement_quality
from dalleflow.shapes.render import render_scene


def test_refinement_quality_counts_accepted_variations_mean_change_and_changed_pixels():
    scene = distinct_scenes("train", 1, seed=0)[0]
    image = Image.fromarray(render_scene(scene))
    pixels = np.asarray(image).copy()
    faint = pixels.astype(int)
    faint[..., 0] = np.clip(faint[..., 0] + np.where(faint[..., 0] < 128, 8, -8), 0, 255)  # below the visible threshold
    quarter = pixels.copy()
    rows = pixels.shape[0] // 4
    quarter[:rows] = (quarter[:rows].astype(int) + 100) % 256  # every channel of a quarter of the rows moved by 100 or 156

    def refine(source, caption, seed):
        return [source, Image.fromarray(faint.astype(np.uint8)), Image.fromarray(quarter), Image.new("RGB", source.size)]

    measured = refinement_quality(refine, [(scene.caption, image)])
    assert measured["variations"] == 4
    assert measured["still_accepted"] <= 0.75  # a black square is no scene
    not_black = (pixels.max(axis=-1) > 16).mean()
    assert abs(measured["pixels_changed_over_16_of_255"] - np.mean([0.0, 0.0, 0.25, not_black])) < 1e-9
    expected_change = np.mean([0.0, np.abs(faint - pixels).mean() / 255, np.abs(quarter.astype(int) - pixels).mean() / 255,
                               pixels.mean() / 255])
    assert abs(measured["mean_abs_change"] - expected_change) < 1e-6
