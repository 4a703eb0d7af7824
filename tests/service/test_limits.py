"""Limits on every request (service/limits.py) on the real app: in-process for what a
request's headers and JSON decide, on a real uvicorn server for bodies that arrive
slowly, in chunks, or never. tests/deployments/test_limits.py tries them through Serve."""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlparse

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.responses import PlainTextResponse

from dalleflow.service.auth import ApiKeys
from dalleflow.service.http import create_app
from dalleflow.service.limits import MAX_BODY_BYTES
from dalleflow.service.limits import Admission, HttpLimits, host_name, is_allowed_host
from tests.conftest import serve_in_thread

LOCAL = "http://127.0.0.1:8000"
PROMPT = "a red circle on the left on a white background"


@pytest.fixture(scope="module")
def app_client():
    # No flow: everything here is refused before a route would reach one.
    app = create_app()
    app.state.flow = None
    return TestClient(app, base_url=LOCAL)


def test_host_names_are_read_without_their_port():
    assert [host_name(h) for h in ("127.0.0.1:8000", "[::1]:8000", "[::1]", "LocalHost", "a.example:80")] == [
        "127.0.0.1", "[::1]", "[::1]", "localhost", "a.example"]  # fmt: skip
    assert is_allowed_host("img.example", ["*.example"]) and not is_allowed_host("example", ["*.example"])
    assert is_allowed_host("anything", ["*"]) and not is_allowed_host("127.0.0.2", ["127.0.0.1", "localhost"])


def test_a_keyless_server_answers_only_to_its_own_names(app_client):
    assert app_client.get("/healthz").status_code == 200
    for host in ("localhost:8000", "[::1]:8000"):
        assert app_client.get("/healthz", headers={"host": host}).status_code == 200
    refused = app_client.get("/healthz", headers={"host": "rebound.example:8000"})
    assert refused.status_code == 400 and refused.json()["code"] == "host_not_allowed"
    assert "allowed_hosts" in refused.json()["detail"]
    # Configured names, and any name once keys protect the server.
    named = TestClient(create_app(limits=HttpLimits(allowed_hosts=["*.example"])), base_url="http://img.example")
    assert named.get("/healthz").status_code == 200
    keyed = TestClient(create_app(api_keys=ApiKeys(["k"])), base_url="http://rebound.example")
    assert keyed.get("/healthz").status_code == 200 and keyed.post("/v1/generate", json={}).status_code == 401


def test_a_post_that_is_not_json_runs_nothing(app_client):
    # text/plain and forms are what a page on another site may send without asking (CORS-simple).
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        for path in ("/post", "/v1/generate", "/v1/jobs"):
            headers = {"origin": "https://elsewhere.example"} | ({"content-type": content_type} if content_type else {})
            answer = app_client.post(path, content=b'{"data": [{"text": "a red circle"}]}', headers=headers)
            assert answer.status_code == 415, (path, content_type, answer.text)
            assert answer.json()["code"] == "unsupported_media_type"


def test_the_page_sends_its_policy_and_every_answer_nosniff(app_client):
    page = app_client.get("/")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
    assert app_client.get("/docs").headers["x-frame-options"] == "DENY"
    assert app_client.get("/healthz").headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("field, value", [
    ("num_images", "4"), ("num_images", " 4 "), ("num_images", "4.0"), ("num_images", True), ("num_images", 4.0),
    ("seed", "7"), ("num_inference_steps", "20"), ("guidance_scale", "3"), ("height", 32.0),
])  # fmt: skip
def test_a_string_or_bool_is_not_a_number(app_client, field, value):
    answer = app_client.post("/v1/generate", json={"prompt": PROMPT, field: value})
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == ["body", field]


def test_skip_rate_as_text_is_refused_by_name(app_client):
    body = {"prompt": PROMPT, "image_id": "0" * 32, "skip_rate": "0.5"}
    answer = app_client.post("/v1/refine", json=body)
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body", "skip_rate"]


def test_a_number_of_5000_digits_is_refused_by_its_field(app_client):
    body = b'{"prompt": "a red circle", "seed": ' + b"9" * 5000 + b"}"
    answer = app_client.post("/v1/generate", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == ["body", "seed"]
    assert "5000 digits" in answer.text and len(answer.text) < 2000


def test_json_nested_too_deep_is_bad_json(app_client):
    body = b"[" * 100_000 + b"]" * 100_000
    answer = app_client.post("/v1/generate", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text[:300]
    assert answer.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.parametrize("body, field", [(b'{"prompt": "x", "seed": NaN}', "seed"), (b'{"prompt": 1e400}', "prompt"),
                                         (b'{"prompt": "x", "guidance_scale": -Infinity}', "guidance_scale")])
def test_numbers_json_has_no_value_for_are_refused_by_field(app_client, body, field):
    answer = app_client.post("/v1/generate", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body", field], answer.text


def test_jina_posts_take_a_bounded_number_of_docs(app_client):
    docs = [{"text": PROMPT} for _ in range(9)]
    answer = app_client.post("/post", json={"data": docs, "parameters": {"num_images": 1}})
    status = answer.json()["header"]["status"]
    assert status["code"] == 1 and "data" in status["description"] and "8" in status["description"]


# A real server: bodies that stall or stream.


@pytest.fixture(scope="module")
def served():
    with serve_in_thread(create_app(limits=HttpLimits(body_timeout_s=1.0))) as url:
        yield url


def open_request(url: str, head: str) -> socket.socket:
    """A connection that has sent `head` (a request line, headers, maybe part of a body) and waits."""
    address = urlparse(url)
    sock = socket.create_connection((address.hostname, address.port), timeout=60)
    sock.sendall(head.encode())
    return sock


def status_of(sock: socket.socket) -> int:
    answer = b""
    while b"\r\n" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed without an answer: {answer!r}")
        answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_a_body_that_stalls_gets_408(served):
    sock = open_request(served, "POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                               "Content-Length: 100\r\n\r\n{\"prom")  # fmt: skip
    with sock:
        assert status_of(sock) == 408


def test_a_chunked_body_past_the_limit_gets_413_before_it_is_all_sent(served):
    sock = open_request(served, "POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b" " * (1 << 20))
    sent = 0
    with sock:
        sock.settimeout(0.5)
        try:
            while sent < 50 << 20:
                sock.sendall(chunk)
                sent += 1 << 20
        except (BrokenPipeError, ConnectionResetError, TimeoutError, socket.timeout):
            pass  # the server stopped reading: the answer is waiting
        sock.settimeout(30)
        assert status_of(sock) == 413
    assert sent < MAX_BODY_BYTES + (16 << 20), f"{sent >> 20} MB sent before the answer"


def test_a_declared_length_past_the_limit_is_refused_at_once(served):
    with open_request(served, f"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {50 << 20}\r\n\r\n") as sock:  # fmt: skip
        assert status_of(sock) == 413


async def test_admission_lets_so_many_run_and_wait_and_answers_429_past_them():
    release = asyncio.Event()

    async def slow(scope, receive, send):
        await release.wait()
        await PlainTextResponse("done")(scope, receive, send)

    admission = Admission(slow, paths=["/run"], max_running=1, max_waiting=1, retry_after_s=3)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=admission), base_url=LOCAL) as client:
        first = asyncio.create_task(client.post("/run"))
        second = asyncio.create_task(client.post("/run"))
        await asyncio.sleep(0.1)
        third = await client.post("/run")
        assert third.status_code == 429 and third.headers["retry-after"] == "3"
        assert not first.done() and not second.done()
        release.set()
        assert [(await task).status_code for task in (first, second)] == [200, 200]
        assert (await client.post("/run")).status_code == 200  # the places are free again
