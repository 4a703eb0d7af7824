"""Errors a request can cause, each with the HTTP status it maps to."""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 500
    headers: dict[str, str] | None = None  # sent with the error answer (Retry-After, say)

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(ServiceError):
    """A field is well-formed JSON but unusable (an undecodable image, an unknown generator)."""

    status_code = 422


class PayloadTooLarge(ServiceError):
    status_code = 413


class NotFound(ServiceError):
    status_code = 404


class StageUnavailable(ServiceError):
    """Every stage that could answer failed; the report says how."""

    status_code = 503
