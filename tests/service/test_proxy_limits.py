"""The middleware Serve's proxy runs (service/proxy_limits.py), on a real HTTP server: its
deadline comes from the environment, and the environment `dalleflow serve` starts Ray
with names it unless the operator named another. Through Serve's own proxy it is
tried in tests/deployments/test_limits.py and tests/test_cli.py."""

from __future__ import annotations

import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from dalleflow.service.proxy_limits import CALLBACK, CALLBACK_VARIABLE, TIMEOUT_VARIABLE, middlewares, with_proxy_limits
from tests.conftest import serve_in_thread
from tests.service.test_limits import open_request, status_of


async def echo_size(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(len(await request.body())))


def test_the_deadline_is_the_environments(monkeypatch):
    monkeypatch.setenv(TIMEOUT_VARIABLE, "0.5")
    app = Starlette(routes=[Route("/", echo_size, methods=["POST"])], middleware=middlewares())
    with serve_in_thread(app) as url:
        with open_request(url, "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\n12345") as sock:
            started = time.monotonic()
            assert status_of(sock) == 408
            assert time.monotonic() - started < 5


def test_dalleflow_serve_names_the_callback_unless_the_operator_named_another():
    assert with_proxy_limits({"PATH": "/bin"}) == {"PATH": "/bin", CALLBACK_VARIABLE: CALLBACK}
    assert with_proxy_limits({CALLBACK_VARIABLE: "mine:callback"})[CALLBACK_VARIABLE] == "mine:callback"
