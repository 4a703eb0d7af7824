"""The training commands run, checkpoint, resume and export loadable weights (a few steps, tiny batches)."""

import json
import signal
import subprocess
import sys

import torch

from dalleflow.models.diffusion import ShapesDiffusion
from dalleflow.models.ranker import ClipRanker
from dalleflow.train import diffusion, ranker


def test_diffusion_training_resumes_and_exports(tmp_path):
    common = ["--out", str(tmp_path / "run"), "--batch-size", "2", "--threads", "1", "--checkpoint-minutes", "1000"]
    diffusion.main([*common, "--max-steps", "2"])
    first = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["state"]["step"]
    diffusion.main([*common, "--max-steps", "3", "--export", str(tmp_path / "model")])
    assert first == 2
    assert json.loads((tmp_path / "model" / "training.json").read_text())["steps"] == 3
    images = ShapesDiffusion.from_pretrained(tmp_path / "model").generate(["a red circle on the left on a white background"],
                                                                          num_inference_steps=2)
    assert images[0].size == (32, 32)


def test_ranker_training_exports_a_local_dir(tmp_path):
    ranker.main(["--out", str(tmp_path / "run"), "--minutes", "0.05", "--batch-size", "8", "--export", str(tmp_path / "model")])
    record = json.loads((tmp_path / "model" / "training.json").read_text())
    assert record["steps"] >= 1 and 0.0 <= record["retrieval_top1_of_100"]["seen"] <= 1.0
    assert len(ClipRanker.from_pretrained(f"local-dir:{tmp_path / 'model'}").score("a red circle on the left on a white background", [])) == 0


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
    steps = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["state"]["step"]
    assert steps >= 100
    assert json.loads((tmp_path / "model" / "training.json").read_text())["steps"] == steps
