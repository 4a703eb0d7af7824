"""dalle-flow's Jina HTTP protocol: in-process over a Flow of tiny real models, then the
README's own client code, unchanged, through the real jina client against the served app."""

import base64
import io
import json
import os
import subprocess
import time

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image

from dalleflow.models.ranker import ClipRanker
from dalleflow.service.flow import Flow
from dalleflow.service.http import create_app
from dalleflow.service.stages import LocalStage
from dalleflow.service.store import ImageStore
from dalleflow.shapes import render_caption
from tests.conftest import REPO, build_tiny_diffusion

PROMPT = "a red circle on the left on a white background"
FAST = {"num_inference_steps": 2.0}  # the Jina client sends every number as a float
JINA_PYTHON = REPO / ".venv-jina" / "bin" / "python"


def data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def image_of(uri: str) -> Image.Image:
    media, _, data = uri.partition(",")
    assert media == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(data)))


def jina_body(docs, parameters=None, exec_endpoint="/", target_executor=None) -> dict:
    """What the jina 3.34 client sends (observed): the endpoint in the header and beside it."""
    header = {"request_id": "5e1d" * 8, "exec_endpoint": exec_endpoint}
    body = {"header": header, "parameters": parameters or {}, "data": docs, "exec_endpoint": exec_endpoint}
    if target_executor is not None:
        header["target_executor"] = body["target_executor"] = target_executor
    return body


@pytest.fixture(scope="module")
def app(tiny_diffusion, tiny_clip_folder, embedded_upscaler, tmp_path_factory) -> FastAPI:
    app = create_app()
    app.state.flow = Flow(
        generators={"diffusion": LocalStage(tiny_diffusion), "broken": LocalStage(build_tiny_diffusion(text_width=8))},
        ranker=LocalStage(ClipRanker.from_pretrained(f"local-dir:{tiny_clip_folder[1]}")),
        refiner=LocalStage(tiny_diffusion),
        upscaler=LocalStage(embedded_upscaler),
        store=ImageStore(tmp_path_factory.mktemp("jina-store")),
    )
    return app


@pytest.fixture
async def post(app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        async def send(body) -> dict:
            answer = await client.post("/post", json=body) if not isinstance(body, bytes) else await client.post(
                "/post", content=body, headers={"content-type": "application/json"})
            assert answer.status_code == 200, answer.text  # Jina reports errors in the body, not the status
            return answer.json()
        yield send


def status_of(answer: dict) -> dict:
    return answer["header"]["status"]


async def test_generation_answers_each_doc_in_order_with_ranked_candidates(post):
    docs = [{"id": "a" * 32, "text": PROMPT, "tags": {"mine": 1.0}}, {"id": "b" * 32, "text": "a blue square"}]
    answer = await post(jina_body(docs, {"num_images": 3.0, "seed": 7.0, "__results__": {}, **FAST}))
    assert status_of(answer)["code"] == 0
    assert set(answer) == {"header", "data"}
    assert [d["id"] for d in answer["data"]] == ["a" * 32, "b" * 32]
    first = answer["data"][0]
    assert first["text"] == PROMPT and first["tags"]["mine"] == 1.0 and first["tags"]["seed"] == 7
    # Only the working generator's images; the broken one is reported, not fatal.
    assert first["tags"]["generators"] == {"diffusion": "ok", "broken": "failed"}
    matches = first["matches"]
    scores = [m["scores"]["clip_score"]["value"] for m in matches]
    assert len(matches) == 3 and scores == sorted(scores, reverse=True)
    assert [m["tags"]["rank"] for m in matches] == [0, 1, 2]
    for match in matches:
        assert match["text"] == PROMPT and match["tags"]["generator"] == "diffusion"
        assert image_of(match["uri"]).size == (32, 32) and match["mime_type"] == "image/png"
    assert np.linalg.norm(first["embedding"]) == pytest.approx(1.0, abs=1e-5)


async def test_words_the_models_do_not_know_are_named_in_the_docs_tags(post):
    docs = [{"text": "a teddy bear on a red circle"}, {"text": PROMPT}]
    teddy, known = (await post(jina_body(docs, {"num_images": 1.0, **FAST})))["data"]
    assert "'teddy', 'bear'" in teddy["tags"]["warnings"][0] and "warnings" not in known["tags"]


async def test_data_as_docs_object_is_read_too(post):
    answer = await post(jina_body({"docs": [{"id": "c" * 32, "text": PROMPT}]}, {"num_images": 1.0, **FAST}))
    assert status_of(answer)["code"] == 0 and [d["id"] for d in answer["data"]] == ["c" * 32]


# dalle-flow's executor name, and the refiner's own.
@pytest.mark.parametrize("target", ["diffusion", "refiner"])
async def test_a_refiner_target_answers_num_images_variations_of_the_doc(post, target):
    pick = {"id": "d" * 32, "text": PROMPT, "uri": data_uri(render_caption(PROMPT, seed=1)), "embedding": [0.5, 0.5]}
    answer = await post(jina_body([pick], {"skip_rate": 0.5, "num_images": 3.0, **FAST}, target_executor=target))
    assert status_of(answer)["code"] == 0
    [doc] = answer["data"]
    assert doc["id"] == pick["id"] and doc["uri"] == pick["uri"] and doc["embedding"] == [0.5, 0.5]
    assert len(doc["matches"]) == 3 and {m["tags"]["generator"] for m in doc["matches"]} == {"refiner"}


async def test_upscale_replaces_the_uri_by_the_x4_image(post):
    pick = {"id": "e" * 32, "text": PROMPT, "uri": data_uri(render_caption(PROMPT, seed=1)), "tags": {"rank": 0.0}}
    answer = await post(jina_body([pick], {"__results__": {}}, exec_endpoint="/upscale"))
    assert status_of(answer)["code"] == 0
    [doc] = answer["data"]
    assert doc["id"] == pick["id"] and doc["text"] == PROMPT
    assert image_of(doc["uri"]).size == (128, 128)
    assert doc["tags"]["upscaled"] is True and doc["tags"]["rank"] == 0.0


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (jina_body([{"id": "f" * 32}]), "data[0].text"),
        (jina_body([{"text": ["not", "a", "string"]}]), "data[0].text"),
        (jina_body(["not a doc"]), "data[0]"),
        (jina_body("not a list"), "data"),
        (jina_body([{"text": PROMPT}], {"num_images": 99.0}), "parameters.num_images"),
        (jina_body([{"text": PROMPT}], {"num_images": 2.5}), "parameters.num_images"),
        (jina_body([{"text": PROMPT}], {"num_imagez": 2.0}), "num_imagez"),
        (jina_body([{"text": PROMPT}], exec_endpoint="/index"), "exec_endpoint"),
        (jina_body([{"text": PROMPT, "uri": "file:///etc/passwd"}], target_executor="diffusion"), "data[0].uri"),
        (jina_body([{"text": PROMPT, "uri": "data:image/png;base64,bm90IGEgcG5n"}], target_executor="diffusion"),
         "data[0].uri: not a decodable"),
        (jina_body([{"text": PROMPT}], exec_endpoint="/upscale"), "no image"),
        (b"{not json", "not JSON"),
        (b'{"data": [{"text": "a"}], "parameters": {"guidance_scale": NaN}}', "NaN is not JSON"),
        (b'{"data": [{"text": "a"}], "parameters": {"seed": 1e400}}', "1e400 is not a finite number"),
        (b'{"data": [{"text": "a \\ud800"}]}', "data[0].text"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        ([1, 2], "body"),
    ],
)
async def test_bad_requests_are_jina_errors_naming_the_field(post, body, named):
    answer = await post(body)
    status = status_of(answer)
    assert status["code"] == 1 and named in status["description"], status
    assert status["exception"]["name"] and "data" not in answer


async def test_a_docs_own_fields_come_back_as_sent_even_what_utf8_cannot_carry(post):
    body = jina_body([{"id": "9" * 32, "text": PROMPT, "tags": {"note": "\ud800"}}], {"num_images": 1.0, **FAST})
    answer = await post(json.dumps(body).encode())
    assert status_of(answer)["code"] == 0 and answer["data"][0]["tags"]["note"] == "\ud800"


async def test_a_failing_stage_is_a_jina_error_not_a_500(post):
    answer = await post(jina_body([{"text": PROMPT}], {"generators": ["broken"], **FAST}))
    status = status_of(answer)
    assert status["code"] == 1 and status["exception"]["name"] == "StageFailed"
    assert "broken: failed" in status["description"]
    assert answer["header"]["request_id"] == "5e1d" * 8


def test_the_route_stays_out_of_the_schema_and_can_be_switched_off():
    from fastapi.testclient import TestClient

    paths = TestClient(create_app(), base_url="http://127.0.0.1").get("/openapi.json").json()["paths"]
    # jina >= 3.15 posts to a schema path named like its endpoint ("", "upscale") or "default".
    assert not {path.strip("/") for path in paths} & {"", "post", "default", "upscale"}
    assert TestClient(create_app(jina_compat_enabled=False), base_url="http://127.0.0.1").post("/post", json={}).status_code in (404, 405)


def test_the_readme_client_code_runs_unchanged_against_the_service(server_url):
    """dalle-flow's README: 2 per generator, pick 2, 36 variations at skip_rate 0.5, pick 34, upscale."""
    assert JINA_PYTHON.exists(), "the jina client's venv is missing: run `bash scripts/setup.sh test`"
    env = {**os.environ, "MPLBACKEND": "Agg", "JINA_LOG_LEVEL": "ERROR", "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    run = subprocess.run(
        [str(JINA_PYTHON), str(REPO / "tests/service/dalle_flow_readme.py"), server_url],
        capture_output=True, text=True, timeout=600, env=env, cwd=REPO,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    print(f"README client code: {time.perf_counter() - started:.1f} s")
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    candidates, variations = seen["candidates"], seen["variations"]
    # 2 per generator, the two generators' candidates ranked together; da[2] was picked.
    assert sorted(c["tags"]["generator"] for c in candidates) == ["dalle", "dalle", "diffusion", "diffusion"]
    scores = [c["clip_score"] for c in candidates]
    assert scores == sorted(scores, reverse=True)
    assert seen["pick"] == {"id": candidates[2]["id"], "uri": candidates[2]["uri"]}
    assert seen["doc"]["embedding_size"] > 0
    assert len(variations) == 36 and {v["tags"]["generator"] for v in variations} == {"refiner"}
    assert all(v["text"] == seen["doc"]["text"] for v in variations)
    # The pick went through unchanged, and came back x4 with the same id.
    upscaled = seen["upscaled"]
    assert upscaled["id"] == seen["variation_pick"]["id"] and upscaled["tags"]["upscaled"] is True
    small, large = image_of(seen["variation_pick"]["uri"]), image_of(upscaled["uri"])
    assert large.size == (small.width * 4, small.height * 4)
    # Every image answered is in the store under its id.
    stored = httpx.get(f"{server_url}/v1/images/{upscaled['tags']['image_id']}", timeout=30)
    assert stored.status_code == 200 and Image.open(io.BytesIO(stored.content)).size == large.size
