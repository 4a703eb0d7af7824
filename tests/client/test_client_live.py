"""The client against a real running server with the embedded models (`server_url` from tests/conftest.py)."""

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
    # Every generator that answered gave num_images; the answer holds all of them.
    ok = [report for report in generated.generators.values() if report.status == "ok"]
    assert ok and all(report.count == 2 for report in ok)
    assert len(generated) == 2 * len(ok)


def test_stored_image_is_the_candidate(client, generated):
    best = generated.best
    assert client.image(best.id).convert("RGB").tobytes() == best.image.convert("RGB").tobytes()


def test_diffuse_by_candidate_and_by_id(client, generated):
    for pick in (generated.best, generated.best.id):
        variations = client.diffuse(pick, PROMPT, skip_rate=0.6, num_images=2, seed=3, **FAST)
        assert_ranked(variations)
        assert len(variations) == 2


def test_upscale_gives_four_times_the_size(client, generated):
    best = generated.best
    upscaled = client.upscale(best)
    assert upscaled.image.size == (upscaled.width, upscaled.height) == (4 * best.width, 4 * best.height)


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
    grid_line, *candidate_lines = capsys.readouterr().out.splitlines()
    grid = Path(grid_line.removeprefix("grid").strip())
    assert grid.name.endswith("-grid.png") and read_png_metadata(grid)["prompt"] == PROMPT
    candidates = [Path(line.split()[-1]) for line in candidate_lines]
    assert candidates
    assert sorted(tmp_path.glob("*.png")) == sorted([grid, *candidates])  # each file saved is printed
