"""Request building and answer checking, shared by Client and AsyncClient; no server needed."""

import inspect
import socket

import httpx
import pytest
from PIL import Image, ImageChops

from dalleflow_client import AsyncClient, CandidateImage, Client, RequestError, TransportError
from dalleflow_client.client import (
    check_response,
    generate_call,
    image_call,
    image_fields,
    refine_call,
    request_body,
    upscale_call,
)
from dalleflow_client.images import decode_base64_image, encode_png
from dalleflow_client.schemas import Candidate, GenerateRequest, RefineRequest, UpscaleRequest

IMAGE_ID = "0123456789abcdef" * 2


def schema_candidate() -> Candidate:
    picture = encode_png(Image.new("RGB", (8, 8), "red"))
    return Candidate(id=IMAGE_ID, generator="dalle", rank=0, clip_score=0.3, seed=1, image=picture, width=8, height=8)


def test_generate_body_is_a_valid_request_without_unset_fields():
    call = generate_call(prompt="a red circle", num_images=2, generators=None, seed=5, negative_prompt=None)
    assert (call.method, call.path) == ("POST", "/v1/generate")
    assert call.body == {"prompt": "a red circle", "num_images": 2, "seed": 5}
    assert GenerateRequest.model_validate(call.body).seed == 5


def test_values_are_left_for_the_server_to_judge():
    # The server's 422 names the field; the client must not refuse what a newer server accepts.
    assert generate_call(prompt="x", num_images=0).body["num_images"] == 0


def test_unknown_field_names_fail_at_once():
    with pytest.raises(TypeError, match="num_image"):
        request_body(GenerateRequest, prompt="x", num_image=2)


def test_image_given_as_pil_is_sent_as_base64_png():
    image = Image.effect_noise((12, 10), 50).convert("RGB")
    body = refine_call(image, prompt="a red circle", skip_rate=0.7).body
    assert body.keys() == {"image", "prompt", "skip_rate"}
    assert ImageChops.difference(decode_base64_image(body["image"]).convert("RGB"), image).getbbox() is None
    RefineRequest.model_validate(body)


def test_image_given_as_id_or_candidate_is_sent_as_its_id():
    from_schema = schema_candidate()
    result_candidate = CandidateImage.from_schema(from_schema, "a red circle")
    for image in (IMAGE_ID, from_schema, result_candidate):
        body = upscale_call(image).body
        assert body == {"image_id": IMAGE_ID}
        UpscaleRequest.model_validate(body)
    assert refine_call(result_candidate, prompt="p").body == {"image_id": IMAGE_ID, "prompt": "p"}


def test_image_given_as_a_file_path_is_sent_as_its_pixels(tmp_path):
    path = tmp_path / "pick.png"
    Image.new("RGB", (6, 6), "blue").save(path)
    for given in (path, str(path)):
        assert decode_base64_image(image_fields(given)["image"]).convert("RGB").getpixel((3, 3)) == (0, 0, 255)


def test_image_that_is_neither_id_nor_file_is_refused():
    with pytest.raises(ValueError, match="neither an image id"):
        image_fields(IMAGE_ID[:-1])
    with pytest.raises(ValueError, match="neither an image id"):
        image_fields(IMAGE_ID + "\n")
    with pytest.raises(TypeError, match="int"):
        image_fields(42)
    with pytest.raises(ValueError, match="not an image id"):
        image_call("../healthz")


@pytest.mark.parametrize("client_class", [Client, AsyncClient])
@pytest.mark.parametrize(("method", "model"), [("generate", GenerateRequest), ("refine", RefineRequest), ("diffuse", RefineRequest)])
def test_client_defaults_are_the_schema_defaults(client_class, method, model):
    for name, parameter in inspect.signature(getattr(client_class, method)).parameters.items():
        # Keyword-only ones (timeout) are about the exchange, not the request.
        if parameter.default is not inspect.Parameter.empty and parameter.kind is not parameter.KEYWORD_ONLY:
            assert parameter.default == model.model_fields[name].default, name


def answer(status: int, **content) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("POST", "http://server/v1/generate"), **content)


def test_a_validation_error_names_the_field():
    detail = [{"type": "greater_than_equal", "loc": ["body", "num_images"], "msg": "Input should be >= 1", "input": 0}]
    with pytest.raises(RequestError) as caught:
        check_response(answer(422, json={"detail": detail}))
    error = caught.value
    assert (error.status_code, error.detail, error.method) == (422, detail, "POST")
    assert str(error) == "422 from POST http://server/v1/generate: num_images: Input should be >= 1"


def test_a_text_detail_and_a_non_json_body_are_reported():
    with pytest.raises(RequestError, match="404 .*: no image 0123"):
        check_response(answer(404, json={"detail": "no image 0123"}))
    with pytest.raises(RequestError, match="502 .*: Bad Gateway") as caught:
        check_response(answer(502, text="Bad Gateway"))
    assert caught.value.detail == "Bad Gateway"
    check_response(answer(200, json={"status": "ok"}))  # success passes


@pytest.fixture
def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there once the socket is closed


def test_no_server_raises_transport_error(closed_port_url):
    # retry=None: tests/client/test_retries.py covers retrying; here the error alone, without the waits.
    with Client(closed_port_url, timeout=5, retry=None) as client, pytest.raises(TransportError, match="ConnectError"):
        client.health()


async def test_no_server_raises_transport_error_async(closed_port_url):
    async with AsyncClient(closed_port_url, timeout=5, retry=None) as client:
        with pytest.raises(TransportError, match="GET /healthz"):
            await client.health()


def test_an_answer_from_a_server_that_sends_no_warnings_reads_as_none():
    from dalleflow_client.schemas import GenerateResponse, Job

    older = {"id": "a" * 32, "prompt": "p", "seed": 1, "candidates": [], "generators": {}, "timings": {}}
    assert GenerateResponse.model_validate(older).warnings == []
    # Its jobs say "diffuse", this one's old name for refine.
    assert Job.model_validate({"id": "a" * 32, "kind": "diffuse", "status": "done", "created_at": 0, "updated_at": 0}).kind == "diffuse"


def test_refine_is_posted_to_its_route_and_diffuse_is_its_old_name():
    assert refine_call(IMAGE_ID, prompt="p").path == "/v1/refine"
    for client_class in (Client, AsyncClient):
        for old, new in (("diffuse", "refine"), ("diffuse_stream", "refine_stream"), ("submit_diffuse", "submit_refine")):
            assert getattr(client_class, old) is getattr(client_class, new)
