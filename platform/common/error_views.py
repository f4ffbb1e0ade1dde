"""Last-resort error views: JSON in the API's error shape under /api/, Django's pages elsewhere.

DRF views answer their own errors (common.errors.api_exception_handler); these handlers
cover what happens outside them: an unknown path under /api/ (404), a body over
DATA_UPLOAD_MAX_MEMORY_SIZE or another SuspiciousOperation (400/413), a CSRF refusal on a
plain view (403) and an unhandled exception (500). An app or script talking to the API
then always gets ``{"error": {"code", "message"}}``, never an HTML page.
"""
from __future__ import annotations

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from django.views.csrf import csrf_failure as django_csrf_failure

from common.errors import error_body

API_PREFIX = "/api/"


def is_api_request(request: HttpRequest) -> bool:
    """Whether the request is for the API (JSON answers) rather than a page."""
    return request.path.startswith(API_PREFIX)


def api_error_response(*, status: int, code: str, message: str) -> JsonResponse:
    """An API error in the platform's shape; never cached."""
    response = JsonResponse(error_body(code, message), status=status)
    response["Cache-Control"] = "no-store"
    return response


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler400: a SuspiciousOperation (an oversized body is a 413 under /api/)."""
    if not is_api_request(request):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        return api_error_response(
            status=413, code="too_large", message="The request body is larger than this endpoint accepts."
        )
    if isinstance(exception, (TooManyFieldsSent, TooManyFilesSent)):
        return api_error_response(status=400, code="too_many_fields", message="The request has too many fields.")
    return api_error_response(status=400, code="bad_request", message="The request could not be understood.")


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler403."""
    if not is_api_request(request):
        return defaults.permission_denied(request, exception)
    return api_error_response(
        status=403, code="permission_denied", message="You do not have permission to perform this action."
    )


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404: the API names no route it does not have (the path is not echoed back)."""
    if not is_api_request(request):
        return defaults.page_not_found(request, exception)
    return api_error_response(status=404, code="not_found", message="No API endpoint at this path.")


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: the exception is logged by Django; the client learns nothing of it."""
    if not is_api_request(request):
        return defaults.server_error(request)
    return api_error_response(status=500, code="server_error", message="An internal error occurred; it has been logged.")


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: JSON under /api/ (session-authenticated writes without a token)."""
    if not is_api_request(request):
        return django_csrf_failure(request, reason=reason)
    return api_error_response(status=403, code="csrf_failed", message=f"CSRF check failed: {reason}")
