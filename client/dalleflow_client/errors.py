"""The errors the client raises: every one is a DalleflowError."""

from __future__ import annotations

from typing import Any


class DalleflowError(Exception):
    """Base of every error raised by dalleflow_client."""


class RequestError(DalleflowError):
    """The server answered 4xx or 5xx; `detail` is its explanation, as it sent it."""

    def __init__(self, status_code: int, detail: Any, method: str, url: str):
        self.status_code = status_code
        self.detail = detail
        self.method = method
        self.url = url
        super().__init__(f"{status_code} from {method} {url}: {describe_detail(detail)}")


class TransportError(DalleflowError):
    """No answer came: the server is unreachable, or slower than the timeout."""


def describe_detail(detail: Any) -> str:
    """One line from FastAPI's `detail`: a string, or a list of validation errors."""
    if isinstance(detail, list) and all(isinstance(error, dict) and "msg" in error for error in detail):
        return "; ".join(f"{_field_path(error.get('loc', []))}: {error['msg']}" for error in detail)
    return str(detail)


def _field_path(location: list) -> str:
    # FastAPI starts each location with where the value came from; the rest is the field the caller named.
    if location and location[0] in ("body", "query", "path", "header", "cookie"):
        location = location[1:]
    return ".".join(str(part) for part in location) or "request"
