"""Judged candidates: what the ranker's preference loss learns from, judged by the real oracle."""

import numpy as np
import pytest
import torch
from PIL import Image

from dalleflow.models.ranker import ClipRanker
from dalleflow.shapes import judge, render_caption
from dalleflow.train import ranker
from dalleflow.train.judged_candidates import JudgedCandidates, judge_candidates


def drawing_the_caption_then_one_off(captions, num_images, seed):
    """Per caption: its own rendering, then renderings of it with the background changed (refused)."""
    images = []
    for caption in captions:
        off = caption.rsplit(" on a ", 1)[0] + (" on a black background" if "white" in caption else " on a white background")
        images += [render_caption(caption, seed=seed)] + [render_caption(off, seed=seed + i) for i in range(1, num_images)]
    return [Image.fromarray(np.asarray(image)) for image in images]


def test_candidates_carry_the_oracles_verdict_for_their_own_prompt_and_survive_a_save(tmp_path):
    judged = judge_candidates({"g": drawing_the_caption_then_one_off}, prompts=10, num_images=3, seed=5, batch=4)
    assert len(judged.captions) == len(set(judged.captions)) == 10
    assert judged.images.shape == (30, 32, 32, 3) and judged.images.dtype == np.uint8
    assert list(judged.prompt) == [i for i in range(10) for _ in range(3)]
    for image, prompt, accepted in zip(judged.images, judged.prompt, judged.accepted):
        assert accepted == judge(image, judged.captions[prompt]).accepted
    assert judged.accepted.sum() == 10  # each caption's own rendering, and none of its changed ones

    judged.save(tmp_path / "judged.npz")
    loaded = JudgedCandidates.load(tmp_path / "judged.npz")
    assert loaded.captions == judged.captions and loaded.generators == ["g"]
    for field in ("images", "prompt", "accepted", "generator"):
        assert np.array_equal(getattr(loaded, field), getattr(judged, field))


def test_preference_pairs_are_an_accepted_and_a_refused_candidate_of_one_prompt():
    judged = judge_candidates({"g": drawing_the_caption_then_one_off}, prompts=6, num_images=3, seed=1)
    pairs = judged.preference_pairs()
    assert len(pairs) == 6 * 1 * 2
    for accepted, refused in pairs:
        assert judged.prompt[accepted] == judged.prompt[refused]
        assert judged.accepted[accepted] and not judged.accepted[refused]


def test_the_preference_loss_is_the_probability_the_rankers_own_scores_give_the_refused_one():
    judged = judge_candidates({"g": drawing_the_caption_then_one_off}, prompts=4, num_images=2, seed=3)
    served = ClipRanker.from_pretrained("local-dir:dalleflow/weights/shapes-clip")
    pairs = judged.preference_pairs()
    batches = ranker.Batches(seed=0, batch_size=1, image_negatives=False, noise=0.0)
    with torch.no_grad():
        loss = ranker.preference_loss(served.model, served.tokenizer, judged, pairs, batches.pixels)
    scale = served.model.logit_scale.exp().item() / 100  # score() is cosine x 100
    expected = []
    for accepted, refused in pairs:
        caption = judged.captions[judged.prompt[accepted]]
        good, bad = served.score(caption, [Image.fromarray(judged.images[i]) for i in (accepted, refused)])
        expected.append(np.log1p(np.exp(scale * (bad - good))))
    assert abs(loss.item() - np.mean(expected)) < 1e-3 * max(1.0, np.mean(expected))


def test_a_draw_grows_from_an_earlier_one_into_what_one_draw_of_all_prompts_makes():
    whole = judge_candidates({"g": drawing_the_caption_then_one_off}, prompts=13, num_images=2, seed=4, batch=4)
    part = judge_candidates({"g": drawing_the_caption_then_one_off}, prompts=6, num_images=2, seed=4, batch=4)
    grown = judge_candidates({"g": drawing_the_caption_then_one_off}, prompts=13, num_images=2, seed=4, batch=4, earlier=part)
    assert grown.captions == whole.captions
    for field in ("images", "prompt", "accepted", "generator"):
        assert np.array_equal(getattr(grown, field), getattr(whole, field))
    shrunk = judge_candidates({"g": drawing_the_caption_then_one_off}, prompts=5, num_images=2, seed=4, batch=4, earlier=whole)
    assert shrunk.captions == whole.captions[:5] and np.array_equal(shrunk.images, whole.images[:10])
    with pytest.raises(ValueError, match="other generators, prompts or num_images"):
        judge_candidates({"g": drawing_the_caption_then_one_off}, prompts=13, num_images=3, seed=4, batch=4, earlier=part)


def test_a_signal_stops_the_draw_at_its_next_save_and_a_rerun_resumes_it(tmp_path, monkeypatch):
    import threading

    monkeypatch.setattr(ranker, "embedded_generators", lambda names=None: {"g": drawing_the_caption_then_one_off})
    stop = threading.Event()
    stop.set()  # as SIGTERM sets it: the draw ends at its first save
    assert ranker.load_or_judge(tmp_path, prompts=24, num_images=2, seed=4, stop=stop, save_every=8) is None
    assert len(JudgedCandidates.load(tmp_path / "judged-candidates.npz").captions) == 8
    assert not (tmp_path / "judged-candidates.partial.npz").exists()
    resumed = ranker.load_or_judge(tmp_path, prompts=24, num_images=2, seed=4, stop=threading.Event(), save_every=8)
    whole = judge_candidates({"g": drawing_the_caption_then_one_off}, prompts=24, num_images=2, seed=4)
    assert resumed.captions == whole.captions and np.array_equal(resumed.images, whole.images)
