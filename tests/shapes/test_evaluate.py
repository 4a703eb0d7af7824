"""The measures in bench/quality.py, on images made by hand: what each number counts."""

import numpy as np
import pytest
from PIL import Image

from dalleflow.shapes.evaluate import distinct_scenes, generation_quality, is_misarranged, refinement_quality
from dalleflow.shapes.render import render_caption, render_scene


def test_distinct_scenes_are_one_per_caption_and_asking_past_the_split_is_an_error():
    from dalleflow.shapes.scene import specs_of_split

    held_out = len(specs_of_split("held_out"))
    every = distinct_scenes("held_out", held_out, seed=0)
    assert len({scene.caption for scene in every}) == held_out
    with pytest.raises(ValueError, match=f"{held_out} distinct captions, not {held_out + 1}"):
        distinct_scenes("held_out", held_out + 1, seed=0)


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


CAPTION = "a red square above a blue triangle on a white background"
REARRANGED = ("a blue triangle above a red square on a white background",  # the order reversed
              "a blue square above a red triangle on a white background",  # the colours exchanged
              "a red triangle above a blue square on a white background")  # the shapes exchanged


def test_an_image_of_the_captions_objects_in_another_arrangement_is_misarranged():
    assert not is_misarranged(render_caption(CAPTION, seed=0), CAPTION)
    for caption in REARRANGED:
        assert is_misarranged(render_caption(caption, seed=0), CAPTION), caption
    assert not is_misarranged(render_caption("a red square above a green triangle on a white background", seed=0), CAPTION)
    one = "a red square on the top on a white background"
    assert not is_misarranged(render_caption("a red square on the bottom on a white background", seed=0), one)


def test_generation_quality_counts_top_ranked_mean_best_and_misarranged():
    right, wrong, swapped = (np.asarray(render_caption(c, seed=0)) for c in (CAPTION, "a red square on the top on a white background",
                                                                              REARRANGED[0]))

    def generate(captions, num_images, seed):
        return [Image.fromarray(image) for image in (right, wrong, swapped, swapped)] * len(captions)

    def score(caption, images):  # prefers the last candidate: a misarranged one
        return list(range(len(images)))

    quality = generation_quality({"g": generate}, score, [CAPTION], num_images=4)["g"]
    assert (quality.top_ranked_accepted, quality.mean_accepted, quality.best_possible, quality.mean_misarranged) == (
        0.0, 0.25, 1.0, 0.5)


def test_the_joint_pool_says_which_generator_drew_its_refused_top_picks():
    right, wrong = (np.asarray(render_caption(c, seed=0)) for c in (CAPTION, "a red square on the top on a white background"))

    def drawing(image):
        return lambda captions, num_images, seed: [Image.fromarray(image)] * (num_images * len(captions))

    def score(caption, images):  # prefers later candidates: the second generator's in the joint pool
        return list(range(len(images)))

    second = "a green circle on the left on a black background"
    quality = generation_quality({"good": drawing(right), "bad": drawing(wrong)}, score, [CAPTION, second], num_images=2)
    # Both generators' pictures are of CAPTION: for the second prompt both are refused, and the pick is "bad"'s.
    assert quality["joint"].rejected_picks_from == {"good": 0.0, "bad": 1.0}
    assert quality["good"].rejected_picks_from == {"good": 0.5, "bad": 0.0}
    assert quality["joint"].top_ranked_accepted == 0.0 and quality["joint"].best_possible == 0.5
