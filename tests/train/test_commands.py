"""The training commands run, checkpoint, resume and export loadable weights (a few steps, tiny batches)."""

import json
import signal
import subprocess
import sys

import pytest
import torch

from dalleflow.models.contract import Sampling
from dalleflow.models.diffusion import ShapesDiffusion
from dalleflow.models.ranker import ClipRanker
from dalleflow.train import diffusion, ranker, upscaler
from dalleflow.train.checkpoint import convert_legacy, load_checkpoint, save_checkpoint


def assert_same(left, right):
    """Equal structures (an OrderedDict comes back a dict), tensors equal to the bit."""
    assert type(left) is type(right) or (isinstance(left, dict) and isinstance(right, dict))
    if isinstance(left, torch.Tensor):
        assert left.dtype == right.dtype and torch.equal(left, right)
    elif isinstance(left, dict):
        assert list(left) == list(right)
        for key in left:
            assert_same(left[key], right[key])
    elif isinstance(left, (list, tuple)):
        assert len(left) == len(right)
        for a, b in zip(left, right):
            assert_same(a, b)
    else:
        assert left == right


def sample_checkpoint() -> dict:
    import random

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
            "data_rng": random.Random(3).getstate(), "state": {"step": 1, "curve": [[1, 0.5]], "note": None}}


def test_a_checkpoint_round_trips_without_pickle(tmp_path):
    checkpoint = sample_checkpoint()
    save_checkpoint(tmp_path, checkpoint)
    save_checkpoint(tmp_path, checkpoint)  # a second save replaces the first
    assert_same(load_checkpoint(tmp_path), checkpoint)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".safetensors"]
    assert load_checkpoint(tmp_path / "none") is None


def test_a_legacy_torch_checkpoint_converts_once(tmp_path):
    checkpoint = sample_checkpoint()
    torch.save(checkpoint, tmp_path / "checkpoint.pt")
    with pytest.raises(SystemExit, match="--convert-legacy"):  # the trainer never starts over on top of it
        diffusion.main(["--out", str(tmp_path), "--max-steps", "1", "--batch-size", "2", "--threads", "1"])
    convert_legacy(tmp_path)
    assert_same(load_checkpoint(tmp_path), checkpoint)


@pytest.mark.parametrize("extra", [[], ["--slot-loss", "1"]], ids=["plain", "slot-loss"])
def test_diffusion_training_resumes_and_exports(tmp_path, extra):
    common = ["--out", str(tmp_path / "run"), "--batch-size", "2", "--threads", "1", "--checkpoint-minutes", "1000", *extra]
    diffusion.main([*common, "--max-steps", "2"])
    first = load_checkpoint(tmp_path / "run")["state"]["step"]
    diffusion.main([*common, "--max-steps", "3", "--export", str(tmp_path / "model")])
    assert first == 2
    # The resumed run ends where one run of 3 steps ends: weights, EMA, optimizer moments, data.
    diffusion.main([*common[:1], str(tmp_path / "straight"), *common[2:], "--max-steps", "3"])
    resumed, straight = load_checkpoint(tmp_path / "run"), load_checkpoint(tmp_path / "straight")
    for part in ("denoiser", "ema_text", "optimizer", *(["slot_head"] if extra else [])):
        assert_same(resumed[part], straight[part])
    assert resumed["data_rng"] == straight["data_rng"]
    assert resumed["state"]["curve"] == straight["state"]["curve"]
    assert json.loads((tmp_path / "model" / "training.json").read_text())["steps"] == 3
    images = ShapesDiffusion.from_pretrained(tmp_path / "model").generate(["a red circle on the left on a white background"],
                                                                          [0], Sampling(num_inference_steps=2))
    assert images[0].size == (32, 32)


def test_a_diffusion_phase_scales_the_position_embedding_once_and_anneals_to_zero(tmp_path):
    common = ["--batch-size", "2", "--threads", "1", "--checkpoint-minutes", "1000"]
    diffusion.main(["--out", str(tmp_path / "first"), *common, "--max-steps", "1", "--export", str(tmp_path / "model")])
    shipped = ShapesDiffusion.from_pretrained(tmp_path / "model").text_encoder.position_embedding
    # A phase that has nothing to train (its --max-steps already reached) checkpoints the weights it starts from.
    phase = ["--out", str(tmp_path / "phase"), *common, "--init-from", str(tmp_path / "model"), "--position-scale", "20",
             "--max-steps", "1"]
    diffusion.main(phase)
    diffusion.main(phase)  # a resumed phase keeps its checkpoint's embedding: it is not scaled again
    for part in ("text_encoder", "ema_text"):
        assert torch.equal(load_checkpoint(tmp_path / "phase")[part]["position_embedding"], 20 * shipped)

    # With --decay-steps 1 the learning rate is zero from the phase's second step: the weights stop moving.
    annealed = ["--out", str(tmp_path / "annealed"), *common, "--init-from", str(tmp_path / "model"), "--decay-steps", "1"]
    diffusion.main([*annealed, "--max-steps", "2"])
    after_one = load_checkpoint(tmp_path / "annealed")["denoiser"]
    diffusion.main([*annealed, "--max-steps", "3"])
    after_two = load_checkpoint(tmp_path / "annealed")["denoiser"]
    assert_same(after_two, after_one)
    assert not torch.equal(after_one["unet.conv_in.weight"],
                           ShapesDiffusion.from_pretrained(tmp_path / "model").denoiser.unet.conv_in.weight)


def test_slot_targets_tell_a_caption_from_its_reverse():
    targets = diffusion.slot_targets(["a red square above a blue circle on a white background",
                                      "a blue circle above a red square on a white background",
                                      "a red square on the left on a white background"])
    names = list(diffusion.SLOTS)
    assert not torch.equal(targets[0], targets[1])
    assert torch.equal(targets[0][names.index("first colour")], targets[1][names.index("second colour")] - 1)  # None first
    assert diffusion.SLOTS["second colour"][int(targets[2][names.index("second colour")])] is None
    assert diffusion.SLOTS["position"][int(targets[2][names.index("position")])] == "left"


def test_ranker_training_exports_a_local_dir(tmp_path):
    ranker.main(["--out", str(tmp_path / "run"), "--minutes", "0.05", "--batch-size", "8", "--export", str(tmp_path / "model")])
    record = json.loads((tmp_path / "model" / "training.json").read_text())
    assert record["steps"] >= 1 and 0.0 <= record["retrieval_top1_of_100"]["seen"] <= 1.0
    assert len(ClipRanker.from_pretrained(f"local-dir:{tmp_path / 'model'}").score("a red circle on the left on a white background", [])) == 0


def test_ranker_training_resumes_and_a_phase_from_shipped_weights_keeps_the_record(tmp_path, capsys):
    first = ["--out", str(tmp_path / "run"), "--batch-size", "4", "--export", str(tmp_path / "model")]
    ranker.main([*first, "--minutes", "0.02"])
    steps = json.loads((tmp_path / "model" / "training.json").read_text())["steps"]
    ranker.main([*first, "--minutes", "0.04"])  # the same run, longer: it resumes
    assert f"resumed at step {steps} " in capsys.readouterr().out
    first_record = json.loads((tmp_path / "model" / "training.json").read_text())
    assert first_record["steps"] > steps and len(first_record["phases"]) == 1

    ranker.main(["--out", str(tmp_path / "phase2"), "--batch-size", "4", "--minutes", "0.02", "--image-negatives",
                 "--size-negatives", "0.5", "--noise", "0.05", "--init-from", str(tmp_path / "model"),
                 "--export", str(tmp_path / "model2")])  # fmt: skip
    record = json.loads((tmp_path / "model2" / "training.json").read_text())
    assert [phase["image_negatives"] for phase in record["phases"]] == [False, True]
    assert record["phases"][0] == first_record["phases"][0]
    assert record["steps"] == first_record["steps"] + record["phases"][1]["stopped_at"]["steps"]


def test_a_ranker_phase_with_judged_candidates_draws_them_once_from_the_embedded_generators(tmp_path, capsys):
    from dalleflow.train.judged_candidates import JudgedCandidates

    command = ["--out", str(tmp_path / "run"), "--batch-size", "4", "--judged-prompts", "2", "--judged-pairs", "4",
               "--export", str(tmp_path / "model")]  # fmt: skip
    ranker.main([*command, "--minutes", "0.02"])
    assert "drawing 4 candidates per generator for 2 train-split prompts" in capsys.readouterr().out
    judged = JudgedCandidates.load(tmp_path / "run" / "judged-candidates.npz")
    assert judged.generators == ["diffusion", "dalle"] and judged.images.shape == (16, 32, 32, 3)
    assert list(judged.generator) == [0] * 8 + [1] * 8 and list(judged.prompt) == [0] * 4 + [1] * 4 + [0] * 4 + [1] * 4

    ranker.main([*command, "--minutes", "0.04"])  # resumed: the same candidates, not drawn again
    out = capsys.readouterr().out
    assert "drawing" not in out and "judged candidates: 2 prompts, 16 candidates" in out
    phase = json.loads((tmp_path / "model" / "training.json").read_text())["phases"][-1]
    assert phase["judged_candidates"]["prompts"] == 2 and phase["judged_candidates"]["pairs_per_step"] == 4


def test_a_ranker_phase_can_draw_its_judged_candidates_from_one_generator_and_a_misspelt_one_is_refused(
    tmp_path, capsys
):
    from dalleflow.train.judged_candidates import JudgedCandidates

    with pytest.raises(SystemExit):
        ranker.main(["--out", str(tmp_path / "run"), "--judged-prompts", "2", "--judged-generators", "dall-e"])
    assert "--judged-generators: no embedded generator named dall-e; there are diffusion, dalle" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()

    ranker.main(["--out", str(tmp_path / "run"), "--batch-size", "4", "--judged-prompts", "2", "--judged-pairs", "4",
                 "--judged-images", "3", "--judged-generators", "dalle", "--minutes", "0.02"])  # fmt: skip
    judged = JudgedCandidates.load(tmp_path / "run" / "judged-candidates.npz")
    assert judged.generators == ["dalle"] and list(judged.generator) == [0] * 6 and list(judged.prompt) == [0] * 3 + [1] * 3


def test_a_ranker_phase_asking_more_judged_prompts_than_the_train_split_has_is_refused_at_once(tmp_path, capsys):
    from dalleflow.shapes.scene import specs_of_split

    too_many = len(specs_of_split("train")) + 1  # distinct captions cannot be drawn past the split's own
    with pytest.raises(SystemExit):
        ranker.main(["--out", str(tmp_path / "run"), "--judged-prompts", str(too_many)])
    assert f"--judged-prompts: at most {too_many - 1}" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_diffusion_training_stopped_by_sigterm_saves_and_exports(tmp_path):
    command = [sys.executable, "-m", "dalleflow.train.diffusion", "--out", str(tmp_path / "run"), "--batch-size", "2",
               "--threads", "1", "--checkpoint-minutes", "1000", "--export", str(tmp_path / "model")]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as run:
        for line in run.stdout:
            if line.startswith("step 100 "):
                run.send_signal(signal.SIGTERM)
                break
        output = line + run.stdout.read()
        assert run.wait(timeout=120) == 0, output
    assert "stopped by a signal" in output
    steps = load_checkpoint(tmp_path / "run")["state"]["step"]
    assert steps >= 100
    assert json.loads((tmp_path / "model" / "training.json").read_text())["steps"] == steps


def test_upscaler_training_exports_a_file_spandrel_serves_and_resumes(tmp_path, capsys):
    from dalleflow.models.factory import create_model
    from dalleflow.shapes import render_caption

    command = ["--out", str(tmp_path / "run"), "--batch-size", "2", "--features", "8", "--convolutions", "2",
               "--export", str(tmp_path / "model")]  # fmt: skip
    upscaler.main([*command, "--minutes", "0.02"])
    steps = json.loads((tmp_path / "model" / "training.json").read_text())["steps"]
    upscaler.main([*command, "--minutes", "0.04"])
    assert f"resumed at step {steps} " in capsys.readouterr().out
    record = json.loads((tmp_path / "model" / "training.json").read_text())
    assert record["steps"] > steps and record["command"].startswith("dalleflow train upscaler ")
    served = create_model({"family": "spandrel", "weights": f"local-dir:{tmp_path / 'model'}"})
    assert served.architecture == "RealESRGAN Compact" and served.scale == 4
    assert served.upscale(render_caption("a red circle on the left on a white background")).size == (128, 128)


def test_a_missized_negative_is_an_image_the_oracle_refuses_for_its_caption():
    from dalleflow.shapes import judge, render_scene

    batches = ranker.Batches(seed=0, batch_size=64, image_negatives=True, noise=0.0, size_negatives=1.0)
    scenes = [batches.sampler.sample() for _ in range(64)]
    verdicts = [judge(render_scene(batches._missized(scene)), scene.caption) for scene in scenes]
    assert not any(verdict.accepted for verdict in verdicts)
    # Refused for its size, or for what the big one covers of the other object.
    assert sum(any(reason.startswith("size") for reason in verdict.reasons) for verdict in verdicts) >= 48
    batch = batches.next()
    assert batch.matched == [False] * 64 and batch.negative_images.shape == batch.images.shape


def test_a_malformed_negative_is_an_image_the_oracle_refuses_for_its_shape():
    from dalleflow.shapes import judge

    batches = ranker.Batches(seed=0, batch_size=64, image_negatives=True, noise=0.0, malformed_negatives=1.0)
    scenes = [batches.sampler.sample() for _ in range(64)]
    verdicts = [judge(batches._malformed(scene), scene.caption) for scene in scenes]
    assert not any(verdict.accepted for verdict in verdicts)
    assert sum(any(reason.startswith(("shape", "size")) for reason in verdict.reasons) for verdict in verdicts) >= 48
    batch = batches.next()
    assert batch.matched == [False] * 64


def test_a_between_negative_is_a_blended_outline_the_oracle_refuses():
    import numpy as np

    from dalleflow.shapes import judge, render_scene

    batches = ranker.Batches(seed=0, batch_size=64, image_negatives=True, noise=0.0, between_negatives=1.0)
    scenes = [batches.sampler.sample() for _ in range(64)]
    negatives = [batches._between(scene) for scene in scenes]
    verdicts = [judge(image, scene.caption) for image, scene in zip(negatives, scenes)]
    assert not any(verdict.accepted for verdict in verdicts)
    assert sum(any(reason.startswith("shape") for reason in verdict.reasons) for verdict in verdicts) >= 40
    # A blend, not a clean render: the changed pixels are a thin rim of the object, not the object gone.
    changed = [(image != render_scene(scene)).any(axis=-1).mean() for image, scene in zip(negatives, scenes)]
    assert 0 < np.median(changed) < 0.1
    batch = batches.next()
    assert batch.matched == [False] * 64 and batch.negative_images.shape == batch.images.shape
