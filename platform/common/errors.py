"""One error path: services raise DomainError; the API renders every error the same way.

Body of every API error: {"error": {"code": "<machine_readable>", "message": "<human>",
"fields": {...optional per-field messages...}}}.
"""
from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

logger = logging.getLogger(__name__)


class DomainError(Exception):
    """A refusal a service explains to its caller. Subclasses fix the HTTP status."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "invalid"
    # Seconds a client should wait before retrying; sent as the Retry-After header.
    retry_after: int | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        extra: dict[str, Any] | None = None,
        retry_after: int | None = None,
    ):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.extra = extra or {}
        if retry_after is not None:
            self.retry_after = retry_after


class ValidationFailed(DomainError):
    status_code = status.HTTP_400_BAD_REQUEST


class NotFound(DomainError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class Conflict(DomainError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


class PayloadTooLarge(DomainError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    code = "too_large"


class UnsupportedMediaType(DomainError):
    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
    code = "unsupported_media_type"


class UnprocessableEntity(DomainError):
    """Well-formed but contradicting an earlier request (e.g. a reused Idempotency-Key)."""

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    code = "unprocessable"


class TooManyRequests(DomainError):
    """A quota is used up; `retry_after` says when it resets."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    code = "too_many_requests"
    retry_after = 60


class ServiceUnavailable(DomainError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "service_unavailable"
    retry_after = 30


# A lost or refused database connection (a restart, a failover, a full connection table):
# transient, so clients are told to retry (503) rather than shown a server error (500).
DATABASE_ERRORS = (OperationalError, InterfaceError)
DATABASE_RETRY_AFTER = 5


def database_unavailable(exc: Exception) -> ServiceUnavailable:
    """The domain error a database error is answered with; logged, as a 500 would have been."""
    logger.warning("database unavailable, answered 503: %s: %s", type(exc).__name__, exc)
    return ServiceUnavailable(
        "The database is unavailable; retry shortly.", code="database_unavailable", retry_after=DATABASE_RETRY_AFTER
    )


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON body of every API error."""
    return {"error": {"code": code, "message": message, **extra}}


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF exception handler: domain errors and DRF's own errors in one JSON shape."""
    if isinstance(exc, DATABASE_ERRORS):
        exc = database_unavailable(exc)
    if isinstance(exc, DomainError):
        extra = dict(exc.extra)
        headers = None
        if exc.retry_after is not None:
            headers = {"Retry-After": str(exc.retry_after)}
            extra.setdefault("retry_after", exc.retry_after)
        return Response(error_body(exc.code, exc.message, **extra), status=exc.status_code, headers=headers)

    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        first = next(iter(fields.items()))
        message = f"{first[0]}: {_first_message(first[1])}"
        response.data = error_body("invalid", message, fields=fields)
    elif isinstance(exc, exceptions.Throttled):
        # DRF already set the Retry-After header (from exc.wait); repeat it in the body.
        extra = {"retry_after": int(response["Retry-After"])} if response.has_header("Retry-After") else {}
        response.data = error_body("throttled", _first_message(exc.detail), **extra)
    elif isinstance(exc, exceptions.APIException):
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else exc.default_code
        response.data = error_body(code, _first_message(exc.detail))
    return response


def _first_message(detail: Any) -> str:
    if isinstance(detail, (list, tuple)) and detail:
        return _first_message(detail[0])
    if isinstance(detail, dict) and detail:
        return _first_message(next(iter(detail.values())))
    return str(detail)
