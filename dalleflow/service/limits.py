"""Limits that hold for every connection, whatever route it asks for: ASGI middleware around the app.

Why each exists, in the order a request meets them (outermost first):
- HostCheck: a keyless server on loopback answers only to its own names, so a web page
  on a domain that rebinds its DNS to 127.0.0.1 cannot reach it (DNS rebinding).
- SecurityHeaders: the page and the docs may not be framed or have their types sniffed;
  the page runs only its own scripts.
- JsonOnlyWrites: a POST must say it carries JSON. A browser sends a cross-site POST without
  asking first only for a "simple" content type (text/plain, a form), so refusing those
  means no page a user visits can make their local server generate.
- BodyLimits: the body is read whole here, counted as it arrives (chunked too) and within a
  deadline (and first in Serve's proxy, proxy_limits.py, which otherwise reads ahead without
  bound). Serve takes a replica slot when the headers arrive, so a client that sends headers
  and then stalls would hold the slot as long as it liked; here it holds it for the deadline
  at most, and its answer is 408.
- Admission: the routes that run models take at most so many requests at once per replica
  and let so many wait; past that, 429 with Retry-After. This is the overload limit, counted
  from a complete body, so the replica's own slot limit (max_ongoing_requests) can be high
  and stalled or slow uploads never starve requests that are ready to run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from dalleflow_client.schemas import MAX_IMAGE_BASE64_CHARS
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
# The largest body a route accepts: one base64 image and a few small fields.
MAX_BODY_BYTES = MAX_IMAGE_BASE64_CHARS + 64_000


class HttpLimits(BaseModel):
    """The app config's `http_limits`."""

    body_timeout_s: float = Field(15.0, gt=0, description="A request body must arrive whole within this, or 408 "
                                  "(Serve's proxy applies its own deadline first: DALLEFLOW_BODY_TIMEOUT_S, 15 s by default).")
    max_running: int = Field(32, ge=1, description="Requests that run models (generate, refine, upscale, Jina's /post) "
                             "at once per ingress replica.")
    max_waiting: int = Field(64, ge=0, description="Such requests waiting per ingress replica before 429.")
    retry_after_s: int = Field(2, ge=0, description="The Retry-After of that 429.")
    allowed_hosts: list[str] = Field(
        list(LOOPBACK_NAMES), description="The names a keyless server answers to (Host header; '*.example.com' "
        "and '*' allowed). With API keys on, any name.")


def app_path(scope: Scope) -> str:
    """The path inside the app, whatever route prefix Serve mounted it under."""
    return scope["path"].removeprefix(scope.get("root_path", "")) or "/"


async def _answer(scope: Scope, receive: Receive, send: Send, status: int, detail: str, code: str,
                  headers: dict[str, str] | None = None) -> None:  # fmt: skip
    await JSONResponse({"detail": detail, "code": code}, status_code=status, headers=headers)(scope, receive, send)


def host_name(host_header: str) -> str:
    """The name in a Host header, without its port: "[::1]:8000" -> "[::1]", "a.b:80" -> "a.b"."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_allowed_host(name: str, allowed: Iterable[str]) -> bool:
    for pattern in allowed:
        pattern = pattern.lower()
        if pattern == "*" or name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:])):
            return True
    return False


class HostCheck:
    """400 for a Host header that names none of the allowed names."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str]):
        self.app = app
        self.allowed_hosts = tuple(allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        name = host_name(Headers(scope=scope).get("host") or "")
        if not is_allowed_host(name, self.allowed_hosts):
            detail = (f"Host {name!r} is not one of this server's names {list(self.allowed_hosts)}: add it to the "
                      "app config's allowed_hosts, or turn API keys on (a keyed server answers any name)")  # fmt: skip
            return await _answer(scope, receive, send, 400, detail, "host_not_allowed")
        await self.app(scope, receive, send)


# The page's own files and the data: and blob: URLs of the images it shows; nothing inline, nothing else.
PAGE_POLICY = ("default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
               "form-action 'self'; frame-ancestors 'none'")  # fmt: skip


class SecurityHeaders:
    """nosniff on every answer; no framing and no referrer on HTML; the page's own CSP on the paths given."""

    def __init__(self, app: ASGIApp, page_paths: Iterable[str] = ("/",)):
        self.app = app
        self.page_paths = frozenset(page_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        is_page = app_path(scope) in self.page_paths

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers.append((b"x-content-type-options", b"nosniff"))
                content_type = next((value for key, value in headers if key == b"content-type"), b"")
                if content_type.startswith(b"text/html"):
                    headers += [(b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer")]
                    if is_page:
                        headers.append((b"content-security-policy", PAGE_POLICY.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class JsonOnlyWrites:
    """415 for a POST whose Content-Type is not JSON: every POST route here takes JSON."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not is_json(Headers(scope=scope).get("content-type")):
            detail = "Content-Type must be application/json"
            return await _answer(scope, receive, send, 415, detail, "unsupported_media_type")
        await self.app(scope, receive, send)


class BodyLimits:
    """413 once a body passes max_bytes (by Content-Length, or counted as chunks arrive: the
    rest is never read); 408 when the whole body has not arrived within timeout_s. The app
    then reads the body from memory, and the connection's later messages (a disconnect) as sent."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = f"request body over the limit of {self.max_bytes} bytes"
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.strip().isdigit() or int(declared) > self.max_bytes):
            return await _answer(scope, receive, send, 413, too_large, "body_too_large", {"connection": "close"})
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # the client left: nobody to answer
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_bytes:
                        return await _answer(scope, receive, send, 413, too_large, "body_too_large", {"connection": "close"})
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            detail = f"the request body did not arrive within {self.timeout_s:g} s"
            return await _answer(scope, receive, send, 408, detail, "body_timeout", {"connection": "close"})
        body: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay() -> Message:
            return body.pop() if body else await receive()

        await self.app(scope, replay, send)


class Admission:
    """At most max_running requests of the given routes at once in this replica, max_waiting
    more in line (first come, first served); the next gets 429 with Retry-After."""

    def __init__(self, app: ASGIApp, paths: Iterable[str], max_running: int, max_waiting: int, retry_after_s: int = 2):
        self.app = app
        self.paths = frozenset(paths)
        self.max_waiting = max_waiting
        self.retry_after_s = retry_after_s
        self._running = asyncio.Semaphore(max_running)
        self._waiting = 0

    def admits(self, scope: Scope) -> bool:
        return scope["type"] == "http" and scope["method"] == "POST" and app_path(scope) in self.paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.admits(scope):
            return await self.app(scope, receive, send)
        if self._running.locked() and self._waiting >= self.max_waiting:
            detail = "the service is at capacity; try again later"
            return await _answer(scope, receive, send, 429, detail, "too_busy", {"retry-after": str(self.retry_after_s)})
        self._waiting += 1
        try:
            await self._running.acquire()
        finally:
            self._waiting -= 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._running.release()
