"""Retries and timeouts of Client and AsyncClient, against real HTTP servers.

A small scripted server (the standard library's, on a free local port) answers 429 or 503
with Retry-After, drops connections or answers late, then answers 200; it records when each
attempt arrived, so the waits and the attempt counts are measured where they happen. The
last test runs the happy path against the real dalleflow service.
"""

from __future__ import annotations

import email.utils
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from PIL import Image

from dalleflow_client import AsyncClient, Client, RequestError, RetryPolicy, TransportError
from dalleflow_client.images import encode_png
from dalleflow_client.retries import RetryTransport, parse_retry_after
from dalleflow_client.schemas import Candidate, GenerateResponse, StageReport

PROMPT = "a red circle to the left of a blue square on a white background"
# Scheduling slack on a busy 2-core machine: a wait may run this much over, never under.
SLACK_S = 1.0


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    is_dropped: bool = False  # close the connection without answering


def generate_answer() -> bytes:
    image = encode_png(Image.new("RGB", (8, 8), "red"))
    candidate = Candidate(id="0" * 32, generator="diffusion", rank=0, clip_score=0.3, seed=5, image=image, width=8, height=8)
    return GenerateResponse(
        id="f" * 32, prompt=PROMPT, seed=5, candidates=[candidate],
        generators={"diffusion": StageReport(status="ok", count=1)}, timings={"total": 0.1},
    ).model_dump_json().encode()  # fmt: skip


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # a client that timed out has closed its end: the late answer's broken pipe is expected


class ScriptedServer:
    """Answers each path with its scripted replies in turn, then with 200; records (method, path, time) of each attempt."""

    def __init__(self, port: int = 0):
        self.script: dict[str, list[Reply]] = {}
        self.arrivals: list[tuple[str, str, float]] = []
        self.httpd = QuietServer(("127.0.0.1", port), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def attempts(self, path: str) -> list[float]:
        return [at for _, arrived_path, at in self.arrivals if arrived_path == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                self._answer()

            def _answer(self) -> None:
                # Wall-clock time, so that an arrival compares with a Retry-After date.
                server.arrivals.append((self.command, self.path, time.time()))
                queued = server.script.get(self.path)
                reply = queued.pop(0) if queued else Reply()
                time.sleep(reply.delay_s)
                if reply.is_dropped:
                    self.close_connection = True
                    return
                if reply.status != 200:
                    body = json.dumps({"detail": f"scripted {reply.status}"}).encode()
                else:
                    body = generate_answer() if self.path == "/v1/generate" else b'{"status": "ok"}'
                self.send_response(reply.status)
                for name, value in {"content-type": "application/json", **reply.headers}.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        return Handler


@pytest.fixture
def server():
    server = ScriptedServer()
    yield server
    server.close()


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in zip(times, times[1:])]


def http_date(seconds_from_now: float) -> str:
    return email.utils.format_datetime(datetime.now(timezone.utc) + timedelta(seconds=seconds_from_now), usegmt=True)


def test_retry_after_is_read_as_seconds_or_as_an_http_date():
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after("Wed, 01 May 2024 12:00:07 GMT", now) == 7.0
    assert parse_retry_after("Wed, 01 May 2024 11:59:00 GMT", now) == 0.0  # in the past: now
    assert parse_retry_after("-5", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_backoff_doubles_is_capped_and_jittered_within_the_upper_half():
    policy = RetryPolicy(backoff_base_seconds=1.0, backoff_max_seconds=4.0)
    for retry_index, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (5, 4.0)]:
        waits = {policy.backoff(retry_index) for _ in range(50)}
        assert all(ceiling / 2 <= wait <= ceiling for wait in waits)
        assert len(waits) > 1  # jittered, not a fixed step
    with pytest.raises(ValueError, match="backoff"):
        RetryPolicy(backoff_base_seconds=2.0, backoff_max_seconds=1.0)


def test_429_and_503_are_retried_after_the_servers_retry_after(server):
    server.script["/v1/generate"] = [Reply(429, {"Retry-After": "1"}), Reply(503, {"Retry-After": "1"})]
    with Client(server.url) as client:  # retries are on by default
        result = client.generate(PROMPT, num_images=1)
    assert result.best.generator == "diffusion"
    waits = gaps(server.attempts("/v1/generate"))
    assert len(waits) == 2
    assert all(1.0 <= wait < 1.0 + SLACK_S for wait in waits), waits


async def test_the_async_client_honours_an_http_date(server):
    due = http_date(2)
    server.script["/v1/generate"] = [Reply(503, {"Retry-After": due})]
    async with AsyncClient(server.url) as client:
        result = await client.generate(PROMPT, num_images=1)
    assert len(result) == 1
    first, second = server.attempts("/v1/generate")
    assert second >= email.utils.parsedate_to_datetime(due).timestamp()  # not before the date
    assert second - first < 2.0 + SLACK_S


def test_without_retry_after_the_waits_back_off(server):
    server.script["/v1/generate"] = [Reply(503), Reply(503), Reply(429)]
    policy = RetryPolicy(backoff_base_seconds=0.2, backoff_max_seconds=0.5)
    with Client(server.url, retry=policy) as client:
        client.generate(PROMPT, num_images=1)
    waits = gaps(server.attempts("/v1/generate"))
    ceilings = [0.2, 0.4, 0.5]  # doubled, then capped
    assert len(waits) == 3
    for wait, ceiling in zip(waits, ceilings):
        assert ceiling / 2 <= wait < ceiling + SLACK_S, waits


def test_the_answer_after_the_last_retry_is_raised_with_the_servers_detail(server):
    server.script["/v1/generate"] = [Reply(429, {"Retry-After": "0"}) for _ in range(5)]
    with Client(server.url, retry=RetryPolicy(max_retries=2)) as client:
        with pytest.raises(RequestError, match="scripted 429") as caught:
            client.generate(PROMPT)
    assert caught.value.status_code == 429
    assert len(server.attempts("/v1/generate")) == 3


def test_a_retry_after_past_the_budget_is_not_waited_for(server):
    server.script["/v1/generate"] = [Reply(503, {"Retry-After": "30"})]
    started = time.monotonic()
    with Client(server.url, retry=RetryPolicy(max_total_seconds=5)) as client, pytest.raises(RequestError) as caught:
        client.generate(PROMPT)
    assert caught.value.status_code == 503
    assert len(server.attempts("/v1/generate")) == 1
    assert time.monotonic() - started < 5


def test_retry_none_sends_once(server):
    server.script["/healthz"] = [Reply(503, {"Retry-After": "0"})]
    with Client(server.url, retry=None) as client, pytest.raises(RequestError, match="503"):
        client.health()
    assert len(server.attempts("/healthz")) == 1


def test_a_dropped_connection_is_retried_for_a_get_but_not_for_a_post(server):
    server.script["/healthz"] = [Reply(is_dropped=True), Reply(is_dropped=True)]
    server.script["/v1/generate"] = [Reply(is_dropped=True)]
    policy = RetryPolicy(backoff_base_seconds=0.05)
    with Client(server.url, retry=policy) as client:
        assert client.health() == {"status": "ok"}
        # The server may have started a generation: sending it again is the caller's decision.
        with pytest.raises(TransportError, match="RemoteProtocolError"):
            client.generate(PROMPT)
    assert len(server.attempts("/healthz")) == 3
    assert len(server.attempts("/v1/generate")) == 1


async def test_a_post_is_retried_until_the_server_comes_up():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started: list[ScriptedServer] = []
    # Connection refused until then: nothing was sent, so even a POST is safe to send again.
    starter = threading.Timer(0.5, lambda: started.append(ScriptedServer(port)))
    starter.start()
    try:
        policy = RetryPolicy(max_retries=8, backoff_base_seconds=0.1, backoff_max_seconds=0.4)
        async with AsyncClient(f"http://127.0.0.1:{port}", retry=policy) as client:
            result = await client.generate(PROMPT, num_images=1)
        assert len(result) == 1 and len(started[0].attempts("/v1/generate")) == 1
    finally:
        starter.join()
        for server in started:
            server.close()


def test_timeouts_per_client_and_per_call(server):
    server.script["/healthz"] = [Reply(delay_s=1.0), Reply(delay_s=1.0), Reply(delay_s=1.0)]
    with Client(server.url, timeout=0.3) as client:
        with pytest.raises(TransportError, match="ReadTimeout"):
            client.health()
        assert client.health(timeout=5) == {"status": "ok"}  # the call's own limit wins
    with Client(server.url) as client, pytest.raises(TransportError, match="ReadTimeout"):
        client.health(timeout=httpx.Timeout(0.3))
    # A read timeout is the caller's limit, not a failure to retry.
    assert len(server.attempts("/healthz")) == 3


async def test_async_per_call_timeout(server):
    server.script["/healthz"] = [Reply(delay_s=1.0)]
    async with AsyncClient(server.url) as client:
        with pytest.raises(TransportError, match="ReadTimeout"):
            await client.health(timeout=0.3)
    assert len(server.attempts("/healthz")) == 1


def test_the_real_service_with_retries_and_a_call_timeout(server_url):
    policy = RetryPolicy(max_retries=2, max_total_seconds=30)
    with Client(server_url, timeout=5, retry=policy) as client:
        result = client.generate(PROMPT, num_images=1, seed=4, num_inference_steps=4, timeout=120)
        assert result.candidates and result.seed == 4
        upscaled = client.upscale(result.best, timeout=120)
        assert upscaled.width == 4 * result.best.width
        with pytest.raises(RequestError) as caught:  # a 4xx is the answer, never retried
            client.generate(PROMPT, num_images=0)
        assert caught.value.status_code == 422


def test_a_404_from_the_proxy_before_the_app_is_routed_is_retried_and_the_apps_own_is_not(server):
    # Serve's proxy answers a path no app serves yet with plain text; the app's own 404s are JSON.
    unrouted = Reply(404, {"content-type": "text/plain; charset=utf-8"})
    server.script["/v1/jobs/" + "a" * 32] = [unrouted, unrouted]
    server.script["/v1/jobs/" + "b" * 32] = [Reply(404)]
    policy = RetryPolicy(max_retries=3, backoff_base_seconds=0.05, backoff_max_seconds=0.4)
    with httpx.Client(base_url=server.url, transport=RetryTransport(policy)) as client:
        assert client.get("/v1/jobs/" + "a" * 32).status_code == 200
        assert client.get("/v1/jobs/" + "b" * 32).status_code == 404
    assert len(server.attempts("/v1/jobs/" + "a" * 32)) == 3 and len(server.attempts("/v1/jobs/" + "b" * 32)) == 1
    with httpx.Client(base_url=server.url, transport=RetryTransport(RetryPolicy(retry_unrouted=False))) as client:
        server.script["/v1/jobs/" + "c" * 32] = [unrouted]
        assert client.get("/v1/jobs/" + "c" * 32).status_code == 404
