"""Result and CandidateImage: lazy images, best, grid, saving with metadata."""

import base64
import io
import json

import pytest
from PIL import Image, ImageChops, PngImagePlugin

from dalleflow_client import CandidateImage, DalleflowError, Result, read_png_metadata
from dalleflow_client.schemas import Candidate, GenerateResponse, StageReport

PROMPT = "a red circle to the left of a blue square"


def server_png(image: Image.Image, metadata: dict) -> str:
    """A base64 PNG as the server makes it: its metadata as JSON in a "dalleflow" text chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_text("dalleflow", json.dumps(metadata))
    info.add_text("prompt", metadata["prompt"])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode()


def answer(colours: list[str], size=(32, 32)) -> GenerateResponse:
    """A GenerateResponse as the server sends it, ranked in the order of `colours`."""
    candidates = [
        Candidate(
            id=f"{index:032x}",
            generator="diffusion" if index % 2 else "dalle",
            rank=index,
            clip_score=0.5 - index / 10,
            seed=7 + index,
            image=server_png(Image.new("RGB", size, colour), {
                "prompt": PROMPT, "seed": 7 + index, "generator": "diffusion" if index % 2 else "dalle",
                "id": f"{index:032x}", "parameters": {"num_images": len(colours)}}),
            width=size[0],
            height=size[1],
        )
        for index, colour in enumerate(colours)
    ]
    reports = {"dalle": StageReport(status="ok", count=len(colours))}
    return GenerateResponse(id="f" * 32, prompt=PROMPT, seed=7, candidates=candidates, generators=reports, timings={})


def test_result_exposes_ranked_candidates_with_images():
    result = Result(answer(["red", "green", "blue"]))
    assert len(result) == 3
    assert [candidate.rank for candidate in result] == [0, 1, 2]
    assert result.best is result[0]
    best = result.best
    assert isinstance(best, CandidateImage)
    assert (best.id, best.generator, best.seed, best.prompt) == ("0" * 32, "dalle", 7, PROMPT)
    assert best.image.size == (best.width, best.height) == (32, 32)
    assert best.image.convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    assert result[2].image.convert("RGB").getpixel((5, 5)) == (0, 0, 255)


def test_result_grid_holds_every_candidate_in_rank_order():
    result = Result(answer(["red", "green", "blue", "yellow"]))
    grid = result.grid(show_indices=False)
    # The 32 px candidates, scaled up to readable 128 px cells, 4 px apart.
    assert grid.size == (2 * 128 + 4, 2 * 128 + 4)
    assert [grid.getpixel(point) for point in [(64, 64), (196, 64), (64, 196), (196, 196)]] == [
        (255, 0, 0), (0, 128, 0), (0, 0, 255), (255, 255, 0)
    ]  # fmt: skip
    labelled = result.grid(columns=4)
    assert labelled.width == 4 * 128 + 3 * 4 and labelled.height > 128  # the indices' band above


def test_result_save_writes_each_png_with_its_metadata(tmp_path):
    result = Result(answer(["red", "green"]))
    paths = result.save(tmp_path / "out")
    assert [path.parent for path in paths] == [tmp_path / "out"] * 2
    assert len(set(paths)) == 2
    for candidate, path in zip(result, paths):
        # The server's PNG byte for byte, so its metadata is the server's.
        assert path.read_bytes() == base64.b64decode(candidate.image_base64) == candidate.png
        assert read_png_metadata(path) == candidate.metadata == {
            "prompt": PROMPT,
            "seed": candidate.seed,
            "generator": candidate.generator,
            "id": candidate.id,
            "parameters": {"num_images": 2},
        }
        with Image.open(path) as saved:
            assert ImageChops.difference(saved.convert("RGB"), candidate.image.convert("RGB")).getbbox() is None


def test_candidate_save_to_a_chosen_path(tmp_path):
    candidate = Result(answer(["red"])).best
    path = candidate.save(tmp_path / "pick.png")
    assert path == tmp_path / "pick.png"
    assert read_png_metadata(path)["id"] == candidate.id


def test_names_from_the_server_cannot_leave_the_folder(tmp_path):
    response = answer(["red"])
    response.candidates[0].generator = "../../escape"
    (path,) = Result(response).save(tmp_path)
    assert path.parent == tmp_path


def test_an_empty_answer_says_which_generators_failed():
    response = answer([])
    response.generators = {"dalle": StageReport(status="timeout"), "diffusion": StageReport(status="failed", error="oom")}
    result = Result(response)
    with pytest.raises(DalleflowError, match=r"dalle: timeout, diffusion: failed \(oom\)"):
        result.best
    with pytest.raises(DalleflowError, match="no images"):
        result.grid()
