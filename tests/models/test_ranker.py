import open_clip
import pytest

from dalleflow.models.ranker import ClipRanker
from dalleflow.shapes import render_caption

PROMPT = "a red circle on the left on a white background"


def test_a_saved_local_dir_scores_like_the_model_in_memory(tiny_clip_folder):
    model, folder = tiny_clip_folder
    images = [render_caption(PROMPT, seed=s) for s in range(3)]
    loaded = ClipRanker.from_pretrained(f"local-dir:{folder}")
    _, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    in_memory = ClipRanker(model, preprocess, open_clip.get_tokenizer("tiny-test-clip"), "memory")
    assert loaded.score(PROMPT, images) == pytest.approx(in_memory.score(PROMPT, images), abs=1e-5)


def test_scores_are_cosines_times_100(tiny_clip_folder):
    _, folder = tiny_clip_folder
    scores = ClipRanker.from_pretrained(f"local-dir:{folder}").score(PROMPT, [render_caption(PROMPT)])
    assert len(scores) == 1 and -100.0 <= scores[0] <= 100.0
    assert ClipRanker.from_pretrained(f"local-dir:{folder}").score(PROMPT, []) == []
