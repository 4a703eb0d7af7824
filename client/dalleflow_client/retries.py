"""Retries with backoff, as httpx transports: every request of a client goes through them.

    from dalleflow_client import Client, RetryPolicy

    Client(retry=RetryPolicy(max_retries=5, max_total_seconds=120))   # more patient
    Client(retry=None)                                                # never retry

A 429 (too many requests) or 503 (unavailable: a full queue, a stage down) is answered again
after the server's Retry-After when it sends one, otherwise after an exponential backoff with
jitter; so is a 404 from Serve's proxy itself, which answers so while the app is still deploying. A request that never reached the server (connection refused, connect timeout) is
sent again whatever its method; one that may have reached it (the connection dropped
mid-answer) only when its method is idempotent, so a generation is never run twice behind
the caller's back. A read timeout is never retried: the caller's timeout is the limit it set.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import anyio
import httpx

logger = logging.getLogger("dalleflow_client")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# Nothing was sent: the same request is safe to send again, whatever it does.
_NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout)
# Something may have been sent and acted on.
_DROPPED_ERRORS = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before sending a request again."""

    max_retries: int = 3  # attempts after the first
    max_total_seconds: float = 60.0  # no retry would start later than this after the first attempt began
    backoff_base_seconds: float = 0.5  # the first wait without Retry-After; doubled for each further one
    backoff_max_seconds: float = 8.0  # cap of one wait without Retry-After
    retry_statuses: frozenset[int] = frozenset({429, 503})
    # While a service starts (or restarts), Serve's proxy answers 404 for every path until the app
    # is deployed: nothing ran, and the path may well exist a second later (a job's, say).
    retry_unrouted: bool = True

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.max_total_seconds < 0:
            raise ValueError("max_retries and max_total_seconds must be at least 0")
        if not 0 <= self.backoff_base_seconds <= self.backoff_max_seconds:
            raise ValueError("need 0 <= backoff_base_seconds <= backoff_max_seconds")

    def backoff(self, retry_index: int) -> float:
        """Seconds before retry number `retry_index` (0 first): exponential, capped, jittered.

        The jitter spreads clients that failed together over the upper half of the interval,
        so they do not come back in step; the lower half keeps the backoff a backoff.
        """
        ceiling = min(self.backoff_max_seconds, self.backoff_base_seconds * 2**retry_index)
        return random.uniform(ceiling / 2, ceiling)



def is_unrouted(response: httpx.Response) -> bool:
    """A 404 that Ray Serve's proxy gave because no app serves the path (yet): plain text, where
    the app's own 404s (an unknown job, an unknown route) are JSON."""
    return response.status_code == 404 and not response.headers.get("content-type", "").startswith("application/json")


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP date; None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))  # RFC 9110 says an integer; a fraction is read rather than ignored
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" in the date: RFC 5322's unknown zone, which HTTP dates mean as GMT
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


class _Attempts:
    """The retry decisions for one request: each returns the seconds to wait, or None to stop."""

    def __init__(self, policy: RetryPolicy, request: httpx.Request):
        self.policy = policy
        self.request = request
        self.started = time.monotonic()
        self.retry_count = 0
        # A body that was streamed from an iterator cannot be sent twice.
        self.is_resendable = isinstance(request.stream, httpx.ByteStream)

    def after_response(self, response: httpx.Response) -> float | None:
        if is_unrouted(response) and self.policy.retry_unrouted:
            # Longer waits than a backoff's first ones: a (re)starting app takes seconds to be routed.
            return self._allowed(self.policy.backoff(self.retry_count + 2), "404 from Serve's proxy: the app is not deployed yet")
        if response.status_code not in self.policy.retry_statuses:
            return None
        server_wait = parse_retry_after(response.headers.get("retry-after"))
        wait = self.policy.backoff(self.retry_count) if server_wait is None else server_wait
        return self._allowed(wait, f"{response.status_code} {response.reason_phrase}")

    def after_error(self, error: httpx.TransportError) -> float | None:
        is_safe = isinstance(error, _NOT_SENT_ERRORS) or (
            isinstance(error, _DROPPED_ERRORS) and self.request.method in IDEMPOTENT_METHODS
        )
        if not is_safe:
            return None
        return self._allowed(self.policy.backoff(self.retry_count), f"{type(error).__name__}: {error}")

    def _allowed(self, wait: float, reason: str) -> float | None:
        elapsed = time.monotonic() - self.started
        if not self.is_resendable or self.retry_count >= self.policy.max_retries:
            return None
        if elapsed + wait > self.policy.max_total_seconds:
            return None  # the caller gets the answer now rather than after a wait that ends in a refusal
        self.retry_count += 1
        logger.info("%s %s: %s; retry %d of %d in %.2f s", self.request.method, self.request.url, reason,
                    self.retry_count, self.policy.max_retries, wait)  # fmt: skip
        return wait


class RetryTransport(httpx.BaseTransport):
    """Wraps a transport (default: httpx.HTTPTransport) and sends a request again as RetryPolicy says."""

    def __init__(self, policy: RetryPolicy = RetryPolicy(), transport: httpx.BaseTransport | None = None):
        self.policy = policy
        self.transport = transport or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        attempts = _Attempts(self.policy, request)
        while True:
            try:
                response = self.transport.handle_request(request)
            except httpx.TransportError as error:
                wait = attempts.after_error(error)
                if wait is None:
                    raise
            else:
                wait = attempts.after_response(response)
                if wait is None:
                    return response
                response.close()  # give the connection back to the pool before waiting
            time.sleep(wait)

    def close(self) -> None:
        self.transport.close()


class AsyncRetryTransport(httpx.AsyncBaseTransport):
    """The asyncio form of RetryTransport (default inner transport: httpx.AsyncHTTPTransport)."""

    def __init__(self, policy: RetryPolicy = RetryPolicy(), transport: httpx.AsyncBaseTransport | None = None):
        self.policy = policy
        self.transport = transport or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        attempts = _Attempts(self.policy, request)
        while True:
            try:
                response = await self.transport.handle_async_request(request)
            except httpx.TransportError as error:
                wait = attempts.after_error(error)
                if wait is None:
                    raise
            else:
                wait = attempts.after_response(response)
                if wait is None:
                    return response
                await response.aclose()
            await anyio.sleep(wait)

    async def aclose(self) -> None:
        await self.transport.aclose()
