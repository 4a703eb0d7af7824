"""A real ranker checkpoint swaps in by config: an open_clip local-dir folder
(what `hf download laion/CLIP-ViT-L-14-...` leaves) through the factory."""

import open_clip
import pytest

from dalleflow.models.factory import create_model
from dalleflow.models.ranker import ClipRanker
from dalleflow.shapes import render_caption

PROMPT = "a red circle on the left on a white background"


def test_the_open_clip_family_loads_a_local_dir_and_scores_like_the_model_in_memory(tiny_clip_folder):
    model, folder = tiny_clip_folder
    ranker = create_model({"family": "open-clip", "weights": f"local-dir:{folder}"})
    assert isinstance(ranker, ClipRanker) and ranker.source == f"local-dir:{folder}"
    _, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    in_memory = ClipRanker(model, preprocess, open_clip.get_tokenizer("tiny-test-clip"), "memory")
    images = [render_caption(PROMPT, seed=s) for s in range(2)]
    assert ranker.score(PROMPT, images) == pytest.approx(in_memory.score(PROMPT, images), abs=1e-5)
