"""The embedded default app through real Ray Serve and real HTTP."""

import base64
import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image

from dalleflow.models.factory import WEIGHTS_FOLDER

PROMPT = "a red circle on the left on a white background"
FAST = {"num_inference_steps": 4}


def post(url: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=300)


def decode(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


def png_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def generated(server_url) -> dict:
    answer = post(server_url, "/v1/generate", {"prompt": PROMPT, "num_images": 3, "seed": 11, **FAST})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_generate_ranks_the_candidates_of_both_generators_together(generated):
    candidates = generated["candidates"]
    assert generated["seed"] == 11 and generated["prompt"] == PROMPT
    assert [c["rank"] for c in candidates] == list(range(6))
    scores = [c["clip_score"] for c in candidates]
    assert scores == sorted(scores, reverse=True)
    # num_images is per generator: 3 of each, seeded alike, in one ranking.
    for name in ("diffusion", "dalle"):
        assert sorted(c["seed"] for c in candidates if c["generator"] == name) == [11, 12, 13]
        report = generated["generators"][name]
        assert report["status"] == "ok" and report["count"] == 3 and report["seconds"] > 0
    assert set(generated["generators"]) == {"diffusion", "dalle"}
    assert {"generate", "rank", "store", "total"} <= set(generated["timings"])
    for candidate in candidates:
        assert decode(candidate["image"]).size == (candidate["width"], candidate["height"]) == (32, 32)


def test_every_answered_image_is_stored_with_its_metadata(server_url, generated):
    for candidate in generated["candidates"]:
        stored = httpx.get(f"{server_url}/v1/images/{candidate['id']}", timeout=30)
        assert stored.headers["content-type"] == "image/png"
        image = Image.open(io.BytesIO(stored.content))
        assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(decode(candidate["image"]).convert("RGB")))
        assert image.text["prompt"] == PROMPT and image.text["seed"] == str(candidate["seed"])
        assert image.text["generator"] == candidate["generator"]


@pytest.mark.parametrize("generator", ["diffusion", "dalle"])
def test_a_candidate_is_made_again_alone_from_its_seed(server_url, generated, generator):
    candidate = [c for c in generated["candidates"] if c["generator"] == generator][-1]
    again = post(server_url, "/v1/generate", {"prompt": PROMPT, "num_images": 1, "seed": candidate["seed"],
                                              "generators": [generator], **FAST})  # fmt: skip
    assert set(again.json()["generators"]) == {generator}
    # Made beside 2 others and alone: the same pixels (see test_batching.py); the PNGs differ
    # in their metadata only (their ids, and num_images).
    assert np.array_equal(np.asarray(decode(again.json()["candidates"][0]["image"])), np.asarray(decode(candidate["image"])))


@pytest.mark.parametrize(("generator", "weights"), [("diffusion", "shapes-diffusion"), ("dalle", "shapes-dalle")])
def test_guidance_left_out_is_each_generators_own_default(server_url, generator, weights):
    own_default = json.loads((WEIGHTS_FOLDER / weights / "generation_config.json").read_text())["guidance_scale"]

    def image(**guidance) -> bytes:
        body = {"prompt": PROMPT, "num_images": 1, "seed": 5, "generators": [generator], **FAST, **guidance}
        answer = post(server_url, "/v1/generate", body)
        assert answer.status_code == 200, answer.text
        return np.asarray(decode(answer.json()["candidates"][0]["image"])).tobytes()  # pixels: the PNGs' ids differ

    assert image() == image(guidance_scale=own_default)
    assert image() != image(guidance_scale=own_default + 4)


def test_refine_by_id_and_by_image(server_url, generated):
    pick = generated["candidates"][0]
    by_id = post(server_url, "/v1/refine", {"image_id": pick["id"], "prompt": PROMPT, "num_images": 2, "skip_rate": 0.5, **FAST})
    assert by_id.status_code == 200, by_id.text
    assert [c["rank"] for c in by_id.json()["candidates"]] == [0, 1]
    assert {c["generator"] for c in by_id.json()["candidates"]} == {"refiner"}
    by_image = post(server_url, "/v1/refine", {"image": pick["image"], "prompt": PROMPT, "num_images": 1, **FAST})
    assert by_image.status_code == 200, by_image.text


def test_diffuse_the_old_route_is_refine_and_the_schema_names_refine_only(server_url, generated):
    body = {"image_id": generated["candidates"][0]["id"], "prompt": PROMPT, "num_images": 1, "seed": 2, **FAST}
    old, new = (post(server_url, path, body) for path in ("/v1/diffuse", "/v1/refine"))
    assert old.status_code == new.status_code == 200, old.text
    pixels = [np.asarray(decode(answer.json()["candidates"][0]["image"])).tobytes() for answer in (old, new)]
    assert pixels[0] == pixels[1]
    assert post(server_url, "/v1/diffuse", {**body, "skip_rate": 2}).status_code == 422
    paths = httpx.get(f"{server_url}/openapi.json", timeout=30).json()["paths"]
    assert "/v1/refine" in paths and "/v1/diffuse" not in paths


TEDDY = "a teddy bear on a skateboard in Times Square"  # dalle-flow's own example


def test_a_prompt_with_words_the_models_do_not_know_answers_a_warning_naming_them(server_url, generated):
    answer = post(server_url, "/v1/generate", {"prompt": TEDDY, "num_images": 1, **FAST})
    assert answer.status_code == 200, answer.text
    assert answer.json()["warnings"] == [
        "prompt: the generators 'diffusion' and 'dalle' do not know 'teddy', 'bear', 'skateboard', 'in', 'times', "
        "so the images leave them out (GET /v1/models lists the words each model knows)"]
    assert generated["warnings"] == []  # the world's own caption
    refined = post(server_url, "/v1/refine", {"image_id": generated["candidates"][0]["id"], "prompt": "a red teddy",
                                              "num_images": 1, **FAST})  # fmt: skip
    assert refined.json()["warnings"] == [
        "prompt: the refiner does not know 'teddy', so the images leave it out "
        "(GET /v1/models lists the words each model knows)"]


def test_models_say_the_words_they_know_and_what_the_embedded_world_is(server_url):
    answer = httpx.get(f"{server_url}/v1/models", timeout=30).json()
    vocabularies = {model["stage"]: model["vocabulary"] for model in answer["models"]}
    # Both embedded generators read word-level vocabularies (the DALL·E's tokenizer.json, the
    # diffusion model's text encoder config): the world's 25 words; the other stages read no prompt.
    assert vocabularies["generator:dalle"] == vocabularies["generator:diffusion"] == vocabularies["refiner"]
    assert {"red", "circle", "above", "background"} <= set(vocabularies["generator:dalle"])
    assert len(vocabularies["generator:dalle"]) == 25 and vocabularies["ranker"] is None
    world = answer["world"]
    assert world["words"]["backgrounds"] == ["white", "black", "gray"]
    assert world["caption_forms"][0] == "a {colour} {shape} on the {position} on a {background} background"
    # An example is a prompt the models know (tests/shapes/test_guide.py checks them all).
    example = {"prompt": world["example_prompts"][0], "num_images": 1, "generators": ["dalle"]}
    assert post(server_url, "/v1/generate", example).json()["warnings"] == []
    assert "Configure" in world["real_checkpoints"] and "diffusers" in world["real_checkpoints"]


def test_upscale_by_id_is_x4_and_stored(server_url, generated):
    answer = post(server_url, "/v1/upscale", {"image_id": generated["candidates"][0]["id"]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["width"], body["height"]) == decode(body["image"]).size == (128, 128)
    assert httpx.get(f"{server_url}/v1/images/{body['id']}", timeout=30).status_code == 200


def test_the_stored_png_is_the_answered_one_and_says_what_made_it(server_url, generated):
    for candidate in generated["candidates"]:
        stored = httpx.get(f"{server_url}/v1/images/{candidate['id']}", timeout=30)
        assert stored.content == base64.b64decode(candidate["image"])  # the same bytes, made once
        made = json.loads(Image.open(io.BytesIO(stored.content)).text["dalleflow"])
        assert (made["prompt"], made["seed"], made["generator"]) == (PROMPT, candidate["seed"], candidate["generator"])
        assert made["parameters"]["num_images"] == 3 and made["parameters"]["num_inference_steps"] == 4


def test_an_upscaled_png_keeps_its_sources_prompt_seed_generator_and_parameters(server_url, generated):
    source = generated["candidates"][1]
    body = post(server_url, "/v1/upscale", {"image_id": source["id"]}).json()
    made = json.loads(decode(body["image"]).text["dalleflow"])
    assert (made["prompt"], made["seed"], made["generator"]) == (PROMPT, source["seed"], source["generator"])
    assert made["source_id"] == source["id"] and made["scale"] == 4 and made["parameters"]["num_inference_steps"] == 4
    assert decode(body["image"]).text["prompt"] == PROMPT


def test_the_model_that_generates_also_refines_loaded_once(server_url, generated):
    from ray import serve

    deployments = serve.status().applications["dalleflow"].deployments
    assert "refiner" not in deployments and deployments["generator-diffusion"].status == "HEALTHY"
    diffusion = serve.get_deployment_handle("generator-diffusion", "dalleflow")
    before = diffusion.step_counts.remote().result(timeout_s=60)
    body = {"image_id": generated["candidates"][0]["id"], "prompt": PROMPT, "num_images": 1, "skip_rate": 0.5, **FAST}
    assert post(server_url, "/v1/refine", body).status_code == 200
    after = diffusion.step_counts.remote().result(timeout_s=60)
    # The variation ran in the generator's own replica, on its one copy of the weights.
    assert after["done"] == before["done"] + 1 and after["steps_run"] == before["steps_run"] + 2


def test_models_health_and_readiness(server_url):
    assert httpx.get(f"{server_url}/healthz", timeout=30).json() == {"status": "ok"}
    ready = httpx.get(f"{server_url}/readyz", timeout=30)
    assert ready.status_code == 200, ready.text
    assert ready.json()["stages"] == {
        "generator:diffusion": True, "generator:dalle": True, "ranker": True, "refiner": True, "upscaler": True}
    stages = {m["stage"]: m for m in httpx.get(f"{server_url}/v1/models", timeout=30).json()["models"]}
    assert set(stages) == {"generator:diffusion", "generator:dalle", "ranker", "refiner", "upscaler"}
    assert stages["ranker"]["weights"] == "embedded:shapes-clip"
    assert (stages["generator:dalle"]["model"], stages["generator:dalle"]["weights"]) == ("dalle", "embedded:shapes-dalle")


BOMB = png_b64(Image.new("1", (5000, 5000)))
VALID_ID = "0123456789abcdef" * 2

BAD_INPUTS = [
    ("/v1/generate", {"prompt": ""}, 422, "prompt"),
    ("/v1/generate", {"prompt": "x" * 301}, 422, "prompt"),
    ("/v1/generate", {"prompt": PROMPT, "num_images": 0}, 422, "num_images"),
    ("/v1/generate", {"prompt": PROMPT, "num_images": 17}, 422, "num_images"),
    ("/v1/generate", {"prompt": PROMPT, "generators": ["dalle-9"]}, 422, "generators"),
    ("/v1/generate", {"prompt": PROMPT, "seed": -1}, 422, "seed"),
    ("/v1/generate", {"prompt": PROMPT, "num_inference_steps": 1000}, 422, "num_inference_steps"),
    ("/v1/generate", {"prompt": PROMPT, "colour": "red"}, 422, "colour"),
    ("/v1/generate", {"prompt": PROMPT, "width": 4096}, 422, "width"),
    # The embedded generators make 32x32 images only: a request for others is refused, not resized.
    ("/v1/generate", {"prompt": PROMPT, "width": 64}, 422, "width: the generator 'diffusion' cannot honour it: 64 px"),
    ("/v1/generate", {"prompt": PROMPT, "height": 48, "generators": ["dalle"]}, 422, "height: the generator 'dalle'"),
    ("/v1/refine", {"prompt": PROMPT, "image_id": VALID_ID, "skip_rate": 1.5}, 422, "skip_rate"),
    ("/v1/refine", {"prompt": PROMPT, "image_id": VALID_ID, "skip_rate": -0.1}, 422, "skip_rate"),
    ("/v1/refine", {"prompt": PROMPT, "image_id": VALID_ID, "num_images": 37}, 422, "num_images"),
    ("/v1/refine", {"prompt": PROMPT, "image_id": VALID_ID}, 404, "image_id"),
    ("/v1/refine", {"prompt": PROMPT, "image_id": "../etc/passwd"}, 422, "image_id"),
    ("/v1/refine", {"prompt": PROMPT, "image": "not an image"}, 422, "image"),
    ("/v1/refine", {"prompt": PROMPT}, 422, "image_id"),
    ("/v1/upscale", {"image": BOMB}, 413, "image"),
    ("/v1/upscale", {"image": "A" * 8_000_001}, 422, "image"),
    ("/v1/upscale", {"image_id": VALID_ID}, 404, "image_id"),
]


@pytest.mark.parametrize("path,body,status,field", BAD_INPUTS, ids=[f"{p}-{f}-{s}" for p, _, s, f in BAD_INPUTS])
def test_bad_input_gets_a_4xx_naming_the_field(server_url, path, body, status, field):
    answer = post(server_url, path, body)
    assert answer.status_code == status, answer.text
    assert field in answer.text


def test_an_unknown_image_id_is_404(server_url):
    assert httpx.get(f"{server_url}/v1/images/{VALID_ID}", timeout=30).status_code == 404
    assert httpx.get(f"{server_url}/v1/images/..%2F..%2Fetc%2Fpasswd", timeout=30).status_code == 404
