import json

import open_clip
import pytest
import torch

from dalleflow.models.ranker import ClipRanker
from dalleflow.models.ranker.clip import save_local_dir
from dalleflow.shapes import render_caption

TINY_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}
PROMPT = "a red circle on the left on a white background"


@pytest.fixture(scope="module")
def tiny_clip_folder(tmp_path_factory):
    configs = tmp_path_factory.mktemp("configs")
    (configs / "tiny-test-clip.json").write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(configs)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-test-clip", pretrained=None)
    folder = tmp_path_factory.mktemp("tiny-clip")
    save_local_dir(model, TINY_CONFIG, folder)
    return model, folder


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
