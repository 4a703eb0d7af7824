"""The ranking data: generated candidates judged by the oracle, and the ranker fine-tuned on them."""

import json
import random

import numpy as np

from dalleflow.models.ranker import ClipRanker
from dalleflow.shapes import SceneSampler, render_scene
from dalleflow.shapes.evaluate import BENCH_PROMPTS, BENCH_SEED, distinct_scenes
from dalleflow.shapes.oracle import judge
from dalleflow.shapes.scene import change_one_field, parse_caption
from dalleflow.train import candidates, ranker


def test_training_captions_leave_out_the_benchmark_and_the_held_out_pairs():
    captions = candidates.training_captions(300, seed=1)
    benchmark = {s.caption for s in distinct_scenes("train", BENCH_PROMPTS, seed=BENCH_SEED)}
    assert len(captions) == len(set(captions)) == 300
    assert not benchmark & set(captions)
    assert not any(parse_caption(caption).is_held_out for caption in captions)


def test_candidates_command_writes_judged_parts_and_resumes(tmp_path):
    command = ["--out", str(tmp_path), "--prompts", "3", "--chunk", "2", "--num-images", "1", "--steps", "2"]
    candidates.main(command)
    data = candidates.load_candidates(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-0000.npz", "part-0001.npz"]
    # One candidate per prompt from each of the two generators.
    assert data["images"].shape == (6, 32, 32, 3) and sorted(set(data["generators"])) == ["dalle", "diffusion"]
    for image, caption, accepted in zip(data["images"], data["captions"], data["accepted"]):
        assert judge(image, str(caption)).accepted == accepted
    written = (tmp_path / "part-0001.npz").stat().st_mtime_ns
    candidates.main(command)
    assert (tmp_path / "part-0001.npz").stat().st_mtime_ns == written


def write_rendered_candidates(folder, prompts: int) -> None:
    """A candidates folder with known verdicts: two renders of the caption (accepted)
    and two of a one-field change (rejected) per prompt."""
    rng, sampler = random.Random(0), SceneSampler("train", seed=3)
    rows = {"images": [], "captions": [], "accepted": [], "generators": []}
    for _ in range(prompts):
        scene = sampler.sample()
        wrong = change_one_field(scene.spec, rng.choice(["colour", "shape", "position"]), rng, allow_held_out=False)
        for spec, accepted in ((scene.spec, True), (scene.spec, True), (wrong, False), (wrong, False)):
            rows["images"].append(render_scene(sampler.scene_for(spec)))
            rows["captions"].append(scene.caption)
            rows["accepted"].append(accepted)
            rows["generators"].append("render")
    folder.mkdir()
    np.savez_compressed(folder / "part-0000.npz", **{key: np.asarray(value) for key, value in rows.items()})


def test_ranker_fine_tunes_on_candidates_and_reports_the_ranking(tmp_path):
    write_rendered_candidates(tmp_path / "candidates", prompts=30)
    data = ranker.RankingData(tmp_path / "candidates")
    assert len(data.validation) == 3 and len(data.training) == 27
    assert not {c for c, _, _ in data.validation} & {c for c, _, _ in data.training}

    ranker.main(["--init", "dalleflow/weights/shapes-clip", "--candidates", str(tmp_path / "candidates"),
                 "--out", str(tmp_path / "run"), "--minutes", "0.05", "--batch-size", "8", "--ranking-prompts", "2",
                 "--export", str(tmp_path / "model")])
    record = json.loads((tmp_path / "model" / "training.json").read_text())
    assert record["init"] == "dalleflow/weights/shapes-clip" and record["candidates"]["training_prompts"] == 27
    validation = record["ranking_validation"]
    assert validation["prompts"] == 3 and validation["best_possible"] == 1.0 and validation["mean_accepted"] == 0.5
    # Started from the trained ranker, a few steps keep it telling a caption's render from a wrong one's.
    assert validation["top_ranked_accepted"] == 1.0
    assert ClipRanker.from_pretrained(f"local-dir:{tmp_path / 'model'}").source.endswith("model")
