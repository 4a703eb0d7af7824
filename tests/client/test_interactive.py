"""`dalleflow interactive`, driven through its stdin in a subprocess against the real service."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

from dalleflow_client import read_png_metadata

PROMPT = "a red circle to the left of a blue square on a white background"
DALLEFLOW = str(Path(sys.executable).parent / "dalleflow")
TABLE_ROW = re.compile(r"^\s+(\d+)\s+(\S+)\s+(-?\d+\.\d+)\s+(\d+)\s+(\S+\.png)$", re.M)


def interactive(server_url: str, out: Path, answers: str) -> subprocess.CompletedProcess:
    command = [DALLEFLOW, "interactive", PROMPT, "--url", server_url, "--num-images", "2", "--steps", "4",
               "--seed", "5", "--out", str(out)]  # fmt: skip
    return subprocess.run(command, input=answers, capture_output=True, text=True, timeout=300)


def tables(transcript: str) -> list[list[tuple[str, float, Path]]]:
    """Each numbered table printed: (generator, score, file) per row, in order."""
    return [
        [(generator, float(score), Path(file)) for _, generator, score, _, file in TABLE_ROW.findall(block)]
        for block in transcript.split("grid ")[1:]
    ]


def test_generate_pick_refine_twice_and_upscale(server_url, tmp_path):
    answers = [
        "9",    # out of range: asked again
        "1",    # pick candidate 1
        "0.6",  # skip_rate
        "2",    # variations
        "v",    # refine one of these again, by its old answer (the prompt offers "r")
        "",     # pick the default, variation 0
        "0.8",  # skip_rate
        "",     # as many variations as before
        "1",    # upscale variation 1
    ]  # fmt: skip
    done = interactive(server_url, tmp_path, "\n".join(answers) + "\n")
    assert done.returncode == 0, done.stderr
    transcript = done.stdout
    assert "'9' is not a number from 0 to" in transcript
    assert "(r: refine one of these again)" in transcript and "vary" not in transcript

    candidates, first_variations, second_variations = tables(transcript)
    # 2 per generator: the table ranks both generators' candidates together.
    assert sorted(generator for generator, _, _ in candidates) == ["dalle", "dalle", "diffusion", "diffusion"]
    assert len(first_variations) == len(second_variations) == 2
    for table in (candidates, first_variations, second_variations):
        scores = [score for _, score, _ in table]
        assert scores == sorted(scores, reverse=True)
        assert all(file.is_file() for _, _, file in table)
    assert len(list(tmp_path.glob("*-grid.png"))) == 3
    # Each variation was made from the image picked, at the skip_rate asked.
    picked_first = read_png_metadata(candidates[1][2])["id"]
    picked_second = read_png_metadata(first_variations[0][2])["id"]
    assert f"variations of {picked_first} at skip_rate 0.6" in transcript
    assert f"variations of {picked_second} at skip_rate 0.8" in transcript

    (final,) = tmp_path.glob("final-*.png")
    assert f"saved {final}" in transcript
    upscaled_from = second_variations[1][2]
    with Image.open(final) as image, Image.open(upscaled_from) as source:
        assert image.size == (4 * source.width, 4 * source.height)
    metadata, source_metadata = read_png_metadata(final), read_png_metadata(upscaled_from)
    assert metadata["source_id"] == source_metadata["id"] != metadata["id"]
    assert (metadata["prompt"], metadata["seed"], metadata["parameters"]["skip_rate"]) == (PROMPT, source_metadata["seed"], 0.8)


def test_input_that_ends_early_is_an_error_and_keeps_what_was_saved(server_url, tmp_path):
    done = interactive(server_url, tmp_path, "0\n")
    assert done.returncode == 1
    assert done.stderr.startswith("error: the input ended before an answer to 'skip_rate")
    assert list(tmp_path.glob("*-grid.png")) and not list(tmp_path.glob("final-*.png"))
