"""Database outages answered as 503 with Retry-After on every view, not only the DRF ones."""
from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse

from common.errors import DATABASE_ERRORS, database_unavailable, error_body

_PAGE = (
    "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Back in a moment</title></head>"
    "<body><h1>Back in a moment</h1><p>The site cannot reach its database right now. "
    "Please reload this page in a few seconds.</p></body></html>"
)


class DatabaseUnavailableMiddleware:
    """Turn a view's lost database connection into a 503 the client can retry.

    DRF views already answer through the API exception handler; this covers plain Django
    views: the app-facing JSON endpoints under /api/ get the API's error body, pages a
    static HTML page (no template: its context processors would query the database again).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, DATABASE_ERRORS):
            return None
        error = database_unavailable(exception)
        if request.path.startswith("/api/"):
            response = JsonResponse(
                error_body(error.code, error.message, retry_after=error.retry_after), status=error.status_code
            )
        else:
            response = HttpResponse(_PAGE, status=error.status_code, content_type="text/html; charset=utf-8")
        response["Retry-After"] = str(error.retry_after)
        response["Cache-Control"] = "no-store"
        return response
