"""The client against a real running server with the embedded models (`server_url` from tests/conftest.py)."""

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from dalleflow_client import AsyncClient, Client, RequestError, Result, read_png_metadata
from dalleflow_client.cli import main

PROMPT = "a red circle to the left of a blue square on a white background"
FAST = dict(num_inference_steps=4)


@pytest.fixture(scope="module")
def client(server_url):
    with Client(server_url) as client:
        yield client


@pytest.fixture(scope="module")
def generated(client) -> Result:
    return client.generate(PROMPT, num_images=2, seed=11, **FAST)


def assert_ranked(result: Result) -> None:
    assert result.candidates, result.generators
    assert [candidate.rank for candidate in result] == list(range(len(result)))
    scores = [candidate.clip_score for candidate in result]
    assert scores == sorted(scores, reverse=True)
    for candidate in result:
        assert isinstance(candidate.image, Image.Image)
        assert candidate.image.size == (candidate.width, candidate.height)


def test_health_and_models(client):
    assert client.health() == {"status": "ok"}
    assert client.models()


def test_generate_returns_ranked_candidates(generated):
    assert_ranked(generated)
    assert generated.prompt == PROMPT and generated.seed == 11
    # Both embedded generators gave num_images each; the answer ranks all of them together.
    assert {name: (report.status, report.count) for name, report in generated.generators.items()} == {
        "diffusion": ("ok", 2), "dalle": ("ok", 2)}
    assert sorted(candidate.generator for candidate in generated) == ["dalle", "dalle", "diffusion", "diffusion"]


def test_stored_image_is_the_candidate(client, generated):
    best = generated.best
    assert client.image(best.id).convert("RGB").tobytes() == best.image.convert("RGB").tobytes()


def test_refine_by_candidate_and_by_id(client, generated):
    for pick in (generated.best, generated.best.id):
        variations = client.refine(pick, PROMPT, skip_rate=0.6, num_images=2, seed=3, **FAST)
        assert_ranked(variations)
        assert len(variations) == 2


def test_diffuse_the_old_name_makes_the_same_variations(client, generated):
    def pixels(result):
        return [candidate.image.tobytes() for candidate in result]

    options = dict(skip_rate=0.6, num_images=2, seed=3, **FAST)
    assert pixels(client.diffuse(generated.best, PROMPT, **options)) == pixels(client.refine(generated.best, PROMPT, **options))


def test_the_cli_prints_the_warning_naming_the_words_the_models_do_not_know(server_url, tmp_path, capsys):
    teddy = "a teddy bear on a skateboard in Times Square"  # dalle-flow's own example
    assert main(["generate", teddy, "--url", server_url, "--num-images", "1", "--num-inference-steps", "2",
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: prompt:")]
    assert warnings == ["warning: prompt: the generators 'diffusion' and 'dalle' do not know 'teddy', 'bear', "
                        "'skateboard', 'in', 'times', so the images leave them out (GET /v1/models lists the words "
                        "each model knows)"]  # fmt: skip


def test_upscale_gives_four_times_the_size(client, generated, tmp_path):
    best = generated.best
    upscaled = client.upscale(best)
    assert upscaled.image.size == (upscaled.width, upscaled.height) == (4 * best.width, 4 * best.height)
    # Saved, it still says what it shows and how it was made.
    metadata = read_png_metadata(upscaled.save(tmp_path / "final.png"))
    assert metadata["prompt"] == PROMPT and metadata["seed"] == best.seed and metadata["generator"] == best.generator
    assert (metadata["source_id"], metadata["id"]) == (best.id, upscaled.id)


def test_a_refused_request_raises_request_error_naming_the_field(client):
    with pytest.raises(RequestError, match="num_images") as caught:
        client.generate(PROMPT, num_images=0)
    assert caught.value.status_code == 422


async def test_async_client_generates_the_same_way(server_url):
    async with AsyncClient(server_url) as client:
        result = await client.generate(PROMPT, num_images=1, seed=11, **FAST)
    assert_ranked(result)


def test_cli_generate_saves_the_grid_and_the_images(server_url, tmp_path, capsys):
    assert main(["generate", PROMPT, "--url", server_url, "--num-images", "1", "--steps", "4", "--out", str(tmp_path)]) == 0
    grid_line, header, *candidate_lines = capsys.readouterr().out.splitlines()
    assert header.split() == ["#", "score", "generator", "id", "file"]
    grid = Path(grid_line.removeprefix("grid").strip())
    assert grid.name.endswith("-grid.png") and read_png_metadata(grid)["prompt"] == PROMPT
    candidates = [Path(line.split()[-1]) for line in candidate_lines]
    assert candidates
    assert sorted(tmp_path.glob("*.png")) == sorted([grid, *candidates])  # each file saved is printed


def json_output(capsys) -> dict:
    printed = capsys.readouterr().out
    assert not re.search(r"[A-Za-z0-9+/=]{200}", printed)  # no base64 image rides along
    return json.loads(printed)


def test_cli_json_for_generate_refine_and_upscale(server_url, tmp_path, capsys):
    options = ["--url", server_url, "--num-images", "2", "--num-inference-steps", "4", "--seed", "8", "--json"]
    assert main(["generate", PROMPT, *options, "--out", str(tmp_path / "generated")]) == 0
    generated = json_output(capsys)
    assert (generated["prompt"], generated["seed"]) == (PROMPT, 8)
    assert generated["timings"] and all(report["status"] == "ok" for report in generated["generators"].values())
    candidates, files = generated["candidates"], generated["files"]
    assert [candidate["rank"] for candidate in candidates] == list(range(len(candidates))) and candidates
    assert all({"id", "generator", "clip_score", "seed"} <= candidate.keys() for candidate in candidates)
    assert read_png_metadata(files["grid"])["id"] == generated["id"]
    assert [read_png_metadata(path)["id"] for path in files["candidates"]] == [c["id"] for c in candidates]

    pick = candidates[1]["id"]
    assert main(["refine", pick, "--prompt", PROMPT, *options, "--skip-rate", "0.7", "--out", str(tmp_path / "varied")]) == 0
    varied = json_output(capsys)
    assert len(varied["candidates"]) == 2 and len(varied["files"]["candidates"]) == 2 and varied["warnings"] == []
    # The old command name, the same variations.
    assert main(["diffuse", pick, "--prompt", PROMPT, *options, "--skip-rate", "0.7", "--out", str(tmp_path / "old")]) == 0
    assert [c["seed"] for c in json_output(capsys)["candidates"]] == [c["seed"] for c in varied["candidates"]]

    final = tmp_path / "final.png"
    assert main(["upscale", varied["candidates"][0]["id"], "--url", server_url, "--json", "--out", str(final)]) == 0
    upscaled = json_output(capsys)
    assert upscaled["file"] == str(final) and upscaled["seconds"] > 0
    with Image.open(final) as image:
        assert image.size == (upscaled["width"], upscaled["height"])
    assert read_png_metadata(final)["id"] == upscaled["id"]
