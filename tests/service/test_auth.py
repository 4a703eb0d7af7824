"""API keys: the real app (create_app over a flow of tiny models) on a real HTTP server
in this process, with keys on; the client sends its key as a bearer token."""

from __future__ import annotations

import httpx
import pytest
from dalleflow_client import Client
from dalleflow_client.errors import RequestError

from dalleflow.service.auth import ApiKeys
from tests.conftest import keyed_tiny_app, serve_in_thread

KEYS = ["first-key", "second-key"]
PROMPT = "a red circle on the left on a white background"


@pytest.fixture(scope="module")
def keyed_url(tiny_diffusion, tiny_clip_folder, tmp_path_factory):
    app = keyed_tiny_app(KEYS, tiny_diffusion, tiny_clip_folder[1], tmp_path_factory.mktemp("store"))
    with serve_in_thread(app) as url:
        yield url


def test_keys_come_from_the_environment_comma_separated():
    keys = ApiKeys.from_env("KEYS", environ={"KEYS": " a-key , other ,"})
    assert keys.is_enabled and keys.accepts("a-key") and keys.accepts("other")
    assert not keys.accepts("") and not keys.accepts("a-key,other") and not keys.accepts("a-ke")
    assert not ApiKeys.from_env("KEYS", environ={}).is_enabled  # the local default: off


def test_a_required_key_that_is_missing_stops_the_start():
    with pytest.raises(ValueError, match=r"\$KEYS"):
        ApiKeys.from_env("KEYS", environ={"KEYS": " , "}, required=True)


@pytest.mark.parametrize(
    ("authorization", "challenge"),
    [
        (None, 'Bearer realm="dalleflow"'),
        ("Basic Zmlyc3Qta2V5Og==", 'Bearer realm="dalleflow"'),
        ("Bearer", 'Bearer realm="dalleflow"'),
        ("Bearer wrong-key", 'Bearer realm="dalleflow", error="invalid_token"'),
        ("Bearer first-key-and-more", 'Bearer realm="dalleflow", error="invalid_token"'),
    ],
)
def test_an_api_route_without_a_right_key_answers_401_with_a_challenge(keyed_url, authorization, challenge):
    headers = {"authorization": authorization} if authorization else {}
    for method, path in [("GET", "/v1/models"), ("POST", "/v1/generate"), ("POST", "/v1/jobs"),
                         ("GET", "/v1/jobs/" + "0" * 32), ("POST", "/post"), ("POST", "/v1/upscale")]:
        answer = httpx.request(method, keyed_url + path, json={"prompt": PROMPT}, headers=headers)
        assert answer.status_code == 401, (method, path)
        assert answer.headers["www-authenticate"] == challenge
        assert "API key" in answer.json()["detail"]


def test_the_key_is_checked_before_the_body_limit(keyed_url):
    from dalleflow.service.limits import MAX_BODY_BYTES

    too_large = b"x" * (MAX_BODY_BYTES + 1)
    json_type = {"content-type": "application/json"}
    assert httpx.post(keyed_url + "/v1/generate", content=too_large, headers=json_type).status_code == 401
    keyed = {"authorization": f"Bearer {KEYS[0]}"} | json_type
    assert httpx.post(keyed_url + "/v1/generate", content=too_large, headers=keyed).status_code == 413


def test_probes_the_page_and_the_schema_stay_open(keyed_url):
    for path in ["/healthz", "/readyz", "/", "/static/api.js", "/favicon.ico", "/openapi.json", "/docs",
                 "/docs/oauth2-redirect", "/docs/assets/swagger-ui-bundle.js", "/redoc"]:
        assert httpx.get(keyed_url + path).status_code == 200, path
    schema = httpx.get(keyed_url + "/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}


def test_each_key_opens_the_api_and_a_stored_image_is_open_by_its_id(keyed_url):
    for key in KEYS:
        answer = httpx.get(keyed_url + "/v1/models", headers={"authorization": f"Bearer {key}"})
        assert answer.status_code == 200
    with Client(keyed_url, api_key=KEYS[1]) as client:
        result = client.generate(PROMPT, num_images=1, seed=3, num_inference_steps=2)
    image_id = result.best.id
    # An id is the capability: <img> tags and download links send no header (auth.py).
    assert httpx.get(f"{keyed_url}/v1/images/{image_id}").headers["content-type"] == "image/png"
    assert httpx.post(f"{keyed_url}/v1/images/{image_id}").status_code == 401  # only reading is open


def test_the_client_reads_its_key_from_the_environment(keyed_url, monkeypatch):
    monkeypatch.setenv("DALLEFLOW_API_KEY", KEYS[0])
    with Client(keyed_url) as client:
        assert client.models() == []  # answered: this flow names no models
    monkeypatch.setenv("DALLEFLOW_API_KEY", "wrong-key")
    with Client(keyed_url) as client, pytest.raises(RequestError) as raised:
        client.models()
    assert raised.value.status_code == 401 and "invalid API key" in str(raised.value)


def test_the_cli_passes_its_key(keyed_url, tmp_path, capsys, monkeypatch):
    from dalleflow_client.cli import main

    monkeypatch.delenv("DALLEFLOW_API_KEY", raising=False)
    command = ["generate", PROMPT, "--url", keyed_url, "--num-images", "1", "--steps", "2", "--seed", "1",
               "--out", str(tmp_path), "--json"]
    assert main(command) != 0
    assert "401" in capsys.readouterr().err
    assert main([*command, "--api-key", KEYS[0]]) == 0
