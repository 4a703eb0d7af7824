"""The body limits again, in Serve's HTTP proxy: at the edge, before any replica sees a request.

Serve's proxy reads a request body from the socket as fast as the client sends it, into a
queue with no bound, while the replica pulls it message by message
(ray/serve/_private/proxy.py, proxy_asgi_receive). The app's own BodyLimits (limits.py)
counts what it pulls, so on a fast link the proxy has taken the whole of a 50 MB upload
before the replica's 413 is out, and a stalled upload holds a replica slot until the app's
deadline. Serve runs the Starlette middleware that a callback returns in front of that
queue, when the callback is named in the environment of the Ray it starts:

    RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=dalleflow.service.proxy_limits:middlewares

There the same BodyLimits reads at most MAX_BODY_BYTES (uvicorn stops reading a socket
whose buffered body nobody reads), answers 413 or 408 itself, and forwards a body that is
already whole. `dalleflow serve`, the cluster image and the tests set the variable; the
app keeps its own BodyLimits for wherever it is served without this proxy.
"""

from __future__ import annotations

import os

from starlette.middleware import Middleware

from dalleflow.service.limits import MAX_BODY_BYTES, BodyLimits, HttpLimits

CALLBACK_VARIABLE = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
CALLBACK = "dalleflow.service.proxy_limits:middlewares"
# The proxy serves every app, so its deadline is the service's, not one app config's.
TIMEOUT_VARIABLE = "DALLEFLOW_BODY_TIMEOUT_S"


def middlewares() -> list[Middleware]:
    timeout_s = float(os.environ.get(TIMEOUT_VARIABLE, HttpLimits.model_fields["body_timeout_s"].default))
    return [Middleware(BodyLimits, max_bytes=MAX_BODY_BYTES, timeout_s=timeout_s)]


def with_proxy_limits(environment: dict[str, str]) -> dict[str, str]:
    """The environment to start Ray with, so that its proxies apply these limits (a value
    already there is the operator's choice and is kept)."""
    return {CALLBACK_VARIABLE: CALLBACK, **environment}
