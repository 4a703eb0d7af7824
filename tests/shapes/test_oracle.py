import random

import numpy as np
import pytest

from dalleflow.shapes import SceneSampler, judge, parse_caption, render_scene, specs_of_split, world
from dalleflow.shapes.scene import FIELDS, caption_of, change_one_field


@pytest.mark.parametrize("split", ["train", "held_out"])
def test_rendered_scenes_pass_their_own_caption(split):
    sampler = SceneSampler(split, seed=3)
    for _ in range(300):
        scene = sampler.sample()
        verdict = judge(render_scene(scene), scene.caption)
        assert verdict.accepted, (scene, verdict.reasons)


@pytest.mark.parametrize("field", FIELDS)
def test_changing_any_one_field_fails(field):
    sampler, rng = SceneSampler("train", seed=5), random.Random(5)
    for _ in range(150):
        scene = sampler.sample()
        wrong = caption_of(change_one_field(scene.spec, field, rng))
        verdict = judge(render_scene(scene), wrong)
        assert not verdict.accepted, (scene.caption, wrong)
        assert any(reason.startswith({"colour": "colour", "shape": "shape", "position": "position",
                                      "background": "background"}[field]) for reason in verdict.reasons), verdict.reasons


def test_reasons_name_the_wrong_field():
    scene = SceneSampler("train", seed=1).scene_for(parse_caption("a red circle on the left on a white background"))
    verdict = judge(render_scene(scene), "a red square on the left on a white background")
    assert verdict.reasons == ("shape: the red object should be a square, looks like circle",)


def test_an_extra_object_fails():
    sampler = SceneSampler("train", seed=2)
    two = sampler.scene_for(parse_caption("a red circle to the left of a blue square on a black background"))
    verdict = judge(render_scene(two), "a red circle on the left on a black background")
    assert not verdict.accepted and any("extra objects" in r for r in verdict.reasons)


def test_blank_and_noise_images_fail():
    caption = "a green square above a pink triangle on a gray background"
    assert not judge(np.full((32, 32, 3), 128, np.uint8), caption).accepted
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert not judge(noise, caption).accepted


def test_train_split_never_shows_held_out_pairs():
    for spec in specs_of_split("train"):
        assert not set(spec.objects) & world.HELD_OUT_PAIRS
    held_out = specs_of_split("held_out")
    assert held_out and all(set(spec.objects) & world.HELD_OUT_PAIRS for spec in held_out)
    sampler = SceneSampler("train", seed=0)
    assert not any(sampler.sample().is_held_out for _ in range(2000))


def test_geometry_follows_the_world_spec():
    side = world.CANVAS_SIZE
    sampler = SceneSampler("train", seed=9)
    for _ in range(500):
        scene = sampler.sample()
        for obj in scene.objects:
            assert world.MIN_OBJECT_FRACTION * side <= obj.size <= world.MAX_OBJECT_FRACTION * side
            assert obj.size / 2 <= obj.centre_x <= side - obj.size / 2
            assert obj.size / 2 <= obj.centre_y <= side - obj.size / 2
        if scene.relation:
            first, second = scene.objects
            assert first.colour != second.colour
            axis = "centre_x" if scene.relation == "to the left of" else "centre_y"
            assert getattr(second, axis) - getattr(first, axis) >= world.RELATION_GAP_FRACTION * side


def test_captions_round_trip_and_bad_ones_are_refused():
    for spec in specs_of_split("train")[:300]:
        assert parse_caption(caption_of(spec)) == spec
    with pytest.raises(ValueError):
        parse_caption("a red circle to the left of a red square on a white background")
    with pytest.raises(ValueError):
        parse_caption("a dog on the left on a white background")
