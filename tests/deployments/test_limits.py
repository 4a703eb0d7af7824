"""Limits on every request (service/limits.py, and service/proxy_limits.py in Serve's proxy),
through Serve's proxy to the served default app (issue 17, acceptance 3): stalled bodies do
not stop a ready request, a chunked 50 MB body sent at full speed is refused without being
read, and a cross-site text/plain POST runs nothing."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import httpx
import pytest
from ray import serve

from dalleflow.deployments.app import EMBEDDED_DIFFUSION, compose_app
from dalleflow.service.limits import MAX_BODY_BYTES
from tests.deployments.test_backpressure import FLOOD, flood, serve_processes_rss
from tests.service.test_limits import open_request, status_of

PROMPT = "a red circle on the left on a white background"
STALLED = 40  # more than the 32 slots the ingress had when a stalled body could take one for 600 s


def has_answer(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False
    finally:
        sock.setblocking(True)


def stalled_body(url: str) -> socket.socket:
    return open_request(url, "POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                             "Content-Length: 200\r\n\r\n{\"prompt\": \"a red")  # fmt: skip


def test_stalled_bodies_do_not_stop_a_ready_request_and_get_408(server_url):
    body = {"prompt": PROMPT, "num_images": 1, "seed": 1}
    assert httpx.post(f"{server_url}/v1/generate", json=body, timeout=120).status_code == 200
    stalled = [stalled_body(server_url) for _ in range(STALLED)]
    try:
        time.sleep(1)  # all of them in the ingress, waiting for their bodies
        answer = httpx.post(f"{server_url}/v1/generate", json=body, timeout=120)
        assert answer.status_code == 200, answer.text
        assert httpx.get(f"{server_url}/healthz", timeout=10).status_code == 200
        # Answered while every stalled one still waited: none had an answer yet.
        assert not any(has_answer(sock) for sock in stalled)
        # Each then gets 408 at the body deadline (15 s), its slot freed.
        assert [status_of(sock) for sock in stalled] == [408] * STALLED
    finally:
        for sock in stalled:
            sock.close()


def chunked_upload(url: str, total: int, headers: str = "") -> tuple[int, int]:
    """POST a chunked body of `total` bytes at full speed, until the server answers or stops
    reading: the bytes the kernel took, and the answer's status."""
    sock = open_request(url, "POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                             f"{headers}Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b" " * (1 << 20))
    sent = 0
    with sock:
        sock.settimeout(2)
        try:
            while sent < total and not has_answer(sock):
                sock.sendall(chunk)
                sent += 1 << 20
        except (BrokenPipeError, ConnectionResetError, TimeoutError, socket.timeout):
            pass  # the server stopped reading
        sock.settimeout(60)
        return sent, status_of(sock)


def test_a_chunked_50_mb_body_gets_413_without_being_read(server_url):
    before = serve_processes_rss("dalleflow")
    sent, status = chunked_upload(server_url, 50 << 20)
    after = serve_processes_rss("dalleflow")
    assert status == 413
    # What the limit reads, and what the kernel buffers of both ends hold before the sender blocks.
    assert sent < MAX_BODY_BYTES + (16 << 20), f"{sent >> 20} MB of 50 taken"
    assert after - before < 40 << 20, f"{(after - before) >> 20} MB more resident in the proxy and replicas"


def test_a_cross_site_text_plain_post_runs_nothing(server_url, store_path):
    files_before = sorted(Path(store_path).rglob("*"))
    body = '{"data": [{"text": "a red circle on the left on a white background"}], "parameters": {"num_images": 1}}'
    for path in ("/post", "/v1/generate"):
        answer = httpx.post(f"{server_url}{path}", content=body, timeout=60,
                            headers={"content-type": "text/plain", "origin": "https://elsewhere.example"})  # fmt: skip
        assert answer.status_code == 415, answer.text
    assert sorted(Path(store_path).rglob("*")) == files_before  # no image made, none stored


@pytest.fixture
def small_admission_app(serve_app, store_path):
    # Serve's own slots as the default's (many), the app's admission small.
    args = {"store_path": str(store_path), "generators": {"diffusion": EMBEDDED_DIFFUSION.model_dump()},
            "http_limits": {"max_running": 4, "max_waiting": 8, "retry_after_s": 1}}  # fmt: skip
    serve.run(compose_app(args), name="admission", route_prefix="/admission")
    yield f"{serve_app}/admission"
    serve.delete("admission")


def test_a_flood_past_the_apps_admission_gets_200_or_429(small_admission_app):
    answers = asyncio.run(flood(f"{small_admission_app}/v1/generate"))
    statuses = [answer.status_code for answer in answers]
    assert len(statuses) == FLOOD and set(statuses) <= {200, 429}, {a.text for a in answers if a.status_code not in (200, 429)}
    assert statuses.count(200) >= 12 and statuses.count(429) >= 1
    assert all(a.headers["retry-after"] == "1" and a.json()["code"] == "too_busy" for a in answers if a.status_code == 429)
