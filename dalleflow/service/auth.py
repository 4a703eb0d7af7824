"""Optional API keys: `Authorization: Bearer <key>` on the API routes.

Off by default (the local default serves one user on 127.0.0.1). On when the
ingress finds keys in its environment, DALLEFLOW_API_KEYS (comma-separated) or
the variable the app config names in `api_keys_env`; the cluster config sets
`api_key_required`, so a missing Kubernetes Secret stops the app from starting
instead of serving it open. Keys come only from the environment, never from the
Serve config itself, whose args Ray shows on its dashboard and keeps in the GCS.

Open with keys on, and why:
- /healthz, /readyz: Kubernetes probes and load balancers carry no key; they
  tell only whether the stages are loaded.
- the web page (/, /static/..., /favicon.ico): static files with no data; the
  page asks for the key and sends it on its API calls (kept in the tab's
  sessionStorage).
- GET /v1/images/{id}: an id is a uuid4 (122 random bits) handed out only in
  an answer to a keyed request, so it is itself the capability, as a signed
  link is; this lets <img> tags and download links (which cannot send a
  header) show stored images.
- /docs (its /docs/oauth2-redirect and its Swagger UI and ReDoc files under
  /docs/assets/), /redoc, /openapi.json: the schema, which holds no data; the
  docs' Authorize button takes the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping

DEFAULT_ENV = "DALLEFLOW_API_KEYS"
# RFC 6750: the scheme a 401 asks for, and why the key given was refused.
CHALLENGE = 'Bearer realm="dalleflow"'
INVALID_CHALLENGE = 'Bearer realm="dalleflow", error="invalid_token"'

OPEN_PATHS = frozenset(
    {"/", "/favicon.ico", "/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
OPEN_PREFIXES = ("/static/", "/docs/assets/")
OPEN_GET_PREFIXES = ("/v1/images/",)


class ApiKeys:
    """The accepted keys, kept as SHA-256 digests: every check compares digests of
    one length with hmac.compare_digest, against every key, so the time taken
    tells nothing of a key's content, length or position."""

    def __init__(self, keys: list[str]):
        self._digests = [_digest(key) for key in keys]

    @classmethod
    def from_env(cls, name: str = DEFAULT_ENV, environ: Mapping[str, str] = os.environ, required: bool = False) -> ApiKeys:
        keys = [key.strip() for key in environ.get(name, "").split(",") if key.strip()]
        if required and not keys:
            raise ValueError(f"api_key_required: no API key in ${name} (comma-separated keys)")
        return cls(keys)

    @property
    def is_enabled(self) -> bool:
        return bool(self._digests)

    def accepts(self, key: str) -> bool:
        given = _digest(key)
        matches = [hmac.compare_digest(given, digest) for digest in self._digests]  # no early exit
        return any(matches)

    def challenge(self, method: str, path: str, authorization: str | None) -> str | None:
        """None when the request may pass; else the WWW-Authenticate value of its 401."""
        if not self.is_enabled or is_open(method, path):
            return None
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return CHALLENGE
        return None if self.accepts(key.strip()) else INVALID_CHALLENGE


def is_open(method: str, path: str) -> bool:
    return (
        path in OPEN_PATHS
        or path.startswith(OPEN_PREFIXES)
        or (method in ("GET", "HEAD") and path.startswith(OPEN_GET_PREFIXES))
    )


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()
