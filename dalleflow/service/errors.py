"""Errors a request can cause, each with the HTTP status it maps to."""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 500
    code = "internal"  # stable, for programs; the message is for people
    headers: dict[str, str] | None = None  # sent with the error answer (Retry-After, say)

    def __init__(self, message: str, field: str | None = None, stage: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.stage = stage


class InvalidInput(ServiceError):
    """A field is well-formed JSON but unusable (an undecodable image, an unknown generator)."""

    status_code = 422


class PayloadTooLarge(ServiceError):
    status_code = 413


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class StageFailed(ServiceError):
    """A stage that took the request failed (a bug or an out-of-memory in its model): 502, never
    retried by the client, since the work may have run. The message names the stage, never the
    model's own exception text, which the server logs."""

    status_code = 502
    code = "stage_failed"


class StageTimedOut(ServiceError):
    """A stage that took the request gave no answer within its deadline: 504, not retried either."""

    status_code = 504
    code = "stage_timeout"


class StageUnavailable(ServiceError):
    """No replica of a stage could take the request (at capacity, or still loading): nothing ran,
    so a client may send it again after Retry-After."""

    status_code = 503
    code = "stage_unavailable"
    headers = {"retry-after": "5"}
